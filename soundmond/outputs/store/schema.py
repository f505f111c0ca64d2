"""The store's file format: tables, migrations, the version check, connections and transactions.

Versioned with `PRAGMA user_version`; `MIGRATIONS[i]` takes the database from version i to i + 1 and runs in one
transaction. A database written by a newer soundmond is refused untouched (`StoreVersionError`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from soundmond.errors import HintedError

logger = logging.getLogger(__name__)

APPLICATION_ID = 0x534E444D  # "SNDM": marks the file as a soundmond store

# counters (table `counters`), kept across restarts
OUTBOX_DROPPED = "outbox_dropped"  # pending rows deleted or not admitted by drop_oldest_detections
OUTBOX_REFUSED = "outbox_refused"  # new rows refused by refuse_new
WRITER_DROPPED_WINDOWS = "store_queue_dropped_windows"  # StoreWriter queue full: window results dropped
WRITER_DROPPED_OUTBOX = "store_queue_dropped_outbox"  # ... and their non-alert outbox items
WRITER_REJECTED = "store_rejected_items"  # items refused as invalid (a stored id is skipped, no error)

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
    # 2 -> 3: what a stage must remember across restarts, one JSON row per stage (the alert engine's cooldowns,
    # hysteresis and episode counters under 'alerts'), replaced whole on every save
    (
        """CREATE TABLE engine_state (
            name TEXT PRIMARY KEY,
            saved_unix_s REAL NOT NULL,
            state TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
    # 3 -> 4: which recordings (by content hash) were analysed, with which window settings, at which path, and
    # whether decoding finished (the last window's id: the file is complete once that window is stored). A replay
    # skips complete files without decoding them and resumes partial ones (`soundmond.capture.replay`).
    (
        """CREATE TABLE replay_sources (
            sha256 TEXT NOT NULL,
            analysis TEXT NOT NULL,
            path TEXT NOT NULL,
            last_window_id TEXT,
            windows INTEGER,
            started_unix_s REAL NOT NULL,
            decoded_unix_s REAL,
            PRIMARY KEY (sha256, analysis, path)
        ) WITHOUT ROWID""",
        "CREATE INDEX windows_source ON windows(source)",
    ),
    # 4 -> 5: where in its window a species was heard: its best bird-model chunk (the stream grid, `models/grid.py`),
    # start / end within the source (seconds) and in UTC. One row per (window, species) as before (ids and
    # exactly-once unchanged); null for rows written before (no chunk was known) and for a species without a chunk.
    (
        "ALTER TABLE detections ADD COLUMN chunk_start_s REAL",
        "ALTER TABLE detections ADD COLUMN chunk_end_s REAL",
        "ALTER TABLE detections ADD COLUMN chunk_start_unix_s REAL",
        "ALTER TABLE detections ADD COLUMN chunk_end_unix_s REAL",
    ),
    # 5 -> 6: a window's acoustic indices (`soundmond.soundscape.indices`); NULL when indices were off, the window was
    # digital silence or too short, or it was stored before this version. leq_db_spl only with source.calibration_db.
    tuple(
        f"ALTER TABLE windows ADD COLUMN {name} REAL"
        for name in ("ndsi", "aci", "adi", "aei", "bi", "hf", "ht", "h", "leq_dbfs", "leq_db_spl")
    ),
    # 6 -> 7: evidence clips (`soundmond.outputs.evidence`), one row per event that asked for a clip (detection_id or
    # alert_id): written (size, SHA-256, span), skipped (why: speech, per_species_hour, ...) or deleted (retention,
    # max_mb). A table of its own: detections and alerts stay untouched, a clip is decided after its event's row
    # (it waits for its after-pad) and may outlive it (store and clip retention differ).
    (
        """CREATE TABLE evidence (
            event_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('detection', 'alert')),
            label TEXT NOT NULL,
            window_id TEXT NOT NULL,
            path TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('written', 'skipped', 'deleted')),
            reason TEXT,
            event_start_s REAL NOT NULL,
            event_end_s REAL NOT NULL,
            bytes INTEGER,
            sha256 TEXT,
            start_s REAL,
            end_s REAL,
            start_unix_s REAL,
            sample_rate_hz INTEGER,
            privacy TEXT,
            written_unix_s REAL,
            changed_unix_s REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX evidence_path ON evidence(path)",
    ),
)
# the age of a stored window for retention (rows written before migration 2 fall back to the recording time)
WINDOW_AGE = "COALESCE(stored_unix_s, start_unix_s)"
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(HintedError):
    """The store cannot do what was asked; `hint` says what a user can do about it (may be empty)."""


class StoreDataError(StoreError):
    """The database refused the data itself (a missing or invalid value): retrying the same write cannot help."""


class StoreVersionError(StoreError):
    """The file is not a soundmond store this version can use (newer schema, or another application's file)."""



def translate(exc: sqlite3.Error, path: Path, doing: str) -> StoreError:
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


def connect(path: Path, busy_timeout_ms: int, doing: str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from any thread behind a lock."""
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise translate(exc, path, doing) from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        conn.close()
        raise translate(exc, path, doing) from exc
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, path: Path, doing: str) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT; ROLLBACK and a StoreError on any failure."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise translate(exc, path, doing) from exc
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                logger.exception("%s: rollback failed after an error while %s", path, doing)
        if isinstance(exc, sqlite3.Error):
            raise translate(exc, path, doing) from exc
        raise


def check_and_migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a file this version cannot use (before changing anything), then migrate it to SCHEMA_VERSION."""
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        n_tables = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.Error as exc:
        raise translate(exc, path, "reading the schema version") from exc
    # refuse before changing anything in the file (not even the journal mode)
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"{path}: schema version {version} was written by a newer soundmond; this one knows up to "
            f"version {SCHEMA_VERSION} and will not touch it",
            "upgrade soundmond, or point store.path at another file",
        )
    if (app_id not in (0, APPLICATION_ID)) or (version == 0 and n_tables > 0):
        raise StoreVersionError(
            f"{path}: this SQLite file was not created by soundmond", "point store.path at another file"
        )
    try:
        if version == 0:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only possible before the first table
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as exc:
        raise translate(exc, path, "setting up the journal") from exc
    if str(mode).lower() != "wal":
        logger.warning("%s: journal_mode is %s, not wal (network filesystem?); writes will be slower", path, mode)
    while version < SCHEMA_VERSION:
        with transaction(conn, path, f"migrating the schema to version {version + 1}"):
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current != version:  # another process migrated meanwhile
                version = current
                continue
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            if version == 0:
                conn.execute("INSERT INTO meta(key, value) VALUES ('created_unix_s', ?)", (repr(time.time()),))
        version += 1
        logger.info("%s: schema migrated to version %s", path, version)
