"""The store's evidence records (table `evidence`): one row per clip written, marked when the clip is deleted.

Functions take the caller's connection; `Store` holds the locks and the transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from soundmond.data import ClipRecord

EVIDENCE_COLUMNS = ("event_id", "kind", "label", "window_id", "path", "bytes", "sha256", "start_s", "end_s",
                    "start_unix_s", "event_start_s", "event_end_s", "sample_rate_hz", "privacy", "written_unix_s")


def write_evidence(conn: sqlite3.Connection, r: ClipRecord) -> None:
    """Insert or replace the row of `r.event_id` (a clip written again after its deletion is no longer deleted)."""
    values = (r.event_id, r.kind, r.label, r.window_id, r.path, r.bytes, r.sha256, r.start_s, r.end_s,
              r.start_unix_s, r.event_start_s, r.event_end_s, r.sample_rate_hz, r.privacy, r.written_unix_s)
    updates = ", ".join(f"{c} = excluded.{c}" for c in EVIDENCE_COLUMNS[1:])
    conn.execute(
        f"INSERT INTO evidence({', '.join(EVIDENCE_COLUMNS)}) VALUES ({', '.join('?' * len(values))}) "
        f"ON CONFLICT(event_id) DO UPDATE SET {updates}, deleted_unix_s = NULL, deleted_reason = NULL",
        values,
    )


def evidence_deleted(conn: sqlite3.Connection, paths: Sequence[str], reason: str, now: float) -> None:
    conn.executemany("UPDATE evidence SET deleted_unix_s = ?, deleted_reason = ? WHERE path = ? "
                     "AND deleted_unix_s IS NULL", [(now, reason, p) for p in paths])
