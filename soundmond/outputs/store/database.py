"""`Store`: the writes, the MQTT outbox and retention of the local SQLite store.

Durability
    WAL journal, `synchronous=NORMAL`: a committed transaction survives a crash of the process (SIGKILL, OOM kill).
    On power loss NORMAL may lose the last few commits, so a batch that carries an alert is committed with
    `synchronous=FULL` (one fsync; alerts are rare): alerts survive power loss too.

Threads and connections
    A `Store` holds two connections opened with `check_same_thread=False`, each behind its own lock:
    the *write* connection (every write: `write_batch`, `write_aggregate`, `outbox_mark_sent`, `increment`,
    `enforce_retention`) and the *read* connection (every query). There is meant to be ONE writer thread
    (`StoreWriter`) plus the publisher marking rows sent and the evidence thread recording its clips (with their
    outbox rows); the lock serialises them, so outbox ids grow in commit order (the publisher's cursor relies on
    it). Readers on other threads never wait for a write transaction (WAL readers see the last committed state).

Outbox (the MQTT publisher's queue, written BEFORE publishing, marked sent only on broker acknowledgement)
    `OUTBOX_POLICY` below is the policy text.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from soundmond.config import StoreConfig
from soundmond.data import Alert, ClipRecord, ClipSkip, ClipStatus, OutboxCounts, ReplayProgress, WindowResult
from soundmond.identity import LEGACY_MODELS, MODELS_META, models_identity
from soundmond.outputs.store.evidence import EvidenceOutbox, evidence_deleted, evidence_skipped, write_evidence
from soundmond.outputs.store.replays import forget_source, replay_decoded, replay_progress, replay_started
from soundmond.outputs.store.rows import (
    ALERT_COLUMNS,
    ALERT_KIND,
    DETECTION_COLUMNS,
    WINDOW_COLUMNS,
    OutboxItem,
    OutboxRow,
    SavedState,
    alert_row,
    detection_rows,
    dumps,
    results_from_rows,
    window_row,
)
from soundmond.outputs.store.schema import (
    OUTBOX_DROPPED,
    OUTBOX_REFUSED,
    WINDOW_AGE,
    StoreDataError,
    StoreError,
    check_and_migrate,
    connect,
    transaction,
    translate,
)
from soundmond.soundscape.aggregate import SoundscapeSnapshot

logger = logging.getLogger(__name__)

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

STATE_UPSERT = ("INSERT INTO engine_state(name, saved_unix_s, state) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET saved_unix_s = excluded.saved_unix_s, state = excluded.state")
_DROP_ORDER_SQL = "CASE kind WHEN 'window' THEN 0 WHEN 'detection' THEN 1 ELSE 2 END"


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
            check_and_migrate(self._wconn, self.path)
            self._rconn = self._connect("opening a read connection")
            self._rconn.row_factory = sqlite3.Row
        except BaseException:
            self._wconn.close()
            raise

    # --- connection ---------------------------------------------------------------------------------------

    def _connect(self, doing: str) -> sqlite3.Connection:
        return connect(self.path, self._busy_timeout_ms, doing)

    def _transaction(self, conn: sqlite3.Connection, doing: str) -> contextlib.AbstractContextManager[None]:
        return transaction(conn, self.path, doing)

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
        states: Sequence[SavedState] = (),
        now: float | None = None,
    ) -> None:
        """Write windows with their detections, alerts, outbox rows, counter increments and stage states (each
        replacing the stored one of its name; the last of a name wins) in ONE transaction.

        Ids derive from content (`soundmond.identity`): a window, detection, alert or outbox row whose id is already
        stored is left as it is (INSERT OR IGNORE), so a replay or a race never doubles a row.

        Raises StoreDataError when the data itself is refused (nothing of the batch is written; retrying the same
        batch cannot help), StoreError for anything else (locked, disk full, ...; retrying later can help).
        """
        now = time.time() if now is None else now
        try:
            windows = [window_row(r, now) for r in results]
            detections = [row for r in results for row in detection_rows(r)]
            alert_values = [alert_row(a) for a in alerts]
            outbox_rows = [(item, dumps(item.payload)) for item in outbox]
            state_rows = [(st.name, float(st.saved_unix_s), dumps(st.state)) for st in states]
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
                    conn.executemany(
                        f"INSERT OR IGNORE INTO windows({WINDOW_COLUMNS}) VALUES ({_marks(WINDOW_COLUMNS)})", windows
                    )
                    conn.executemany(
                        f"INSERT OR IGNORE INTO detections({DETECTION_COLUMNS}) VALUES ({','.join('?' * 11)})",
                        detections,
                    )
                    conn.executemany(
                        f"INSERT OR IGNORE INTO alerts({ALERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        alert_values,
                    )
                    self._insert_outbox(conn, outbox_rows, now)
                    for name, by in (counters or {}).items():
                        self._increment(conn, name, by)
                    conn.executemany(STATE_UPSERT, state_rows)
            finally:
                if durable:
                    self._set_synchronous("NORMAL")
        logger.debug("stored %d windows, %d detections, %d alerts, %d outbox rows", len(windows),
                     len(detections), len(alert_values), len(outbox_rows))

    def _set_synchronous(self, level: str) -> None:
        try:
            self._wconn.execute(f"PRAGMA synchronous = {level}")
        except sqlite3.Error as exc:
            raise translate(exc, self.path, f"setting synchronous={level}") from exc

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
            inserted = conn.execute(
                "INSERT INTO outbox(kind, event_id, payload, qos, created_unix_s) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(event_id) DO NOTHING",  # an event already queued (a replay, a race) is not queued twice
                (item.kind, item.event_id, payload, item.qos, now),
            ).rowcount
            pending += inserted
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

    def record_run(self, station_id: str, models: Mapping[str, str | None]) -> None:
        """Note in `meta` which station and models write this store (`station_id`, `models` as JSON), replacing
        what an earlier run noted: `soundmond report` names them. Every set of models is also kept under
        `models@<identity>` (`identity.models_identity`, the `models=` part of a replay record's analysis key), so
        the models that analysed each replayed recording stay known; in a store from before these keys, the models
        it named first move to `models@legacy` (the models of its replay records without a `models=` part)."""
        with self._wlock, self._transaction(self._wconn, "recording the station and models"):
            held = dict(self._wconn.execute("SELECT key, value FROM meta").fetchall())
            rows = [("station_id", station_id), ("models", dumps(dict(models))),
                    (f"{MODELS_META}{models_identity(models)}", dumps(dict(models)))]
            if "models" in held and not any(str(k).startswith(MODELS_META) for k in held):
                rows.append((f"{MODELS_META}{LEGACY_MODELS}", held["models"]))
            self._wconn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", rows)

    def recorded_models(self, identity: str) -> dict[str, Any] | None:
        """The models `record_run` kept under `models@<identity>` (`LEGACY_MODELS`: of records from before model
        identities), or None when this store never recorded them."""
        found = self._query("SELECT value FROM meta WHERE key = ?", (f"{MODELS_META}{identity}",))
        if not found:
            return None
        try:
            value = json.loads(found[0][0])
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def write_aggregate(self, ts_unix_s: float, snapshot: SoundscapeSnapshot) -> None:
        """Store the aggregator's snapshot (its `to_dict()` as JSON) at `ts_unix_s`."""
        try:
            text = dumps(snapshot.to_dict())
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

    def outbox_mark_attempt(self, ids: Sequence[int]) -> None:
        """Count a publish attempt for these rows (the publisher calls it before publishing)."""
        with self._wlock, self._transaction(self._wconn, "counting outbox attempts"):
            self._wconn.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", [(int(x),) for x in ids])

    # --- replays (`soundmond.capture.replay`; the table is described in replays.py) ------------------------------

    def replay_progress(self, sha256: str) -> list[ReplayProgress]:
        """Every record of this content (any window settings, any path), oldest first."""
        with self._rlock:
            try:
                return replay_progress(self._rconn, sha256)
            except sqlite3.Error as exc:
                raise translate(exc, self.path, "reading the replay records") from exc

    def replay_started(self, sha256: str, analysis: str, path: str) -> None:
        with self._wlock, self._transaction(self._wconn, "recording a replayed file"):
            replay_started(self._wconn, sha256, analysis, path, time.time())

    def replay_decoded(self, sha256: str, analysis: str, path: str, last_window_id: str, windows: int) -> None:
        with self._wlock, self._transaction(self._wconn, "recording a replayed file"):
            replay_decoded(self._wconn, sha256, analysis, path, last_window_id, windows, time.time())

    # --- evidence clips: the evidence thread writes here itself (rare, so each its own short transaction, under the
    # write lock). `outbox` makes the `evidence` message of every row the change touched; it is queued in the SAME
    # transaction (exactly once: its id derives from the change, a replay's row is not queued twice).

    def write_evidence(self, record: ClipRecord, outbox: EvidenceOutbox | None = None) -> None:
        with self._wlock, self._transaction(self._wconn, "recording an evidence clip"):
            self._evidence_outbox(write_evidence(self._wconn, record), outbox)

    def evidence_skipped(self, skip: ClipSkip, outbox: EvidenceOutbox | None = None) -> None:
        with self._wlock, self._transaction(self._wconn, "recording a skipped evidence clip"):
            self._evidence_outbox(evidence_skipped(self._wconn, skip), outbox)

    def evidence_deleted(self, paths: Sequence[str], reason: str, now: float,
                         outbox: EvidenceOutbox | None = None) -> None:
        with self._wlock, self._transaction(self._wconn, "recording deleted evidence clips"):
            self._evidence_outbox(evidence_deleted(self._wconn, paths, reason, now), outbox)

    def _evidence_outbox(self, changed: Sequence[ClipStatus], outbox: EvidenceOutbox | None) -> None:
        if outbox is None or not changed:
            return
        try:
            rows = [(item, dumps(item.payload)) for item in map(outbox, changed)]
        except (TypeError, ValueError) as exc:
            raise StoreDataError(f"cannot queue the evidence message: {exc}",
                                 "this is a bug in the evidence message builder") from exc
        self._insert_outbox(self._wconn, rows, time.time())

    def has_window(self, window_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM windows WHERE window_id = ?", (window_id,)))

    def forget_source(self, sha256: str) -> dict[str, int]:
        """`--reanalyze`: delete what was stored of this content (replays.forget_source); rows deleted per table."""
        with self._wlock, self._transaction(self._wconn, "deleting a recording's earlier rows"):
            return forget_source(self._wconn, sha256)

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
            f"DELETE FROM detections WHERE window_id IN (SELECT window_id FROM windows WHERE {WINDOW_AGE} {op} ?)",
            (t,),
        ).rowcount
        deleted["windows"] += conn.execute(f"DELETE FROM windows WHERE {WINDOW_AGE} {op} ?", (t,)).rowcount
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
                sql = f"SELECT {WINDOW_AGE} FROM windows ORDER BY {WINDOW_AGE} LIMIT 1 OFFSET ?"
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
            raise translate(exc, self.path, "VACUUM" if full else "returning free space to the filesystem") from exc
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
                raise translate(exc, self.path, "reading") from exc

    def _counter(self, name: str) -> int:
        rows = self._query("SELECT value FROM counters WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else 0

    def meta(self) -> dict[str, str]:
        """The `meta` table: which station and models write this store (`record_run`)."""
        return {str(r[0]): str(r[1]) for r in self._query("SELECT key, value FROM meta")}

    def outbox_pending(self, limit: int, after_id: int = 0) -> list[OutboxRow]:
        """Up to `limit` pending rows with id > after_id, in id (replay) order."""
        rows = self._query(
            "SELECT id, kind, event_id, payload, qos, created_unix_s, attempts FROM outbox "
            "WHERE sent_unix_s IS NULL AND id > ? ORDER BY id LIMIT ?",
            (int(after_id), int(limit)),
        )
        return [OutboxRow(*tuple(r)) for r in rows]

    def outbox_counts(self) -> OutboxCounts:
        """pending (of which pending_alerts), sent (not yet deleted), dropped and refused (since the DB was made)."""
        row = self._query(
            "SELECT COALESCE(SUM(sent_unix_s IS NULL), 0), COALESCE(SUM(sent_unix_s IS NULL AND kind = ?), 0), "
            "COALESCE(SUM(sent_unix_s IS NOT NULL), 0) FROM outbox",
            (ALERT_KIND,),
        )[0]
        return OutboxCounts(
            pending=int(row[0]),
            pending_alerts=int(row[1]),
            sent=int(row[2]),
            dropped=self._counter(OUTBOX_DROPPED),
            refused=self._counter(OUTBOX_REFUSED),
        )

    def load_state(self, name: str) -> SavedState | None:
        """The stage state last saved under `name`, or None when there is none. `StoreDataError` when the stored text
        is not JSON (the caller starts afresh)."""
        rows = self._query("SELECT saved_unix_s, state FROM engine_state WHERE name = ?", (name,))
        if not rows:
            return None
        try:
            state = json.loads(rows[0]["state"])
        except ValueError as exc:
            raise StoreDataError(f"{self.path}: the stored {name!r} state is not JSON ({exc})",
                                 "it is ignored; the next save replaces it") from exc
        return SavedState(name, float(rows[0]["saved_unix_s"]), state)

    def recent_results(self, since_unix_s: float) -> list[WindowResult]:
        """WindowResults from `since_unix_s` on, oldest first, rebuilt to restore the aggregator after a restart."""
        windows = self._query(
            "SELECT * FROM windows WHERE start_unix_s >= ? ORDER BY start_unix_s ASC, rowid", (since_unix_s,)
        )
        detections = self._query(
            "SELECT window_id, scientific_name, common_name, confidence, occurrence, chunk_start_s, chunk_end_s, "
            "chunk_start_unix_s, chunk_end_unix_s FROM detections "
            "WHERE start_unix_s >= ? ORDER BY window_id, rank",
            (since_unix_s,),
        )
        return results_from_rows(windows, detections)


def _marks(columns: str) -> str:
    """One `?` per column of a comma-separated column list."""
    return ", ".join("?" * (columns.count(",") + 1))
