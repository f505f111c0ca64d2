"""One owner per stage: the pipeline thread is the only one that touches the analysis session (analyzer, aggregator,
alert engine). Capture events arrive from several threads at once while windows and span-rule ticks run, with the
interpreter forced to switch threads as often as it can (`sys.setswitchinterval(1e-6)`); before the pipeline owned
the session, the same run broke the alert engine's dictionaries ("dictionary changed size during iteration") and
lost capture alerts."""

from __future__ import annotations

import itertools
import logging
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FixedHead, ListSource, RotatingBirds, StaticTagger

from soundmond.analysis import build_session
from soundmond.config import load_config
from soundmond.data import CaptureEvent
from soundmond.outputs.store import Store, StoreWriter
from soundmond.pipeline import Daemon

WINDOWS = 400
EVENT_THREADS = 4
LOSSES_PER_THREAD = 150


@pytest.fixture
def forced_switching() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_capture_events_ticks_and_windows_from_many_threads_run_clean(
        tmp_path: Path, forced_switching: None, caplog: pytest.LogCaptureFixture) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"store: {{path: {tmp_path / 'soundmond.db'}, flush_interval_s: 0.2}}\n"
        "alerts: {rare_species: ['Turdus merula', 'Parus major'], cooldown_s: 3600, clear_after_s: 60}\n"
        "mqtt: {soundscape_interval_s: 1, heartbeat_interval_s: 1}\n"
    )
    loaded = load_config(cfg)
    session = build_session(loaded, models=(StaticTagger(), RotatingBirds(), FixedHead(), {}))
    store = Store(tmp_path / "soundmond.db", loaded.config.store)
    writer = StoreWriter(store, threading.Event()).start()
    events_done = threading.Event()
    source = ListSource(WINDOWS, hold_last=events_done)
    ticks = itertools.count()
    # 61 s of station time per clock read: every window also runs the span rules (at most one tick a minute)
    daemon = Daemon(loaded, session, source, live=False, store=store, writer=writer,
                    clock=lambda: 1.7e9 + 61.0 * next(ticks))

    def capture_events(n: int) -> None:
        for i in range(LOSSES_PER_THREAD):
            daemon.on_capture_event(CaptureEvent("lost", "running", 1.7e9, f"lost {n}.{i}", {"device": "test"}))
            daemon.on_capture_event(CaptureEvent("running", "lost", 1.7e9, f"back {n}.{i}", {"device": "test"}))

    senders = [threading.Thread(target=capture_events, args=(n,), name=f"events-{n}") for n in range(EVENT_THREADS)]

    def start_senders() -> None:
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        events_done.set()

    starter = threading.Thread(target=start_senders)
    caplog.set_level(logging.WARNING)
    starter.start()
    code = daemon.run()
    starter.join(timeout=60)

    problems = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == 0, [r.getMessage() for r in problems]
    assert not problems, [r.getMessage() for r in problems]
    status = daemon.status
    assert status.windows_in == status.windows_done == WINDOWS
    conn = sqlite3.connect(tmp_path / "soundmond.db")
    try:
        by_type = dict(conn.execute("SELECT type, count(*) FROM alerts GROUP BY type").fetchall())
        windows = conn.execute("SELECT count(*) FROM windows").fetchone()[0]
    finally:
        conn.close()
    assert windows == WINDOWS
    # every loss is its own capture episode: each one is stored as exactly one CAPTURE_LOST, none lost or doubled
    assert by_type.get("CAPTURE_LOST") == EVENT_THREADS * LOSSES_PER_THREAD
    assert 1 <= by_type.get("CAPTURE_RESTORED", 0) <= EVENT_THREADS * LOSSES_PER_THREAD
    assert by_type.get("RARE_SPECIES", 0) >= 1  # the per-window rules ran on the pipeline thread all along
    assert status.alerts == sum(by_type.values())
