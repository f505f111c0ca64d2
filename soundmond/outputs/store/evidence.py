"""The store's evidence records (table `evidence`): one row per event that asked for a clip, `written`, `skipped`
(with the reason) or `deleted` (with the reason).

Functions take the caller's connection and return the rows they changed, as the change left them (`ClipStatus`:
what the `evidence` MQTT message is made of, in the same transaction); `Store` holds the locks and the transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import fields

from soundmond.data import ClipRecord, ClipSkip, ClipStatus
from soundmond.outputs.store.rows import OutboxItem

# the outbox row announcing a change of an evidence row (the `evidence` MQTT message), made by the caller
EvidenceOutbox = Callable[[ClipStatus], OutboxItem]

_WRITTEN = ("event_id", "kind", "label", "window_id", "path", "event_start_s", "event_end_s", "bytes", "sha256",
            "start_s", "end_s", "start_unix_s", "sample_rate_hz", "privacy", "written_unix_s")
RETURNING = "RETURNING " + ", ".join(f.name for f in fields(ClipStatus))


def _statuses(cur: sqlite3.Cursor) -> list[ClipStatus]:
    return [ClipStatus(*row) for row in cur.fetchall()]


def write_evidence(conn: sqlite3.Connection, r: ClipRecord) -> list[ClipStatus]:
    """A clip was written (or found written): its row, whatever the row said before."""
    values = (r.event_id, r.kind, r.label, r.window_id, r.path, r.event_start_s, r.event_end_s, r.bytes, r.sha256,
              r.start_s, r.end_s, r.start_unix_s, r.sample_rate_hz, r.privacy, r.written_unix_s)
    updates = ", ".join(f"{c} = excluded.{c}" for c in _WRITTEN[1:])
    return _statuses(conn.execute(
        f"INSERT INTO evidence({', '.join(_WRITTEN)}, status, reason, changed_unix_s) "
        f"VALUES ({', '.join('?' * len(values))}, 'written', NULL, ?) "
        f"ON CONFLICT(event_id) DO UPDATE SET {updates}, status = 'written', reason = NULL, "
        f"changed_unix_s = excluded.changed_unix_s {RETURNING}",
        (*values, r.written_unix_s),
    ))


def evidence_skipped(conn: sqlite3.Connection, s: ClipSkip) -> list[ClipStatus]:
    """A clip was asked for and not written; a row already `written` (an earlier run) stays as it is (and is not
    returned)."""
    return _statuses(conn.execute(
        "INSERT INTO evidence(event_id, kind, label, window_id, path, event_start_s, event_end_s, status, reason, "
        "changed_unix_s) VALUES (?, ?, ?, ?, ?, ?, ?, 'skipped', ?, ?) ON CONFLICT(event_id) DO UPDATE SET "
        "status = 'skipped', reason = excluded.reason, changed_unix_s = excluded.changed_unix_s "
        f"WHERE evidence.status != 'written' {RETURNING}",
        (s.event_id, s.kind, s.label, s.window_id, s.path, s.event_start_s, s.event_end_s, s.reason, s.ts_unix_s),
    ))


def evidence_deleted(conn: sqlite3.Connection, paths: Sequence[str], reason: str, now: float) -> list[ClipStatus]:
    """Clips deleted from disk: their `written` rows (only those) become `deleted`."""
    changed: list[ClipStatus] = []
    for p in paths:
        changed += _statuses(conn.execute(
            f"UPDATE evidence SET status = 'deleted', reason = ?, changed_unix_s = ? WHERE path = ? "
            f"AND status = 'written' {RETURNING}", (reason, now, p)))
    return changed
