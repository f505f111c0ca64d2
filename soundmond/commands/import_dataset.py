"""`soundmond import DATASET --store DB`: a Parquet dataset written by `soundmond analyze --format parquet` into a
store (`soundmond.batch.into_store`), so `soundmond export`, `report` and the daemon read it as they read their own
rows. Idempotent: the rows keep their ids, a second import adds nothing, and files the store already holds (from
`analyze --store` or `run --source`, same settings) are skipped. Exit 1 when a file's part files cannot be read (each
named; the others are imported), 2 when the dataset cannot be imported into this store, 5 when the store cannot be
written."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from soundmond.batch.into_store import DatasetImportError, ImportReport, import_dataset
from soundmond.batch.tables import arrow
from soundmond.config import StoreConfig
from soundmond.errors import ExitCode
from soundmond.logs import setup_logging
from soundmond.outputs.store import Store, StoreError

PROGRESS_EVERY_S = 10.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", type=Path, help="the dataset folder (`soundmond analyze --format parquet --out`)")
    p.add_argument("--store", type=Path, required=True, metavar="DB",
                   help="the store to load it into (created if missing; store.path in the config)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    setup_logging("DEBUG" if args.verbose else "WARNING")
    try:
        arrow()
    except ImportError as exc:
        print(f"soundmond import: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    last = [time.monotonic()]

    def progress(report: ImportReport) -> None:
        if time.monotonic() - last[0] >= PROGRESS_EVERY_S:
            last[0] = time.monotonic()
            done = report.imported + report.held + len(report.failed)
            print(f"soundmond import: {done}/{report.files} files, {report.rows['windows']} windows",
                  file=sys.stderr, flush=True)

    try:
        with Store(args.store, StoreConfig(path=args.store)) as store:
            report = import_dataset(args.dataset, store, progress)
    except DatasetImportError as exc:
        print(f"soundmond import: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except StoreError as exc:
        print(f"soundmond import: store: {exc}", file=sys.stderr)
        return ExitCode.FATAL
    print(f"soundmond import: {args.store}: {report.text()}", file=sys.stderr)
    for path, problem in report.failed:
        print(f"soundmond import: failed: {path}: {problem} - analyse it again into the dataset "
              "(`soundmond analyze ... --format parquet --out DATASET --reanalyze`), then import again",
              file=sys.stderr)
    return ExitCode.PARTIAL if report.failed else ExitCode.OK
