"""Evidence messages through `soundmond run` with the real models on a real recording and a REAL Mosquitto: one
`evidence` message per clip written (bytes and SHA-256 equal the file on disk and the store's row), one per clip
skipped, each naming the detection or alert whose `evidence_path` it answers; a second run of the same recording
(`--reanalyze`) publishes no evidence message again."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from configs import daemon_config
from mqtt_rig import Broker, Collector, mosquitto_available

from soundmond.outputs.messages import validate

REPO = Path(__file__).resolve().parent.parent
SPINETAIL = REPO / "tests" / "fixtures" / "audio" / "maad_spinetail_Cranioleuca_erythrops.flac"
STATION = "ev-mqtt"

pytestmark = pytest.mark.skipif(mosquitto_available() is not None, reason=str(mosquitto_available()))


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def run(cfg: Path, *args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "soundmond.cli", "run", "--config", str(cfg), "--source",
                           str(SPINETAIL), *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert " 0 unsent" in proc.stderr, proc.stderr[-3000:]  # drained: every outbox row acknowledged before the exit


def received(collector: Collector, leaf: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in collector.on(f"soundmond/{STATION}/{leaf}")]


def test_a_file_run_publishes_what_became_of_every_clip_once(tmp_path: Path, yamnet_dir: Path,
                                                              birdnet_dir: Path) -> None:
    evidence = tmp_path / "evidence"
    db = tmp_path / "soundmond.db"
    with Broker(tmp_path / "broker") as broker:
        cfg = daemon_config(tmp_path, yamnet_dir, birdnet_dir, f"""station: {{id: {STATION}}}
evidence: {{enabled: true, path: {evidence}, min_confidence: 0.1}}
mqtt: {{enabled: true, host: 127.0.0.1, port: {broker.port}, reconnect_min_s: 0.2, reconnect_max_s: 1.0}}
""")
        topics = [f"soundmond/{STATION}/{leaf}" for leaf in ("evidence", "detections", "alerts")]
        with Collector(broker.port, topics) as collector:
            run(cfg)
            queued = query(db, "SELECT event_id FROM outbox WHERE kind = 'evidence'")
            assert collector.wait_for(lambda _: len(received(collector, "evidence")) >= len(queued), 30)
            sent = received(collector, "evidence")
            events = {m["event_id"]: m for m in received(collector, "detections") + received(collector, "alerts")}

            rows = {r[0]: r[1:] for r in
                    query(db, "SELECT event_id, status, reason, path, bytes, sha256 FROM evidence")}
            written = {e for e, (status, *_) in rows.items() if status == "written"}
            assert written and len(sent) == len(queued) == len(rows)  # one message per clip asked for
            assert sorted(m["event_id"] for m in sent) == sorted(e for (e,) in queued)
            for m in sent:
                validate(m)
                status, reason, path, size, sha = rows[m["for_event_id"]]
                assert (m["status"], m["reason"], m["path"], m["bytes"], m["sha256"]) == (status, reason, path,
                                                                                        size, sha)
                assert events[m["for_event_id"]]["evidence_path"] == m["path"]  # the path its detection named
                if m["status"] == "written":
                    data = (evidence / m["path"]).read_bytes()
                    assert (m["bytes"], m["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
                    assert m["clip_start"] < m["clip_end"] and m["sample_rate_hz"] == 44100
            assert {m["for_event_id"] for m in sent if m["status"] == "written"} == written
            # a subscriber learns what became of every evidence_path it saw
            assert {e for e, m in events.items() if "evidence_path" in m} == {m["for_event_id"] for m in sent}

            # the same recording again: detections are published again (same ids), evidence messages are not
            detections_before = len(received(collector, "detections"))
            run(cfg, "--reanalyze")
            again = len(query(db, "SELECT 1 FROM outbox WHERE kind = 'detection'"))
            assert collector.wait_for(lambda _: len(received(collector, "detections")) >= detections_before + again,
                                      30)
            assert received(collector, "evidence") == sent
            assert query(db, "SELECT event_id FROM outbox WHERE kind = 'evidence'") == queued
