"""An hf bird model's chunk detections in the bird formats (`soundmond analyze --format raven|birdnet-csv`): times that
end with the file (a last chunk padded only when it holds half a clip of audio) and the model's own frequency band."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
import soundfile as sf

os.environ.setdefault("USE_TF", "0")
pytest.importorskip("torch")
pytest.importorskip("optimum.exporters.onnx")

import hf_models  # noqa: E402

from soundmond.cli import main  # noqa: E402
from soundmond.models.sidecar import read_sidecar  # noqa: E402

pytestmark = pytest.mark.export


def _cut(tmp_path: Path, seconds: float) -> Path:
    samples, rate = sf.read(hf_models.FIXTURES / hf_models.BIRD_CHORUS, dtype="float32", always_2d=False)
    path = tmp_path / f"chorus_{seconds:g}s.wav"
    sf.write(path, samples[: round(seconds * rate)], rate)
    return path


def _config(tmp_path: Path, yamnet: Path, birds: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"models:\n  tagger: {{family: yamnet, path: {yamnet}}}\n"
                   f"  birds: {{family: hf, path: {birds}, min_confidence: 0.0, stride_s: 3.0}}\n")
    return cfg


def test_hf_detections_end_with_the_file_and_raven_gives_the_models_band(
    hf_exports: dict[str, Path], yamnet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = hf_exports["wav2vec2"]
    sidecar = read_sidecar(folder)
    assert (sidecar.sample_rate_hz, sidecar.chunk_samples) == (16000, 5 * 16000)  # a 5-s clip at 16 kHz
    labels = len(hf_models.load_labels(folder))
    cfg = _config(tmp_path, yamnet_dir, folder)

    # 6 s: chunks 0-5 and 3-8; the second holds 3 s of audio (>= half the clip): analysed, reported as ending at 6.0
    six = _cut(tmp_path, 6.0)
    assert main(["analyze", str(six), "--config", str(cfg), "--format", "birdnet-csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sorted({(r["Start (s)"], r["End (s)"]) for r in rows}) == [("0.0", "5.0"), ("3.0", "6.0")]
    assert len(rows) == 2 * labels  # min_confidence 0: every label in each chunk

    out = tmp_path / "raven"
    assert main(["analyze", str(six), "--config", str(cfg), "--format", "raven", "--out", str(out)]) == 0
    capsys.readouterr()
    text = (out / "chorus_6s.BirdNET.selection.table.txt").read_text()
    table = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    assert max(float(r["End Time (s)"]) for r in table) == 6.0
    # a 16-kHz model hears up to 8000 Hz, not BirdNET's 15000, whatever the file's rate (44.1 kHz here)
    assert {(r["Low Freq (Hz)"], r["High Freq (Hz)"]) for r in table} == {("0", "8000")}

    # 5 s: the chunk at 3 s would hold 2 s of audio and 3 s of zeros (< half the clip): not analysed
    five = _cut(tmp_path, 5.0)
    assert main(["analyze", str(five), "--config", str(cfg), "--format", "birdnet-csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {(r["Start (s)"], r["End (s)"]) for r in rows} == {("0.0", "5.0")}
