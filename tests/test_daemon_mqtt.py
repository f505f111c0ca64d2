"""The daemon and a REAL Mosquitto: nothing stored is lost through broker kills and a daemon SIGKILL.

Recordings are replayed fast through `soundmond run` while the broker is SIGKILLed and restarted several times, and
once while the daemon itself is SIGKILLed and restarted. Every alert and detection stored must reach a persistent
subscriber at least once; deduplicated by `event_id`, the received set equals the stored set, and every message
validates against its JSON Schema.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from soundmond.outputs.messages import validate
from tests.mqtt_rig import Broker, Collector, mosquitto_available, wait_until
from tests.recordings import distinct_copies, distinct_copy

REPO = Path(__file__).resolve().parent.parent
STATION = "e2e"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(mosquitto_available() is not None,
                                                   reason=mosquitto_available() or "")]


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def config(tmp_path: Path, port: int, yamnet_dir: Path, birdnet_dir: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
station: {{id: {STATION}, latitude: 47.0, longitude: 7.0}}
models:
  tagger: {{family: yamnet, path: {yamnet_dir}}}
  birds: {{path: {birdnet_dir}, min_confidence: 0.1}}
alerts: {{cooldown_s: 0, clear_after_s: 0}}
store: {{path: {tmp_path / 'soundmond.db'}, flush_interval_s: 0.2}}
mqtt: {{enabled: true, host: 127.0.0.1, port: {port}, reconnect_min_s: 0.2, reconnect_max_s: 1.0,
        heartbeat_interval_s: 2, soundscape_interval_s: 2}}
""")
    return cfg


def replay_folder(tmp_path: Path, fixture_audio: Path, copies: int, first: int = 0) -> Path:
    """Copies of the fixtures with bytes of their own (a plain copy is the same recording: a replay skips it)."""
    return distinct_copies(fixture_audio, tmp_path / f"replay-{first}-{copies}", copies, first)


def run_daemon(cfg: Path, source: Path, *extra: str) -> subprocess.Popen[str]:
    with open(cfg.parent / "daemon.log", "a") as log:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "soundmond.cli", "run", "--config", str(cfg), "--source",
                                 str(source), *extra], cwd=REPO, stdout=subprocess.DEVNULL, stderr=log, text=True)


def log_tail(cfg: Path) -> str:
    return (cfg.parent / "daemon.log").read_text()[-3000:]


def test_nothing_stored_is_lost_through_broker_and_daemon_kills(
    tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, fixture_audio: Path
) -> None:
    broker = Broker(tmp_path / "broker", persistence=True).start()
    collector = Collector(broker.port, [f"soundmond/{STATION}/{leaf}" for leaf in
                                        ("alerts", "detections", "status", "soundscape", "heartbeat")],
                          persistent=True, client_id="verifier")
    cfg = config(tmp_path, broker.port, yamnet_dir, birdnet_dir)
    db = tmp_path / "soundmond.db"
    broker.wait_saved(time.time())
    try:
        # 1. fast replay while the broker is SIGKILLed and restarted three times
        proc = run_daemon(cfg, replay_folder(tmp_path, fixture_audio, 4))
        for _ in range(3):
            time.sleep(1.5)
            # Mosquitto keeps messages queued for an offline subscriber in memory until its next autosave (1 s):
            # kill it only once the verifier is connected and the broker has saved, or the BROKER loses them
            assert wait_until(lambda: bool(collector.connects) and collector.connects[-1][2] == "Success", 20)
            broker.wait_saved(time.time())
            broker.kill()
            time.sleep(1.0)
            restarted = time.monotonic()
            broker.start()
            assert wait_until(
                lambda since=restarted: any(t > since and r == "Success" for t, _, r in collector.connects), 20)
        assert proc.wait(timeout=300) == 0, log_tail(cfg)
        # 2. a daemon SIGKILLed mid-run (realtime replay keeps it busy), then restarted
        proc = run_daemon(cfg, replay_folder(tmp_path, fixture_audio, 1, first=4), "--realtime")
        wait_until(lambda: query(db, "SELECT count(*) FROM windows")[0][0] >= 64, 60, 0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        last = tmp_path / "last"
        last.mkdir()
        distinct_copy(fixture_audio / "whisp_field_horn.flac", last / "horn.flac", "last")
        proc = run_daemon(cfg, last, "--realtime")
        assert proc.wait(timeout=120) == 0, log_tail(cfg)

        stored = {eid for (eid,) in query(db, "SELECT event_id FROM outbox WHERE kind IN ('alert', 'detection')")}
        stored_alerts = {aid for (aid,) in query(db, "SELECT alert_id FROM alerts")}
        assert stored_alerts <= stored  # every stored alert went through the outbox
        detections = query(db, "SELECT count(*) FROM detections")[0][0]
        assert len(stored) == len(stored_alerts) + detections

        def received_ids() -> list[str]:
            return [json.loads(m.payload)["event_id"] for m in collector.messages
                    if m.topic.endswith(("/alerts", "/detections"))]

        assert collector.wait_for(lambda _: stored <= set(received_ids()), 60), (
            f"missing {len(stored - set(received_ids()))} of {len(stored)}")
        received = received_ids()
        assert set(received) == stored
        for m in collector.messages:
            if not m.topic.endswith("/status"):
                validate(json.loads(m.payload))
        kinds = {m.topic.rsplit("/", 1)[1] for m in collector.messages}
        assert {"soundscape", "heartbeat"} <= kinds
        beats = [json.loads(m.payload) for m in collector.messages if m.topic.endswith("/heartbeat")]
        assert any(b["rtf"] is not None and 0 < b["rtf"] < 1 for b in beats)
        assert all(b["config_sha256"] and b["models"]["tagger"].startswith("yamnet ") for b in beats)
        pending = query(db, "SELECT count(*) FROM outbox WHERE sent_unix_s IS NULL AND kind IN ('alert','detection')")
        assert pending[0][0] == 0
        statuses = [m.payload.decode() for m in collector.messages if m.topic.endswith("/status")]
        assert "offline" in statuses and "online" in statuses
        print(f"\nMQTT fault injection: stored {len(stored)} ({len(stored_alerts)} alerts, {detections} detections), "
              f"received {len(received)} messages, {len(received) - len(set(received))} duplicates")
    finally:
        collector.close()
        broker.stop()
