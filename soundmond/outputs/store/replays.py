"""The store's replay records (table `replay_sources`): which recordings were analysed how far, and `--reanalyze`.

A record is written when a file starts (content hash, window settings, path) and when its decoding finishes (its
last window's id and window count). The file is complete once that last window is in `windows`: the store writer
keeps the pipeline's order, so every earlier window of the file is stored too. Functions take the caller's
connection; `Store` holds the locks and the transactions.
"""

from __future__ import annotations

import sqlite3

from soundmond.data import ReplayProgress

_PROGRESS_SQL = (
    "SELECT r.sha256, r.analysis, r.path, r.windows, "
    "(r.last_window_id IS NOT NULL AND EXISTS (SELECT 1 FROM windows w WHERE w.window_id = r.last_window_id)) "
    "FROM replay_sources r WHERE r.sha256 = ? ORDER BY r.started_unix_s"
)


def replay_progress(conn: sqlite3.Connection, sha256: str) -> list[ReplayProgress]:
    return [ReplayProgress(sha, analysis, path, windows, bool(complete))
            for sha, analysis, path, windows, complete in conn.execute(_PROGRESS_SQL, (sha256,)).fetchall()]


def replay_started(conn: sqlite3.Connection, sha256: str, analysis: str, path: str, now: float) -> None:
    conn.execute(
        "INSERT INTO replay_sources(sha256, analysis, path, started_unix_s) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(sha256, analysis, path) DO NOTHING",
        (sha256, analysis, path, now),
    )


def replay_decoded(conn: sqlite3.Connection, sha256: str, analysis: str, path: str, last_window_id: str, windows: int,
            now: float) -> None:
    conn.execute(
        "INSERT INTO replay_sources(sha256, analysis, path, last_window_id, windows, started_unix_s, decoded_unix_s) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(sha256, analysis, path) DO UPDATE SET "
        "last_window_id = excluded.last_window_id, windows = excluded.windows, "
        "decoded_unix_s = excluded.decoded_unix_s",
        (sha256, analysis, path, last_window_id, int(windows), now, now),
    )


def forget_source(conn: sqlite3.Connection, sha256: str) -> dict[str, int]:
    """Delete the rows stored for this content at every path it was analysed from (inside the caller's transaction):
    its windows and their detections, the alerts those windows raised, their outbox rows, and the records."""
    paths = [r[0] for r in conn.execute("SELECT DISTINCT path FROM replay_sources WHERE sha256 = ?", (sha256,))]
    deleted = {"windows": 0, "detections": 0, "alerts": 0, "outbox": 0}
    for path in paths:
        ids = "SELECT window_id FROM windows WHERE source = ?"
        alert_ids = f"SELECT alert_id FROM alerts WHERE json_extract(evidence, '$.window_id') IN ({ids})"
        deleted["outbox"] += conn.execute(
            f"DELETE FROM outbox WHERE event_id IN ({alert_ids}) "
            f"OR (kind IN ('detection', 'window') AND json_extract(payload, '$.window_id') IN ({ids}))",
            (path, path),
        ).rowcount
        deleted["alerts"] += conn.execute(f"DELETE FROM alerts WHERE alert_id IN ({alert_ids})", (path,)).rowcount
        deleted["detections"] += conn.execute(f"DELETE FROM detections WHERE window_id IN ({ids})", (path,)).rowcount
        deleted["windows"] += conn.execute("DELETE FROM windows WHERE source = ?", (path,)).rowcount
    conn.execute("DELETE FROM replay_sources WHERE sha256 = ?", (sha256,))
    return deleted
