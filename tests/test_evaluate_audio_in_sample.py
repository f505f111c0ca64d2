"""`soundmond evaluate` knows a head's training audio in another container (issue 15: "evaluate calls its own
training data out-of-sample"): a small head trained through the real `train-head` path (real YAMNet, fixtures and a
corpus ESC-50 clip) records every training file's audio hash; a WAV re-encoding of its FLAC training clip is then
in-sample by audio, a gain-changed or resampled copy out-of-sample, and a head without audio hashes keeps deciding by
the bytes alone."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundmond.capture.audio import resample
from soundmond.cli import main
from soundmond.head.loader import Head
from soundmond.head.save import save_head
from soundmond.head.skops import load_skops
from soundmond.identity import file_sha256
from soundmond.workbench.audio_hash import audio_sha256

RAIN = "audio/natural/esc50_rain_1-17367-A-10.flac"  # a FLAC copy of ESC-50's 1-17367-A-10.wav


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    fields = ["file", "group", "category", "original_id", "source_repo", "source_path"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _train_small_head(tmp_path: Path, shared_corpus: Path, fixture_audio: Path, yamnet_dir: Path,
                      capsys: pytest.CaptureFixture[str]) -> Path:
    """The fixtures, a second 'other' source and the corpus's rain clip, through `soundmond train-head`."""
    root = tmp_path / "train"
    shutil.copytree(fixture_audio, root)
    with open(fixture_audio / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    night = "maad_jura_forest_night_20190522_0000.flac"
    shutil.copy(root / night, root / "night_copy.flac")  # grouped CV needs two sources per group
    rows.append({"file": "night_copy.flac", "group": "other", "category": "quiet_background"})
    with open(shared_corpus / "labels.csv", newline="") as fh:
        rain = next(r for r in csv.DictReader(fh) if r["file"] == RAIN)
    (root / RAIN).parent.mkdir(parents=True)
    shutil.copy(shared_corpus / RAIN, root / RAIN)
    rows.append(rain)
    _write_csv(root / "labels.csv", rows)
    out = tmp_path / "heads" / "small.onnx"
    code = main(["train-head", "--labels", str(root / "labels.csv"), "--out", str(out), "--tagger", str(yamnet_dir),
                 "--features", "probs", "--folds", "2", "--models", "logreg_C0.1", "--no-cache", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    meta = Head.load(out).meta
    assert len(meta.training_audio_sha256) == len(meta.training_files_sha256) == len(rows) == 10
    assert meta.training_audio_sha256[RAIN] == audio_sha256(shared_corpus / RAIN)
    report = json.loads((tmp_path / "heads" / "small-report" / "report.json").read_text())
    assert report["data"]["training_audio_sha256"] == meta.training_audio_sha256
    assert report["data"]["training_files_sha256"] == meta.training_files_sha256
    return out


def _evaluate(tmp_path: Path, root: Path, rows: list[dict[str, str]], head: Path, yamnet_dir: Path, name: str,
              capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, object], Path]:
    labels = tmp_path / f"{name}.csv"
    _write_csv(labels, rows)
    out = tmp_path / f"report-{name}"
    code = main(["evaluate", "--labels", str(labels), "--audio-root", str(root), "--out", str(out), "--head", str(head),
                 "--tagger", str(yamnet_dir), "--no-species", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads((out / "report.json").read_text())["groups"], out


@pytest.mark.shared
def test_reencoded_training_clip_is_in_sample_by_audio(
    tmp_path: Path, shared_corpus: Path, fixture_audio: Path, yamnet_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    head = _train_small_head(tmp_path, shared_corpus, fixture_audio, yamnet_dir, capsys)
    root = tmp_path / "eval"
    root.mkdir()
    shutil.copy(shared_corpus / RAIN, root / "rain.flac")  # the training file's own bytes
    samples, rate = sf.read(str(shared_corpus / RAIN), dtype="int16")
    sf.write(str(root / "rain.wav"), samples, rate, subtype="PCM_16")  # as `collect esc50` gives it: same samples
    assert file_sha256(root / "rain.wav") != file_sha256(root / "rain.flac")
    quieter = np.round(samples.astype(np.float64) * 0.5).astype(np.int16)  # -6 dB: other audio
    sf.write(str(root / "rain_gain.wav"), quieter, rate, subtype="PCM_16")
    at_22k = resample((samples / 32768.0).astype(np.float32), rate, 22050)
    sf.write(str(root / "rain_22k.wav"), at_22k, 22050, subtype="PCM_16")
    rows = [{"file": f, "group": "natural"} for f in ("rain.flac", "rain.wav", "rain_gain.wav", "rain_22k.wav")]

    gr, out = _evaluate(tmp_path, root, rows, head, yamnet_dir, "r", capsys)
    assert gr["in_sample"] == "partial"
    assert gr["in_sample_files"] == {"in": 2, "out": 2, "files_in": ["rain.flac", "rain.wav"], "by_audio": 1,
                                     "files_by_audio": ["rain.wav"]}
    assert "decoded audio" in gr["in_sample_basis"]
    assert gr["in_sample_part"]["windows"] == gr["out_of_sample_part"]["windows"] == 2  # 5-s clips
    with open(out / "group_files.csv", newline="") as fh:
        by = {r["file"]: (r["in_sample"], r["in_sample_by"]) for r in csv.DictReader(fh)}
    assert by == {"rain.flac": ("True", "bytes"), "rain.wav": ("True", "audio"), "rain_gain.wav": ("False", ""),
                  "rain_22k.wav": ("False", "")}
    md = (out / "report.md").read_text()
    assert "known by their audio only" in md and "rain.wav" in md

    # the WAV alone: in-sample, and said to be so by its audio
    gr, _ = _evaluate(tmp_path, root, rows[1:2], head, yamnet_dir, "wav", capsys)
    assert gr["in_sample"] is True and gr["in_sample_files"]["files_by_audio"] == ["rain.wav"]

    # the same head without audio hashes (a head trained before them): the bytes alone decide, as before
    model, meta = load_skops(head.with_suffix(".skops"), head.with_suffix(".skops").read_bytes())
    old = save_head(tmp_path / "old" / "old.onnx", model, dataclasses.replace(meta, training_audio_sha256={})).onnx
    assert Head.load(old).meta.training_audio_sha256 == {}
    gr, _ = _evaluate(tmp_path, root, rows[:2], old, yamnet_dir, "old", capsys)
    assert gr["in_sample"] == "partial" and gr["in_sample_files"]["files_in"] == ["rain.flac"]
    assert gr["in_sample_files"]["by_audio"] == 0 and "records no audio hashes" in gr["in_sample_basis"]
