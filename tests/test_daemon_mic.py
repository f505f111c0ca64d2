"""`soundmond run` on a REAL virtual microphone (a private PulseAudio null sink, ../shared/RIGS.md).

Real recordings are played into the sink and the daemon, a child process as under systemd, must store windows whose
groups and species match them; the audio server is killed and brought back mid-run: CAPTURE_LOST, the daemon keeps
running, CAPTURE_RESTORED, and windows flow again.
"""

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from soundmond.capture.audio import load_audio
from tests.rigs import PulseRig, pulseaudio_available

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.skipif(pulseaudio_available() is not None,
                                                   reason=pulseaudio_available() or "")]


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def wait_for(predicate: Any, timeout_s: float, what: str, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the daemon exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._run = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while self._run:
            try:
                self.messages.extend(self.sock.recv(4096).decode().split("\n"))
            except (TimeoutError, OSError):
                continue

    def close(self) -> None:
        self._run = False
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[PulseRig]:
    r = PulseRig(tmp_path / "pulse")
    try:
        r.start()
        r.start_keepalive()
        yield r
    finally:
        r.stop_players()
        r.close()


def mic_config(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
source: {{type: mic, sample_rate_hz: 48000, stall_timeout_s: 2.0, reopen_backoff_s: 0.5, reopen_backoff_max_s: 2.0}}
models:
  tagger: {{family: yamnet, path: {yamnet_dir}}}
  birds: {{path: {birdnet_dir}}}
store: {{path: {tmp_path / 'soundmond.db'}, flush_interval_s: 0.2}}
""")
    return cfg


def start_daemon(cfg: Path, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    with open(log, "w") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "soundmond.cli", "run", "--config", str(cfg)], cwd=REPO,
                                env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)


def clip_48k(fixture_audio: Path, name: str, seconds: float | None = None) -> np.ndarray:
    samples, _ = load_audio(fixture_audio / name, 48000)
    if seconds is not None:
        samples = np.tile(samples, int(np.ceil(seconds * 48000 / samples.size)))[: int(seconds * 48000)]
    return samples


def test_daemon_on_virtual_microphone_survives_audio_server_death(
    tmp_path: Path, rig: PulseRig, yamnet_dir: Path, birdnet_dir: Path, fixture_audio: Path
) -> None:
    cfg = mic_config(tmp_path, yamnet_dir, birdnet_dir)
    db = tmp_path / "soundmond.db"
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {**os.environ, **rig.client_env(), "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "4000000"}
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, env, log)
    try:
        wait_for(lambda: "READY=1" in notify.messages, 60, "READY=1 (models loaded and audio flowing)", proc)
        # 1. real recordings played into the microphone: a car horn (10 s), then the Red-faced Spinetail
        t_horn = time.time()
        rig.play(clip_48k(fixture_audio, "whisp_field_horn.flac", 10.0), wait=True)
        t_bird = time.time()
        rig.play(clip_48k(fixture_audio, "maad_spinetail_Cranioleuca_erythrops.flac"), wait=True)
        t_end = time.time()
        wait_for(lambda: len(query(db, "SELECT 1 FROM windows WHERE start_unix_s >= ?", t_end - 5.5)) >= 1, 30,
                 "the windows of the played recordings", proc)
        horn_windows = query(db, 'SELECT "group" FROM windows WHERE start_unix_s >= ? AND start_unix_s + 5 <= ?',
                             t_horn - 0.5, t_bird + 0.5)
        assert horn_windows and {g for (g,) in horn_windows} == {"industrial"}, horn_windows
        bird_species = query(db, "SELECT d.scientific_name FROM detections d JOIN windows w USING (window_id) "
                                 "WHERE w.start_unix_s >= ? AND w.start_unix_s <= ?", t_bird - 0.5, t_end)
        assert ("Cranioleuca erythrops",) in bird_species, bird_species
        bird_groups = query(db, 'SELECT "group" FROM windows WHERE start_unix_s >= ? AND start_unix_s + 5 <= ?',
                            t_bird - 0.5, t_end + 0.5)
        assert bird_groups and {g for (g,) in bird_groups} == {"natural"}, bird_groups

        # 2. the audio server dies: CAPTURE_LOST, and the daemon keeps running
        rig.kill()
        wait_for(lambda: query(db, "SELECT 1 FROM alerts WHERE type = 'CAPTURE_LOST'"), 30, "CAPTURE_LOST", proc)
        time.sleep(3)
        assert proc.poll() is None, "the daemon must survive the loss of its microphone"
        # 3. the server comes back: CAPTURE_RESTORED, and windows flow again
        rig.start()
        rig.start_keepalive()
        wait_for(lambda: query(db, "SELECT 1 FROM alerts WHERE type = 'CAPTURE_RESTORED'"), 60, "CAPTURE_RESTORED",
                 proc)
        (restored_at,) = query(db, "SELECT ts_unix_s FROM alerts WHERE type = 'CAPTURE_RESTORED'")[0]
        rig.play(clip_48k(fixture_audio, "whisp_field_horn.flac", 10.0))
        wait_for(lambda: query(db, "SELECT 1 FROM windows WHERE start_unix_s > ?", restored_at), 40,
                 "windows after the restore", proc)
        lost = query(db, "SELECT severity, evidence FROM alerts WHERE type = 'CAPTURE_LOST'")
        assert len(lost) == 1 and lost[0][0] == "critical"
        assert json.loads(lost[0][1]) is not None
        assert any(m.startswith("WATCHDOG=1") for m in notify.messages)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            notify.close()
    assert proc.returncode == 0, log.read_text()[-3000:]


def test_no_input_device_is_a_clear_error(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path) -> None:
    cfg = mic_config(tmp_path, yamnet_dir, birdnet_dir)
    dead = tmp_path / "no-server"
    dead.mkdir()
    env = {**os.environ, "PULSE_SERVER": f"unix:{dead}/native", "PULSE_RUNTIME_PATH": str(dead),
           "PULSE_CLIENTCONFIG": str(dead / "client.conf")}
    (dead / "client.conf").write_text("autospawn = no\n")
    proc = subprocess.run([sys.executable, "-m", "soundmond.cli", "run", "--config", str(cfg)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "soundmond devices" in proc.stderr
    assert "Traceback" not in proc.stderr
