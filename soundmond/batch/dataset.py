"""The Parquet dataset on disk: one part file per (file, table, partition), written atomically, and one marker per
finished file.

    DATASET/_soundmond.json                        what the dataset holds: the analysis settings its ids derive from
    DATASET/_files/<sha256>.json                   a finished file: its path, rows, audio and compute seconds, parts
    DATASET/<table>/station=<S>/date=<D>/<sha256>.parquet

A part is written to a hidden temporary name beside its final one and renamed over it (`os.replace`, atomic on one
file system), so a reader never sees half a file and a file analysed twice (a retry after a killed worker, a restarted
job) replaces its parts instead of adding to them: each file's rows are in the dataset exactly once. The marker is
written last, the same way: a file without one is unfinished and is analysed again. Readers (pyarrow, pandas, R
arrow) skip names starting with '_' or '.', so markers and temporaries are never read as data.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from soundmond.errors import HintedError

META = "_soundmond.json"
FILES = "_files"
TEMP_MARK = ".tmp-"


class DatasetError(HintedError):
    """The dataset folder cannot be used for this job (other settings, not a dataset, not writable)."""


@dataclass(frozen=True)
class FileRecord:
    """The marker of a finished file (`_files/<sha256>.json`)."""

    sha256: str
    path: str
    windows: int
    detections: int
    chunks: int
    alerts: int
    audio_s: float
    compute_s: float  # wall seconds the worker spent on the file, decoding and writing included
    worker: str  # host:pid
    parts: list[str] = field(default_factory=list)  # relative paths of its part files
    finished_unix_s: float = 0.0
    models: dict[str, Any] = field(default_factory=dict)  # the model versions (`Session.model_versions`)


def part_path(root: Path, table: str, station: str, date: str, sha256: str) -> Path:
    return root / table / f"station={quote(station, safe='')}" / f"date={date}" / f"{sha256}.parquet"


def marker_path(root: Path, sha256: str) -> Path:
    return root / FILES / f"{sha256}.json"


def write_atomically(path: Path, write: Any) -> None:
    """`write(tmp_path)` then rename over `path`; the temporary is removed when `write` fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parts(root: Path, sha256: str, tables: Mapping[tuple[str, str, str], Any]) -> list[str]:
    """Write each (table, station, date) -> Arrow table as its part file; the relative paths written."""
    import pyarrow.parquet as pq

    written = []
    for (table, station, date), data in sorted(tables.items()):
        path = part_path(root, table, station, date, sha256)
        write_atomically(path, lambda tmp, data=data: pq.write_table(data, tmp, compression="zstd"))
        written.append(str(path.relative_to(root)))
    return written


def write_marker(root: Path, record: FileRecord) -> None:
    text = json.dumps(asdict(record), indent=1)
    write_atomically(marker_path(root, record.sha256), lambda tmp: tmp.write_text(text))


def read_marker(root: Path, sha256: str) -> FileRecord | None:
    """The finished file's record, or None when the file is not finished (no marker, or a damaged one)."""
    try:
        return FileRecord(**json.loads(marker_path(root, sha256).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def markers(root: Path) -> Iterator[FileRecord]:
    folder = root / FILES
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        if (record := read_marker(root, path.stem)) is not None:
            yield record


def bind(root: Path, meta: dict[str, Any]) -> None:
    """Make `root` a dataset of these settings, or check that it is one: a dataset written with other settings (the
    window ids would differ) is refused."""
    path = root / META
    if path.is_file():
        try:
            held = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path} cannot be read ({exc})", "remove it or give another --out",
                               where=root) from exc
        if held.get("analysis") != meta["analysis"]:
            raise DatasetError(f"the dataset was written with other settings ({held.get('analysis')}; this job: "
                               f"{meta['analysis']})", "give another --out folder, or the config it was made with",
                               where=root)
        return
    if root.exists() and (not root.is_dir() or any(p for p in root.iterdir() if not p.name.startswith("."))):
        raise DatasetError("exists and is not a soundmond dataset (no _soundmond.json)",
                           "give a new or empty folder for --out", where=root)
    root.mkdir(parents=True, exist_ok=True)
    text = json.dumps({**meta, "created_unix_s": time.time()}, indent=1)
    write_atomically(path, lambda tmp: tmp.write_text(text))


def remove_temporaries(root: Path) -> int:
    """Remove the temporaries of writers that died before renaming (run before a job starts); how many."""
    removed = 0
    for path in root.rglob(f".*{TEMP_MARK}*"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
