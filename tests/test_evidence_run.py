"""Evidence clips through `soundmond run --source <file>` with the real models on real recordings: what is saved equals
the source samples, lengths follow the pads (clamped at the file's edges, cut at a speech window), the store row names
the file (size, SHA-256), a window YAMNet hears as human voice is never saved, and a replay writes no second clip."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from configs import daemon_config

REPO = Path(__file__).resolve().parent.parent
SPINETAIL = REPO / "tests" / "fixtures" / "audio" / "maad_spinetail_Cranioleuca_erythrops.flac"
CRYING_BABY = "audio/other/esc50_crying_baby_1-187207-A-20.flac"  # YAMNet: speech score 0.39 (mean pooling)
PAD_S = 1.5
VOICE = (10.0, 15.0)  # where the crying baby sits in the test recording (seconds)


def evidence_rows(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM evidence ORDER BY start_s, event_id")]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory, shared_corpus: Path) -> tuple[Path, np.ndarray]:
    """Spinetail 0-10 s, a crying baby (5 s), spinetail 10-19.5 s: one 44.1-kHz 16-bit recording."""
    bird, rate = sf.read(SPINETAIL, dtype="float32")
    voice, voice_rate = sf.read(shared_corpus / CRYING_BABY, dtype="float32")
    assert rate == voice_rate == 44100
    split = int(VOICE[0] * rate)
    audio = np.concatenate([bird[:split], voice[: int(5.0 * rate)], bird[split:]])
    path = tmp_path_factory.mktemp("evidence") / "bird_voice_bird.wav"
    sf.write(path, audio, rate, subtype="PCM_16")
    return path, sf.read(path, dtype="float32")[0]


def run(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "soundmond.cli", "run", "--config", str(cfg), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_clips_are_the_source_samples_and_never_the_voice(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path,
                                                         recording: tuple[Path, np.ndarray]) -> None:
    path, source = recording
    rate = 44100
    evidence = tmp_path / "evidence"
    cfg = daemon_config(tmp_path, yamnet_dir, birdnet_dir,
                        f"evidence: {{enabled: true, path: {evidence}, pad_s: {PAD_S}, min_confidence: 0.1}}\n")
    run(cfg, "--source", str(path))
    db = tmp_path / "soundmond.db"
    everything = evidence_rows(db)
    rows = [r for r in everything if r["status"] == "written"]
    assert rows, "no clip was written"
    for skipped in (r for r in everything if r["status"] == "skipped"):  # only the voice keeps a clip from being kept
        assert skipped["reason"] == "speech" and VOICE[0] <= skipped["event_start_s"] < VOICE[1], skipped
    files = sorted(p.relative_to(evidence).as_posix() for p in evidence.rglob("*.flac"))
    assert files == sorted(r["path"] for r in rows)
    detections = set(sqlite3.connect(db).execute("SELECT window_id, scientific_name FROM detections").fetchall())
    end_of_file = source.shape[0] / rate
    for row in rows:
        clip_file = evidence / row["path"]
        assert row["bytes"] == clip_file.stat().st_size
        assert row["sha256"] == hashlib.sha256(clip_file.read_bytes()).hexdigest()
        assert Path(row["path"]).stem == row["event_id"]
        if row["kind"] == "detection":
            assert (row["window_id"], row["label"]) in detections  # the store's join: window + species
        clip, clip_rate = sf.read(clip_file, dtype="float32")
        assert clip_rate == rate and clip.ndim == 1
        first = round(row["start_s"] * rate)
        np.testing.assert_array_equal(clip, source[first:first + clip.shape[0]])  # lossless: the very samples
        assert row["end_s"] == pytest.approx(row["start_s"] + clip.shape[0] / rate)
        # never a sample of the voice
        assert row["end_s"] <= VOICE[0] + 1e-9 or row["start_s"] >= VOICE[1] - 1e-9, row
        # the event plus the pads, clamped at the file's edges, cut short only at the voice
        want_start = max(0.0, row["event_start_s"] - PAD_S)
        want_end = min(end_of_file, row["event_end_s"] + PAD_S)
        if row["privacy"] == "clear":
            assert row["start_s"] == pytest.approx(want_start, abs=1 / rate)
            assert row["end_s"] == pytest.approx(want_end, abs=1 / rate)
        else:
            assert row["privacy"] == "trimmed"
            assert (row["start_s"] == pytest.approx(VOICE[1], abs=1 / rate)
                    or row["end_s"] == pytest.approx(VOICE[0], abs=1 / rate))
    assert not any(VOICE[0] <= r["event_start_s"] < VOICE[1] for r in rows)
    assert any(r["privacy"] == "trimmed" for r in rows)  # a pad reached the voice and was cut there

    # the same recording again (--reanalyze): the same event ids, the same files, nothing written twice
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in evidence.rglob("*.flac")}
    second = run(cfg, "--source", str(path), "--reanalyze")
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in evidence.rglob("*.flac")}
    assert after == before
    assert "evidence clip" in second.stderr
    unchanged = [{k: v for k, v in r.items() if k != "changed_unix_s"} for r in everything]
    assert [{k: v for k, v in r.items() if k != "changed_unix_s"} for r in evidence_rows(db)] == unchanged


def test_analyze_writes_the_clips_its_records_name(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path) -> None:
    """`analyze --evidence DIR`: the records name each clip's path by event id, the summary lists what was written
    (size, SHA-256 of the file), and every named clip is either in DIR or counted as skipped."""
    cfg = daemon_config(tmp_path, yamnet_dir, birdnet_dir, "evidence: {pad_s: 1.0, min_confidence: 0.1}\n")
    out_dir = tmp_path / "clips"
    proc = subprocess.run([sys.executable, "-m", "soundmond.cli", "analyze", str(SPINETAIL), "--config", str(cfg),
                           "--evidence", str(out_dir), "--summary"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    named = {event: path for rec in lines[:-1] for event, path in rec["evidence"].items()}
    summary = lines[-1]["evidence"]
    written = {c["event_id"]: c for c in summary["clips"]}
    assert written and set(written) <= set(named)
    assert len(named) - len(written) == sum(summary["skipped"].get(k, 0) for k in ("speech", "per_species_hour"))
    source, rate = sf.read(SPINETAIL, dtype="float32")
    for event_id, clip in written.items():
        assert clip["path"] == named[event_id]
        data = (out_dir / clip["path"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (clip["bytes"], clip["sha256"])
        samples, clip_rate = sf.read(out_dir / clip["path"], dtype="float32")
        first = round(clip["start_s"] * rate)
        assert clip_rate == rate
        np.testing.assert_array_equal(samples, source[first:first + samples.shape[0]])
    assert f"{len(written)} evidence clips written to {out_dir}" in proc.stderr


def test_export_lists_the_clips(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path) -> None:
    """`soundmond export --what evidence`: the evidence table as CSV, every row the store holds."""
    evidence = tmp_path / "evidence"
    cfg = daemon_config(tmp_path, yamnet_dir, birdnet_dir,
                        f"evidence: {{enabled: true, path: {evidence}, min_confidence: 0.1}}\n")
    run(cfg, "--source", str(SPINETAIL))
    db = tmp_path / "soundmond.db"
    proc = subprocess.run([sys.executable, "-m", "soundmond.cli", "export", "--store", str(db), "--what", "evidence",
                           "--format", "csv"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    exported = list(csv.DictReader(io.StringIO(proc.stdout)))
    stored = evidence_rows(db)
    assert stored and sorted(r["event_id"] for r in exported) == sorted(r["event_id"] for r in stored)
    assert {r["path"]: r["sha256"] for r in exported} == {r["path"]: r["sha256"] or "" for r in stored}
