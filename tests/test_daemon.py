"""`soundmond run`: the whole daemon on real models and real recordings; shutdown, sd_notify, falling behind."""

from __future__ import annotations

import json
import os
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
import soundfile as sf
import store_rows
from configs import daemon_config
from fakes import SlowTagger

from soundmond.analysis import build_session
from soundmond.capture.files import FileSource
from soundmond.config import load_config
from soundmond.data import AlertType
from soundmond.head.loader import load_head
from soundmond.models.birds import BirdnetModel
from soundmond.models.taggers import YamnetTagger
from soundmond.outputs.store import Store, StoreWriter
from soundmond.pipeline import Daemon
from soundmond.protocols import Tagger
from soundmond.sdnotify import Notifier

REPO = Path(__file__).resolve().parent.parent


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def stored_windows(db: Path) -> int:
    """Windows in the store, 0 while the daemon has not created it yet."""
    try:
        return int(rows(db, "SELECT count(*) FROM windows")[0][0]) if db.exists() else 0
    except sqlite3.OperationalError:
        return 0


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_run_replays_recordings_into_the_store(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path,
                                               fixture_audio: Path) -> None:
    cfg = daemon_config(tmp_path, yamnet_dir, birdnet_dir)
    proc = subprocess.run([sys.executable, "-m", "soundmond.cli", "run", "--config", str(cfg), "--source",
                           str(fixture_audio)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    db = tmp_path / "soundmond.db"
    windows = rows(db, "SELECT source, start_s, status, \"group\" FROM windows ORDER BY source, start_s")
    assert len(windows) == 15 and {w[2] for w in windows} == {"ok"}
    groups = {(Path(w[0]).name, w[1]): w[3] for w in windows}
    assert groups[("whisp_field_horn.flac", 0.0)] == "industrial"
    assert groups[("maad_jura_forest_20190522_0600.flac", 0.0)] == "natural"
    species = rows(db, "SELECT scientific_name FROM detections")
    assert ("Cranioleuca erythrops",) in species
    # MQTT is off here: nothing is queued for a publisher that will never run (the outbox would fill and keep its
    # alerts from retention forever), while the alerts themselves are stored
    assert rows(db, "SELECT count(*) FROM outbox")[0][0] == 0
    assert rows(db, "SELECT count(*) FROM alerts")[0][0] >= 1
    assert rows(db, "SELECT count(*) FROM aggregates")[0][0] >= 1


def test_sigterm_stops_capture_first_and_flushes(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path,
                                                 fixture_audio: Path) -> None:
    cfg = daemon_config(tmp_path, yamnet_dir, birdnet_dir)
    db = tmp_path / "soundmond.db"
    proc = subprocess.Popen([sys.executable, "-m", "soundmond.cli", "run", "--config", str(cfg), "--source",
                             str(fixture_audio), "--realtime"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: stored_windows(db) >= 2, 60, "two stored windows")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM received" in err
    stored = rows(db, "SELECT count(*) FROM windows")[0][0]
    assert 2 <= stored < 15  # stopped early, and nothing analysed was lost


def run_cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soundmond.cli", "run", "--config", str(cfg), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_a_restart_within_the_cooldown_does_not_raise_the_alert_again(
    tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, fixture_audio: Path
) -> None:
    """The wind recording raises UNKNOWN_SOUND (no tag nor bird reaches 0.3; the head's own guard is off here: the
    head calls the wind natural confidently, which by default counts as recognised). A second run on another recording
    that raises it too (the same wind 1 dB quieter: other content, other name), seconds later and so inside the 3600-s
    cooldown, takes over the stored alert state and does not raise it again: the alert is stored once."""
    models_only = "alerts: {unknown_sound_head_below: null}\n"
    cfg = daemon_config(tmp_path, yamnet_dir, birdnet_dir, models_only)
    db = tmp_path / "soundmond.db"
    wind = fixture_audio / "whisp_field_wind.flac"
    audio, rate = sf.read(wind, dtype="float32")
    quieter = tmp_path / "other" / "wind_quieter.flac"
    quieter.parent.mkdir()
    sf.write(quieter, audio * 10 ** (-1 / 20), rate)

    first = run_cli(cfg, "--source", str(wind))
    assert first.returncode == 0, first.stderr[-3000:]
    assert [a["key"] for a in store_rows.alerts(db)] == ["UNKNOWN_SOUND"]
    state = json.loads(rows(db, "SELECT state FROM engine_state WHERE name = 'alerts'")[0][0])
    assert [(k["key"], k["active"]) for k in state["keys"]] == [("UNKNOWN_SOUND", True)]

    second = run_cli(cfg, "--source", str(quieter))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "alert state restored" in second.stderr
    assert rows(db, "SELECT count(*) FROM windows")[0][0] == 2  # the second recording was analysed
    assert [a["key"] for a in store_rows.alerts(db)] == ["UNKNOWN_SOUND"]  # ... and raised nothing new

    # the contrast: the second recording alone, into a store without that memory, raises it
    alone = daemon_config(tmp_path / "other", yamnet_dir, birdnet_dir, models_only)
    fresh = run_cli(alone, "--source", str(quieter))
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert [a["key"] for a in store_rows.alerts(tmp_path / "other" / "soundmond.db")] == ["UNKNOWN_SOUND"]


def test_no_model_folder_exits_3(tmp_path: Path, birdnet_dir: Path, fixture_audio: Path) -> None:
    cfg = daemon_config(tmp_path, tmp_path / "nowhere", birdnet_dir)
    proc = subprocess.run([sys.executable, "-m", "soundmond.cli", "run", "--config", str(cfg), "--source",
                           str(fixture_audio)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert "models.tagger.path" in proc.stderr and "Traceback" not in proc.stderr


def make_daemon(tmp_path: Path, cfg_path: Path, tagger: Tagger, *, live: bool, notifier: Notifier | None = None,
                realtime: bool = False, fixture_audio: Path) -> tuple[Daemon, Store, StoreWriter]:
    loaded = load_config(cfg_path)
    head = load_head(None, "yamnet", len(tagger.labels))
    birds = BirdnetModel(loaded.config.models.birds.path, loaded.config.models.birds)
    session = build_session(loaded, models=(tagger, birds, head, {}))
    store = Store(tmp_path / "soundmond.db", loaded.config.store)
    writer = StoreWriter(store, threading.Event()).start()
    source = FileSource([fixture_audio], 5.0, 5.0, realtime=realtime)
    return Daemon(loaded, session, source, live=live, store=store, writer=writer, notifier=notifier), store, writer


def test_slow_model_keeps_the_backlog_bounded_and_counts_drops(tmp_path: Path, yamnet_dir: Path,
                                                               birdnet_dir: Path, fixture_audio: Path) -> None:
    cfg = daemon_config(tmp_path, yamnet_dir, birdnet_dir,
                       "windows: {backlog_windows: 2, backlog_policy: drop_oldest}\n")
    loaded = load_config(cfg)
    tagger = SlowTagger(YamnetTagger(yamnet_dir, loaded.config.models.tagger), delay_s=0.3)
    daemon, store, _ = make_daemon(tmp_path, cfg, tagger, live=True, fixture_audio=fixture_audio)
    max_backlog = [0]
    stop_watch = threading.Event()

    def watch() -> None:
        while not stop_watch.is_set():
            max_backlog[0] = max(max_backlog[0], daemon.backlog.qsize())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert daemon.run() == 0
    stop_watch.set()
    watcher.join()
    c = daemon.status
    assert c.windows_in == 15
    assert c.windows_dropped > 0
    assert c.windows_done + c.windows_dropped == c.windows_in
    assert max_backlog[0] <= 3  # the bound (2) plus the end-of-stream marker
    db = tmp_path / "soundmond.db"
    assert store_rows.counter(db, "windows_dropped") == c.windows_dropped
    falling = store_rows.alerts(db, type=AlertType.FALLING_BEHIND)
    assert len(falling) == 1  # raised once, not once per dropped window
    assert len(store_rows.windows(db)) == c.windows_done


def test_file_replay_never_drops(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, fixture_audio: Path) -> None:
    cfg = daemon_config(tmp_path, yamnet_dir, birdnet_dir, "windows: {backlog_windows: 1}\n")
    loaded = load_config(cfg)
    tagger = SlowTagger(YamnetTagger(yamnet_dir, loaded.config.models.tagger), delay_s=0.05)
    daemon, _, _ = make_daemon(tmp_path, cfg, tagger, live=False, fixture_audio=fixture_audio)
    assert daemon.run() == 0
    assert daemon.status.windows_dropped == 0 and daemon.status.windows_done == 15


def test_sd_notify_ready_after_audio_and_watchdog_stops_when_wedged(tmp_path: Path, yamnet_dir: Path,
                                                                     birdnet_dir: Path, fixture_audio: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    messages: list[tuple[float, str]] = []
    cfg = daemon_config(tmp_path, yamnet_dir, birdnet_dir)
    loaded = load_config(cfg)
    gate = threading.Event()
    tagger = SlowTagger(YamnetTagger(yamnet_dir, loaded.config.models.tagger), delay_s=0.0, gate=gate)
    notifier = Notifier(str(sock_path), watchdog_usec=600_000)  # ping every 0.3 s while progressing
    daemon, _, _ = make_daemon(tmp_path, cfg, tagger, live=True, notifier=notifier, realtime=True,
                               fixture_audio=fixture_audio)
    runner = threading.Thread(target=daemon.run)
    reading = threading.Event()
    reading.set()

    def read() -> None:
        while reading.is_set():
            try:
                messages.extend((time.monotonic(), m) for m in sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                pass

    reader = threading.Thread(target=read)
    started = time.monotonic()
    runner.start()
    reader.start()
    try:
        time.sleep(20)
        ready = [t for t, m in messages if m == "READY=1"]
        assert ready, messages
        assert ready[0] - started >= 4.0  # after the first 5-s window of audio, not at start-up
        pings = [t for t, m in messages if m == "WATCHDOG=1"]
        assert pings and pings[0] >= ready[0]
        # the second window wedges the tagger (realtime replay: it arrives ~10 s after start); pings must stop
        wedged_at = started + 10.0
        assert any(t < wedged_at for t in pings)
        assert not [t for t in pings if t > wedged_at + 1.5], "WATCHDOG=1 kept coming while the pipeline was wedged"
        assert any(m.startswith("STATUS=") for _, m in messages)
    finally:
        daemon.stop.set()
        gate.set()
        runner.join(timeout=60)
        time.sleep(0.3)
        reading.clear()
        reader.join()
        sock.close()
    assert not runner.is_alive()
    assert any(m == "STOPPING=1" for _, m in messages)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_run_help_shows_example() -> None:
    out = subprocess.run([sys.executable, "-m", "soundmond.cli", "run", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "example:" in out and "soundmond run --config" in out
