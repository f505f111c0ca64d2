"""The local SQLite store: windows, detections, aggregates, alerts, the MQTT outbox, counters; retention.

Durability
    WAL journal, `synchronous=NORMAL`: a committed transaction survives a crash of the process (SIGKILL, OOM kill).
    On power loss NORMAL may lose the last few commits, so a batch that carries an alert is committed with
    `synchronous=FULL` (one fsync; alerts are rare): alerts survive power loss too.

Threads and connections
    A `Store` holds two connections opened with `check_same_thread=False`, each behind its own lock:
    the *write* connection (every write: `write_batch`, `write_aggregate`, `outbox_mark_sent`, `increment`,
    `enforce_retention`) and the *read* connection (every query). There is meant to be ONE writer thread
    (`StoreWriter`) plus the publisher marking rows sent; the lock serialises them. Readers on other threads never
    wait for a write transaction (WAL readers see the last committed state).

Schema
    Versioned with `PRAGMA user_version`; `MIGRATIONS[i]` takes the database from version i to i + 1 and runs in one
    transaction. A database written by a newer soundmond is refused untouched (`StoreVersionError`).

Outbox (the MQTT publisher's queue, written BEFORE publishing, marked sent only on broker acknowledgement)
    `OUTBOX_POLICY` below is the policy text.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soundmond.config import StoreConfig
from soundmond.data import GROUPS, Alert, GroupPrediction, LabelScore, SpeciesScore, WindowResult

logger = logging.getLogger(__name__)

APPLICATION_ID = 0x534E444D  # "SNDM": marks the file as a soundmond store
ALERT_KIND = "alert"

# counters (table `counters`), kept across restarts
OUTBOX_DROPPED = "outbox_dropped"  # pending rows deleted or not admitted by drop_oldest_detections
OUTBOX_REFUSED = "outbox_refused"  # new rows refused by refuse_new
WRITER_DROPPED_WINDOWS = "store_queue_dropped_windows"  # StoreWriter queue full: window results dropped
WRITER_DROPPED_OUTBOX = "store_queue_dropped_outbox"  # ... and their non-alert outbox items
WRITER_REJECTED = "store_rejected_items"  # items the database refused as invalid (duplicate id, bad value)

OUTBOX_POLICY = """\
The outbox holds at most `store.outbox_max_rows` PENDING (unsent) rows; sent rows are kept
`store.outbox_keep_sent_s` for debugging and then deleted by retention.
When a new row would take the pending count over the bound:
- drop_oldest_detections: pending non-alert rows are deleted to make room, `window` rows first, then `detection`
  rows, then any other non-alert kind (soundscape, ...), oldest first within each kind. If only alerts are left
  pending, the new non-alert row is not admitted. Every row deleted or not admitted is counted in the counter
  `outbox_dropped` (and `outbox_dropped:<kind>`).
- refuse_new: pending rows are kept and the new non-alert row is not admitted, counted in `outbox_refused`
  (and `outbox_refused:<kind>`).
Alert rows are never dropped nor refused, so the pending count can exceed the bound by the number of pending alerts:
losing an alert is worse than using more disk, and alerts are rare (rules have cooldowns), so the excess stays small.
Retention never deletes pending rows."""

_DROP_ORDER_SQL = "CASE kind WHEN 'window' THEN 0 WHEN 'detection' THEN 1 ELSE 2 END"

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 0 -> 1: initial schema
    (
        f"PRAGMA application_id = {APPLICATION_ID}",
        """CREATE TABLE windows (
            window_id TEXT PRIMARY KEY,
            source TEXT NOT NULL,
            start_unix_s REAL NOT NULL,
            start_s REAL NOT NULL,
            end_s REAL NOT NULL,
            status TEXT NOT NULL,
            error TEXT,
            "group" TEXT,
            p_natural REAL,
            p_industrial REAL,
            p_other REAL,
            tagger_top TEXT NOT NULL,
            tagger_top_score REAL,
            bird_top_score REAL,
            rms_dbfs REAL,
            clipped_fraction REAL,
            compute_ms REAL
        )""",
        "CREATE INDEX windows_start ON windows(start_unix_s)",
        """CREATE TABLE detections (
            window_id TEXT NOT NULL REFERENCES windows(window_id) ON DELETE CASCADE,
            rank INTEGER NOT NULL,
            scientific_name TEXT NOT NULL,
            common_name TEXT NOT NULL,
            confidence REAL,
            occurrence REAL,
            start_unix_s REAL NOT NULL,
            PRIMARY KEY (window_id, rank)
        )""",
        "CREATE INDEX detections_start ON detections(start_unix_s)",
        "CREATE INDEX detections_species ON detections(scientific_name, start_unix_s)",
        """CREATE TABLE aggregates (
            id INTEGER PRIMARY KEY,
            ts_unix_s REAL NOT NULL,
            snapshot TEXT NOT NULL
        )""",
        "CREATE INDEX aggregates_ts ON aggregates(ts_unix_s)",
        """CREATE TABLE alerts (
            alert_id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            key TEXT NOT NULL,
            severity TEXT NOT NULL,
            ts_unix_s REAL NOT NULL,
            message TEXT NOT NULL,
            evidence TEXT NOT NULL
        )""",
        "CREATE INDEX alerts_ts ON alerts(ts_unix_s)",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            event_id TEXT NOT NULL UNIQUE,
            payload TEXT NOT NULL,
            qos INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
            created_unix_s REAL NOT NULL,
            sent_unix_s REAL,
            attempts INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX outbox_pending ON outbox(kind, id) WHERE sent_unix_s IS NULL",
        "CREATE INDEX outbox_sent ON outbox(sent_unix_s) WHERE sent_unix_s IS NOT NULL",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    ),
    # 1 -> 2: when a window was stored. Retention goes by it, not by the recording's time: replayed archive
    # recordings (an AudioMoth card from 2019) must not be deleted the moment they are analysed.
    (
        "ALTER TABLE windows ADD COLUMN stored_unix_s REAL",
        "CREATE INDEX windows_stored ON windows(stored_unix_s)",
    ),
)
# the age of a stored window for retention (rows written before migration 2 fall back to the recording time)
_WINDOW_AGE = "COALESCE(stored_unix_s, start_unix_s)"
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """The store cannot do what was asked; `hint` says what a user can do about it (may be empty)."""

    def __init__(self, problem: str, hint: str = "") -> None:
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem} - {hint}" if hint else problem)


class StoreDataError(StoreError):
    """The database refused the data itself (duplicate id, invalid value): retrying the same write cannot help."""


class StoreVersionError(StoreError):
    """The file is not a soundmond store this version can use (newer schema, or another application's file)."""


@dataclass(frozen=True)
class OutboxItem:
    """A message to publish, handed to the store with the data it describes."""

    kind: str  # "alert", "detection", "window", "soundscape", ...; only "alert" is never dropped
    event_id: str  # unique per event (alerts: the alert_id), lets subscribers de-duplicate replays
    payload: dict[str, Any]  # stored as JSON (non-finite floats become null, numpy scalars plain numbers)
    qos: int = 1

    def __post_init__(self) -> None:
        if not self.kind:
            raise ValueError("OutboxItem.kind must not be empty")
        if self.qos not in (0, 1, 2):
            raise ValueError(f"OutboxItem.qos must be 0, 1 or 2, not {self.qos!r}")


@dataclass(frozen=True)
class OutboxRow:
    """A pending outbox row as the publisher sees it; `id` is the replay order."""

    id: int
    kind: str
    event_id: str
    payload: str  # JSON text, published as is
    qos: int
    created_unix_s: float
    attempts: int


# --- helpers --------------------------------------------------------------------------------------------------


def _clean(obj: Any) -> Any:
    """A JSON-safe copy: non-finite floats -> None (strict JSON has no NaN), numpy values -> Python values."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset, deque)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} as JSON")


def _dumps(obj: Any) -> str:
    return json.dumps(_clean(obj), allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def _float_or_nan(v: float | None) -> float:
    """SQLite stores NaN as NULL; a NULL measurement comes back as NaN (unknown), never as a made-up number."""
    return math.nan if v is None else float(v)


def _translate(exc: sqlite3.Error, path: Path, doing: str) -> StoreError:
    """A sqlite3 error as a StoreError with a hint the user can act on."""
    msg = str(exc)
    name = getattr(exc, "sqlite_errorname", "") or ""
    low = msg.lower()
    problem = f"{path}: {doing} failed: {msg}"
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.DataError)):
        return StoreDataError(problem, "this is a bug in the data handed to the store; the item cannot be written")
    if "locked" in low or "busy" in name.lower():
        hint = (
            "another process holds a write lock on the database: is a second soundmond running, "
            "or a sqlite3 shell open in a transaction?"
        )
    elif "full" in low or name == "SQLITE_FULL":
        hint = f"the filesystem holding {path.parent} is full: free space or lower store.max_size_mb"
    elif "readonly" in low or "read-only" in low or "permission" in low:
        hint = (
            f"the service user cannot write {path} or its folder (SQLite needs to create "
            f"{path.name}-wal and {path.name}-shm beside it): fix ownership or permissions"
        )
    elif "unable to open" in low:
        hint = f"check that {path.parent} exists and the service user may create files in it"
    elif "not a database" in low or "malformed" in low or "corrupt" in low:
        hint = f"{path} is not a usable SQLite database (damaged?): move it aside and soundmond will start a new one"
    elif "disk i/o" in low or "ioerr" in name.lower():
        hint = f"the disk holding {path} reports I/O errors: check the storage medium (dmesg)"
    else:
        hint = ""
    return StoreError(problem, hint)


def _window_row(r: WindowResult, stored_unix_s: float) -> tuple[Any, ...]:
    probs = r.group.probabilities if r.group is not None else {}
    return (
        r.window_id,
        r.source,
        float(r.start_unix_s),
        float(r.start_s),
        float(r.end_s),
        r.status,
        r.error,
        r.group.group if r.group is not None else None,
        *(None if g not in probs else float(probs[g]) for g in GROUPS),
        _dumps([[t.label, t.score] for t in r.tagger_top]),
        float(r.tagger_top_score),
        float(r.bird_top_score),
        float(r.rms_dbfs),
        float(r.clipped_fraction),
        float(r.compute_ms),
        float(stored_unix_s),
    )


def _detection_rows(r: WindowResult) -> list[tuple[Any, ...]]:
    return [
        (
            r.window_id,
            rank,
            s.scientific_name,
            s.common_name,
            float(s.confidence),
            None if s.occurrence is None else float(s.occurrence),
            float(r.start_unix_s),
        )
        for rank, s in enumerate(r.species)
    ]


def _alert_row(a: Alert) -> tuple[Any, ...]:
    return (a.alert_id, a.type, a.key, a.severity, float(a.ts_unix_s), a.message, _dumps(a.evidence))


_WINDOW_COLUMNS = (
    'window_id, source, start_unix_s, start_s, end_s, status, error, "group", p_natural, p_industrial, p_other, '
    "tagger_top, tagger_top_score, bird_top_score, rms_dbfs, clipped_fraction, compute_ms, stored_unix_s"
)


class Store:
    """The SQLite store at `path` (created with its parent folders, migrated to `SCHEMA_VERSION` on open)."""

    def __init__(self, path: Path, config: StoreConfig, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self.config = config
        self._busy_timeout_ms = busy_timeout_ms
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._last_drop_log = -math.inf
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"{self.path}: cannot create the folder {self.path.parent}: {exc.strerror}",
                "create it, or give store.path a folder the service user may write",
            ) from exc
        self._wconn = self._connect("opening the database")
        try:
            self._check_and_migrate()
            self._rconn = self._connect("opening a read connection")
            self._rconn.row_factory = sqlite3.Row
        except BaseException:
            self._wconn.close()
            raise

    # --- connection, schema ---------------------------------------------------------------------------------

    def _connect(self, doing: str) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, doing) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            conn.close()
            raise _translate(exc, self.path, doing) from exc
        return conn

    def _check_and_migrate(self) -> None:
        conn = self._wconn
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            n_tables = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, "reading the schema version") from exc
        # refuse before changing anything in the file (not even the journal mode)
        if version > SCHEMA_VERSION:
            raise StoreVersionError(
                f"{self.path}: schema version {version} was written by a newer soundmond; this one knows up to "
                f"version {SCHEMA_VERSION} and will not touch it",
                "upgrade soundmond, or point store.path at another file",
            )
        if (app_id not in (0, APPLICATION_ID)) or (version == 0 and n_tables > 0):
            raise StoreVersionError(
                f"{self.path}: this SQLite file was not created by soundmond", "point store.path at another file"
            )
        try:
            if version == 0:
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only possible before the first table
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, "setting up the journal") from exc
        if str(mode).lower() != "wal":
            logger.warning("%s: journal_mode is %s, not wal (network filesystem?); writes will be slower", self.path,
                           mode)
        while version < SCHEMA_VERSION:
            with self._transaction(conn, f"migrating the schema to version {version + 1}"):
                current = conn.execute("PRAGMA user_version").fetchone()[0]
                if current != version:  # another process migrated meanwhile
                    version = current
                    continue
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
                if version == 0:
                    conn.execute(
                        "INSERT INTO meta(key, value) VALUES ('created_unix_s', ?)", (repr(time.time()),)
                    )
            version += 1
            logger.info("%s: schema migrated to version %s", self.path, version)

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection, doing: str) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; ROLLBACK and a StoreError on any failure."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, doing) from exc
        try:
            yield
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    logger.exception("%s: rollback failed after an error while %s", self.path, doing)
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc, self.path, doing) from exc
            raise

    def schema_version(self) -> int:
        return int(self._query("PRAGMA user_version")[0][0])

    def close(self) -> None:
        """Close both connections (the WAL is checkpointed by SQLite when the last connection closes)."""
        with self._wlock, self._rlock:
            self._rconn.close()
            self._wconn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writes ---------------------------------------------------------------------------------------------

    def write_batch(
        self,
        results: Sequence[WindowResult],
        alerts: Sequence[Alert],
        outbox: Sequence[OutboxItem],
        *,
        counters: Mapping[str, int] | None = None,
        now: float | None = None,
    ) -> None:
        """Write windows with their detections, alerts, outbox rows and counter increments in ONE transaction.

        Raises StoreDataError when the data itself is refused (nothing of the batch is written; retrying the same
        batch cannot help), StoreError for anything else (locked, disk full, ...; retrying later can help).
        """
        now = time.time() if now is None else now
        try:
            window_rows = [_window_row(r, now) for r in results]
            detection_rows = [row for r in results for row in _detection_rows(r)]
            alert_rows = [_alert_row(a) for a in alerts]
            outbox_rows = [(item, _dumps(item.payload)) for item in outbox]
        except (TypeError, ValueError, AttributeError) as exc:
            raise StoreDataError(
                f"cannot store this batch: {exc}", "this is a bug in the data handed to the store"
            ) from exc
        durable = bool(alerts) or any(item.kind == ALERT_KIND for item in outbox)
        with self._wlock:
            conn = self._wconn
            if durable:
                self._set_synchronous("FULL")
            try:
                with self._transaction(conn, "writing a batch"):
                    conn.executemany(f"INSERT INTO windows({_WINDOW_COLUMNS}) VALUES ({','.join('?' * 18)})",
                                     window_rows)
                    conn.executemany(
                        "INSERT INTO detections(window_id, rank, scientific_name, common_name, confidence, "
                        "occurrence, start_unix_s) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        detection_rows,
                    )
                    conn.executemany(
                        "INSERT INTO alerts(alert_id, type, key, severity, ts_unix_s, message, evidence) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        alert_rows,
                    )
                    self._insert_outbox(conn, outbox_rows, now)
                    for name, by in (counters or {}).items():
                        self._increment(conn, name, by)
            finally:
                if durable:
                    self._set_synchronous("NORMAL")
        logger.debug("stored %d windows, %d detections, %d alerts, %d outbox rows", len(window_rows),
                     len(detection_rows), len(alert_rows), len(outbox_rows))

    def _set_synchronous(self, level: str) -> None:
        try:
            self._wconn.execute(f"PRAGMA synchronous = {level}")
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, f"setting synchronous={level}") from exc

    def _insert_outbox(self, conn: sqlite3.Connection, rows: Sequence[tuple[OutboxItem, str]], now: float) -> None:
        """Insert outbox rows applying the bound and OUTBOX_POLICY (inside the caller's transaction)."""
        if not rows:
            return
        max_rows = self.config.outbox_max_rows
        policy = self.config.outbox_full_policy
        pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE sent_unix_s IS NULL").fetchone()[0]
        lost: dict[str, int] = {}
        counter = OUTBOX_DROPPED if policy == "drop_oldest_detections" else OUTBOX_REFUSED

        def drop_oldest(n: int) -> int:
            victims = conn.execute(
                f"SELECT id, kind FROM outbox WHERE sent_unix_s IS NULL AND kind != ? ORDER BY {_DROP_ORDER_SQL}, id "
                "LIMIT ?",
                (ALERT_KIND, n),
            ).fetchall()
            conn.executemany("DELETE FROM outbox WHERE id = ?", [(v[0],) for v in victims])
            for _, kind in victims:
                lost[kind] = lost.get(kind, 0) + 1
            return len(victims)

        if policy == "drop_oldest_detections" and pending + len(rows) > max_rows:
            pending -= drop_oldest(pending + len(rows) - max_rows)  # make room for the whole batch at once
        for item, payload in rows:
            if item.kind != ALERT_KIND and pending >= max_rows:
                if policy == "drop_oldest_detections":
                    pending -= drop_oldest(pending - max_rows + 1)
                if pending >= max_rows:  # refuse_new, or nothing but alerts pending
                    lost[item.kind] = lost.get(item.kind, 0) + 1
                    continue
            conn.execute(
                "INSERT INTO outbox(kind, event_id, payload, qos, created_unix_s) VALUES (?, ?, ?, ?, ?)",
                (item.kind, item.event_id, payload, item.qos, now),
            )
            pending += 1
        if lost:
            total = sum(lost.values())
            self._increment(conn, counter, total)
            for kind, n in lost.items():
                self._increment(conn, f"{counter}:{kind}", n)
            if time.monotonic() - self._last_drop_log >= 60.0:
                self._last_drop_log = time.monotonic()
                logger.warning(
                    "outbox full (%d pending, bound %d, policy %s): %d rows %s (%s); counted in %s",
                    pending, max_rows, policy, total,
                    "dropped" if counter == OUTBOX_DROPPED else "refused", lost, counter,
                )

    @staticmethod
    def _increment(conn: sqlite3.Connection, name: str, by: int) -> None:
        conn.execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
            (name, int(by), int(by)),
        )

    def increment(self, name: str, by: int = 1) -> int:
        """Add `by` to a persistent counter; returns the new value."""
        with self._wlock, self._transaction(self._wconn, f"incrementing counter {name}"):
            self._increment(self._wconn, name, by)
            return int(self._wconn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0])

    def write_aggregate(self, ts_unix_s: float, snapshot: Mapping[str, Any]) -> None:
        try:
            text = _dumps(snapshot)
        except (TypeError, ValueError) as exc:
            raise StoreDataError(f"cannot store this aggregate snapshot: {exc}") from exc
        with self._wlock, self._transaction(self._wconn, "writing an aggregate"):
            self._wconn.execute("INSERT INTO aggregates(ts_unix_s, snapshot) VALUES (?, ?)", (float(ts_unix_s), text))

    def outbox_mark_sent(self, ids: Sequence[int], now: float) -> int:
        """Mark rows sent (call only on broker acknowledgement); returns how many were pending."""
        marked = 0
        with self._wlock, self._transaction(self._wconn, "marking outbox rows sent"):
            for i in range(0, len(ids), 500):
                chunk = [int(x) for x in ids[i : i + 500]]
                marks = ",".join("?" * len(chunk))
                cur = self._wconn.execute(
                    f"UPDATE outbox SET sent_unix_s = ? WHERE sent_unix_s IS NULL AND id IN ({marks})",
                    (now, *chunk),
                )
                marked += cur.rowcount
        return marked

    def outbox_requeue_sent_since(self, since_unix_s: float) -> int:
        """Make rows marked sent at or after `since_unix_s` pending again (the publisher calls it after a lost
        connection: the broker may have lost what it acknowledged just before); returns how many. Sent rows that
        retention already deleted (`store.outbox_keep_sent_s`) cannot come back."""
        with self._wlock, self._transaction(self._wconn, "re-queueing outbox rows"):
            cur = self._wconn.execute(
                "UPDATE outbox SET sent_unix_s = NULL WHERE sent_unix_s IS NOT NULL AND sent_unix_s >= ?",
                (float(since_unix_s),),
            )
            return int(cur.rowcount)

    def outbox_mark_attempt(self, ids: Sequence[int]) -> None:
        """Count a publish attempt for these rows (the publisher calls it before publishing)."""
        with self._wlock, self._transaction(self._wconn, "counting outbox attempts"):
            self._wconn.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", [(int(x),) for x in ids])

    # --- retention ------------------------------------------------------------------------------------------

    def _data_bytes(self, conn: sqlite3.Connection) -> int:
        """Bytes held by live pages (free pages are returned to the filesystem by incremental_vacuum)."""
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    def enforce_retention(self, now: float) -> dict[str, int]:
        """Delete old data by age, then by size; returns rows deleted per table.

        By age: windows (by when they were stored, not when they were recorded) and their detections, aggregates and
        alerts older than `retention_days` (an alert whose outbox row is
        still pending is kept), sent outbox rows older than `outbox_keep_sent_s`.
        By size: when the database is larger than `max_size_mb`, sent outbox rows go, then the oldest windows (with
        their detections) and the aggregates up to the same time, in proportion to the excess (aiming at 90 % of the
        bound). Pending outbox rows and alerts are never deleted for size. Freed pages go back to the filesystem with
        `incremental_vacuum` and `wal_checkpoint(TRUNCATE)`; when that is not enough (deleted rows leave half-empty
        pages in the window-id indexes) a full `VACUUM` rebuilds the file, which needs free space about the size of
        the database and blocks writes meanwhile. Size enforcement only happens over the bound, so VACUUM is rare.
        """
        cutoff = now - self.config.retention_days * 86400.0
        sent_cutoff = now - self.config.outbox_keep_sent_s
        max_bytes = int(self.config.max_size_mb * 1024 * 1024)
        deleted = {"windows": 0, "detections": 0, "aggregates": 0, "alerts": 0, "outbox_sent": 0}
        conn = self._wconn
        with self._wlock:
            with self._transaction(conn, "deleting old data"):
                self._delete_upto(conn, cutoff, deleted, inclusive=False)
                deleted["alerts"] += conn.execute(
                    "DELETE FROM alerts WHERE ts_unix_s < ? AND alert_id NOT IN "
                    "(SELECT event_id FROM outbox WHERE sent_unix_s IS NULL)",
                    (cutoff,),
                ).rowcount
                deleted["outbox_sent"] += conn.execute(
                    "DELETE FROM outbox WHERE sent_unix_s IS NOT NULL AND sent_unix_s < ?", (sent_cutoff,)
                ).rowcount
            if any(deleted.values()):
                self._reclaim(conn, full=False)
            for _ in range(8):
                if self._data_bytes(conn) <= max_bytes:
                    break
                if not self._shrink_step(conn, max_bytes, deleted):
                    break
                self._reclaim(conn, full=False)
                if self._data_bytes(conn) > max_bytes:
                    self._reclaim(conn, full=True)
            if self._data_bytes(conn) > max_bytes:
                logger.warning(
                    "%s: %.2f MB, still over store.max_size_mb (%.2f MB): what is left is pending outbox rows and "
                    "alerts, which are never deleted for size", self.path, self._data_bytes(conn) / 2**20,
                    max_bytes / 2**20,
                )
            if any(deleted.values()):
                logger.info("retention deleted %s; database now %.2f MB (bound %.2f MB)", deleted,
                            self._data_bytes(conn) / 2**20, max_bytes / 2**20)
        return deleted

    @staticmethod
    def _delete_upto(conn: sqlite3.Connection, t: float, deleted: dict[str, int], *, inclusive: bool) -> None:
        op = "<=" if inclusive else "<"
        deleted["detections"] += conn.execute(
            f"DELETE FROM detections WHERE window_id IN (SELECT window_id FROM windows WHERE {_WINDOW_AGE} {op} ?)",
            (t,),
        ).rowcount
        deleted["windows"] += conn.execute(f"DELETE FROM windows WHERE {_WINDOW_AGE} {op} ?", (t,)).rowcount
        deleted["aggregates"] += conn.execute(f"DELETE FROM aggregates WHERE ts_unix_s {op} ?", (t,)).rowcount

    def _shrink_step(self, conn: sqlite3.Connection, max_bytes: int, deleted: dict[str, int]) -> bool:
        """Delete sent outbox rows and the oldest share of windows/aggregates; False when nothing is left."""
        with self._transaction(conn, "deleting data to stay under store.max_size_mb"):
            size = self._data_bytes(conn)
            sent = conn.execute("DELETE FROM outbox WHERE sent_unix_s IS NOT NULL").rowcount
            deleted["outbox_sent"] += sent
            share = min(1.0, (size - 0.9 * max_bytes) / size)
            n_windows = conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
            n_aggregates = conn.execute("SELECT COUNT(*) FROM aggregates").fetchone()[0]
            if n_windows:
                sql = f"SELECT {_WINDOW_AGE} FROM windows ORDER BY {_WINDOW_AGE} LIMIT 1 OFFSET ?"
                n = n_windows
            elif n_aggregates:
                sql = "SELECT ts_unix_s FROM aggregates ORDER BY ts_unix_s LIMIT 1 OFFSET ?"
                n = n_aggregates
            else:
                return sent > 0
            offset = min(n - 1, max(0, math.ceil(n * share) - 1))
            upto = conn.execute(sql, (offset,)).fetchone()[0]
            self._delete_upto(conn, upto, deleted, inclusive=True)
        return True

    def _reclaim(self, conn: sqlite3.Connection, *, full: bool) -> None:
        """Give free pages back to the filesystem (`full`: rebuild the whole file with VACUUM)."""
        try:
            # executescript steps the pragma to completion (execute() frees a single page per call)
            conn.executescript("VACUUM;" if full else "PRAGMA incremental_vacuum;")
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, "VACUUM" if full else "returning free space to the filesystem") from exc
        if busy:
            logger.debug("wal_checkpoint(TRUNCATE) could not complete (a reader is active); SQLite retries later")
        if full:
            logger.info("%s: rebuilt with VACUUM to stay under store.max_size_mb", self.path)

    def file_bytes(self) -> int:
        """Size of the database file and its WAL on disk."""
        total = 0
        for p in (self.path, self.path.with_name(self.path.name + "-wal")):
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    # --- reads ----------------------------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._rlock:
            try:
                return self._rconn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _translate(exc, self.path, "reading") from exc

    @staticmethod
    def _where(since: float | None, column: str, extra: Sequence[tuple[str, Any]] = ()) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if since is not None:
            clauses.append(f"{column} >= ?")
            params.append(since)
        for clause, value in extra:
            if value is not None:
                clauses.append(clause)
                params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    @staticmethod
    def _order_limit(column: str, limit: int | None, newest_first: bool) -> str:
        order = f" ORDER BY {column} {'DESC' if newest_first else 'ASC'}, rowid"
        return order + (f" LIMIT {int(limit)}" if limit is not None else "")

    def windows(self, since: float | None = None, limit: int | None = None, *,
                newest_first: bool = False) -> list[dict[str, Any]]:
        """Window rows (tagger_top decoded to a list of [label, score]) from `since`, oldest first by default."""
        where, params = self._where(since, "start_unix_s")
        rows = self._query(f"SELECT * FROM windows{where}{self._order_limit('start_unix_s', limit, newest_first)}",
                           params)
        out = []
        for row in rows:
            d = dict(row)
            d["tagger_top"] = json.loads(d["tagger_top"])
            out.append(d)
        return out

    def detections(self, since: float | None = None, limit: int | None = None, *, species: str | None = None,
                   newest_first: bool = False) -> list[dict[str, Any]]:
        """Detection rows from `since`, optionally for one scientific name."""
        where, params = self._where(since, "start_unix_s", [("scientific_name = ?", species)])
        order = self._order_limit("start_unix_s", limit, newest_first).replace(", rowid", ", window_id, rank")
        return [dict(r) for r in self._query(f"SELECT * FROM detections{where}{order}", params)]

    def alerts(self, since: float | None = None, limit: int | None = None, *, type: str | None = None,
               newest_first: bool = False) -> list[dict[str, Any]]:
        """Alert rows (evidence decoded) from `since`, optionally of one type."""
        where, params = self._where(since, "ts_unix_s", [("type = ?", type)])
        rows = self._query(f"SELECT * FROM alerts{where}{self._order_limit('ts_unix_s', limit, newest_first)}",
                           params)
        out = []
        for row in rows:
            d = dict(row)
            d["evidence"] = json.loads(d["evidence"])
            out.append(d)
        return out

    def aggregates(self, since: float | None = None, limit: int | None = None, *,
                   newest_first: bool = False) -> list[dict[str, Any]]:
        """Aggregate snapshots: [{"ts_unix_s": ..., "snapshot": {...}}]."""
        where, params = self._where(since, "ts_unix_s")
        rows = self._query(
            f"SELECT ts_unix_s, snapshot FROM aggregates{where}{self._order_limit('ts_unix_s', limit, newest_first)}",
            params,
        )
        return [{"ts_unix_s": r["ts_unix_s"], "snapshot": json.loads(r["snapshot"])} for r in rows]

    def counter(self, name: str) -> int:
        rows = self._query("SELECT value FROM counters WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else 0

    def counters(self) -> dict[str, int]:
        return {r["name"]: int(r["value"]) for r in self._query("SELECT name, value FROM counters ORDER BY name")}

    def outbox_pending(self, limit: int, after_id: int = 0) -> list[OutboxRow]:
        """Up to `limit` pending rows with id > after_id, in id (replay) order."""
        rows = self._query(
            "SELECT id, kind, event_id, payload, qos, created_unix_s, attempts FROM outbox "
            "WHERE sent_unix_s IS NULL AND id > ? ORDER BY id LIMIT ?",
            (int(after_id), int(limit)),
        )
        return [OutboxRow(*tuple(r)) for r in rows]

    def outbox_counts(self) -> dict[str, int]:
        """pending (of which pending_alerts), sent (not yet deleted), dropped and refused (since the DB was made)."""
        row = self._query(
            "SELECT COALESCE(SUM(sent_unix_s IS NULL), 0), COALESCE(SUM(sent_unix_s IS NULL AND kind = ?), 0), "
            "COALESCE(SUM(sent_unix_s IS NOT NULL), 0) FROM outbox",
            (ALERT_KIND,),
        )[0]
        return {
            "pending": int(row[0]),
            "pending_alerts": int(row[1]),
            "sent": int(row[2]),
            "dropped": self.counter(OUTBOX_DROPPED),
            "refused": self.counter(OUTBOX_REFUSED),
        }

    def recent_results(self, since_unix_s: float) -> list[WindowResult]:
        """WindowResults from `since_unix_s` on, oldest first, rebuilt to restore the aggregator after a restart."""
        windows = self.windows(since=since_unix_s)
        species: dict[str, list[SpeciesScore]] = {}
        for d in self._query(
            "SELECT window_id, scientific_name, common_name, confidence, occurrence FROM detections "
            "WHERE start_unix_s >= ? ORDER BY window_id, rank",
            (since_unix_s,),
        ):
            species.setdefault(d["window_id"], []).append(
                SpeciesScore(d["scientific_name"], d["common_name"], _float_or_nan(d["confidence"]), d["occurrence"])
            )
        out = []
        for w in windows:
            group = None
            if w["group"] is not None:
                probs = {g: w[f"p_{g}"] for g in GROUPS if w[f"p_{g}"] is not None}
                group = GroupPrediction(w["group"], {g: float(p) for g, p in probs.items()})
            out.append(
                WindowResult(
                    window_id=w["window_id"],
                    source=w["source"],
                    start_unix_s=w["start_unix_s"],
                    start_s=w["start_s"],
                    end_s=w["end_s"],
                    group=group,
                    tagger_top=tuple(LabelScore(label, _float_or_nan(score)) for label, score in w["tagger_top"]),
                    tagger_top_score=_float_or_nan(w["tagger_top_score"]),
                    species=tuple(species.get(w["window_id"], ())),
                    bird_top_score=_float_or_nan(w["bird_top_score"]),
                    rms_dbfs=_float_or_nan(w["rms_dbfs"]),
                    clipped_fraction=_float_or_nan(w["clipped_fraction"]),
                    compute_ms=_float_or_nan(w["compute_ms"]),
                    status=w["status"],
                    error=w["error"],
                )
            )
        return out


# --- the writer stage ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    result: WindowResult | None
    alerts: tuple[Alert, ...]
    outbox: tuple[OutboxItem, ...]

    @property
    def rows(self) -> int:
        return (1 + len(self.result.species) if self.result else 0) + len(self.alerts) + len(self.outbox)


@dataclass(frozen=True)
class _FlushMarker:
    done: threading.Event = field(default_factory=threading.Event)


class StoreWriter:
    """The stage that takes writes off the inference thread.

    `submit()` puts an item on a bounded queue; one thread writes items in batches of up to `store.batch_size`
    or every `store.flush_interval_s`, whichever comes first, and runs retention every `retention_interval_s`.

    Never losing an alert: when the queue stays full for `submit_timeout_s`, the window and its non-alert outbox
    items are dropped (counted in `store_queue_dropped_windows` / `store_queue_dropped_outbox`, logged), but its
    alerts and their outbox rows go to an unbounded side list written with the next batch; `submit_alert` never
    blocks and never drops. A failed write (locked, disk full) is logged, retried with backoff and kept; only
    `close()` gives up on it, after its timeout, with an ERROR naming what is lost.
    """

    def __init__(
        self,
        store: Store,
        stop: threading.Event,
        *,
        queue_items: int = 500,
        submit_timeout_s: float = 1.0,
        retention_interval_s: float | None = 3600.0,
        backoff_s: tuple[float, float] = (0.2, 30.0),
    ) -> None:
        self._store = store
        self._stop = stop
        self._queue: queue.Queue[_Item | _FlushMarker] = queue.Queue(maxsize=queue_items)
        self._submit_timeout_s = submit_timeout_s
        self._retention_interval_s = retention_interval_s
        self._backoff_s = backoff_s
        self._overflow: deque[_Item] = deque()  # alerts that found the queue full; deque append/popleft are atomic
        self._lock = threading.Lock()  # guards the statistics and pending counters below
        self._pending_counters: dict[str, int] = {}
        self._closing = threading.Event()
        self._give_up = threading.Event()
        self._drain_lock = threading.Lock()  # one writer at a time: the thread, or flush/close after it ended
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._next_retention = time.monotonic()
        self._last_error: str | None = None
        self._last_error_unix_s: float | None = None
        self._failing = False
        self._batches_written = 0
        self._rows_written = 0
        self._dropped_windows = 0
        self._dropped_outbox = 0
        self._rejected = 0

    def start(self) -> StoreWriter:
        self._thread.start()
        return self

    # --- producer side --------------------------------------------------------------------------------------

    def submit(self, result: WindowResult, alerts: Sequence[Alert] = (), outbox: Sequence[OutboxItem] = ()) -> bool:
        """Queue a window with the alerts it raised and their outbox items; False if the window had to be dropped."""
        item = _Item(result, tuple(alerts), tuple(outbox))
        try:
            self._queue.put(item, timeout=self._submit_timeout_s)
            return True
        except queue.Full:
            pass
        kept = _Item(None, item.alerts, tuple(o for o in item.outbox if o.kind == ALERT_KIND))
        if kept.alerts or kept.outbox:
            self._overflow.append(kept)
        dropped_outbox = len(item.outbox) - len(kept.outbox)
        with self._lock:
            self._dropped_windows += 1
            self._dropped_outbox += dropped_outbox
            self._count(WRITER_DROPPED_WINDOWS, 1)
            self._count(WRITER_DROPPED_OUTBOX, dropped_outbox)
            total = self._dropped_windows
        logger.warning(
            "store queue full for %.1f s: dropped window %s and %d outbox items, kept its %d alerts "
            "(%d windows dropped so far; last write error: %s)",
            self._submit_timeout_s, result.window_id, dropped_outbox, len(kept.alerts), total, self._last_error,
        )
        return False

    def submit_alert(self, alert: Alert, outbox_item: OutboxItem | None = None) -> None:
        """Queue an alert not tied to a window (capture lost, ...). Never blocks, never drops."""
        item = _Item(None, (alert,), (outbox_item,) if outbox_item is not None else ())
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._overflow.append(item)

    def _count(self, name: str, by: int) -> None:
        if by:
            self._pending_counters[name] = self._pending_counters.get(name, 0) + by

    # --- shutdown -------------------------------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Return True once everything submitted before this call is committed; False if `timeout` ran out."""
        deadline = time.monotonic() + timeout
        marker = _FlushMarker()
        if self._thread.is_alive():
            try:
                self._queue.put(marker, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                return False
            while not marker.done.wait(0.05):
                if not self._thread.is_alive():
                    break  # the thread ended (stop) before reaching the marker: finish here
                if time.monotonic() >= deadline:
                    return False
            if marker.done.is_set():
                return True
        return self._drain_inline(deadline)

    def close(self, timeout: float = 10.0) -> bool:
        """Write everything still queued, stop the thread; True if nothing was lost."""
        deadline = time.monotonic() + timeout
        self._closing.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._give_up.set()  # the thread is retrying a failing write: let it log what it loses and end
            self._thread.join(5.0)
        ok = self._drain_inline(deadline) and not self._thread.is_alive()
        left = list(self._overflow) + [x for x in list(self._queue.queue) if isinstance(x, _Item)]
        if left:
            logger.error(
                "store writer closed with %d items NOT stored (%d windows, %d alerts): %s",
                len(left), sum(i.result is not None for i in left), sum(len(i.alerts) for i in left), left,
            )
        return ok and not left

    def _drain_inline(self, deadline: float) -> bool:
        """Write what is queued from the calling thread (the writer thread has ended)."""
        with self._drain_lock:
            while True:
                items, markers = self._take(block=False)
                if not items and not markers:
                    return True
                if items and not self._write_items(items, deadline=deadline):
                    return False  # the items are back in the side list, for a later flush/close
                for m in markers:
                    m.done.set()

    # --- the thread -----------------------------------------------------------------------------------------

    def _take(self, block: bool) -> tuple[list[_Item], list[_FlushMarker]]:
        """Up to batch_size items (waiting up to flush_interval_s if `block`); a flush marker ends the batch."""
        items: list[_Item] = []
        markers: list[_FlushMarker] = []
        batch_size = self._store.config.batch_size
        deadline: float | None = None  # flush_interval_s after the first item
        while len(items) < batch_size and not markers:
            stopping = self._stop.is_set() or self._closing.is_set()
            wait = 0.0
            if block and not stopping:
                wait = 0.1 if deadline is None else deadline - time.monotonic()  # 0.1: poll the stop event
            try:
                x = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(x, _FlushMarker):
                markers.append(x)
            else:
                items.append(x)
                if deadline is None:
                    deadline = time.monotonic() + self._store.config.flush_interval_s
        while self._overflow:
            items.insert(0, self._overflow.popleft())
        return items, markers

    def _run(self) -> None:
        logger.info("store writer started (%s)", self._store.path)
        while True:
            try:
                self._maybe_retention()
                with self._drain_lock:
                    items, markers = self._take(block=True)
                    if items and not self._write_items(items, deadline=None):
                        break  # close() gave up on a failing database; it accounts for what is left
                    for m in markers:
                        m.done.set()
                if (
                    not items and not markers
                    and (self._stop.is_set() or self._closing.is_set())
                    and self._queue.empty() and not self._overflow
                ):
                    break
            except Exception:  # the top of the thread's loop: log, back off, carry on
                logger.exception("store writer: unexpected error")
                self._give_up.wait(1.0)
        logger.info("store writer stopped: %s", self.health())

    def _maybe_retention(self) -> None:
        if self._retention_interval_s is None or time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + self._retention_interval_s
        try:
            self._store.enforce_retention(time.time())
        except Exception:
            logger.exception("store retention failed; retrying in %.0f s", self._retention_interval_s)

    def _write_items(self, items: list[_Item], deadline: float | None) -> bool:
        """Write items in one transaction, retrying with backoff until it works (or `deadline` / give-up).

        A batch the database refuses as invalid is split so one bad item cannot block the others; a bad item is
        counted and logged whole (its alerts are still written on their own if they can be).
        """
        backoff, backoff_max = self._backoff_s
        while True:
            with self._lock:
                counters = dict(self._pending_counters)
            try:
                self._store.write_batch(
                    [i.result for i in items if i.result is not None],
                    [a for i in items for a in i.alerts],
                    [o for i in items for o in i.outbox],
                    counters=counters,
                )
            except StoreDataError as exc:
                if len(items) > 1:
                    return all([self._write_items([i], deadline) for i in items])
                self._reject(items[0], exc)
                return True
            except Exception as exc:
                with self._lock:
                    self._last_error = str(exc)
                    self._last_error_unix_s = time.time()
                    first = not self._failing
                    self._failing = True
                if first:
                    logger.exception("store write failed; keeping %d items and retrying", len(items))
                else:
                    logger.warning("store write failed again (%s); retrying in %.1f s", exc, backoff)
                if self._give_up.is_set() or (deadline is not None and time.monotonic() + backoff > deadline):
                    logger.error(
                        "store: %d items (%d windows, %d alerts) not written yet, out of time: %s",
                        len(items), sum(i.result is not None for i in items), sum(len(i.alerts) for i in items), exc,
                    )
                    self._overflow.extendleft(reversed(items))  # kept in memory, in order, for flush/close
                    return False
                self._give_up.wait(backoff)
                backoff = min(backoff * 2, backoff_max)
                continue
            with self._lock:
                for name, by in counters.items():
                    self._pending_counters[name] -= by
                    if not self._pending_counters[name]:
                        del self._pending_counters[name]
                self._batches_written += 1
                self._rows_written += sum(i.rows for i in items)
                if self._failing:
                    logger.info("store writes work again")
                self._failing = False
            return True

    def _reject(self, item: _Item, exc: StoreDataError) -> None:
        logger.error("store: the database refused this item, it is not stored: %r", item, exc_info=exc)
        with self._lock:
            self._rejected += 1
            self._count(WRITER_REJECTED, 1)
        if item.result is not None and (item.alerts or item.outbox):
            alerts_only = _Item(None, item.alerts, tuple(o for o in item.outbox if o.kind == ALERT_KIND))
            with contextlib.suppress(StoreError):
                self._store.write_batch([], alerts_only.alerts, alerts_only.outbox)
                logger.warning("store: the refused item's %d alerts were stored on their own", len(item.alerts))

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {
                "alive": self._thread.is_alive(),
                "queue_depth": self._queue.qsize(),
                "overflow_alerts": len(self._overflow),
                "failing": self._failing,
                "last_error": self._last_error,
                "last_error_unix_s": self._last_error_unix_s,
                "batches_written": self._batches_written,
                "rows_written": self._rows_written,
                "dropped_windows": self._dropped_windows,
                "dropped_outbox_items": self._dropped_outbox,
                "rejected_items": self._rejected,
            }
