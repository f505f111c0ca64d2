"""The SQLite store and its writer thread, on real database files."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import store_rows
from samples import snapshot, span

from soundmond.config import StoreConfig
from soundmond.data import Alert, AlertType, GroupPrediction, LabelScore, SpeciesScore, WindowResult, new_id
from soundmond.outputs.store import (
    OUTBOX_DROPPED,
    OUTBOX_REFUSED,
    SCHEMA_VERSION,
    WRITER_DROPPED_WINDOWS,
    WRITER_REJECTED,
    OutboxItem,
    Store,
    StoreDataError,
    StoreError,
    StoreVersionError,
    StoreWriter,
)
from soundmond.outputs.store import schema as schema_mod

REPO = Path(__file__).resolve().parents[1]


def window(t: float | None = None, n_species: int = 2, **kw: Any) -> WindowResult:
    t = time.time() if t is None else t
    fields: dict[str, Any] = dict(
        window_id=new_id(),
        source="mic:test",
        start_unix_s=t,
        start_s=12.5,
        end_s=17.5,
        group=GroupPrediction("natural", {"natural": 0.7, "industrial": 0.2, "other": 0.1}),
        tagger_top=(LabelScore("Bird", 0.81), LabelScore("Wind", 0.12)),
        tagger_top_score=0.81,
        species=tuple(
            SpeciesScore(f"Genus species{i}", f"Bird {i}", 0.9 - 0.1 * i, 0.2 if i else None) for i in range(n_species)
        ),
        bird_top_score=0.9,
        rms_dbfs=-31.5,
        clipped_fraction=0.0,
        compute_ms=42.0,
    )
    fields.update(kw)
    return WindowResult(**fields)


def alert(t: float | None = None, **kw: Any) -> Alert:
    return Alert(AlertType.RARE_SPECIES, "RARE_SPECIES:x", "warning", time.time() if t is None else t, "rare bird",
                 {"windows": ["w1"], "score": 0.93}, **kw)


def item(kind: str = "detection", **payload: Any) -> OutboxItem:
    return OutboxItem(kind, new_id(), payload or {"k": kind})


def alert_item(a: Alert) -> OutboxItem:
    return OutboxItem("alert", a.alert_id, {"type": a.type, "id": a.alert_id}, qos=1)


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def cfg(**kw: Any) -> StoreConfig:
    return StoreConfig(**kw)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "dir" / "soundmond.db"


@pytest.fixture
def store(db: Path):
    s = Store(db, cfg())
    yield s
    s.close()


# --- opening, schema -----------------------------------------------------------------------------------------


def test_new_file_is_wal_incremental_and_migrated(db: Path) -> None:
    with Store(db, cfg()) as s:
        assert store_rows.schema_version(s.path) == SCHEMA_VERSION
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    assert {"windows", "detections", "aggregates", "alerts", "outbox", "counters", "meta"} <= tables


def test_reopen_is_idempotent_and_keeps_data(db: Path) -> None:
    w = window()
    with Store(db, cfg()) as s:
        s.write_batch([w], [], [])
        s.increment("x", 3)
    with Store(db, cfg()) as s:
        assert store_rows.schema_version(s.path) == SCHEMA_VERSION
        assert [r["window_id"] for r in store_rows.windows(s.path)] == [w.window_id]
        assert store_rows.counter(s.path, "x") == 3


def test_migrations_apply_in_order_in_a_transaction(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(db, cfg()):
        pass
    good = (*schema_mod.MIGRATIONS, ("CREATE TABLE extra (x INTEGER)",))
    monkeypatch.setattr(schema_mod, "MIGRATIONS", good)
    monkeypatch.setattr(schema_mod, "SCHEMA_VERSION", len(good))
    with Store(db, cfg()) as s:
        assert store_rows.schema_version(s.path) == len(good)
    # a failing step leaves nothing of itself behind and the version unchanged
    bad = (*good, ("CREATE TABLE half (x INTEGER)", "THIS IS NOT SQL"))
    monkeypatch.setattr(schema_mod, "MIGRATIONS", bad)
    monkeypatch.setattr(schema_mod, "SCHEMA_VERSION", len(bad))
    with pytest.raises(StoreError):
        Store(db, cfg())
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(good)
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0] == 0
    finally:
        conn.close()


def test_newer_schema_is_refused_untouched(db: Path) -> None:
    with Store(db, cfg()):
        pass
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.execute("PRAGMA journal_mode = DELETE")  # so a touch (back to WAL) would show in the file
    conn.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    with pytest.raises(StoreVersionError, match=rf"version {SCHEMA_VERSION + 1}.*newer soundmond") as info:
        Store(db, cfg())
    assert "upgrade soundmond" in info.value.hint
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_foreign_sqlite_file_is_refused(db: Path) -> None:
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE something_else (x)")
    conn.close()
    with pytest.raises(StoreVersionError, match="not created by soundmond"):
        Store(db, cfg())


def test_not_a_database_has_a_hint(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError) as info:
        Store(db, cfg())
    assert "move it aside" in info.value.hint


# --- write_batch ---------------------------------------------------------------------------------------------


def test_write_batch_round_trips(store: Store) -> None:
    w, a = window(), alert()
    store.write_batch([w], [a], [alert_item(a), item("detection", id=w.window_id)])
    rows = store_rows.windows(store.path)
    assert len(rows) == 1
    r = rows[0]
    assert (r["group"], r["p_natural"], r["p_industrial"], r["p_other"]) == ("natural", 0.7, 0.2, 0.1)
    assert r["tagger_top"] == [["Bird", 0.81], ["Wind", 0.12]]
    dets = store_rows.detections(store.path)
    assert [(d["scientific_name"], d["confidence"], d["occurrence"]) for d in dets] == [
        ("Genus species0", 0.9, None),
        ("Genus species1", 0.8, 0.2),
    ]
    [ra] = store_rows.alerts(store.path)
    assert ra["type"] is AlertType.RARE_SPECIES  # the stored name reads back as the enum
    assert ra["alert_id"] == a.alert_id and ra["evidence"] == {"windows": ["w1"], "score": 0.93}
    assert store.outbox_counts().pending == 2


def test_a_row_whose_id_is_stored_is_not_stored_again(store: Store) -> None:
    first = window()
    a = alert()
    queued = item()
    store.write_batch([first], [a], [queued, alert_item(a)])
    second = window()
    store.write_batch([first, second], [a], [queued, alert_item(a), item()])  # a replay of the first batch, and more
    assert [r["window_id"] for r in store_rows.windows(store.path)] == [first.window_id, second.window_id]
    assert len(store_rows.detections(store.path)) == 4  # two per window, none twice
    assert [r["alert_id"] for r in store_rows.alerts(store.path)] == [a.alert_id]
    assert store.outbox_counts().pending == 3


def test_write_batch_is_atomic_on_invalid_data(store: Store) -> None:
    first = window()
    store.write_batch([first], [], [item()])
    a = alert()
    with pytest.raises(StoreDataError):
        store.write_batch([window(), window(source=None)], [a], [alert_item(a)])  # windows.source is NOT NULL
    assert [r["window_id"] for r in store_rows.windows(store.path)] == [first.window_id]
    assert len(store_rows.detections(store.path)) == 2  # only the first window's
    assert store_rows.alerts(store.path) == []
    assert store.outbox_counts().pending == 1


def test_write_batch_is_atomic_on_failure_mid_batch(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.write_batch([window()], [], [])

    def failing(*args: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_insert_outbox", failing)  # windows, detections and alerts are already inserted
    a = alert()
    with pytest.raises(StoreError) as info:
        store.write_batch([window(), window()], [a], [alert_item(a)])
    assert not isinstance(info.value, StoreDataError)  # retryable
    assert "dmesg" in info.value.hint
    assert len(store_rows.windows(store.path)) == 1 and len(store_rows.detections(store.path)) == 2
    assert store_rows.alerts(store.path) == []
    monkeypatch.undo()
    store.write_batch([window()], [a], [alert_item(a)])  # the connection is usable again
    assert len(store_rows.windows(store.path)) == 2 and len(store_rows.alerts(store.path)) == 1


def test_nan_and_numpy_values_are_stored_honestly(store: Store) -> None:
    import numpy as np

    w = window(rms_dbfs=-math.inf, tagger_top_score=math.nan, compute_ms=np.float32(3.5))
    a = alert()
    store.write_batch([w], [], [OutboxItem("window", "e1", {"score": np.float32(0.5), "x": math.nan,
                                                           "v": np.arange(2)})])
    [back] = store.recent_results(0)
    assert back.rms_dbfs == -math.inf
    assert math.isnan(back.tagger_top_score)  # unknown stays unknown, not 0
    assert back.compute_ms == 3.5
    [row] = store.outbox_pending(10)
    assert row.payload == '{"score":0.5,"x":null,"v":[0,1]}'
    del a


def test_recent_results_round_trip(store: Store) -> None:
    t0 = time.time()
    old = window(t0 - 100)
    ws = [
        window(t0, n_species=3),
        window(t0 + 5, n_species=0, group=None, status="skipped_quiet"),
        window(t0 + 10, status="error", error="bird model failed", group=None, tagger_top=(), n_species=0),
    ]
    store.write_batch([old, *ws], [], [])
    assert store.recent_results(t0 - 1) == ws  # dataclass equality: every field, species order kept


# --- outbox --------------------------------------------------------------------------------------------------


def test_outbox_order_and_mark_sent(store: Store) -> None:
    items = [item("detection", n=i) for i in range(5)]
    store.write_batch([], [], items[:3])
    store.write_batch([], [], items[3:])
    rows = store.outbox_pending(10)
    assert [r.event_id for r in rows] == [i.event_id for i in items]
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    assert [r.event_id for r in store.outbox_pending(2, after_id=rows[1].id)] == [i.event_id for i in items[2:4]]
    store.outbox_mark_attempt([rows[0].id])
    assert store.outbox_pending(1)[0].attempts == 1
    assert store.outbox_mark_sent([rows[0].id, rows[2].id], now=time.time()) == 2
    assert store.outbox_mark_sent([rows[0].id], now=time.time()) == 0  # already sent
    assert [r.id for r in store.outbox_pending(10)] == [rows[1].id, rows[3].id, rows[4].id]
    counts = store.outbox_counts()
    assert (counts.pending, counts.sent, counts.dropped) == (3, 2, 0)


def test_outbox_event_already_queued_is_not_queued_again(store: Store) -> None:
    store.write_batch([], [], [OutboxItem("detection", "same", {"n": 1})])
    store.write_batch([], [], [OutboxItem("detection", "same", {"n": 2})])  # a replay of the same event
    [row] = store.outbox_pending(10)
    assert (row.event_id, row.payload) == ("same", '{"n":1}')
    assert store.outbox_counts().pending == 1


def test_outbox_bound_drop_oldest_never_drops_alerts(db: Path) -> None:
    c = cfg(outbox_max_rows=100, outbox_full_policy="drop_oldest_detections")
    with Store(db, c) as s:
        alerts = [alert() for _ in range(10)]
        s.write_batch([], alerts[:5], [alert_item(a) for a in alerts[:5]])
        windows_ = [item("window") for _ in range(20)]
        dets = [item("detection") for _ in range(75)]
        s.write_batch([], [], windows_ + dets)  # 100 pending: full
        assert s.outbox_counts().pending == 100
        newer = [item("detection") for _ in range(30)]
        s.write_batch([], alerts[5:], [alert_item(a) for a in alerts[5:]] + newer)
        pending = {r.event_id for r in s.outbox_pending(1000)}
        assert len(pending) == 100
        assert {a.alert_id for a in alerts} <= pending  # alerts are never dropped
        assert not {w.event_id for w in windows_} & pending  # window rows go first
        assert {d.event_id for d in newer} <= pending
        assert sum(d.event_id in pending for d in dets) == 100 - 10 - 30  # then the oldest detections
        assert store_rows.counter(s.path, OUTBOX_DROPPED) == 35
        assert store_rows.counter(s.path, f"{OUTBOX_DROPPED}:window") == 20
        assert store_rows.counter(s.path, f"{OUTBOX_DROPPED}:detection") == 15
    with Store(db, c) as s:  # counted drops survive a restart
        assert s.outbox_counts().dropped == 35


def test_outbox_alerts_go_in_beyond_the_bound(db: Path) -> None:
    c = cfg(outbox_max_rows=100, outbox_full_policy="drop_oldest_detections")
    with Store(db, c) as s:
        s.write_batch([], [], [item() for _ in range(100)])
        alerts = [alert() for _ in range(105)]
        s.write_batch([], alerts, [alert_item(a) for a in alerts])
        counts = s.outbox_counts()
        assert counts.pending == 105 and counts.pending_alerts == 105  # over the bound: alerts only
        late = item()
        s.write_batch([], [], [late])  # nothing droppable: the new row is not admitted, and counted
        assert late.event_id not in {r.event_id for r in s.outbox_pending(1000)}
        assert store_rows.counter(s.path, OUTBOX_DROPPED) == 101


def test_outbox_bound_refuse_new(db: Path) -> None:
    c = cfg(outbox_max_rows=100, outbox_full_policy="refuse_new")
    with Store(db, c) as s:
        first = [item() for _ in range(100)]
        s.write_batch([], [], first)
        a = alert()
        refused = [item("window"), item("detection")]
        s.write_batch([], [a], [refused[0], alert_item(a), refused[1]])
        pending = [r.event_id for r in s.outbox_pending(1000)]
        assert pending == [i.event_id for i in first] + [a.alert_id]
        assert store_rows.counter(s.path, OUTBOX_REFUSED) == 2 and store_rows.counter(s.path, OUTBOX_DROPPED) == 0
        s.outbox_mark_sent([r.id for r in s.outbox_pending(10)], now=time.time())
        ok = item()
        s.write_batch([], [], [ok])  # room again
        assert ok.event_id in {r.event_id for r in s.outbox_pending(1000)}
    with Store(db, c) as s:
        assert s.outbox_counts().refused == 2


# --- retention -----------------------------------------------------------------------------------------------


def test_retention_by_age(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = time.time()
    day = 86400.0
    with Store(db, cfg(retention_days=10, outbox_keep_sent_s=3600)) as s:
        old, new = window(now - 11 * day), window(now - 9 * day)
        old_alert, old_pending_alert, new_alert = alert(now - 11 * day), alert(now - 11 * day + 1), alert(now)
        s.write_batch([old], [old_alert, old_pending_alert], [alert_item(old_alert), alert_item(old_pending_alert)],
                      now=now - 11 * day)
        s.write_batch([new], [new_alert], [], now=now - 9 * day)
        archive = window(now - 400 * day)  # a recording from an old SD card, analysed today: kept
        s.write_batch([archive], [], [], now=now)
        s.write_aggregate(now - 11 * day, snapshot(now - 11 * day, span(3600, 1, species={"Genus old": 1})))
        s.write_aggregate(now - 1 * day, snapshot(now - day, span(3600, 2, species={"Genus new": 2})))
        rows = s.outbox_pending(10)
        s.outbox_mark_sent([rows[0].id], now=now - 7200)  # old_alert sent 2 h ago
        with caplog.at_level(logging.INFO, logger="soundmond.outputs.store"):
            deleted = s.enforce_retention(now)
        assert deleted == {"windows": 1, "detections": 2, "aggregates": 1, "alerts": 1, "outbox_sent": 1}
        assert "retention deleted" in caplog.text
        assert [w["window_id"] for w in store_rows.windows(s.path)] == [archive.window_id, new.window_id]
        assert {d["window_id"] for d in store_rows.detections(s.path)} == {new.window_id, archive.window_id}
        kept = snapshot(now - day, span(3600, 2, species={"Genus new": 2})).to_dict()
        assert [a["snapshot"] for a in store_rows.aggregates(s.path)] == [kept]
        assert {a["alert_id"] for a in store_rows.alerts(s.path)} == {old_pending_alert.alert_id, new_alert.alert_id}
        assert [r.event_id for r in s.outbox_pending(10)] == [old_pending_alert.alert_id]
        assert s.enforce_retention(now) == dict.fromkeys(deleted, 0)


def test_retention_by_size(db: Path) -> None:
    max_mb = 0.25
    now = time.time()
    with Store(db, cfg(max_size_mb=max_mb)) as s:
        t0 = now - 3600
        for b in range(20):
            s.write_batch([window(t0 + (b * 50 + i) * 5, n_species=3) for i in range(50)], [], [])
            s.write_aggregate(t0 + b * 250, snapshot(t0 + b * 250, span(3600, 1, species={f"{b} " + "x" * 200: 1})))
        keep = [item("detection", pad="y" * 100) for _ in range(50)]
        s.write_batch([], [], keep)
        assert s.file_bytes() > 3 * max_mb * 1024 * 1024
        newest = store_rows.windows(s.path, limit=1, newest_first=True)[0]["window_id"]
        deleted = s.enforce_retention(now)
        assert deleted["windows"] > 0 and deleted["detections"] > 0 and deleted["aggregates"] > 0
        assert db.stat().st_size <= max_mb * 1024 * 1024
        remaining = store_rows.windows(s.path)
        assert remaining and remaining[-1]["window_id"] == newest  # the oldest went, the newest stayed
        assert min(w["start_unix_s"] for w in remaining) > t0
        assert [r.event_id for r in s.outbox_pending(100)] == [k.event_id for k in keep]  # pending kept


# --- the writer thread ---------------------------------------------------------------------------------------


@pytest.fixture
def writer_parts(db: Path):
    stop = threading.Event()
    s = Store(db, cfg(batch_size=10, flush_interval_s=0.05), busy_timeout_ms=50)
    writers: list[StoreWriter] = []

    def make(**kw: Any) -> StoreWriter:
        kw.setdefault("retention_interval_s", None)
        kw.setdefault("backoff_s", (0.02, 0.1))
        w = StoreWriter(s, stop, **kw).start()
        writers.append(w)
        return w

    yield s, stop, make
    stop.set()
    for w in writers:
        w.close(timeout=5)
    s.close()


def test_writer_batches_and_flushes(writer_parts: Any) -> None:
    s, stop, make = writer_parts
    w = make()
    ws = [window(time.time() + i) for i in range(35)]
    for x in ws:
        assert w.submit(x, [], [item("window", id=x.window_id)])
    a = alert()
    w.submit_alert(a, alert_item(a))
    assert w.flush(timeout=5)
    assert [r["window_id"] for r in store_rows.windows(s.path)] == [x.window_id for x in ws]
    assert [r["alert_id"] for r in store_rows.alerts(s.path)] == [a.alert_id]
    h = w.health()
    assert h.rows_written == 35 * 4 + 2
    assert 4 <= h.batches_written < 35  # batched, at most batch_size windows each
    assert h.queue_depth == 0 and h.last_error is None


def test_writer_writes_everything_on_stop(writer_parts: Any) -> None:
    s, stop, make = writer_parts
    w = make()
    ws = [window() for _ in range(25)]
    for x in ws:
        w.submit(x)
    stop.set()
    wait_for(lambda: not w.health().alive)
    late = window()
    w.submit(late)  # after the thread ended: flush/close still write it
    assert w.close(timeout=5)
    assert len(store_rows.windows(s.path)) == 26


def test_writer_retries_while_locked_and_loses_nothing(writer_parts: Any, db: Path) -> None:
    s, stop, make = writer_parts
    w = make()
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        ws = [window() for _ in range(15)]
        alerts = [alert() for _ in range(3)]
        for i, x in enumerate(ws):
            w.submit(x, alerts[i : i + 1] if i < 3 else [], [alert_item(alerts[i])] if i < 3 else [])
        wait_for(lambda: w.health().failing)
        assert "locked" in (w.health().last_error or "")
        assert "second soundmond" in (w.health().last_error or "")  # the hint travels with it
        assert not w.flush(timeout=0.2)  # not on disk yet, and flush says so
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert w.flush(timeout=5)
    assert {r["window_id"] for r in store_rows.windows(s.path)} == {x.window_id for x in ws}
    assert len(store_rows.alerts(s.path)) == 3 and s.outbox_counts().pending == 3
    assert not w.health().failing


def test_writer_full_queue_counts_drops_and_keeps_alerts(writer_parts: Any, db: Path) -> None:
    s, stop, make = writer_parts
    w = make(queue_items=2, submit_timeout_s=0.01)
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        kept = [window()]
        assert w.submit(kept[0])
        wait_for(lambda: w.health().failing)  # the writer holds that one item and retries
        kept += [window(), window()]
        assert w.submit(kept[1]) and w.submit(kept[2])  # the queue's 2 places
        a = alert()
        dropped = window()
        assert not w.submit(dropped, [a], [alert_item(a), item("detection")])
        a2 = alert()
        w.submit_alert(a2, alert_item(a2))  # never blocks, never dropped
        h = w.health()
        assert h.dropped_windows == 1 and h.dropped_outbox_items == 1 and h.overflow_alerts == 2
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert w.flush(timeout=5)
    assert {r["window_id"] for r in store_rows.windows(s.path)} == {k.window_id for k in kept}
    assert {r["alert_id"] for r in store_rows.alerts(s.path)} == {a.alert_id, a2.alert_id}
    assert {r.event_id for r in s.outbox_pending(10)} == {a.alert_id, a2.alert_id}
    assert store_rows.counter(s.path, WRITER_DROPPED_WINDOWS) == 1  # persisted with the next write


def test_writer_rejects_a_bad_item_without_blocking_the_others(writer_parts: Any) -> None:
    s, stop, make = writer_parts
    w = make()
    first = window()
    w.submit(first)
    assert w.flush(timeout=5)
    a = alert()
    good = [window(), window()]
    w.submit(good[0])
    w.submit(window(source=None), [a], [alert_item(a)])  # windows.source is NOT NULL: refused
    w.submit(good[1])
    assert w.flush(timeout=5)
    assert {r["window_id"] for r in store_rows.windows(s.path)} == {first.window_id, *(g.window_id for g in good)}
    assert [r["alert_id"] for r in store_rows.alerts(s.path)] == [a.alert_id]  # its alert was saved on its own
    assert w.health().rejected_items == 1
    w.submit(window())  # the count is persisted with the next successful write
    assert w.flush(timeout=5)
    assert store_rows.counter(s.path, WRITER_REJECTED) == 1


def test_writer_survives_transient_failures(writer_parts: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    s, stop, make = writer_parts
    real = s.write_batch
    fails = {"n": 3}

    def flaky(*args: Any, **kw: Any) -> None:
        if fails["n"]:
            fails["n"] -= 1
            raise StoreError("disk is full", "free space")
        real(*args, **kw)

    monkeypatch.setattr(s, "write_batch", flaky)
    w = make()
    ws = [window() for _ in range(5)]
    for x in ws:
        w.submit(x)
    assert w.flush(timeout=5)
    assert fails["n"] == 0
    assert len(store_rows.windows(s.path)) == 5
    assert w.health().last_error == "disk is full - free space"


def test_writer_runs_retention(writer_parts: Any) -> None:
    s, stop, make = writer_parts
    s.write_batch([window(time.time() - 200 * 86400)], [], [], now=time.time() - 200 * 86400)
    make(retention_interval_s=3600)
    wait_for(lambda: store_rows.windows(s.path) == [])


# --- a crash ---------------------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    from soundmond.config import StoreConfig
    from soundmond.data import Alert, AlertType, GroupPrediction, WindowResult
    from soundmond.outputs.store import OutboxItem, Store, StoreWriter

    store = Store(Path(sys.argv[1]), StoreConfig(batch_size=7, flush_interval_s=5.0))
    writer = StoreWriter(store, threading.Event(), retention_interval_s=None).start()
    t = time.time()
    for i in range(40):
        r = WindowResult(f"w{i}", "mic", t + i, 0.0, 5.0, GroupPrediction("natural", {"natural": 1.0}), (), 0.0,
                         (), 0.0, -30.0, 0.0, 1.0)
        alerts = [Alert(AlertType.CAPTURE_LOST, "X", "critical", t, "m", alert_id=f"a{i}")] if i % 10 == 0 else []
        writer.submit(r, alerts, [OutboxItem("alert", a.alert_id, {}) for a in alerts])
    assert writer.flush(timeout=30)
    print("flushed", flush=True)
    time.sleep(60)
    """
)


def test_data_survives_sigkill_after_flush(db: Path) -> None:
    db.parent.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "flushed"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    with Store(db, cfg()) as s:
        assert [r["window_id"] for r in store_rows.windows(s.path)] == [f"w{i}" for i in range(40)]
        assert [r.event_id for r in s.outbox_pending(100)] == ["a0", "a10", "a20", "a30"]
