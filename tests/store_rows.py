"""What a soundmond store file holds, read with plain sqlite3 (the store has no read API for tests).

Rows come back as dicts; JSON columns decoded (`windows.tagger_top`, `alerts.evidence`, `aggregates.snapshot`) and
`alerts.type` as `AlertType`. Each call opens its own connection (a WAL reader: it never waits for the writer).
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from soundmond.data import AlertType


def _rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, params).fetchall()]


def windows(db: Path, *, newest_first: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
    """Window rows by recording time (oldest first unless `newest_first`), `tagger_top` as [[label, score], ...]."""
    order = "DESC" if newest_first else "ASC"
    rows = _rows(db, f"SELECT * FROM windows ORDER BY start_unix_s {order}, rowid LIMIT ?",
                 (-1 if limit is None else limit,))
    for r in rows:
        r["tagger_top"] = json.loads(r["tagger_top"])
    return rows


def detections(db: Path) -> list[dict[str, Any]]:
    return _rows(db, "SELECT * FROM detections ORDER BY start_unix_s, window_id, rank")


def alerts(db: Path, *, type: AlertType | None = None) -> list[dict[str, Any]]:
    """Alert rows by time, `type` as AlertType, `evidence` decoded; only those of `type` when given."""
    where, params = ("WHERE type = ?", (type.value,)) if type is not None else ("", ())
    rows = _rows(db, f"SELECT * FROM alerts {where} ORDER BY ts_unix_s, rowid", params)
    for r in rows:
        r["type"] = AlertType(r["type"])
        r["evidence"] = json.loads(r["evidence"])
    return rows


def aggregates(db: Path) -> list[dict[str, Any]]:
    """[{"ts_unix_s": ..., "snapshot": {...}}] by time."""
    rows = _rows(db, "SELECT ts_unix_s, snapshot FROM aggregates ORDER BY ts_unix_s, rowid")
    return [{"ts_unix_s": r["ts_unix_s"], "snapshot": json.loads(r["snapshot"])} for r in rows]


def counter(db: Path, name: str) -> int:
    rows = _rows(db, "SELECT value FROM counters WHERE name = ?", (name,))
    return int(rows[0]["value"]) if rows else 0


def schema_version(db: Path) -> int:
    return int(_rows(db, "PRAGMA user_version")[0]["user_version"])
