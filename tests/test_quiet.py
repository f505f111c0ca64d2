"""Quiet windows end to end with the real models: digital silence and -90 dBFS hiss are "quiet" (never natural or
industrial, no species) through `soundmond analyze` and the daemon, RECORDER_SILENT is stored once per episode, and the
quiet floor leaves the corpus's natural recordings alone."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import store_rows
from configs import daemon_config

from soundmond.analysis import Analyzer, rms_dbfs
from soundmond.capture.files import FileSource
from soundmond.config import WindowConfig

REPO = Path(__file__).resolve().parent.parent
RATE = 48000
pytestmark = pytest.mark.slow


def hiss(seconds: float, dbfs: float, seed: int = 1) -> np.ndarray:
    """White noise at an RMS of `dbfs`."""
    x = np.random.default_rng(seed).standard_normal(int(seconds * RATE))
    return (x / np.sqrt(np.mean(x**2)) * 10 ** (dbfs / 20)).astype(np.float32)


def write(path: Path, samples: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, RATE, subtype="PCM_24")  # 24 bits: -90 dBFS hiss survives the encoding
    return path


def stamp(unix_s: float) -> str:
    return dt.datetime.fromtimestamp(unix_s, dt.timezone.utc).strftime("%Y%m%d_%H%M%S")


def strict_json(constant: str) -> None:
    raise AssertionError(f"{constant} in JSON output: strict JSON parsers (JavaScript, Go) refuse it")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soundmond.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_analyze_calls_silence_and_hiss_quiet(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path) -> None:
    """2 min of digital zeros and 10 s of -90 dBFS hiss: every window quiet, none natural or industrial, no species,
    the summary's quiet share 1 and no group shares; with the floor off the models do run on the hiss (the contrast:
    the floor, not the recording, makes it quiet)."""
    audio = tmp_path / "audio"
    write(audio / "muted_20240501_120000.flac", np.zeros(120 * RATE, np.float32))
    write(audio / "hiss_20240501_120200.flac", hiss(10, -90))
    cfg = daemon_config(tmp_path, yamnet_dir, birdnet_dir, "alerts: {silent_recorder_s: 60}\n")
    proc = cli("analyze", str(audio), "--config", str(cfg), "--summary")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line, parse_constant=strict_json) for line in proc.stdout.splitlines()]  # no -Infinity
    windows = [r for r in lines if "window_id" in r]
    assert len(windows) == 26
    assert {(r["group"], r["status"]) for r in windows} == {("quiet", "skipped_quiet")}
    assert all(r["species"] == [] and r["group_probabilities"] is None for r in windows)
    hissing = [r for r in windows if Path(r["file"]).name.startswith("hiss")]
    assert len(hissing) == 2 and all(-91 < r["rms_dbfs"] < -89 for r in hissing)
    summary = lines[-1]
    assert summary["analysed"]["windows_quiet"] == 26 and summary["analysed"]["quiet_share"] == 1.0
    assert summary["analysed"]["windows_with_group"] == 0 and summary["analysed"]["shares"] == {}
    silent = [a for a in summary["alerts"] if a["type"] == "RECORDER_SILENT"]
    assert [a["key"] for a in silent] == ["RECORDER_SILENT:1"]  # zeros and hiss are one quiet episode
    assert "rms_dbfs" in proc.stdout.splitlines()[-1]  # the alert's level: digital zeros' -inf dBFS written as null

    (tmp_path / "off").mkdir()
    off = daemon_config(tmp_path / "off", yamnet_dir, birdnet_dir, "windows: {quiet_below_dbfs: null}\n")
    proc = cli("analyze", str(audio / "hiss_20240501_120200.flac"), "--config", str(off))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["status"], r["group"] in ("natural", "industrial", "other")) for r in ran] == [("ok", True)] * 2


def test_the_daemon_stores_quiet_windows_and_one_recorder_silent_per_episode(
    tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, fixture_audio: Path
) -> None:
    """Zeros for 2 min, a bird for 10 s, then hiss and zeros for 2 min: two quiet episodes, each raising
    RECORDER_SILENT once (silent_recorder_s 60), the bird's 10 s end the first (silent_recorder_break_s 10; by default
    a minute of sound does); quiet windows are stored with their group and no probabilities, and the stored aggregate
    carries the quiet share."""
    audio = tmp_path / "audio"
    start = math.floor(time.time()) - 600  # named by their start times, minutes ago: inside the stored 24-h span
    zeros, bird_name, hiss_name = (audio / f"site_{stamp(start + s)}.flac" for s in (0, 120, 130))
    write(zeros, np.zeros(120 * RATE, np.float32))
    bird, rate = sf.read(fixture_audio / "oss_birds_10s.flac", dtype="float32", always_2d=True)
    sf.write(bird_name, bird, rate)
    write(hiss_name, np.concatenate([hiss(10, -90), np.zeros(110 * RATE, np.float32)]))
    alerts = "alerts: {silent_recorder_s: 60, silent_recorder_break_s: 10}\n"
    cfg = daemon_config(tmp_path, yamnet_dir, birdnet_dir, alerts)
    proc = cli("run", "--config", str(cfg), "--source", str(audio))
    assert proc.returncode == 0, proc.stderr[-3000:]
    db = tmp_path / "soundmond.db"
    conn = sqlite3.connect(db)
    try:
        stored = conn.execute('SELECT source, "group", status, p_natural, p_industrial FROM windows').fetchall()
        (aggregate,) = conn.execute("SELECT snapshot FROM aggregates ORDER BY ts_unix_s DESC LIMIT 1").fetchone()
        detections = conn.execute("SELECT w.source FROM detections d JOIN windows w USING (window_id)").fetchall()
    finally:
        conn.close()
    quiet = [w for w in stored if not w[0].endswith(bird_name.name)]
    assert len(quiet) == 48 and {w[1:] for w in quiet} == {("quiet", "skipped_quiet", None, None)}
    assert {w[1] for w in stored if w[0].endswith(bird_name.name)} <= {"natural", "industrial", "other"}
    assert all(src.endswith(bird_name.name) for (src,) in detections)  # species only where there is sound
    alerts = [a for a in store_rows.alerts(db) if a["type"] == "RECORDER_SILENT"]
    assert [(a["key"], a["severity"]) for a in alerts] == [("RECORDER_SILENT:1", "warning"),
                                                           ("RECORDER_SILENT:2", "warning")]
    day = next(s for s in json.loads(aggregate)["spans"] if s["span_s"] == 86400)
    assert day["windows"] == 50 and day["windows_quiet"] == 48 and day["quiet_share"] == 0.96
    assert day["windows_with_group"] == 2 and sum(day["shares"].values()) == pytest.approx(1.0)


def test_the_quiet_floor_leaves_the_corpus_natural_recordings_alone(shared_corpus: Path) -> None:
    """Every 5-s window of the corpus's natural clips is above the default floor (the quietest: -67 dBFS, no DC)."""
    floor = WindowConfig().quiet_below_dbfs
    assert floor is not None
    analyzer = Analyzer(None, None, None, quiet_below_dbfs=floor)
    with (shared_corpus / "labels.csv").open(newline="") as fh:
        natural = [shared_corpus / r["file"] for r in csv.DictReader(fh) if r["group"] == "natural"]
    assert len(natural) > 100
    levels = []
    for w in FileSource(natural, 5.0, 5.0).windows(threading.Event()):
        real = w.samples[: w.samples.shape[0] - w.padded_samples]
        levels.append(rms_dbfs(real))
        assert not analyzer.is_quiet(real, levels[-1]), (w.source, w.start_s, levels[-1])
    assert len(levels) > 250 and min(levels) > floor + 5


@pytest.mark.parametrize(
    ("offset", "signal_dbfs", "level", "quiet"),
    [
        (0.0, None, -math.inf, True),  # digital zeros
        (0.01, None, -math.inf, True),  # a dead microphone behind an ADC offset: a constant is no sound
        (-0.2, None, -math.inf, True),
        (0.01, -90.0, -90.0, True),  # hiss under the floor, on an offset
        (0.3, -40.0, -40.0, False),  # a real sound keeps its level whatever the offset
        (0.0, -40.0, -40.0, False),
    ],
)
def test_a_dc_offset_is_not_sound(offset: float, signal_dbfs: float | None, level: float, quiet: bool) -> None:
    """A file's DC offset neither raises its level nor hides its silence (the microphone path removes DC itself)."""
    samples = np.full(5 * RATE, offset, np.float32)
    if signal_dbfs is not None:
        samples += hiss(5, signal_dbfs)
    measured = rms_dbfs(samples)
    assert measured == pytest.approx(level, abs=0.05) if math.isfinite(level) else measured == level
    assert Analyzer(None, None, None, quiet_below_dbfs=-75.0).is_quiet(samples, measured) is quiet
    assert Analyzer(None, None, None, quiet_below_dbfs=None).is_quiet(samples, measured) is (signal_dbfs is None)
