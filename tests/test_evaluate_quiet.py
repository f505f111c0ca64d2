"""`soundmond evaluate` applies the daemon's quiet decision (`soundmond.analysis.is_quiet`): windows of digital silence
or under the quiet floor are not scored (the daemon runs no model on them), they are counted per group and per file,
and a file that is quiet throughout is named in a warning. Real YAMNet, the shipped head, real corpus clips."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from soundmond.analysis import rms_dbfs
from soundmond.cli import main
from tests.configs import daemon_config

RATE = 16000


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "group"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _audio(tmp_path: Path, shared_corpus: Path) -> tuple[Path, list[dict[str, str]]]:
    with open(shared_corpus / "labels.csv", newline="") as fh:
        corpus = list(csv.DictReader(fh))
    rain = next(r for r in corpus if r["category"] == "rain")
    saw = next(r for r in corpus if r["category"] == "chainsaw")
    root = tmp_path / "audio"
    root.mkdir()
    shutil.copy(shared_corpus / rain["file"], root / "rain.flac")
    shutil.copy(shared_corpus / saw["file"], root / "saw.flac")
    sf.write(root / "zeros.wav", np.zeros(60 * RATE, dtype=np.int16), RATE, subtype="PCM_16")  # a muted recorder
    hiss = np.random.default_rng(3).standard_normal(10 * RATE)
    hiss *= 10 ** (-90 / 20) / np.sqrt(np.mean(hiss**2))
    sf.write(root / "hiss.wav", hiss.astype(np.float32), RATE, subtype="FLOAT")  # -90 dBFS: not digital silence
    assert abs(rms_dbfs(sf.read(root / "hiss.wav", dtype="float32")[0]) + 90) < 0.1
    assert np.abs(sf.read(root / "hiss.wav", dtype="float32")[0]).max() > 1 / 32768
    samples, rate = sf.read(root / "rain.flac", dtype="float32")
    five_s = samples[: 5 * rate]
    sf.write(root / "rain_then_zeros.wav", np.concatenate([five_s, np.zeros_like(five_s)]), rate, subtype="FLOAT")
    rows = [{"file": "rain.flac", "group": "natural"}, {"file": "saw.flac", "group": "industrial"},
            {"file": "zeros.wav", "group": "natural"}, {"file": "hiss.wav", "group": "industrial"},
            {"file": "rain_then_zeros.wav", "group": "natural"}]
    return root, rows


def _evaluate(capsys: pytest.CaptureFixture[str], labels: Path, root: Path, out: Path,
              *models: str) -> tuple[pytest.CaptureResult[str], dict[str, Any]]:
    """`soundmond evaluate` of the groups (no species); asserts exit 0 (a quiet file is a warning, not a failed row)
    and returns what it printed and report.json's `groups`."""
    code = main(["evaluate", "--labels", str(labels), "--audio-root", str(root), "--out", str(out), *models,
                 "--no-species", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured, json.loads((out / "report.json").read_text())["groups"]


@pytest.mark.shared
def test_quiet_windows_are_not_scored_and_are_reported(
    tmp_path: Path, shared_corpus: Path, yamnet_dir: Path, birdnet_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    root, rows = _audio(tmp_path, shared_corpus)
    labels = tmp_path / "labels.csv"
    _write_csv(labels, rows)
    out = tmp_path / "report"
    captured, gr = _evaluate(capsys, labels, root, out, "--tagger", str(yamnet_dir))
    assert "warning: zeros.wav: all 12 windows are quiet" in captured.err
    assert "warning: hiss.wav: all 2 windows are quiet" in captured.err and "-75 dBFS" in captured.err
    assert "rain.flac" not in captured.err and "rain_then_zeros" not in captured.err
    quiet = gr["quiet"]
    assert quiet["below_dbfs"] == -75.0  # the daemon's default floor
    assert quiet["windows"] == 12 + 2 + 1 and quiet["per_group"] == {"industrial": 2, "natural": 13}
    assert quiet["files_entirely_quiet"] == ["hiss.wav", "zeros.wav"] and len(gr["warnings"]) == 2
    # only the three loud windows are scored: the rain clip, the chainsaw and the rain half of the mixed file
    assert gr["windows"] == 3 and gr["files"] == 3
    assert sum(map(sum, gr["confusion_matrix"]["rows_true_columns_predicted"])) == 3
    per_file = {r["file"]: (r["windows"], r["quiet_windows"], r["scored_windows"]) for r in gr["per_file"]}
    assert per_file == {"rain.flac": (1, 0, 1), "saw.flac": (1, 0, 1), "zeros.wav": (12, 12, 0),
                        "hiss.wav": (2, 2, 0), "rain_then_zeros.wav": (2, 1, 1)}
    with open(out / "group_files.csv", newline="") as fh:
        assert {r["file"]: int(r["quiet_windows"]) for r in csv.DictReader(fh)} == {
            f: q for f, (_, q, _) in per_file.items()}
    with open(out / "group_errors.csv", newline="") as fh:
        assert not {r["file"] for r in csv.DictReader(fh)} & {"zeros.wav", "hiss.wav"}
    md = (out / "report.md").read_text()
    assert "quiet windows (not scored): 15" in md and "**warning**: zeros.wav" in md
    assert json.loads(captured.out)["groups"]["quiet_windows"] == 15

    # the config's floor: null = only digital silence is quiet, so the -90 dBFS hiss is scored
    (tmp_path / "cfg").mkdir()
    cfg = daemon_config(tmp_path / "cfg", yamnet_dir, birdnet_dir, "windows: {quiet_below_dbfs: null}\n")
    captured, gr = _evaluate(capsys, labels, root, tmp_path / "report2", "--config", str(cfg))
    assert gr["quiet"]["below_dbfs"] is None and gr["quiet"]["files_entirely_quiet"] == ["zeros.wav"]
    assert gr["quiet"]["windows"] == 13 and gr["windows"] == 5
    assert "hiss.wav" not in captured.err and "warning: zeros.wav" in captured.err


@pytest.mark.shared
def test_only_quiet_files_give_a_report_that_says_so(
    tmp_path: Path, shared_corpus: Path, yamnet_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    root, rows = _audio(tmp_path, shared_corpus)
    labels = tmp_path / "labels.csv"
    _write_csv(labels, [r for r in rows if r["file"] in ("zeros.wav", "hiss.wav")])
    out = tmp_path / "report"
    _, gr = _evaluate(capsys, labels, root, out, "--tagger", str(yamnet_dir))
    assert gr["windows"] == 0 and gr["quiet"]["windows"] == 14
    md = (out / "report.md").read_text()
    assert "No window with a group was scored" in md and "quiet windows (not scored): 14" in md
    assert not (out / "group_errors.csv").exists() and (out / "group_files.csv").is_file()
