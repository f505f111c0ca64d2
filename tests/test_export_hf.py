"""`python -m export hf` on tiny random checkpoints of each architecture, and soundmond's hf models running them.

The checkpoints and their exports are the session's (`hf_checkpoints`, `hf_exports`, `hf_ast_tagger` in conftest.py,
built by tests/hf_models.py): hidden 32, 2 layers, made-up bird labels, saved with save_pretrained and exported through
the same code a hub id takes after download; the parity check inside each export compares transformers' extractor +
PyTorch with soundmond's numpy features + ONNX on real recordings. `soundmond analyze` and `soundmond run` with each
architecture: tests/test_hf_daemon.py; `soundmond evaluate`: tests/test_evaluate_hf.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("USE_TF", "0")
pytest.importorskip("torch")
pytest.importorskip("optimum.exporters.onnx")

from hf_models import ARCHITECTURES, BIRD_CHORUS, NIGHT_CUT, export_args  # noqa: E402

from export import hf_model  # noqa: E402
from export.cli import main as export_main  # noqa: E402
from export.common import EXIT_FAILED, EXIT_USAGE, ExportError, ParityError  # noqa: E402
from soundmond.capture.audio import load_audio  # noqa: E402
from soundmond.cli import main  # noqa: E402
from soundmond.config import BirdConfig, ConfigError, TaggerConfig  # noqa: E402
from soundmond.data import TaggerOutput  # noqa: E402
from soundmond.models.hf import HfBirdModel, HfTagger, label_names  # noqa: E402
from soundmond.models.sidecar import ModelFolderError, verify_folder  # noqa: E402
from soundmond.models.taggers import load_tagger  # noqa: E402
from soundmond.protocols import BirdModel, Tagger  # noqa: E402

pytestmark = pytest.mark.export

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "audio"


@pytest.fixture(scope="module")
def bird_clip() -> np.ndarray:
    return load_audio(FIXTURES / BIRD_CHORUS, 16000)[0]


@pytest.fixture(scope="module")
def chorus_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 10-s bird chorus alone: check audio for exports whose parity is not what the test is about (two 5-s clips,
    or one 8-s clip, none zero-padded)."""
    folder = tmp_path_factory.mktemp("chorus-only")
    shutil.copy(FIXTURES / BIRD_CHORUS, folder / BIRD_CHORUS)
    return folder


def _pipeline_top(checkpoint: Path, samples: np.ndarray, k: int) -> list[tuple[str, float]]:
    from transformers import pipeline

    classify = pipeline("audio-classification", model=str(checkpoint), device="cpu", framework="pt")  # never TF
    return [(r["label"], float(r["score"])) for r in classify(samples.copy(), top_k=k)]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_exports_with_parity_and_runs_as_the_pipeline(
    arch: str, hf_exports: dict[str, Path], hf_checkpoints: dict[str, Path], bird_clip: np.ndarray
) -> None:
    exported, checkpoints = hf_exports, hf_checkpoints
    sidecar = verify_folder(exported[arch], "hf")
    assert sidecar.parity.target_max_abs_logit_diff == 1e-4
    assert sidecar.parity.max_abs_logit_diff <= 1e-4 and sidecar.parity.top5_agreement == 1.0
    assert sidecar.parity.audio_files == sorted([NIGHT_CUT, BIRD_CHORUS])
    assert sidecar.licence == "cc-by-4.0"  # from the checkpoint's model card
    assert sidecar.label_count == len(hf_model.BIRD_LABELS)
    hf = sidecar.extra["hf"]
    assert isinstance(hf, dict) and hf["activation"] == "softmax" and hf["role"] == "birds"
    features = sidecar.extra["features"]
    assert isinstance(features, dict)
    assert features["kind"] == hf_model.FEATURE_KIND[arch]
    assert (exported[arch] / "labels.txt").read_text().splitlines() == list(hf_model.BIRD_LABELS)

    stride_s = min(3.0, sidecar.chunk_samples / sidecar.sample_rate_hz)  # the tiny AST's clip is 1.015 s
    model = HfBirdModel(exported[arch], BirdConfig(family="hf", min_confidence=0.0, stride_s=stride_s))
    assert isinstance(model, BirdModel)
    clip = bird_clip[: model.chunk_samples]  # one model clip: what the pipeline sees whole
    ours = model.top(clip, 5)
    theirs = _pipeline_top(checkpoints[arch], clip, 5)
    assert [label for label, _ in ours] == [label for label, _ in theirs]
    np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-4)
    assert ours[0][1] - ours[-1][1] > 0.01  # scores are spread: the ranking is a real check

    output = model.detect(clip, start_unix_s=1.7e9)
    assert [f"{s.scientific_name}_{s.common_name}" for s in output.species[:5]] == [label for label, _ in ours]
    assert output.top_score == pytest.approx(ours[0][1], abs=1e-6)
    assert output.embedding is not None and output.embedding.shape == (sidecar.output("embedding").shape[1],)


@pytest.mark.shared
def test_seed_call_shape_on_a_corpus_bird_recording(
    hf_checkpoints: dict[str, Path], chorus_only: Path, shared_corpus: Path, tmp_path: Path
) -> None:
    """The seed study: `pipeline("audio-classification", model=...)` top-k on a whole recording. soundmond's hf bird
    model, given a clip length that holds the recording (`--clip-s 8`), returns the same labels and scores."""
    recording = shared_corpus / "audio" / "natural" / "bird_xc130831_Amazilia_yucatanensis.flac"
    samples = load_audio(recording, 16000)[0]
    assert 5.5 < samples.size / 16000 <= 8.0
    folder = hf_model.run(export_args(hf_checkpoints["wav2vec2"], tmp_path / "w2v", chorus_only, clip_s=8.0))
    model = HfBirdModel(folder, BirdConfig(family="hf", min_confidence=0.0))
    assert model.chunk_samples == 8 * 16000
    ours = model.top(samples, 5)
    theirs = _pipeline_top(hf_checkpoints["wav2vec2"], samples, 5)
    assert [label for label, _ in ours] == [label for label, _ in theirs]
    np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-4)


def test_long_windows_are_split_into_clips_and_pooled(hf_exports: dict[str, Path], bird_clip: np.ndarray) -> None:
    model = HfBirdModel(hf_exports["wav2vec2"], BirdConfig(family="hf", min_confidence=0.0))
    starts, scores = model.clip_scores(bird_clip)  # 10.1 s, 5-s clips every stride_s (3 s), the last one end-aligned
    assert starts == (0, 48000, bird_clip.size - 80000)
    assert scores.shape == (3, len(model.labels))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)  # softmax per clip
    second = model.top(bird_clip[48000:128000], len(model.labels))
    by_label = dict(second)
    np.testing.assert_allclose(scores[1], [by_label[label] for label in model.labels], atol=1e-6)
    output = model.detect(bird_clip, start_unix_s=0.0)
    assert output.top_score == pytest.approx(float(scores.max()), abs=1e-6)


def test_tagger_role_runs_through_load_tagger(
    hf_ast_tagger: Path, hf_exports: dict[str, Path], bird_clip: np.ndarray
) -> None:
    folder = hf_ast_tagger
    assert verify_folder(folder, "hf").licence == "bsd-3-clause"  # --licence wins over the card
    tagger = load_tagger(folder, TaggerConfig(family="hf", path=folder, top_k=3, pooling="max"))
    assert isinstance(tagger, HfTagger) and isinstance(tagger, Tagger)
    out = tagger.tag(bird_clip)
    assert isinstance(out, TaggerOutput)
    assert out.probabilities.shape == (len(hf_model.BIRD_LABELS),) and len(out.top) == 3
    assert out.top[0].score == pytest.approx(float(out.probabilities.max()))
    with pytest.raises(ModelFolderError, match="exported as a birds model.*--role tagger"):
        HfTagger(hf_exports["wav2vec2"], TaggerConfig(family="hf"))
    with pytest.raises(ModelFolderError, match="exported as a tagger model.*--role birds"):
        HfBirdModel(folder, BirdConfig(family="hf"))


def test_species_map_names_and_drops_labels(hf_exports: dict[str, Path], bird_clip: np.ndarray, tmp_path: Path) -> None:
    mapping = tmp_path / "species.yaml"
    mapping.write_text(
        "'Turdus merula_Eurasian Blackbird': {scientific: Turdus merula, common: Blackbird}\n"
        "'Parus major_Great Tit': null\n"
        "'Erithacus rubecula_European Robin': Erithacus rubecula\n"
    )
    model = HfBirdModel(hf_exports["whisper"], BirdConfig(family="hf", min_confidence=0.0), species_map=mapping)
    names = dict(zip(model.labels, zip(model.scientific_names, model.common_names, strict=True), strict=True))
    assert names["Turdus merula_Eurasian Blackbird"] == ("Turdus merula", "Blackbird")
    assert names["Erithacus rubecula_European Robin"] == ("Erithacus rubecula", "Erithacus rubecula_European Robin")
    output = model.detect(bird_clip[:80000], start_unix_s=0.0)
    assert "Parus major" not in {s.scientific_name for s in output.species}
    assert len(output.species) == len(model.labels) - 1

    mapping.write_text("'Turdus merulla': Turdus merula\n'Parus major_Great Tit': [1]\n")
    with pytest.raises(ConfigError) as info:
        HfBirdModel(hf_exports["whisper"], BirdConfig(family="hf"), species_map=mapping)
    assert [p.key for p in info.value.problems] == ["models.birds.species_map"] * 2
    assert "'Turdus merulla' is not one of the model's labels" in str(info.value)
    with pytest.raises(ConfigError, match="unknown species: 'Dodo'"):
        HfBirdModel(hf_exports["whisper"], BirdConfig(family="hf", include=["Dodo"]))


def test_label_names() -> None:
    assert label_names("Turdus merula_Eurasian Blackbird") == ("Turdus merula", "Eurasian Blackbird")
    assert label_names("Turdus merula") == ("Turdus merula", "Turdus merula")
    assert label_names("ANDEAN GUAN") == ("ANDEAN GUAN", "ANDEAN GUAN")


def test_int8_is_reported_not_enforced(hf_checkpoints: dict[str, Path], chorus_only: Path, tmp_path: Path) -> None:
    folder = hf_model.run(export_args(hf_checkpoints["hubert"], tmp_path / "q", chorus_only, int8=True))
    sidecar = verify_folder(folder, "hf")
    assert sidecar.quantization == "int8" and sidecar.parity.target_max_abs_logit_diff is None
    int8 = sidecar.extra["int8"]
    assert isinstance(int8, dict) and int8["int8_bytes"] < int8["fp32_bytes"]
    HfBirdModel(folder, BirdConfig(family="hf"))  # loads and warms up


def test_missed_parity_writes_nothing(
    hf_checkpoints: dict[str, Path], chorus_only: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hf_model, "FP32_TARGET_MAX_ABS_LOGIT_DIFF", 1e-12)
    with pytest.raises(ParityError, match="exceeds the target") as info:
        hf_model.run(export_args(hf_checkpoints["wavlm"], tmp_path / "out", chorus_only))
    assert info.value.exit_code == EXIT_FAILED
    assert list(tmp_path.iterdir()) == []  # no folder, no partial folder


def _config_only(folder: Path, text: str) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(text)
    return folder


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('{"model_type": "bert", "architectures": ["BertForSequenceClassification"]}',
         "BertForSequenceClassification (model_type 'bert') is not an audio-classification model"),
        ('{"model_type": "speech_to_text", "architectures": ["Speech2TextForConditionalGeneration"]}',
         "Speech2TextForConditionalGeneration (model_type 'speech_to_text') is an audio architecture optimum cannot"),
        ('{"model_type": "wav2vec2", "architectures": ["Wav2Vec2ForCTC"]}',
         "Wav2Vec2ForCTC has no audio-classification head (architectures ['Wav2Vec2ForCTC']); export a checkpoint "
         "fine-tuned for classification (Wav2Vec2ForSequenceClassification)"),
        ('{"model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"]}',
         "fine-tuned for classification (WhisperForAudioClassification)"),
    ],
)
def test_refused_architectures_name_themselves_and_write_nothing(config: str, message: str, tmp_path: Path) -> None:
    checkpoint = _config_only(tmp_path / "ck", config)
    with pytest.raises(ExportError) as info:
        hf_model.run(export_args(checkpoint, tmp_path / "out", FIXTURES))
    assert message in str(info.value) and info.value.exit_code == EXIT_USAGE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_cli_refusal_exit_code_and_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m export hf` (export/__main__.py is `sys.exit(export.cli.main())`) on an image model: one line naming
    the architecture, exit 2, nothing on stdout, nothing written. In this process: a fresh interpreter would spend
    10-20 s importing torch, transformers and optimum again on a busy 2-core machine."""
    checkpoint = _config_only(tmp_path / "ck", '{"model_type": "vit", "architectures": ["ViTForImageClassification"]}')
    out = tmp_path / "out"
    assert export_main(["hf", "--model", str(checkpoint), "--out", str(out)]) == EXIT_USAGE
    captured = capsys.readouterr()
    message = "export hf: ViTForImageClassification (model_type 'vit') is not an audio-classification model"
    assert message in captured.err
    assert captured.out == "" and not out.exists()


def test_help_shows_the_examples_once(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m export hf --help`: the module's own examples, not the family list's again; a family whose module has
    none gets its own lines of the family list."""
    for family, example in (("hf", "python -m export hf --model dima806/bird_sounds_classification"),
                            ("yamnet", "python -m export yamnet --tflite")):
        with pytest.raises(SystemExit):
            export_main([family, "--help"])
        text = capsys.readouterr().out
        assert text.count("examples:") == 1 and text.count(example) == 1, family
        assert "python -m export birdnet --out" not in text and "exit codes:" in text


def test_no_licence_is_refused(hf_checkpoints: dict[str, Path], hf_check_audio: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "ck"
    shutil.copytree(hf_checkpoints["wav2vec2"], checkpoint)
    (checkpoint / "README.md").unlink()
    with pytest.raises(ExportError, match="states no `license:`; pass --licence"):
        hf_model.run(export_args(checkpoint, tmp_path / "out", hf_check_audio))
    assert not (tmp_path / "out").exists()


def test_soundmond_analyze_with_an_hf_bird_model(
    hf_checkpoints: dict[str, Path], hf_exports: dict[str, Path], yamnet_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`soundmond analyze` on a bird recording with `models.birds.family: hf`: the stream grid's 5-s chunks (every
    stride_s = 3 s) are clips of the model, and each chunk's species are the transformers pipeline's top-k on that
    chunk, with the same confidences; a window's species are the best of its chunks."""
    mapping = tmp_path / "species.yaml"
    mapping.write_text("'Parus major_Great Tit': null\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n"
        f"  birds: {{family: hf, path: {hf_exports['wav2vec2']}, species_map: {mapping.name}, min_confidence: 0.0}}\n"
    )
    recording = FIXTURES / "oss_birds_10s.flac"
    code = main(["analyze", str(recording), "--config", str(cfg)])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    records = [json.loads(line) for line in out.out.splitlines()]
    assert [r["start_s"] for r in records] == [0.0, 5.0]  # 10.13 s: the 0.13-s tail makes no window
    samples = load_audio(recording, 16000)[0]
    chunks: dict[float, list[tuple[str, float]]] = {}
    for record in records:
        for d in record["detections"]:
            chunks.setdefault(d["start_s"], []).append((f"{d['scientific_name']}_{d['common_name']}", d["confidence"]))
        best = {f"{s['scientific_name']}_{s['common_name']}": s["confidence"] for s in record["species"]}
        assert record["species"][0]["confidence"] == max(best.values())
    whole = [start for start in chunks if start * 16000 + 80000 <= samples.size]
    assert whole == [0.0, 3.0]
    for start in whole:
        window = samples[int(start * 16000) : int(start * 16000) + 80000]
        theirs = [(label, score) for label, score in _pipeline_top(hf_checkpoints["wav2vec2"], window, 8)
                  if label != "Parus major_Great Tit"]
        ours = chunks[start]
        assert [label for label, _ in ours] == [label for label, _ in theirs]
        np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-3)


def test_check_config_knows_hf_folders(hf_exports: dict[str, Path], yamnet_dir: Path, tmp_path: Path) -> None:
    """Preflight (check-config, run, analyze) checks hf folders and species names through the species map."""
    from soundmond.config import load_config
    from soundmond.preflight import preflight

    mapping = tmp_path / "species.yaml"
    mapping.write_text("'Parus major_Great Tit': null\n'Turdus merula_Eurasian Blackbird': Turdus merula\n")
    cfg = tmp_path / "config.yaml"

    def problems(birds: str, tagger: str = f"{{family: yamnet, path: {yamnet_dir}}}") -> list[str]:
        cfg.write_text(f"models:\n  tagger: {tagger}\n  birds: {birds}\nalerts:\n  rare_species: [Parus major]\n")
        return [str(p) for p in preflight(load_config(cfg), models_only=True).problems]

    found = problems(f"{{family: hf, path: {hf_exports['whisper']}, species_map: {mapping.name}}}")
    assert found == [
        "alerts.rare_species.0: unknown species 'Parus major' (line 5) - use scientific or common names as in "
        f"{hf_exports['whisper'] / 'labels.txt'} (case does not matter)"
    ]
    assert problems(f"{{family: hf, path: {hf_exports['whisper']}}}") == []  # no map: the label names it
    found = problems(f"{{path: {hf_exports['whisper']}}}")
    assert len(found) == 1 and "holds a 'hf' model" in found[0] and "set models.birds.family: hf" in found[0]
    found = problems(f"{{family: hf, path: {hf_exports['whisper']}}}", f"{{family: hf, path: {hf_exports['hubert']}}}")
    assert len(found) == 2
    assert found[0].startswith("models.tagger.path: ") and "exported as a birds model" in found[0]
    assert "--role tagger" in found[0]
    assert found[1].startswith("models.head.path: no head is shipped for the 'hf' tagger")
    assert "heads/hf" not in found[1]
    assert "soundmond train-head" in found[1]
