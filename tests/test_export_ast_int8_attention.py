"""`python -m export ast --quantize int8 --attention int8`: the attention's two activation products as integer
products (export.ast_int8_attention), on hand-made attention graphs and on a tiny random AST exported end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("optimum.exporters.onnx")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from export import ast_model, cli  # noqa: E402
from export.ast_int8_attention import (  # noqa: E402
    ATTENTION_MAX_EXTRA_PROB_DIFF,
    check_attention_drift,
    find_attention_products,
    int8_attention,
)
from export.common import EXIT_USAGE, ExportError, ParityError  # noqa: E402
from soundmond.config import TaggerConfig  # noqa: E402
from soundmond.models.sidecar import verify_folder  # noqa: E402
from soundmond.models.taggers import AstTagger  # noqa: E402

pytestmark = pytest.mark.export

HEADS, ROWS, HEAD_SIZE = 2, 600, 16


def _attention_model(scale: float) -> onnx.ModelProto:
    """softmax((Q c) . (K^T c)) . V on [1, heads, rows, head size] inputs, c = sqrt(scale), as optimum exports it."""
    c = numpy_helper.from_array(np.array(np.sqrt(scale), dtype=np.float32), "c")
    nodes = [
        helper.make_node("Mul", ["q", "c"], ["qc"], name="mul_q"),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2], name="kt"),
        helper.make_node("Mul", ["kt", "c"], ["ktc"], name="mul_k"),
        helper.make_node("MatMul", ["qc", "ktc"], ["s"], name="scores"),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["p", "v"], ["y"], name="context"),
    ]
    shape = [1, HEADS, ROWS, HEAD_SIZE]
    graph = helper.make_graph(
        nodes, "attention", [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("q", "k", "v")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [c],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["y"], feeds)[0])


def _feeds(spread: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Q, K, V with per-head magnitudes 1 and 4 (per-head scales matter); `spread` sizes the scores: small values
    give near-uniform attention over the 600 rows (every probability about 1/600, below half of 1/255)."""
    rng = np.random.default_rng(seed)
    head_gain = np.array([1.0, 4.0], dtype=np.float32).reshape(1, HEADS, 1, 1)
    q, k, v = (rng.standard_normal((1, HEADS, ROWS, HEAD_SIZE)).astype(np.float32) * head_gain for _ in range(3))
    return {"q": q * spread, "k": k, "v": v}


def _head_errors(model: onnx.ModelProto, feeds: dict[str, np.ndarray], reference: np.ndarray) -> list[float]:
    """Max |difference| per head, relative to that head's largest context value."""
    out = _run(model, feeds)
    return [float(np.abs(out - reference)[0, h].max() / np.abs(reference[0, h]).max()) for h in range(HEADS)]


@pytest.mark.parametrize("probabilities", ["row", "exp"])
@pytest.mark.parametrize("spread", [0.02, 1.0])
def test_int8_attention_matches_fp32_attention(spread: float, probabilities: str) -> None:
    feeds = _feeds(spread)
    reference = _run(_attention_model(1 / 16), feeds)
    errors = {}
    for granularity in ("tensor", "head"):
        model = _attention_model(1 / 16)
        info = int8_attention(model, num_heads=HEADS, granularity=granularity,  # type: ignore[arg-type]
                              probabilities=probabilities)  # type: ignore[arg-type]
        ops = [n.op_type for n in model.graph.node]
        assert ops.count("MatMulInteger") == 2 and "MatMul" not in ops
        assert ops.count("Softmax") == (1 if probabilities == "row" else 0)  # "exp" computes its own
        assert info["layers"] == 1 and info["folded_scalar_muls"] == 2
        # per tensor, K^T's transpose moves after the quantization (int8 bytes); per head it cannot (the head axis)
        producer = {o: n for n in model.graph.node for o in n.output}
        transposes = [n for n in model.graph.node if n.op_type == "Transpose"]
        assert info["transposed_as_int8"] == (1 if granularity == "tensor" else 0) == len(
            [t for t in transposes if t.input[0] in producer and producer[t.input[0]].op_type == "QuantizeLinear"])
        assert "Abs" not in ops  # scales from max(max x, -min x)
        errors[granularity] = _head_errors(model, feeds, reference)
    # int8 Q, K, V and 8-bit probabilities scaled per row: a few percent of the context's size, for diffuse (0.02)
    # and peaked (1.0) attention
    assert max(errors["tensor"] + errors["head"]) <= 0.05
    # the head with 4x smaller values gets 4x finer steps from its own scale
    assert errors["head"][0] < 0.5 * errors["tensor"][0]


def test_row_scales_survive_onnx_runtime_fusion() -> None:
    # every product becomes one MatMulIntegerToFloat in ONNX Runtime's optimized graph (the row-scaled context too:
    # a factor of 1 there would be optimised away and leave MatMulInteger + Cast + Mul)
    import tempfile

    model = _attention_model(1 / 16)
    int8_attention(model, num_heads=HEADS, granularity="tensor")
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    assert ops.count("MatMulIntegerToFloat") == 2 and "MatMulInteger" not in ops and "Cast" not in ops


def test_fixed_scale_probabilities_lose_diffuse_attention() -> None:
    # why the probabilities get one scale per row: with ~1/600 per probability the fixed 1/255 scale rounds most
    # of them to 0 or 1/255 and the context loses its size; P / row max keeps each row's full range
    feeds = _feeds(0.02)
    reference = _run(_attention_model(1 / 16), feeds)
    errors = {}
    for probabilities in ("fixed", "row"):
        model = _attention_model(1 / 16)
        int8_attention(model, num_heads=HEADS, granularity="tensor", probabilities=probabilities)  # type: ignore[arg-type]
        errors[probabilities] = float(np.abs(_run(model, feeds) - reference).max() / np.abs(reference).max())
    assert errors["fixed"] > 0.3 > 0.03 > errors["row"]


def test_no_attention_found_is_a_clear_error() -> None:
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph)
    assert find_attention_products(model.graph) == []
    with pytest.raises(ExportError, match="--optimize none"):
        int8_attention(model, num_heads=1)
    with pytest.raises(ExportError, match="granularity"):
        int8_attention(_attention_model(1.0), num_heads=HEADS, granularity="row")  # type: ignore[arg-type]


def test_drift_check_refuses_a_broken_rewrite() -> None:
    rng = np.random.default_rng(0)
    fp32 = rng.standard_normal((6, 10)).astype(np.float32)
    int8 = fp32 + 0.01
    report = check_attention_drift(fp32, int8, fp32 + 0.02)
    assert report["int8_weights"]["top1"] == 1.0 and report["int8_weights_and_attention"]["max_prob_diff"] < 0.01
    with pytest.raises(ParityError, match="without --attention int8"):
        check_attention_drift(fp32, int8, fp32 + 0.5)  # sigmoid slope <= 1/4: up to 0.125
    with pytest.raises(ParityError):
        check_attention_drift(fp32, int8, np.full_like(fp32, np.nan))


def _args(model: Path, out: Path, **extra: object) -> argparse.Namespace:
    return argparse.Namespace(model=str(model), revision=None, frames=512, quantize="int8", out=out, force=False,
                              check_audio=None, no_progress=True, **extra)


def test_tiny_export_with_int8_attention_keeps_agreement_and_tags(tmp_path: Path) -> None:
    checkpoint = ast_model.make_random_checkpoint(tmp_path / "tiny", "tiny")
    folder = ast_model.run(_args(checkpoint, tmp_path / "att", attention="int8"))
    sidecar = verify_folder(folder, expected_family="ast")
    attention = sidecar.extra["int8"]["attention"]
    assert attention["layers"] == 2 and attention["granularity"] in ("tensor", "head")
    agreement = attention["agreement_vs_onnx_fp32"]
    after, before = agreement["int8_weights_and_attention"], agreement["int8_weights"]
    assert after["max_prob_diff"] <= before["max_prob_diff"] + ATTENTION_MAX_EXTRA_PROB_DIFF
    ops = [n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node]
    assert ops.count("Softmax") == 2 and "MatMul" not in ops and ops.count("MatMulInteger") >= 2 * 2
    tagger = AstTagger(folder, TaggerConfig(family="ast", path=folder, threads=1))
    out = tagger.tag(np.random.default_rng(0).uniform(-0.3, 0.3, 80000).astype(np.float32))
    assert out.probabilities.shape == (527,) and np.isfinite(out.probabilities).all()
    assert np.isfinite(out.embedding).all() and out.embedding.shape == (32,)


def test_int8_attention_needs_int8_and_the_unfused_graph(tmp_path: Path) -> None:
    out = tmp_path / "ast"
    checkpoint = ast_model.make_random_checkpoint(tmp_path / "tiny", "tiny")
    with pytest.raises(ExportError, match="needs --quantize int8"):
        ast_model.run(argparse.Namespace(**{**vars(_args(checkpoint, out, attention="int8")), "quantize": None}))
    with pytest.raises(ExportError, match="unfused graph"):
        ast_model.run(_args(checkpoint, out, attention="int8", optimize="fused"))
    assert not out.exists()
    code = cli.main(["ast", "--model", str(checkpoint), "--out", str(out), "--attention", "int8", "--no-progress"])
    assert code == EXIT_USAGE and not out.exists()  # the command line: one hinted line, exit 2
