"""`soundmond analyze ARCHIVE --format parquet --out DATASET [--workers N | --cluster ADDRESS]`: an archive into a
Parquet dataset (`soundmond.batch`), resumable: files finished by an earlier run (same content, same settings) are
skipped, unfinished ones analysed again; failed files are named on stderr and the job exits 1.

Embedded default: a pool of `--workers` processes on this machine (default: one per core), each loading the models
once. `--cluster ADDRESS`: the same job on a running Dask scheduler (`soundmond.batch.cluster`, the `cluster` extra).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from soundmond.batch import dataset, job
from soundmond.batch.cluster import ClusterError, run_on_cluster
from soundmond.batch.tables import arrow
from soundmond.commands.common import load_with_logging, report_config_error
from soundmond.config import ConfigError
from soundmond.errors import ExitCode
from soundmond.preflight import preflight

PARQUET = "parquet"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The dataset job's own options (`--format parquet` and `--out DATASET` are analyze's)."""
    engine = p.add_mutually_exclusive_group()
    engine.add_argument("--workers", type=int, default=None, metavar="N",
                        help="--format parquet: worker processes on this machine (default: one per core)")
    engine.add_argument("--cluster", default=None, metavar="ADDRESS",
                        help="--format parquet: run on this Dask scheduler (tcp://host:8786; needs the cluster "
                             "extra), the recordings, config, models and --out at the same paths on every worker")


def usage_problem(args: argparse.Namespace) -> str | None:
    """Why these options do not make a dataset job (`problem - how to fix`), or None."""
    dataset_job = args.format == PARQUET
    if not dataset_job:
        if args.workers is not None or args.cluster is not None:
            return ("--workers and --cluster run a dataset job - add --format parquet --out DATASET "
                    "(the other formats are written by one process)")
        return None
    if args.out is None:
        return "--format parquet writes a dataset folder - give it with --out DATASET"
    if args.store is not None:
        return ("--format parquet writes a dataset, not a store - leave out --store (or run without --format "
                "parquet to fill a store)")
    if args.evidence is not None:
        return "--format parquet writes no evidence clips - leave out --evidence (or run without --format parquet)"
    if args.summary:
        return ("--format parquet always prints its summary on stderr and writes DATASET/_job_summary.json - "
                "leave out --summary")
    if args.workers is not None and args.workers < 1:
        return f"--workers {args.workers}: give at least 1"
    return None


def run(args: argparse.Namespace) -> int:
    try:
        loaded = load_with_logging(args.config, args.verbose)
    except ConfigError as exc:
        return report_config_error(exc)
    if (refused := preflight(loaded, models_only=True).refused()) is not None:
        return refused
    try:
        arrow()
    except ImportError as exc:
        print(f"soundmond analyze: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    out = Path(args.out).resolve()
    try:
        dataset.bind(out, job.meta_of(loaded))
    except (dataset.DatasetError, OSError) as exc:
        print(f"soundmond analyze: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    dataset.remove_temporaries(out)
    archive = job.find_files(args.paths)
    for path, problem in archive.missing:
        print(f"soundmond analyze: {path}: {problem}", file=sys.stderr)
    spec = job.JobSpec([str(Path(f).resolve()) for f in archive.files], str(out),
                       str(loaded.path) if loaded.path is not None else None, args.reanalyze)
    archive.files = list(spec.files)
    archive.audio_s = {str(Path(k).resolve()): v for k, v in archive.audio_s.items()}
    try:
        if args.cluster is not None:
            summary = run_on_cluster(spec, archive, args.cluster)
        else:
            workers = args.workers or os.cpu_count() or 1
            summary = job.run_job(spec, archive, lambda s: job.run_local(s, workers), workers)
    except ClusterError as exc:
        print(f"soundmond analyze: {exc}", file=sys.stderr)
        return ExitCode.USAGE if exc.usage else ExitCode.FATAL
    print(summary.text(), file=sys.stderr)
    for failure in summary.failed:
        print(f"soundmond analyze: failed: {failure['file']}: {failure['problem']}", file=sys.stderr)
    return ExitCode.PARTIAL if summary.failed or archive.missing else ExitCode.OK
