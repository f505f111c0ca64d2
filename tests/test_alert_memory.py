"""A restart remembers: the alert engine's state through the StoreWriter into real SQLite, and back into a new engine
after the store is reopened (`soundmond.alert_memory`). The end-to-end run is in test_daemon.py."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import store_rows

from soundmond import alert_memory
from soundmond.config import AlertsConfig, StoreConfig
from soundmond.data import AlertType, GroupPrediction, LabelScore, WindowResult
from soundmond.outputs.store import SavedState, Store, StoreWriter
from soundmond.soundscape.alerts import AlertEngine

T = 1_700_000_000.0


def window(t: float, tagger_score: float) -> WindowResult:
    return WindowResult(window_id=f"w{t:.0f}", source="test.wav", start_unix_s=t, start_s=0.0, end_s=5.0, group=None,
                        tagger_top=(LabelScore("Wind", tagger_score),), tagger_top_score=tagger_score, species=(),
                        bird_top_score=0.05, rms_dbfs=-30.0, clipped_fraction=0.0, compute_ms=1.0, status="ok")


def engine() -> AlertEngine:
    return AlertEngine(AlertsConfig(), [60, 3600, 86400])


def state_rows(db: Path) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(db)) as conn:
        return [{"name": n, "saved_unix_s": s, "state": json.loads(t)}
                for n, s, t in conn.execute("SELECT name, saved_unix_s, state FROM engine_state")]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "soundmond.db"


@pytest.fixture
def writer(db: Path) -> Iterator[StoreWriter]:
    store = Store(db, StoreConfig(flush_interval_s=0.05))
    w = StoreWriter(store, threading.Event()).start()
    yield w
    w.close(timeout=10.0)
    store.close()


def fire_unknown_sound(e: AlertEngine, w: StoreWriter, t: float) -> None:
    result = window(t, 0.1)
    alerts = e.on_window(result, t)
    assert [a.type for a in alerts] == [AlertType.UNKNOWN_SOUND]
    w.submit(result, alerts)


def test_the_state_is_stored_with_the_alert_it_accounts_for(db: Path, writer: StoreWriter) -> None:
    e = engine()
    memory = alert_memory.AlertMemory(writer)
    fire_unknown_sound(e, writer, T)
    assert memory.save(e, T)
    assert writer.flush(10.0)
    (row,) = state_rows(db)
    assert (row["name"], row["saved_unix_s"]) == ("alerts", T)
    assert row["state"]["keys"] == [{"key": "UNKNOWN_SOUND", "type": "UNKNOWN_SOUND", "active": True,
                                     "false_since_s": None, "last_fired_s": T}]
    assert [a["key"] for a in store_rows.alerts(db)] == ["UNKNOWN_SOUND"]


def test_only_a_changed_state_is_saved_again(db: Path, writer: StoreWriter) -> None:
    e = engine()
    memory = alert_memory.AlertMemory(writer)
    fire_unknown_sound(e, writer, T)
    assert memory.save(e, T)
    assert not memory.save(e, T + 60)  # nothing changed: no write
    e.on_window(window(T + 65, 0.9), T + 65)  # seen false: the hysteresis moved on
    assert memory.save(e, T + 65)
    assert writer.flush(10.0)
    (row,) = state_rows(db)  # one row per name, replaced
    assert row["saved_unix_s"] == T + 65 and row["state"]["keys"][0]["false_since_s"] == T + 65


def test_a_reopened_store_gives_a_new_engine_the_state(db: Path, writer: StoreWriter) -> None:
    e = engine()
    fire_unknown_sound(e, writer, T)
    alert_memory.AlertMemory(writer).save(e, T)
    assert writer.flush(10.0)
    with Store(db, StoreConfig()) as reopened:
        fresh = engine()
        assert alert_memory.restore(reopened, fresh, T + 420)
    assert fresh.active_keys() == ["UNKNOWN_SOUND"]
    assert fresh.on_window(window(T + 420, 0.1), T + 420) == []  # 7 min later, inside the cooldown
    assert engine().on_window(window(T + 420, 0.1), T + 420) != []  # without the memory it fires again


def test_no_stored_state_starts_afresh(db: Path) -> None:
    with Store(db, StoreConfig()) as store:
        e = engine()
        assert not alert_memory.restore(store, e, T)
    assert e.state(T).keys == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("{not json", "is not JSON", id="not-json"),
        pytest.param('{"version": 7, "saved_unix_s": 1, "keys": []}', "state version 7", id="other-version"),
    ],
)
def test_a_damaged_stored_state_is_ignored_with_a_warning(db: Path, text: str, problem: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    Store(db, StoreConfig()).close()
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("INSERT INTO engine_state(name, saved_unix_s, state) VALUES ('alerts', ?, ?)", (T, text))
    with Store(db, StoreConfig()) as store, caplog.at_level(logging.WARNING, logger="soundmond.alert_memory"):
        e = engine()
        assert not alert_memory.restore(store, e, T)
    assert problem in caplog.text and "starting without it" in caplog.text
    assert e.active_keys() == []


def test_a_full_store_queue_skips_the_save_and_says_so(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Store(db, StoreConfig()) as store:
        stalled = StoreWriter(store, threading.Event(), queue_items=1, submit_timeout_s=0.05)  # never started
        assert stalled.submit(window(T, 0.9))
        with caplog.at_level(logging.WARNING, logger="soundmond.outputs.store.writer"):
            assert not stalled.submit_state(SavedState("alerts", T, {"k": 1}))
        memory = alert_memory.AlertMemory(stalled)
        e = engine()
        e.on_window(window(T, 0.1), T)
        assert not memory.save(e, T)  # not taken: the next save tries again
        assert stalled.start().close(timeout=5.0)  # what was queued is written, nothing lost
    assert "the 'alerts' state was not saved this time" in caplog.text
    assert state_rows(db) == []


def test_a_quiet_run_survives_the_store(db: Path, writer: StoreWriter) -> None:
    """RECORDER_SILENT's quiet run is in the stored state: a daemon restarted 50 s into a quiet run raises it when
    the run reaches alerts.silent_recorder_s (600 s), not 600 s after the restart."""
    e = engine()
    for t in range(0, 50, 5):
        quiet = replace(window(T + t, 0.0), group=GroupPrediction("quiet", {}), status="skipped_quiet", tagger_top=())
        assert e.on_window(quiet, T + t + 5) == []
        writer.submit(quiet, [])
    alert_memory.AlertMemory(writer).save(e, T + 50)
    assert writer.flush(10.0)
    with Store(db, StoreConfig()) as reopened:
        fresh = engine()
        assert alert_memory.restore(reopened, fresh, T + 50)
    fired = []
    for t in range(50, 700, 5):
        quiet = replace(window(T + t, 0.0), group=GroupPrediction("quiet", {}), status="skipped_quiet", tagger_top=())
        fired += [(t, a.key) for a in fresh.on_window(quiet, T + t + 5) if a.type is AlertType.RECORDER_SILENT]
    assert fired == [(595, "RECORDER_SILENT:1")]
