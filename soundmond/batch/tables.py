"""One file's rows as Arrow tables: windows, detections (each window's species, as the store's `detections`), chunks
(the bird model's chunk detections, `WindowResult.detections`) and alerts, each row in the partition
`station=S/date=D` (the UTC day of the window's start or the alert's time; folders, not columns) and carrying its
file's `file_sha256`.

The columns are the store's (`outputs.store.rows`: one serialisation of a window), plus the ids a store keeps
implicitly (`detection_id`, `identity`), so rows from a dataset and from a store compare by id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from soundmond.data import Alert, WindowResult
from soundmond.identity import derive_id, detection_id
from soundmond.outputs.store.rows import (
    ALERT_COLUMNS,
    DETECTION_COLUMNS,
    WINDOW_COLUMNS,
    alert_row,
    detection_rows,
    window_row,
)

if TYPE_CHECKING:
    import pyarrow as pa

TABLES = ("windows", "detections", "chunks", "alerts")

EXTRA_HINT = "install the dataset extra: pip install 'soundmond[parquet]'"


def arrow() -> Any:
    """pyarrow, or an ImportError naming the extra."""
    try:
        import pyarrow
    except ImportError as exc:
        raise ImportError(f"writing a Parquet dataset needs pyarrow, which is not installed - {EXTRA_HINT}") from exc
    return pyarrow


def utc_date(ts_unix_s: float) -> str:
    return dt.datetime.fromtimestamp(ts_unix_s, dt.timezone.utc).strftime("%Y-%m-%d")


TEXT = {"window_id", "source", "status", "error", "group", "tagger_top", "scientific_name", "common_name",
        "alert_id", "type", "key", "severity", "message", "evidence", "file_sha256"}
INTEGER = {"rank"}
LEFT_OUT = {"stored_unix_s"}  # when a store wrote the row: not what the row is


def columns(store_columns: str) -> list[str]:
    """A store's column list (`outputs.store.rows`), unquoted."""
    return [c.strip().strip('"') for c in store_columns.split(",")]


def schemas() -> dict[str, pa.Schema]:
    """The store's columns of each table (typed: text, integer rank, floats otherwise) and the ids a store keeps
    implicitly, then `file_sha256`; station and date are the partition folders (station=S/date=D), not columns."""
    pa = arrow()

    def schema(names: list[str]) -> Any:
        return pa.schema([(n, pa.string() if n in TEXT or n.endswith("_id") else pa.int32() if n in INTEGER
                           else pa.float64()) for n in [*names, "file_sha256"] if n not in LEFT_OUT])

    return {
        "windows": schema(columns(WINDOW_COLUMNS)),
        "detections": schema(["detection_id", *columns(DETECTION_COLUMNS)]),
        "chunks": schema(["chunk_id", "window_id", "scientific_name", "common_name", "confidence", "occurrence",
                          "start_s", "end_s", "start_unix_s", "end_unix_s"]),
        "alerts": schema(columns(ALERT_COLUMNS)),
    }


Row = tuple[tuple[str, str], dict[str, Any]]  # ((station, date), column -> value)


def rows(results: Sequence[WindowResult], alerts: Sequence[Alert], station: str,
         sha256: str) -> dict[str, list[Row]]:
    """The rows of every table with their partition."""
    names = {"windows": columns(WINDOW_COLUMNS), "detections": ["detection_id", *columns(DETECTION_COLUMNS)],
             "chunks": list(schemas()["chunks"].names)[:-1], "alerts": columns(ALERT_COLUMNS)}
    out: dict[str, list[Row]] = {t: [] for t in TABLES}

    def add(table: str, where: tuple[str, str], *values: Any) -> None:
        row = dict(zip(names[table], values, strict=True))
        for left_out in LEFT_OUT:
            row.pop(left_out, None)
        out[table].append((where, {**row, "file_sha256": sha256}))

    for r in results:
        where = (station, utc_date(r.start_unix_s))
        add("windows", where, *window_row(r, 0.0))
        for d in detection_rows(r):
            add("detections", where, detection_id(d[0], d[2]), *d)
        for c in r.detections:
            add("chunks", where, derive_id("chunk", r.window_id, c.scientific_name, repr(c.start_s)), r.window_id,
                c.scientific_name, c.common_name, c.confidence, c.occurrence, c.start_s, c.end_s, c.start_unix_s,
                c.end_unix_s)
    for a in alerts:
        add("alerts", (station, utc_date(a.ts_unix_s)), *alert_row(a))
    return out


def partitioned(results: Sequence[WindowResult], alerts: Sequence[Alert], station: str,
                sha256: str) -> dict[tuple[str, str, str], pa.Table]:
    """(table, station, date) -> the Arrow table of that partition's rows; tables without rows are left out."""
    pa = arrow()
    schema = schemas()
    parts: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for table, table_rows in rows(results, alerts, station, sha256).items():
        for (where_station, date), row in table_rows:
            parts.setdefault((table, where_station, date), []).append(row)
    return {key: pa.Table.from_pylist(part, schema=schema[key[0]]) for key, part in parts.items()}
