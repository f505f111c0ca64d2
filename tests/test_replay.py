"""Deterministic identity and recognised replays, on real recordings, real models and a real SQLite store.

Window ids derive from the station, the recording's content, the window settings and the offset; event ids from
the window and what they report. A folder replayed twice into one store adds nothing the second time and says so;
`--reanalyze` replaces; a daemon SIGKILLed mid-replay and restarted stores exactly a clean run's windows.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from soundmond.analysis import build_session
from soundmond.capture.files import FileSource
from soundmond.config import load_config
from soundmond.data import AudioWindow
from soundmond.identity import file_sha256, file_source_identity, mic_source_identity, window_id
from tests.mqtt_rig import Broker, Collector, child_env, mosquitto_available, publisher_command
from tests.recordings import distinct_copies

REPO = Path(__file__).resolve().parent.parent
SPINETAIL = "maad_spinetail_Cranioleuca_erythrops.flac"  # 4 windows of 5 s
BIRDS = "oss_birds_10s.flac"
STATION = "replay"


def windows(paths: list[Path], window_s: float = 5.0, hop_s: float = 5.0, **kw: Any) -> list[AudioWindow]:
    return list(FileSource(paths, window_s, hop_s, **kw).windows(threading.Event()))


def ids(paths: list[Path], **kw: Any) -> list[str]:
    return [w.window_id for w in windows(paths, **kw)]


def test_window_ids_derive_from_content_offset_settings_and_station(tmp_path: Path, fixture_audio: Path) -> None:
    spinetail = fixture_audio / SPINETAIL
    renamed = tmp_path / "elsewhere" / "renamed.flac"
    renamed.parent.mkdir()
    shutil.copy(spinetail, renamed)
    first = ids([spinetail], station="s1")
    assert len(first) == 4 and all(len(i) == 32 and int(i, 16) >= 0 for i in first)
    assert ids([spinetail], station="s1") == first  # the same recording analysed twice
    assert ids([renamed], station="s1") == first  # by content, not by name
    assert len(set(first)) == 4  # every offset its own id
    assert not set(first) & set(ids([fixture_audio / BIRDS], station="s1"))  # another recording
    assert not set(first) & set(ids([spinetail], station="s2"))  # another station
    assert not set(first) & set(ids([spinetail], station="s1", hop_s=2.5))  # other window settings
    assert not set(first) & set(ids([spinetail], station="s1", channel=0))  # a chosen channel, not the mix
    birdnet, other = {"tagger": "yamnet", "birds": "birdnet a"}, {"tagger": "yamnet", "birds": "hf b"}
    by_birdnet = ids([spinetail], station="s1", models=birdnet)
    assert ids([renamed], station="s1", models=dict(birdnet)) == by_birdnet  # the same models, the same ids
    assert not set(by_birdnet) & set(ids([spinetail], station="s1", models=other))  # another bird model
    assert not set(by_birdnet) & set(first)


def test_a_microphone_never_shares_an_id_with_a_file(fixture_audio: Path) -> None:
    sha = file_sha256(fixture_audio / SPINETAIL)
    same_numbers = ("s1", 160_000, 160_000, 32_000, 0)
    file_id = window_id(same_numbers[0], file_source_identity(sha, None), *same_numbers[1:])
    session_1, session_2 = mic_source_identity("default"), mic_source_identity("default")
    assert session_1 != session_2  # a capture session per source made (per daemon start)
    mic_ids = {window_id(same_numbers[0], s, *same_numbers[1:]) for s in (session_1, session_2)}
    assert len(mic_ids) == 2 and file_id not in mic_ids
    # a device named like a file's identity still is a microphone
    assert mic_source_identity(f"file:{sha}:mix", "x") != file_source_identity(sha, None)


def test_event_ids_are_equal_across_two_analyses(fixture_audio: Path, yamnet_dir: Path, birdnet_dir: Path,
                                                 tmp_path: Path) -> None:
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n"
                        f"  birds: {{path: {birdnet_dir}, min_confidence: 0.1}}\n")

    def analyse() -> tuple[list[str], list[str]]:
        loaded = load_config(cfg_path)
        session = build_session(loaded)
        detections: list[str] = []
        alerts: list[str] = []
        try:
            for w in windows([fixture_audio], station=loaded.config.station.id):
                analysis, raised = session.process(w, now=w.start_unix_s + w.duration_s)
                detections += [f"{w.window_id}:{s.scientific_name}" for s in analysis.result.species]
                alerts += [a.alert_id for a in raised]
        finally:
            session.close()
        return detections, alerts

    first, second = analyse(), analyse()
    assert first == second
    assert first[0] and first[1]  # detections and alerts there were
    assert len(set(first[1])) == len(first[1])


# ---------------------------------------------------------------- replays into a store (subprocesses)


def write_config(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, mqtt_port: int | None = None) -> Path:
    """A station that publishes to `mqtt_port`; without one, to a broker that is down (a port nothing listens on):
    its detections and alerts wait in the outbox, which is what these tests count (with MQTT off nothing is queued)."""
    cfg = tmp_path / "config.yaml"
    if mqtt_port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            down = probe.getsockname()[1]
        mqtt = (f"mqtt: {{enabled: true, host: 127.0.0.1, port: {down}, reconnect_min_s: 0.2, "
                "reconnect_max_s: 1.0, drain_timeout_s: 0}\n")
    else:
        mqtt = (f"mqtt: {{enabled: true, host: 127.0.0.1, port: {mqtt_port}, reconnect_min_s: 0.2, "
                "reconnect_max_s: 1.0}\n")
    cfg.write_text(
        f"station: {{id: {STATION}}}\n"
        f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n  birds: {{path: {birdnet_dir}}}\n"
        f"store: {{path: {tmp_path / 'soundmond.db'}, flush_interval_s: 0.2}}\n" + mqtt
    )
    return cfg


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the daemon has not created the tables yet
        return []
    finally:
        conn.close()


def stored(db: Path) -> dict[str, Any]:
    return {
        "windows": query(db, "SELECT window_id FROM windows ORDER BY window_id"),
        "detections": query(db, "SELECT window_id, scientific_name FROM detections ORDER BY 1, 2"),
        "detection_events": query(db, "SELECT event_id FROM outbox WHERE kind = 'detection' ORDER BY 1"),
    }


def soundmond(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soundmond.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_a_folder_replayed_twice_adds_nothing_the_second_time(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path,
                                                              fixture_audio: Path) -> None:
    cfg = write_config(tmp_path, yamnet_dir, birdnet_dir)
    db = tmp_path / "soundmond.db"
    first = soundmond("run", "--config", cfg, "--source", fixture_audio)
    assert first.returncode == 0, first.stderr[-3000:]
    after_first = stored(db)
    assert len(after_first["windows"]) == 15 and after_first["detections"]
    assert len(after_first["detection_events"]) == len(after_first["detections"])
    figures_first = last_aggregate(db)

    second = soundmond("run", "--config", cfg, "--source", fixture_audio)
    assert second.returncode == 0, second.stderr[-3000:]
    assert stored(db) == after_first  # 0 windows, 0 detections, 0 events added
    assert "8 files already analysed, skipped" in second.stderr
    # the second run's aggregate counts each window once: the restored windows, nothing replayed on top
    assert last_aggregate(db) == figures_first

    stamp = query(db, "SELECT max(stored_unix_s) FROM windows")[0][0]
    third = soundmond("run", "--config", cfg, "--source", fixture_audio, "--reanalyze")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "8 analysed again (--reanalyze: earlier rows replaced)" in third.stderr
    assert stored(db) == after_first  # replaced, not appended
    assert query(db, "SELECT min(stored_unix_s) FROM windows")[0][0] > stamp
    assert last_aggregate(db) == figures_first  # the replaced windows left the aggregate before it was restored


def last_aggregate(db: Path) -> list[tuple[int, int]]:
    """(span_s, windows) of the newest stored aggregate."""
    (snapshot,) = query(db, "SELECT snapshot FROM aggregates ORDER BY id DESC LIMIT 1")[0]
    return [(s["span_s"], s["windows"]) for s in json.loads(snapshot)["spans"]]


def test_analyze_store_twice_adds_nothing_and_reanalyze_replaces(tmp_path: Path, yamnet_dir: Path,
                                                                  birdnet_dir: Path, fixture_audio: Path) -> None:
    cfg = write_config(tmp_path, yamnet_dir, birdnet_dir)
    db = tmp_path / "analysed.db"
    first = soundmond("analyze", fixture_audio, "--config", cfg, "--store", db)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(first.stdout.splitlines()) == 15
    assert "15 windows stored" in first.stderr
    before = stored(db)
    alerts = query(db, "SELECT alert_id FROM alerts ORDER BY 1")
    assert len(before["windows"]) == 15 and before["detections"] and alerts

    again = soundmond("analyze", fixture_audio, "--config", cfg, "--store", db)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout == ""  # nothing analysed
    assert "0 windows stored; 8 files already analysed, skipped" in again.stderr
    assert stored(db) == before and query(db, "SELECT alert_id FROM alerts ORDER BY 1") == alerts

    stamp = query(db, "SELECT max(stored_unix_s) FROM windows")[0][0]
    time.sleep(0.05)
    redo = soundmond("analyze", fixture_audio, "--config", cfg, "--store", db, "--reanalyze")
    assert redo.returncode == 0, redo.stderr[-3000:]
    assert "8 analysed again (--reanalyze: earlier rows replaced)" in redo.stderr
    assert stored(db) == before  # the same ids, once each: replaced, not appended
    assert query(db, "SELECT alert_id FROM alerts ORDER BY 1") == alerts
    assert query(db, "SELECT min(stored_unix_s) FROM windows")[0][0] > stamp  # every row written anew

    refused = soundmond("analyze", fixture_audio, "--config", cfg, "--reanalyze")
    assert refused.returncode == 2 and "--store" in refused.stderr


@pytest.mark.slow
@pytest.mark.skipif(mosquitto_available() is not None, reason=mosquitto_available() or "")
def test_a_replay_sigkilled_midway_and_restarted_stores_and_publishes_a_clean_runs_events(
    tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, fixture_audio: Path
) -> None:
    folder = distinct_copies(fixture_audio, tmp_path / "recordings", 2)  # 16 recordings, 30 windows
    clean_dir, crash_dir = tmp_path / "clean", tmp_path / "crash"
    clean_dir.mkdir()
    crash_dir.mkdir()
    clean_cfg = write_config(clean_dir, yamnet_dir, birdnet_dir)
    clean = soundmond("run", "--config", clean_cfg, "--source", folder)
    assert clean.returncode == 0, clean.stderr[-3000:]
    expected = stored(clean_dir / "soundmond.db")
    assert len(expected["windows"]) == 30 and expected["detection_events"]

    broker = Broker(tmp_path / "broker").start()
    collector = Collector(broker.port, [f"soundmond/{STATION}/detections"], client_id="replay-verifier")
    drain: subprocess.Popen[str] | None = None
    crash_cfg = write_config(crash_dir, yamnet_dir, birdnet_dir, mqtt_port=broker.port)
    db = crash_dir / "soundmond.db"
    log = crash_dir / "daemon.log"
    try:
        with open(log, "w") as err:  # real-time pace: a window every 5 s, so the kill lands mid-replay
            proc = subprocess.Popen([sys.executable, "-m", "soundmond.cli", "run", "--config", str(crash_cfg),
                                     "--source", str(folder), "--realtime"], cwd=REPO, stderr=err, text=True)
        try:
            deadline = time.monotonic() + 120
            while len(query(db, "SELECT window_id FROM windows")) < 3:  # the first recording has 2 windows
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        partial = stored(db)
        assert 3 <= len(partial["windows"]) < 30

        restarted = soundmond("run", "--config", crash_cfg, "--source", folder)
        assert restarted.returncode == 0, restarted.stderr[-3000:]
        assert "already analysed, skipped" in restarted.stderr
        if len(partial["windows"]) == 3:  # killed inside the second recording (2 windows): it resumes at its second
            assert "1 resumed at 5 s" in restarted.stderr, restarted.stderr[-3000:]
        after = stored(db)
        assert after == expected  # the same windows, detections and detection event ids as the clean run
        window_ids = query(db, "SELECT window_id FROM windows")
        assert len(window_ids) == len(set(window_ids)) == 30

        # what is still unsent goes out through a publisher on the same store (draining at exit is not this test's)
        drain = subprocess.Popen(publisher_command(db, broker.port, STATION), cwd=REPO, env=child_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        want = {eid for (eid,) in expected["detection_events"]}

        def received() -> set[str]:
            return {json.loads(m.payload)["event_id"] for m in collector.messages}

        assert collector.wait_for(lambda _: want <= received(), 60), f"missing {len(want - received())}"
        assert received() == want  # the clean run's detection event ids, whatever the crash
    finally:
        if drain is not None:
            drain.send_signal(signal.SIGTERM)
            drain.wait(timeout=30)
        collector.close()
        broker.stop()
