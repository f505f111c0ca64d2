"""`python -m export ast` on a tiny random AST checkpoint, exported through the same code as the real model."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("optimum.exporters.onnx")

import onnxruntime as ort  # noqa: E402

from export import ast_model  # noqa: E402
from export.common import EXIT_FAILED, EXIT_USAGE, chunk_clip, load_check_audio  # noqa: E402
from soundmond.models.features import ASTFeatures  # noqa: E402
from soundmond.models.sidecar import Sidecar, verify_folder  # noqa: E402
from tests.terminal import run_with_tty_stderr  # noqa: E402

pytestmark = pytest.mark.export

REPO = Path(__file__).resolve().parent.parent


def _args(model: Path | str, out: Path, frames: int = 1024, quantize: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(
        model=str(model), revision=None, frames=frames, quantize=quantize, out=out, force=False, check_audio=None,
        no_progress=True,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ast_model.make_random_checkpoint(tmp_path_factory.mktemp("ast") / "tiny", "tiny")


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    folders = {}
    for key, frames, quantize in (("fp32-1024", 1024, None), ("fp32-512", 512, None), ("int8-512", 512, "int8")):
        folders[key] = ast_model.run(_args(checkpoint, root / key, frames, quantize))
    return folders


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    clips = load_check_audio(None, 16000)
    return np.concatenate([chunk_clip(c.samples, 80000, 80000) for c in clips])


def _sidecar(folder: Path) -> Sidecar:
    return verify_folder(folder, expected_family="ast")


def test_fp32_1024_matches_pytorch_on_real_audio(exported: dict[str, Path]) -> None:
    sidecar = _sidecar(exported["fp32-1024"])
    parity = sidecar.parity
    assert parity.target_max_abs_logit_diff == 1e-4
    assert parity.max_abs_logit_diff <= 1e-4
    assert parity.top5_agreement == 1.0 and parity.top1_agreement == 1.0
    assert parity.chunks >= 16 and len(parity.audio_files) == 8
    assert sidecar.quantization == "none" and sidecar.frames == 1024
    assert sidecar.chunk_samples == 1023 * 160 + 400
    assert "position_embedding_resize" not in sidecar.extra
    assert sidecar.extra["features"] == ASTFeatures(max_length=1024).as_dict()


def test_folder_contents_and_sidecar(exported: dict[str, Path], checkpoint: Path) -> None:
    folder = exported["fp32-1024"]
    assert sorted(p.name for p in folder.iterdir()) == ["labels.txt", "model.json", "model.onnx"]
    sidecar = _sidecar(folder)
    labels = (folder / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert len(labels) == sidecar.label_count == 527
    assert sidecar.source.id == str(checkpoint.resolve()) and sidecar.source.revision is None
    assert sidecar.licence == "BSD-3-Clause" and sidecar.sample_rate_hz == 16000
    assert sidecar.output_kind == "logits"
    assert {"torch", "transformers", "optimum", "optimum-onnx"} <= set(sidecar.tool_versions)
    assert [s.name for s in sidecar.inputs] == ["input_values"]
    assert sidecar.inputs[0].shape == ["batch", 1024, 128]
    assert sidecar.output("logits").shape == ["batch", 527]
    assert sidecar.output("embedding").shape == ["batch", 32]


def test_both_outputs_and_embedding_is_classifier_input(exported: dict[str, Path], checkpoint: Path) -> None:
    import torch
    from transformers import ASTForAudioClassification

    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 1024, 128)).astype(np.float32)
    session = ort.InferenceSession(str(exported["fp32-1024"] / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, embedding = session.run(["logits", "embedding"], {"input_values": x})
    assert logits.shape == (3, 527) and embedding.shape == (3, 32)
    model = ASTForAudioClassification.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        pooled = model.audio_spectrogram_transformer(torch.from_numpy(x)).pooler_output
        ref_embedding = model.classifier.layernorm(pooled)
        ref_logits = model(torch.from_numpy(x)).logits
    assert np.max(np.abs(embedding - ref_embedding.numpy())) <= 1e-4
    assert np.max(np.abs(logits - ref_logits.numpy())) <= 1e-4


def test_512_frames_cut_position_embeddings(exported: dict[str, Path]) -> None:
    sidecar = _sidecar(exported["fp32-512"])
    assert sidecar.frames == 512 and sidecar.chunk_samples == 511 * 160 + 400
    assert sidecar.inputs[0].shape == ["batch", 512, 128]
    resize = sidecar.extra["position_embedding_resize"]
    assert isinstance(resize, dict)
    assert resize["from_frames"] == 1024 and resize["to_frames"] == 512
    assert resize["from_grid"] == [12, 101] and resize["to_grid"] == [12, 50]
    assert sidecar.parity.max_abs_logit_diff <= 1e-4 and sidecar.parity.top5_agreement == 1.0


def test_cut_keeps_the_first_time_columns_of_each_frequency_row(checkpoint: Path) -> None:
    from transformers import ASTForAudioClassification

    model = ASTForAudioClassification.from_pretrained(checkpoint)
    old = model.audio_spectrogram_transformer.embeddings.position_embeddings.detach().clone()
    ast_model.cut_position_embeddings(model, 512)
    new = model.audio_spectrogram_transformer.embeddings.position_embeddings.detach()
    assert new.shape == (1, 2 + 12 * 50, 32) and model.config.max_length == 512
    assert (new[0, :2] == old[0, :2]).all()
    for f in (0, 5, 11):
        for t in (0, 17, 49):
            assert (new[0, 2 + f * 50 + t] == old[0, 2 + f * 101 + t]).all()


def test_int8_runs_and_records_agreement(exported: dict[str, Path]) -> None:
    sidecar = _sidecar(exported["int8-512"])
    assert sidecar.quantization == "int8"
    assert sidecar.parity.target_max_abs_logit_diff is None  # reported, not enforced
    assert 0.0 <= sidecar.parity.top1_agreement <= 1.0 and sidecar.parity.max_sigmoid_diff < 0.5
    int8 = sidecar.extra["int8"]
    assert isinstance(int8, dict) and int8["per_channel"] is True and int8["weight_type"] == "QInt8"
    assert int8["fp32_parity"]["max_abs_logit_diff"] <= 1e-4
    assert int8["int8_bytes"] < int8["fp32_bytes"]
    assert (exported["int8-512"] / "model.onnx").stat().st_size == int8["int8_bytes"]
    # the products are integer; the patch embedding stays a float Conv (ConvInteger is slower in ONNX Runtime)
    import onnx

    ops = {n.op_type for n in onnx.load(str(exported["int8-512"] / "model.onnx"), load_external_data=False).graph.node}
    assert "Conv" in ops and "ConvInteger" not in ops and "MatMulInteger" in ops
    assert int8["op_types"] == ["MatMul", "Attention"]


@pytest.mark.parametrize("key", ["fp32-1024", "fp32-512", "int8-512"])
def test_daemon_features_give_the_same_logits(exported: dict[str, Path], windows: np.ndarray, key: str) -> None:
    from transformers import ASTFeatureExtractor

    folder = exported[key]
    sidecar = _sidecar(folder)
    ours = ASTFeatures.from_sidecar_extra(sidecar.extra)
    reference = ASTFeatureExtractor(max_length=ours.max_length)
    ref_features = np.asarray(
        reference(list(windows), sampling_rate=16000, return_tensors="np")["input_values"], dtype=np.float32
    )
    our_features = np.stack([ours(w) for w in windows])
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (ref_logits,) = session.run(["logits"], {"input_values": ref_features})
    (our_logits,) = session.run(["logits"], {"input_values": our_features})
    assert np.max(np.abs(ref_logits - our_logits)) <= 1e-4


def test_parity_miss_writes_nothing_and_exits_1(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from export import cli

    real = ast_model.onnx_outputs

    def drifting(model_path: Path, features: np.ndarray, batch: int = 4,
                 progress: bool = False) -> dict[str, np.ndarray]:
        out = real(model_path, features, batch, progress)
        return {**out, "logits": out["logits"] + 1e-3}  # an ONNX graph that drifts by 1e-3

    monkeypatch.setattr(ast_model, "onnx_outputs", drifting)
    monkeypatch.setattr(cli, "FAMILIES", {"ast": "export.ast_model"})
    out = tmp_path / "ast"
    assert cli.main(["ast", "--model", str(checkpoint), "--out", str(out)]) == EXIT_FAILED
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _cli(argv: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # The real `python -m export` entry point, with only the AST family registered (the other exporters are other
    # modules' business and need TensorFlow).
    code = (
        "import sys\n"
        "from export import cli\n"
        "cli.FAMILIES = {'ast': 'export.ast_model'}\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO
    )


@pytest.mark.slow
def test_the_parity_check_shows_a_bar_on_a_terminal_only(checkpoint: Path, tmp_path: Path) -> None:
    code = ("import sys\nfrom export import cli\ncli.FAMILIES = {'ast': 'export.ast_model'}\n"
            "sys.exit(cli.main(sys.argv[1:]))\n")  # as _cli: only the AST family
    argv = ["ast", "--model", str(checkpoint), "--frames", "512"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    status, shown = run_with_tty_stderr([sys.executable, "-c", code, *argv, "--out", str(tmp_path / "a")], env=env)
    assert status == 0, shown[-3000:]
    assert "parity: PyTorch: 100%|" in shown and "parity: model.onnx: 100%|" in shown
    piped = _cli([*argv, "--out", str(tmp_path / "b")], {}, timeout=300)
    assert piped.returncode == 0, piped.stderr[-3000:]
    assert "parity" in piped.stderr and "%|" not in piped.stderr and "\r" not in piped.stderr


UNKNOWN_ID = "soundmond-tests/no-such-ast-model-3b1f"


def test_unknown_hub_id_offline_exits_2_one_line(tmp_path: Path) -> None:
    out = tmp_path / "ast"
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = _cli(["ast", "--model", UNKNOWN_ID, "--out", str(out)], env)
    assert result.returncode == EXIT_USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "offline" in lines[0] and UNKNOWN_ID in lines[0] and "local directory" in lines[0]
    assert not out.exists() and result.stdout == ""


def test_unknown_hub_id_with_network_attempted_fails_fast(tmp_path: Path) -> None:
    out = tmp_path / "ast"
    env = {"HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_ETAG_TIMEOUT": "5"}
    start = time.monotonic()
    result = _cli(["ast", "--model", UNKNOWN_ID, "--out", str(out)], env, timeout=90)
    assert time.monotonic() - start < 60
    assert result.returncode == EXIT_USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    # no network here: "unreachable"; with network: "unknown model id"
    assert "unreachable" in lines[0] or "unknown model id" in lines[0]
    assert "local directory" in lines[0] or "unknown model id" in lines[0]
    assert not out.exists()


def test_hub_errors_are_translated() -> None:
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    unknown = ast_model._hub_error(RepositoryNotFoundError("404 repo"), UNKNOWN_ID, None)
    assert "unknown model id" in str(unknown) and "\n" not in str(unknown)
    revision = ast_model._hub_error(RevisionNotFoundError("404 revision"), UNKNOWN_ID, "v9")
    assert "revision 'v9' not found" in str(revision)
    other = KeyError("x")
    assert ast_model._hub_error(other, UNKNOWN_ID, None) is other


def test_missing_local_directory_exits_2(tmp_path: Path) -> None:
    result = _cli(["ast", "--model", "./no/such/dir", "--out", str(tmp_path / "ast")], {"HF_HUB_OFFLINE": "1"})
    assert result.returncode == EXIT_USAGE
    assert "no such directory" in result.stderr and not (tmp_path / "ast").exists()


def test_help_shows_examples() -> None:
    result = _cli(["ast", "--help"], {})
    assert result.returncode == 0
    assert "python -m export ast --model" in result.stdout and "--frames" in result.stdout
    assert "works offline" in result.stdout


def test_fused_graph_keeps_fp32_parity_and_quantizes(checkpoint: Path, tmp_path: Path) -> None:
    # --optimize fused: one Attention op per layer, SkipLayerNormalization and BiasGelu; the same fp32 target against
    # PyTorch as the unfused graph, and int8 quantization of the fused graph (QAttention) still runs.
    import onnx

    fp32 = ast_model.run(argparse.Namespace(**{**vars(_args(checkpoint, tmp_path / "fp32", 512)), "optimize": "fused"}))
    sidecar = _sidecar(fp32)
    assert sidecar.parity.max_abs_logit_diff <= ast_model.FP32_TARGET_MAX_ABS_LOGIT_DIFF
    graph = sidecar.extra["graph"]
    assert isinstance(graph, dict) and graph["fused_ops"]["Attention"] == 2 and graph["scores_mul_to_div"] == 2
    ops = [n.op_type for n in onnx.load(str(fp32 / "model.onnx")).graph.node]
    assert ops.count("Attention") == 2 and ops.count("Softmax") == 0 and ops.count("SkipLayerNormalization") >= 2
    int8 = ast_model.run(
        argparse.Namespace(**{**vars(_args(checkpoint, tmp_path / "int8", 512, "int8")), "optimize": "fused"})
    )
    ops8 = [n.op_type for n in onnx.load(str(int8 / "model.onnx")).graph.node]
    assert ops8.count("QAttention") == 2 and "MatMulInteger" in ops8
    assert _sidecar(int8).parity.top1_agreement >= 0.5  # reported, not enforced; random tiny weights


def test_default_export_is_unfused(exported: dict[str, Path]) -> None:
    import onnx

    assert _sidecar(exported["fp32-512"]).extra["graph"] == {"optimizer": "none (the graph as optimum exports it)"}
    ops = {n.op_type for n in onnx.load(str(exported["fp32-512"] / "model.onnx")).graph.node}
    assert "Attention" not in ops and "Softmax" in ops


def test_scores_scale_becomes_a_division() -> None:
    from onnx import TensorProto, helper, numpy_helper

    from export.ast_fusion import scores_scale_as_div

    scale = numpy_helper.from_array(np.array(0.125, dtype=np.float32), "scale")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["s"], name="mul"), helper.make_node("Softmax", ["s"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [scale],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert scores_scale_as_div(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Div", "Softmax"]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(before, after)  # a power-of-two scale: exact
