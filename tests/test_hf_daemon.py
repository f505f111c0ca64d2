"""`soundmond analyze` and `soundmond run` with each Hugging Face architecture (`python -m export hf`): the session's
tiny random exports (conftest.py, tests/hf_models.py) as the bird model beside YAMNet, the AST as the tagger with a
head trained on its outputs, and what an hf bird model does not use said by check-config."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("USE_TF", "0")
pytest.importorskip("torch")
pytest.importorskip("optimum.exporters.onnx")

import hf_models  # noqa: E402
from hf_models import ARCHITECTURES  # noqa: E402
from store_rows import detections, windows  # noqa: E402

from soundmond.cli import main  # noqa: E402
from soundmond.models.hf import label_names  # noqa: E402
from soundmond.models.sidecar import read_sidecar  # noqa: E402

pytestmark = pytest.mark.export

RECORDING = hf_models.FIXTURES / hf_models.BIRD_CHORUS  # 10.1 s: two 5-s windows


def _config(tmp_path: Path, tagger: str, birds: str, head: Path | None = None) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"models:\n  tagger: {tagger}\n  birds: {birds}\n"
                   + (f"  head: {{path: {head}}}\n" if head else "")
                   + f"store: {{path: {tmp_path / 'store.db'}, flush_interval_s: 0.2}}\n"
                   + f"source: {{type: file, path: {RECORDING}}}\n")
    return cfg


def _analyze_and_run(cfg: Path, species: set[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    """`analyze` then `run --source` on the recording: both exit 0 with two windows whose species are the model's."""
    code = main(["analyze", str(RECORDING), "--config", str(cfg)])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    records = [json.loads(line) for line in out.out.splitlines()]
    assert [r["start_s"] for r in records] == [0.0, 5.0]
    found = {s["scientific_name"] for r in records for s in r["species"]}  # type: ignore[attr-defined]
    assert found and found <= species

    code = main(["run", "--config", str(cfg), "--source", str(RECORDING)])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    db = cfg.parent / "store.db"
    assert [(w["start_s"], w["status"]) for w in windows(db)] == [(0.0, "ok"), (5.0, "ok")]
    stored = {d["scientific_name"] for d in detections(db)}
    assert stored and stored <= species
    return records


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_architecture_as_the_bird_model_in_analyze_and_run(
    arch: str, hf_exports: dict[str, Path], yamnet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = hf_exports[arch]
    sidecar = read_sidecar(folder)
    stride = min(3.0, sidecar.chunk_samples / sidecar.sample_rate_hz)  # the tiny AST's clip is 1.015 s
    cfg = _config(tmp_path, f"{{family: yamnet, path: {yamnet_dir}}}",
                  f"{{family: hf, path: {folder}, min_confidence: 0.0, stride_s: {stride}}}")
    species = {label_names(label)[0] for label in hf_models.load_labels(folder)}
    records = _analyze_and_run(cfg, species, capsys)
    assert all(len(r["species"]) == len(species) for r in records)  # type: ignore[arg-type]  # min_confidence 0


def test_an_hf_tagger_with_its_head_in_analyze_and_run(
    hf_ast_tagger: Path, hf_exports: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The AST exported as a tagger (labels as its probabilities, a head trained on them) beside an hf bird model."""
    head = hf_models.random_hf_head(tmp_path / "head.onnx", len(hf_models.load_labels(hf_ast_tagger)))
    cfg = _config(tmp_path, f"{{family: hf, path: {hf_ast_tagger}}}",
                  f"{{family: hf, path: {hf_exports['whisper']}, min_confidence: 0.0}}", head)
    species = {label_names(label)[0] for label in hf_models.load_labels(hf_exports["whisper"])}
    records = _analyze_and_run(cfg, species, capsys)
    assert {r["group"] for r in records} <= {"natural", "industrial", "other"}
    db = tmp_path / "store.db"
    assert {w["group"] for w in windows(db)} <= {"natural", "industrial", "other"}


def test_check_config_says_what_an_hf_bird_model_does_not_use(
    hf_exports: dict[str, Path], yamnet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    birds = f"{{family: hf, path: {hf_exports['hubert']}, location_filter: {{threshold: 0.1}}}}"
    cfg = _config(tmp_path, f"{{family: yamnet, path: {yamnet_dir}}}", birds)
    assert main(["check-config", str(cfg)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("alerts.rare_occurrence_below: 0.01 does not apply to an hf bird model: it has no meta "
                             "model") and "set alerts.rare_occurrence_below: null" in err[0]
    assert err[1].startswith("models.birds.location_filter: week / threshold are BirdNET's meta-model settings")
    cfg.write_text(cfg.read_text().replace(", location_filter: {threshold: 0.1}", "")
                   + "alerts: {rare_occurrence_below: null}\n")
    assert main(["check-config", str(cfg)]) == 0
    assert capsys.readouterr().err == ""  # nothing left that does not apply

    # a clip shorter than the bird stride (the tiny AST's 1.015 s) is refused, naming the key, by check-config and run
    cfg.write_text(cfg.read_text().replace(str(hf_exports["hubert"]), str(hf_exports["audio-spectrogram-transformer"])))
    for command in (["check-config", str(cfg)], ["run", "--config", str(cfg), "--source", str(RECORDING)]):
        assert main(command) == 2
        captured = capsys.readouterr()
        assert ("models.birds.stride_s: 3 s is longer than the hf model's 1.015-s clip: the audio between clips would "
                "never be analysed") in captured.out + captured.err
        assert "set models.birds.stride_s to at most 1.015" in captured.out + captured.err
    assert not (tmp_path / "store.db").exists()
