"""`soundmond export`: one table of a store (windows, detections, alerts, aggregates or evidence clips) as CSV, JSON
lines or Parquet, for R and pandas users. docs/store.md describes every column.

The store is opened read-only (a running daemon keeps writing; an export never changes or migrates the file) and read
in batches of `BATCH_ROWS`, each written before the next is fetched, so memory stays flat whatever the store's size.
Rows are in time order (`TIME_COLUMNS`), within [--since, --until). Every column of the table is written, as the
store holds it: times as UTC epoch seconds, JSON columns (`JSON_COLUMNS`) as JSON text in CSV and Parquet and as nested
JSON in JSON lines, NULL as an empty CSV field / null. CSV floats are written with Python's repr, so they read back
exactly; non-finite levels (-inf dBFS) are "-inf" in CSV and Parquet, null in strict JSON.

Data goes to stdout unless --out names a file; Parquet needs pyarrow (`pip install 'soundmond[parquet]'`) and is not
written to a terminal.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from soundmond.errors import ExitCode, HintedError
from soundmond.outputs.store.schema import APPLICATION_ID, SCHEMA_VERSION

TIME_COLUMNS = {"windows": "start_unix_s", "detections": "start_unix_s", "alerts": "ts_unix_s",
                "aggregates": "ts_unix_s",
                # a clip by the time of its audio; a skipped one (no audio kept) by when it was decided
                "evidence": "COALESCE(start_unix_s, changed_unix_s)"}
ORDER = {"windows": "start_unix_s, rowid", "detections": "start_unix_s, window_id, rank",
         "alerts": "ts_unix_s, alert_id", "aggregates": "ts_unix_s, id",
         "evidence": "COALESCE(start_unix_s, changed_unix_s), event_id"}
JSON_COLUMNS = {"windows": ("tagger_top",), "alerts": ("evidence",), "aggregates": ("snapshot",)}
FORMATS = ("csv", "jsonl", "parquet")
BATCH_ROWS = 5000
PARQUET_EXTRA = "pip install 'soundmond[parquet]' (or pip install pyarrow)"


class ExportError(HintedError):
    """The export cannot be done as asked; the message says why and what to do."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", type=Path, required=True, help="the store file (store.path in the config)")
    p.add_argument("--what", choices=tuple(TIME_COLUMNS), required=True, help="which table")
    p.add_argument("--since", help="first time included: ISO-8601 (UTC unless an offset is given: 2026-05-01, "
                                   "2026-05-01T06:00:00Z) or UTC epoch seconds")
    p.add_argument("--until", help="first time excluded, same forms as --since")
    p.add_argument("--format", choices=FORMATS, default="csv", help="csv (default), jsonl or parquet")
    p.add_argument("--out", type=Path, default=None, help="write to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    try:
        n = export(args.store, args.what, since=parse_time(args.since, "--since"),
                   until=parse_time(args.until, "--until"), fmt=args.format, out=args.out)
    except ExportError as exc:
        print(f"soundmond export: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    print(f"{n} {args.what} rows exported", file=sys.stderr)
    return ExitCode.OK


def parse_time(text: str | None, flag: str) -> float | None:
    """UTC epoch seconds from epoch seconds or ISO-8601 text (naive = UTC); None for None."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ExportError(f"{flag} {text!r} is not a time",
                              "give ISO-8601 (2026-05-01 or 2026-05-01T06:00:00Z) or UTC epoch seconds") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when.timestamp()
    if not math.isfinite(value):
        raise ExportError(f"{flag} {text!r} is not a time", "give a finite number of UTC epoch seconds")
    return value


def open_store(path: Path) -> sqlite3.Connection:
    """The store, read-only, after checking that it is a soundmond store this version can read."""
    if not path.is_file():
        raise ExportError(f"{path}: no such file", "give the store.path of the station's config with --store")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    except sqlite3.Error as exc:
        raise ExportError(f"{path}: cannot be read as a SQLite database ({exc})",
                          "is it a soundmond store? check the path and its permissions") from exc
    if app_id != APPLICATION_ID:
        conn.close()
        raise ExportError(f"{path}: not a soundmond store", "give the store.path of the station's config")
    if version > SCHEMA_VERSION:
        conn.close()
        raise ExportError(f"{path}: schema version {version} was written by a newer soundmond (this one reads up to "
                          f"{SCHEMA_VERSION})", "export with the soundmond that writes this store")
    return conn


def export(store: Path, what: str, *, since: float | None = None, until: float | None = None, fmt: str = "csv",
           out: Path | None = None) -> int:
    """Write the rows of table `what` in [since, until) to `out` (stdout if None) in `fmt`; returns the row count."""
    if what not in TIME_COLUMNS:
        raise ExportError(f"--what {what!r} is not a table", f"choose one of {', '.join(TIME_COLUMNS)}")
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r} is not supported", f"choose one of {', '.join(FORMATS)}")
    if since is not None and until is not None and until <= since:
        raise ExportError("--until is not after --since", "give a time range that holds something")
    pyarrow = _pyarrow() if fmt == "parquet" else None
    if fmt == "parquet" and out is None and sys.stdout.isatty():
        raise ExportError("Parquet is binary: not written to a terminal", "give --out FILE or redirect stdout")
    with closing(open_store(store)) as conn:
        columns, types, batches = _read(conn, what, since, until)
        if pyarrow is not None:
            return _write_parquet(pyarrow, out, columns, types, batches)
        with _TextOutput(out) as stream:
            if fmt == "csv":
                return _write_csv(stream, columns, batches)
            return _write_jsonl(stream, columns, JSON_COLUMNS.get(what, ()), batches)


def _pyarrow() -> Any:
    try:
        import pyarrow  # optional heavy library: only --format parquet needs it
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ExportError("--format parquet needs pyarrow, which is not installed", PARQUET_EXTRA) from None
    return pyarrow


def _read(conn: sqlite3.Connection, what: str, since: float | None, until: float | None
          ) -> tuple[list[str], list[str], Iterator[list[tuple[Any, ...]]]]:
    """The table's columns, their declared SQLite types, and its rows in the range, in batches."""
    info = conn.execute(f"PRAGMA table_info({what})").fetchall()
    columns = [str(r[1]) for r in info]
    types = [str(r[2]).upper() for r in info]
    time_col = TIME_COLUMNS[what]
    where, params = [], []
    if since is not None:
        where.append(f"{time_col} >= ?")
        params.append(since)
    if until is not None:
        where.append(f"{time_col} < ?")
        params.append(until)
    names = ", ".join(f'"{c}"' for c in columns)
    sql = f"SELECT {names} FROM {what}{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY {ORDER[what]}"
    try:
        cursor = conn.execute(sql, params)
    except sqlite3.Error as exc:
        raise ExportError(f"reading {what} failed: {exc}", "is the store damaged? try `sqlite3 FILE 'PRAGMA "
                                                           "integrity_check'`") from exc

    def batches() -> Iterator[list[tuple[Any, ...]]]:
        while rows := cursor.fetchmany(BATCH_ROWS):
            yield rows

    return columns, types, batches()


class _TextOutput:
    """stdout, or a new file that is removed again when the export fails half-way."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.stream: IO[str] = sys.stdout

    def __enter__(self) -> IO[str]:
        if self.out is not None:
            try:
                self.stream = self.out.open("w", encoding="utf-8", newline="")
            except OSError as exc:
                raise ExportError(f"{self.out}: cannot be written ({exc.strerror})",
                                  "check the folder exists and is writable") from exc
        return self.stream

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.out is None:
            self.stream.flush()
            return
        self.stream.close()
        if exc_type is not None:
            self.out.unlink(missing_ok=True)


def _write_csv(stream: IO[str], columns: Sequence[str], batches: Iterator[list[tuple[Any, ...]]]) -> int:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(columns)
    n = 0
    for rows in batches:
        writer.writerows(rows)  # None -> empty field, float -> repr (exact)
        n += len(rows)
    return n


def _json_value(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _write_jsonl(stream: IO[str], columns: Sequence[str], json_columns: Sequence[str],
                 batches: Iterator[list[tuple[Any, ...]]]) -> int:
    nested = [c in json_columns for c in columns]
    n = 0
    for rows in batches:
        for row in rows:
            record = {c: (json.loads(v) if is_json and v is not None else _json_value(v))
                      for c, v, is_json in zip(columns, row, nested, strict=True)}
            stream.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        n += len(rows)
    return n


def _write_parquet(pa: Any, out: Path | None, columns: Sequence[str], types: Sequence[str],
                   batches: Iterator[list[tuple[Any, ...]]]) -> int:
    """One row group per batch; SQLite's declared types as Arrow types (REAL float64, INTEGER int64, else string)."""
    arrow_type = {"REAL": pa.float64(), "INTEGER": pa.int64()}
    schema = pa.schema([(c, arrow_type.get(t, pa.string())) for c, t in zip(columns, types, strict=True)])
    sink: Any = str(out) if out is not None else sys.stdout.buffer
    n = 0
    try:
        with pa.parquet.ParquetWriter(sink, schema) as writer:
            for rows in batches:
                by_column = zip(*rows, strict=True)
                arrays = [pa.array(list(col), type=field.type) for col, field in zip(by_column, schema, strict=True)]
                writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
                n += len(rows)
    except (OSError, pa.ArrowException) as exc:
        if out is not None:
            out.unlink(missing_ok=True)
        raise ExportError(f"writing Parquet failed: {exc}", "check the output path and free space") from exc
    if out is None:
        sys.stdout.buffer.flush()
    return n
