"""What `soundmond report` reads from a store: every figure's numbers as one SQL aggregation each.

Nothing here loads the rows themselves: each query groups in SQLite (on the `start_unix_s` / `ts_unix_s` indexes)
and returns at most (bins x groups), (species), (species x 24) or a fixed number of rows, so a store of any size is
read in bounded memory. The store is opened read-only (`mode=ro`) and never migrated: a report changes nothing.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soundmond.data import INDEX_NAMES, QUIET
from soundmond.errors import HintedError
from soundmond.outputs.store.schema import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    WRITER_DROPPED_OUTBOX,
    WRITER_DROPPED_WINDOWS,
    WRITER_REJECTED,
)

SHARE_GROUPS = ("natural", "industrial", "other", QUIET)  # the stacked bands, bottom to top
MAX_ALERTS_LISTED = 200  # alerts listed one by one in the page (all are counted by type)
MAX_HEATMAP_SPECIES = 30  # rows of the hour x species heat map (the most detected)
CAPTURE_ALERTS = ("CAPTURE_LOST", "CAPTURE_RESTORED", "CAPTURE_FLAT", "CAPTURE_CLIPPED", "FALLING_BEHIND",
                  "RECORDER_SILENT")


class ReportError(HintedError):
    """The report cannot be made from this store or these arguments (`problem - hint`)."""


@dataclass(frozen=True)
class Span:
    """The reported time range [start, end) in UTC epoch seconds, cut into `bin_s` bins."""

    start_unix_s: float
    end_unix_s: float
    bin_s: int

    @property
    def bins(self) -> int:
        return max(1, math.ceil((self.end_unix_s - self.start_unix_s) / self.bin_s))


@dataclass(frozen=True)
class SpeciesRow:
    scientific_name: str
    common_name: str
    detections: int  # window x species rows
    minutes: int  # distinct UTC minutes with a detection
    first_unix_s: float
    last_unix_s: float
    max_confidence: float | None
    best_window_id: str | None = None  # the window of the most confident detection
    best_source: str | None = None  # ... its source (file path, or mic:<device>) and offsets in it
    best_start_s: float | None = None
    best_end_s: float | None = None


@dataclass(frozen=True)
class AlertRow:
    type: str
    severity: str
    ts_unix_s: float
    message: str


@dataclass
class ReportData:
    """Everything the page shows; each field is the result of one bounded query."""

    span: Span
    windows: int = 0  # windows stored in the span (any status)
    shares: dict[str, list[int]] = field(default_factory=dict)  # group -> windows per bin
    unanalysed: list[int] = field(default_factory=list)  # windows per bin without a group (error, model skipped)
    alerts: list[AlertRow] = field(default_factory=list)  # the first MAX_ALERTS_LISTED in the span
    alert_counts: dict[str, int] = field(default_factory=dict)  # type -> alerts in the span
    alert_bins: dict[str, list[int]] = field(default_factory=dict)  # severity -> alerts per bin
    capture_events: list[AlertRow] = field(default_factory=list)  # capture / backlog alerts (first MAX_ALERTS_LISTED)
    species: list[SpeciesRow] = field(default_factory=list)  # most detected first
    hour_counts: dict[str, list[int]] = field(default_factory=dict)  # scientific name -> detections per UTC hour
    rtf: list[float | None] = field(default_factory=list)  # compute s / audio s per bin (None: no window)
    failed: list[int] = field(default_factory=list)  # windows with status 'error' per bin
    counters: dict[str, int] = field(default_factory=dict)  # the store's drop counters (since it was created)
    meta: dict[str, str] = field(default_factory=dict)  # the store's meta table (station_id, models, ...)
    # acoustic index -> (windows with it, mean, min, max) over the span; empty when no window has indices
    indices: dict[str, tuple[int, float, float, float]] = field(default_factory=dict)


def open_read_only(path: Path) -> sqlite3.Connection:
    """The store at `path`, read-only, after checking it is a soundmond store this version can read."""
    if not path.is_file():
        raise ReportError(f"{path}: no such store", "give the daemon's store.path (or an `analyze --store` file)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    except sqlite3.Error as exc:
        raise ReportError(f"{path}: cannot read it as SQLite ({exc})",
                          "is it a soundmond store? (store.path in the config)") from exc
    if app_id != APPLICATION_ID or version == 0:
        conn.close()
        raise ReportError(f"{path}: this SQLite file is not a soundmond store", "give the daemon's store.path")
    if version > SCHEMA_VERSION:
        conn.close()
        raise ReportError(f"{path}: schema version {version} was written by a newer soundmond (this one reads up "
                          f"to {SCHEMA_VERSION})", "upgrade soundmond on this machine")
    return conn


def _bin(span: Span) -> tuple[str, dict[str, Any]]:
    """SQL for the bin index of a row's start_unix_s, and the range parameters."""
    return "CAST((start_unix_s - :t0) / :bin AS INTEGER)", {"t0": span.start_unix_s, "t1": span.end_unix_s,
                                                            "bin": span.bin_s}


def data_range(conn: sqlite3.Connection) -> tuple[float, float] | None:
    """The first and last window start in the store (two index look-ups), or None when it holds no window."""
    row = conn.execute("SELECT MIN(start_unix_s), MAX(start_unix_s) FROM windows").fetchone()
    return None if row[0] is None else (float(row[0]), float(row[1]))


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return {str(r[0]): str(r[1]) for r in conn.execute("SELECT key, value FROM meta")}


def models_from_meta(meta: dict[str, str]) -> dict[str, str | None]:
    """The model versions the last run recorded (`meta.models`, JSON), or {} when none did."""
    try:
        models = json.loads(meta.get("models", "{}"))
    except ValueError:
        return {}
    return {str(k): (None if v is None else str(v)) for k, v in models.items()} if isinstance(models, dict) else {}


def read_report(conn: sqlite3.Connection, span: Span) -> ReportData:
    data = ReportData(span=span, meta=read_meta(conn))
    n = span.bins
    bin_sql, params = _bin(span)
    in_span = "start_unix_s >= :t0 AND start_unix_s < :t1"
    data.shares = {g: [0] * n for g in SHARE_GROUPS}
    data.unanalysed = [0] * n
    data.failed = [0] * n
    compute = [0.0] * n
    audio = [0.0] * n
    for r in conn.execute(
        f"""SELECT {bin_sql} AS b, "group" AS g, status, COUNT(*) AS n, SUM(compute_ms) AS ms,
                   SUM(end_s - start_s) AS audio_s
            FROM windows WHERE {in_span} GROUP BY b, g, status""", params):
        b = int(r["b"])
        if not 0 <= b < n:
            continue
        count = int(r["n"])
        data.windows += count
        if r["g"] in data.shares:
            data.shares[r["g"]][b] += count
        else:
            data.unanalysed[b] += count
        if r["status"] == "error":
            data.failed[b] += count
        if r["ms"] is not None and r["audio_s"]:
            compute[b] += float(r["ms"]) / 1000.0
            audio[b] += float(r["audio_s"])
    data.rtf = [compute[b] / audio[b] if audio[b] > 0 else None for b in range(n)]

    ts_span = "ts_unix_s >= :t0 AND ts_unix_s < :t1"
    data.alert_counts = {str(r[0]): int(r[1]) for r in conn.execute(
        f"SELECT type, COUNT(*) FROM alerts WHERE {ts_span} GROUP BY type ORDER BY COUNT(*) DESC", params)}
    data.alerts = [AlertRow(str(r["type"]), str(r["severity"]), float(r["ts_unix_s"]), str(r["message"]))
                   for r in conn.execute(f"SELECT type, severity, ts_unix_s, message FROM alerts WHERE {ts_span} "
                                         f"ORDER BY ts_unix_s LIMIT {MAX_ALERTS_LISTED}", params)]

    data.alert_bins = {}
    for r in conn.execute(f"SELECT CAST((ts_unix_s - :t0) / :bin AS INTEGER) AS b, severity, COUNT(*) FROM alerts "
                          f"WHERE {ts_span} GROUP BY b, severity", params):
        if 0 <= int(r[0]) < n:
            data.alert_bins.setdefault(str(r[1]), [0] * n)[int(r[0])] += int(r[2])
    kinds = ", ".join(f"'{t}'" for t in CAPTURE_ALERTS)
    data.capture_events = [
        AlertRow(str(r["type"]), str(r["severity"]), float(r["ts_unix_s"]), str(r["message"]))
        for r in conn.execute(f"SELECT type, severity, ts_unix_s, message FROM alerts WHERE {ts_span} AND type IN "
                              f"({kinds}) ORDER BY ts_unix_s LIMIT {MAX_ALERTS_LISTED}", params)]

    species = conn.execute(
        f"""SELECT scientific_name, MAX(common_name) AS common_name, COUNT(*) AS n,
                   COUNT(DISTINCT CAST(start_unix_s / 60 AS INTEGER)) AS minutes,
                   MIN(start_unix_s) AS first, MAX(start_unix_s) AS last, MAX(confidence) AS conf
            FROM detections WHERE {in_span} GROUP BY scientific_name ORDER BY n DESC, scientific_name""",
        params).fetchall()
    # the most confident detection of each species: SQLite takes a bare column from the row that holds MAX()
    best: dict[str, sqlite3.Row] = {str(r["scientific_name"]): r for r in conn.execute(
        """SELECT d.scientific_name, MAX(d.confidence) AS conf, d.window_id, w.source, w.start_s, w.end_s
            FROM detections d JOIN windows w ON w.window_id = d.window_id
            WHERE d.start_unix_s >= :t0 AND d.start_unix_s < :t1 GROUP BY d.scientific_name""", params)}
    for r in species:
        name = str(r["scientific_name"])
        best_row = best.get(name)
        data.species.append(SpeciesRow(
            name, str(r["common_name"]), int(r["n"]), int(r["minutes"]), float(r["first"]), float(r["last"]),
            None if r["conf"] is None else float(r["conf"]),
            best_window_id=str(best_row["window_id"]) if best_row is not None else None,
            best_source=str(best_row["source"]) if best_row is not None else None,
            best_start_s=float(best_row["start_s"]) if best_row is not None else None,
            best_end_s=float(best_row["end_s"]) if best_row is not None else None))

    top = [s.scientific_name for s in data.species[:MAX_HEATMAP_SPECIES]]
    data.hour_counts = {name: [0] * 24 for name in top}
    if top:
        marks = ", ".join("?" * len(top))
        for r in conn.execute(
                f"""SELECT scientific_name, CAST((start_unix_s % 86400) / 3600 AS INTEGER) AS h, COUNT(*)
                    FROM detections WHERE start_unix_s >= ? AND start_unix_s < ? AND scientific_name IN ({marks})
                    GROUP BY scientific_name, h""", (span.start_unix_s, span.end_unix_s, *top)):
            data.hour_counts[str(r[0])][int(r[1]) % 24] += int(r[2])

    wanted = (WRITER_DROPPED_WINDOWS, WRITER_DROPPED_OUTBOX, WRITER_REJECTED, "outbox_dropped", "outbox_refused")
    data.counters = {str(r[0]): int(r[1]) for r in conn.execute(
        f"SELECT name, value FROM counters WHERE name IN ({', '.join('?' * len(wanted))})", wanted)}
    columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(windows)")}
    for name in (n for n in INDEX_NAMES if n in columns):  # stores from before schema 6 have none
        n_with, mean, low, high = conn.execute(
            f"SELECT COUNT({name}), AVG({name}), MIN({name}), MAX({name}) FROM windows WHERE {in_span}",
            params).fetchone()
        if n_with:
            data.indices[name] = (int(n_with), float(mean), float(low), float(high))
    return data
