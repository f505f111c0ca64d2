"""A Parquet dataset (`batch.dataset`) into a store (`soundmond import`), through the store's own write path.

Each finished file (one with a marker in `_files/`; a file the job had not finished is left out and counted) is read
one partition (station, UTC day) at a time: its windows and detections rebuilt as `WindowResult`s
(`rows.results_from_rows`, as the daemon restores its aggregate from the store), its alerts as `Alert`s
(`rows.alert_from_row`), and written with `Store.write_batch`, one transaction per partition. Memory holds one day of
one recording, whatever the dataset's size. The rows keep their ids, and the store ignores an id it holds (INSERT OR
IGNORE), so an import run twice, or one a crash interrupted and run again, adds nothing twice.

Each imported file also gets the store's replay record (content hash, the dataset's window settings and the file's
models, path, last window), as `soundmond analyze --store` or `run --source` would write it: those then skip the file,
and `import`
skips a file such a record says the store holds complete with the same settings (its windows are there already, and
its alerts are the ones the store's own session raised across files; the dataset's are per file). A file the store
holds with other settings is imported beside it, with a warning, as a replay does.

The dataset's `chunks` table (every bird-model chunk) has no place in a store, which keeps each species' best chunk per
window in `detections` (`chunk_*` columns, imported). The store is one station's (`meta.station_id`, which `soundmond
report` checks): a dataset of another station is refused.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from soundmond.batch import dataset, tables
from soundmond.capture.replay import models_part
from soundmond.errors import HintedError
from soundmond.identity import models_identity
from soundmond.outputs.store import Store, StoreDataError
from soundmond.outputs.store.rows import alert_from_row, results_from_rows

logger = logging.getLogger(__name__)

IMPORTED = ("windows", "detections", "alerts")  # the dataset's tables a store holds


class DatasetImportError(HintedError):
    """The dataset cannot be imported into this store (not a dataset, another version's columns, another station)."""


@dataclass
class ImportReport:
    files: int = 0  # finished files in the dataset
    imported: int = 0
    held: int = 0  # already complete in the store with the same settings: skipped
    unfinished: int = 0  # part files of files the job had not finished (no marker): left out
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, problem)
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(IMPORTED, 0))  # offered to the store

    def text(self) -> str:
        rows = ", ".join(f"{n} {t}" for t, n in self.rows.items())
        parts = [f"{self.files} files: {self.imported} imported ({rows}; rows the store held already are left as "
                 f"they are), {self.held} already in the store, {len(self.failed)} failed"]
        if self.unfinished:
            parts.append(f"{self.unfinished} unfinished files left out (run the analyze job again to finish them)")
        return "; ".join(parts)


def read_meta(root: Path) -> dict[str, Any]:
    """`_soundmond.json`: what the dataset holds; refused when it is not a dataset."""
    path = root / dataset.META
    if not path.is_file():
        raise DatasetImportError(f"{root} is not a soundmond dataset (no {dataset.META})",
                                 "give the folder `soundmond analyze --format parquet --out` wrote")
    try:
        meta = json.loads(path.read_text())
        analysis, station = str(meta["analysis"]), str(meta["station"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetImportError(f"{path} cannot be read ({exc})",
                                 "analyse the archive again into a new --out folder") from exc
    return {**meta, "analysis": analysis, "station": station}


def check_station(meta: dict[str, Any], held: dict[str, str], store_path: Path) -> None:
    recorded = held.get("station_id")
    if recorded is not None and recorded != meta["station"]:
        raise DatasetImportError(f"{store_path} holds station {recorded!r}; the dataset is station "
                                 f"{meta['station']!r}", "import it into that station's store, or a new --store")


def check_columns(root: Path, parts: list[str]) -> None:
    """Every part's columns are the ones this version writes (footers only); refused before anything is written."""
    import pyarrow.parquet as pq

    expected = {t: s.names for t, s in tables.schemas().items()}
    for part in parts:
        table = PurePosixPath(part).parts[0]
        path = root / part
        if table not in expected or not path.is_file():
            continue  # a missing part fails its file alone
        try:
            names = pq.read_schema(path).names
        except (OSError, ValueError):  # damaged: its file fails alone, when it is read
            continue
        if names != expected[table]:
            missing = sorted(set(expected[table]) - set(names))
            extra = sorted(set(names) - set(expected[table]))
            raise DatasetImportError(
                f"{path}: its columns are another soundmond version's (missing: {missing or 'none'}; "
                f"not known here: {extra or 'none'})",
                "import it with the version that wrote it, or analyse the archive again with this one")


def by_partition(record: dataset.FileRecord) -> dict[str, dict[str, str]]:
    """The marker's parts of the tables a store holds: partition ("station=S/date=D") -> table -> relative path."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for part in record.parts:
        p = PurePosixPath(part)
        if p.parts[0] in IMPORTED:
            out[str(p.parent.relative_to(p.parts[0]))][p.parts[0]] = part
    return dict(sorted(out.items()))


def read_rows(root: Path, part: str | None) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return [] if part is None else pq.read_table(root / part).to_pylist()


def import_file(root: Path, record: dataset.FileRecord, store: Store, analysis: str,
                report: ImportReport) -> None:
    """One finished file, a partition per transaction, then its replay record (after its windows: a crash in
    between leaves no record, and the next import offers the file again). Every part's footer is read first, so a
    part missing or cut short fails the file before any of it is written."""
    import pyarrow.parquet as pq

    partitions = by_partition(record)
    for tables_of in partitions.values():
        for part in tables_of.values():
            pq.read_metadata(root / part)
    last: tuple[float, str] | None = None
    windows = 0
    for tables_of in partitions.values():
        window_rows = read_rows(root, tables_of.get("windows"))
        detection_rows = sorted(read_rows(root, tables_of.get("detections")),
                                key=lambda d: (d["window_id"], d["rank"]))
        alert_rows = read_rows(root, tables_of.get("alerts"))
        store.write_batch(results_from_rows(window_rows, detection_rows), [alert_from_row(a) for a in alert_rows],
                          ())
        for table, n in zip(IMPORTED, (len(window_rows), len(detection_rows), len(alert_rows)), strict=True):
            report.rows[table] += n
        windows += len(window_rows)
        for w in window_rows:
            if last is None or (w["start_s"], w["window_id"]) > last:
                last = (w["start_s"], w["window_id"])
    if last is not None:
        store.replay_decoded(record.sha256, analysis, record.path, last[1], windows)


def unfinished_files(root: Path, finished: set[str]) -> int:
    """Files with part files but no marker (the job had not finished them)."""
    seen = {p.stem for table in IMPORTED if (root / table).is_dir() for p in (root / table).rglob("*.parquet")}
    return len(seen - finished)


def record_key(analysis: str, record: dataset.FileRecord) -> str:
    """The store's analysis key of one file: the dataset's settings and the models that analysed it (as a replay
    keys it: `capture.replay`)."""
    return analysis + models_part(models_identity(record.models)) if record.models else analysis


def import_dataset(root: Path, store: Store, progress: Callable[[ImportReport], None] | None = None
                   ) -> ImportReport:
    """Every finished file of the dataset at `root` into `store` (see the module docstring). Raises
    `DatasetImportError` before writing anything when the dataset cannot be imported; a file whose part files cannot
    be read is named in the report's `failed`, the others imported."""
    meta = read_meta(root)
    check_station(meta, store.meta(), store.path)
    records = list(dataset.markers(root))
    check_columns(root, [part for r in records for part in r.parts])
    report = ImportReport(files=len(records), unfinished=unfinished_files(root, {r.sha256 for r in records}))
    for record in records:
        analysis = record_key(meta["analysis"], record)
        held = store.replay_progress(record.sha256)
        if any(r.analysis == analysis and r.complete for r in held):
            report.held += 1
        else:
            if held:
                logger.warning("%s is in the store analysed with other settings (%s): imported beside it (%s)",
                               record.path, held[0].analysis, analysis)
            try:
                import_file(root, record, store, analysis, report)
                report.imported += 1
            except (OSError, ValueError, KeyError, StoreDataError) as exc:  # a part missing or damaged: this file
                report.failed.append((record.path, f"{type(exc).__name__}: {exc}"))
        if progress is not None:
            progress(report)
    if report.imported:
        models = next((r.models for r in reversed(records) if r.models), None)
        if models is not None or "station_id" not in store.meta():
            store.record_run(meta["station"], models if models is not None else {})
    return report

