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

from soundmond.data import GROUPS, Alert, WindowResult
from soundmond.identity import derive_id, detection_id
from soundmond.outputs.store.rows import alert_row, detection_rows, window_row

if TYPE_CHECKING:
    import pyarrow as pa

TABLES = ("windows", "detections", "chunks", "alerts")

EXTRA_HINT = "install the dataset extra: pip install 'soundmond[dataset]'"


def arrow() -> Any:
    """pyarrow, or an ImportError naming the extra."""
    try:
        import pyarrow
    except ImportError as exc:
        raise ImportError(f"writing a Parquet dataset needs pyarrow, which is not installed - {EXTRA_HINT}") from exc
    return pyarrow


def utc_date(ts_unix_s: float) -> str:
    return dt.datetime.fromtimestamp(ts_unix_s, dt.timezone.utc).strftime("%Y-%m-%d")


def schemas() -> dict[str, pa.Schema]:
    pa = arrow()
    f64, s, i32 = pa.float64(), pa.string(), pa.int32()
    keys = [("file_sha256", s)]  # station and date are the partition folders (station=S/date=D), not columns
    return {
        "windows": pa.schema([("window_id", s), ("source", s), ("start_unix_s", f64), ("start_s", f64),
                              ("end_s", f64), ("status", s), ("error", s), ("group", s),
                              *((f"p_{g}", f64) for g in GROUPS), ("tagger_top", s), ("tagger_top_score", f64),
                              ("bird_top_score", f64), ("rms_dbfs", f64), ("clipped_fraction", f64),
                              ("compute_ms", f64), *keys]),
        "detections": pa.schema([("detection_id", s), ("window_id", s), ("rank", i32), ("scientific_name", s),
                                 ("common_name", s), ("confidence", f64), ("occurrence", f64),
                                 ("start_unix_s", f64), *keys]),
        "chunks": pa.schema([("chunk_id", s), ("window_id", s), ("scientific_name", s), ("common_name", s),
                             ("confidence", f64), ("occurrence", f64), ("start_s", f64), ("end_s", f64),
                             ("start_unix_s", f64), ("end_unix_s", f64), *keys]),
        "alerts": pa.schema([("alert_id", s), ("type", s), ("key", s), ("severity", s), ("ts_unix_s", f64),
                             ("message", s), ("evidence", s), *keys]),
    }


Row = tuple[tuple[str, str], dict[str, Any]]  # ((station, date), column -> value)


def rows(results: Sequence[WindowResult], alerts: Sequence[Alert], station: str,
         sha256: str) -> dict[str, list[Row]]:
    """The rows of every table with their partition."""
    names = {t: list(schemas()[t].names) for t in TABLES}
    out: dict[str, list[Row]] = {t: [] for t in TABLES}

    def add(table: str, where: tuple[str, str], *values: Any) -> None:
        out[table].append((where, dict(zip(names[table], (*values, sha256), strict=True))))

    for r in results:
        where = (station, utc_date(r.start_unix_s))
        add("windows", where, *window_row(r, 0.0)[:-1])  # without stored_unix_s: when is not what
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
