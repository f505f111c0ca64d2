"""`soundmond bench --batch`: the dataset job's throughput (`soundmond analyze --format parquet`) in hours of audio per
hour, with 1 and 2 local worker processes (`--batch-workers`) and, with `--batch-cluster ADDRESS`, on a running Dask
scheduler; the same recordings each time, each run into a fresh dataset (nothing skipped), the runs' wall time including
starting the workers and loading their models, as a user's job pays it. pyarrow is needed (the `parquet` extra)."""

from __future__ import annotations

import argparse
import functools
import io
import logging
import os
from pathlib import Path
from typing import Any

from soundmond.batch import dataset, job
from soundmond.batch.cluster import run_on_cluster
from soundmond.config import load_config
from soundmond.speed.audio import audio_folder, corpus_files, pick_files, synthetic_files
from soundmond.speed.measure import machine_info
from soundmond.speed.report import header_lines, table

logger = logging.getLogger(__name__)


def worker_counts(text: str) -> list[int]:
    """`--batch-workers`: "1,2" -> [1, 2]."""
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: give worker counts separated by commas, e.g. 1,2") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give worker counts of at least 1, e.g. 1,2")
    return counts


def run_batch(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """One dataset job per engine on the same recordings: the job's summary figures per run."""
    machine = machine_info()
    loaded = load_config(args.config)
    folder, kind = audio_folder(args.corpus)
    files = pick_files(corpus_files(folder), args.batch_files) or synthetic_files(tmp, 2)
    archive = job.find_files(files)
    paths = [str(Path(f).resolve()) for f in archive.files]
    archive.files, archive.audio_s = paths, {str(Path(k).resolve()): v for k, v in archive.audio_s.items()}
    config = str(loaded.path) if loaded.path is not None else None
    engines: list[tuple[str, int | None]] = [(f"local pool, {n} worker{'s' * (n != 1)}", n)
                                             for n in args.batch_workers]
    if args.batch_cluster:
        engines.append((f"Dask cluster {args.batch_cluster}", None))  # its workers: as many as the cluster has
    runs = []
    for i, (name, workers) in enumerate(engines):
        out = tmp / f"dataset-{i}"
        dataset.bind(out, job.meta_of(loaded))
        spec = job.JobSpec(paths, str(out), config)
        logger.info("bench --batch: %s on %d files", name, len(paths))
        if workers is None:
            summary = run_on_cluster(spec, archive, args.batch_cluster, stream=io.StringIO())
        else:
            summary = job.run_job(spec, archive, functools.partial(job.run_local, workers=workers), workers,
                                  stream=io.StringIO())
        rtfs = sorted(summary.rtf_per_worker.values())
        runs.append({"engine": name, "workers": summary.workers, "files": summary.files,
                     "analysed": summary.analysed, "failed": summary.failed, "audio_h": round(summary.audio_h, 5),
                     "wall_s": round(summary.wall_s, 2), "audio_h_per_h": round(summary.audio_h_per_h, 2),
                     "core_h": round(summary.core_h, 5), "busy_core_h": round(summary.busy_core_h, 5),
                     "rtf_per_worker": [round(r, 4) for r in rtfs]})
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return {"mode": "batch", "machine": machine, "config": str(loaded.path or "defaults"),
            "audio": {"source": f"{folder} ({kind})" if folder is not None else "synthetic noise",
                      "files": len(paths), "audio_h": round(sum(archive.audio_s.values()) / 3600, 5)},
            "batch": runs}


def batch_markdown(report: dict[str, Any]) -> str:
    """`bench-batch.md`: one row per run."""
    audio = report["audio"]
    lines = header_lines(report) + [
        f"## Dataset job (`soundmond analyze --format parquet`): {audio['files']} files, "
        f"{audio['audio_h'] * 60:.1f} min of audio", "",
        "Wall time includes starting the workers and loading the models in each; the real-time factor per worker is "
        "its busy seconds per second of audio. Runs follow each other: compare them at a similar load.", ""]
    lines += table(["engine", "workers", "files (failed)", "wall s", "hours of audio per hour", "core-hours held",
                    "core-hours busy", "real-time factor per worker"],
                   [[r["engine"], r["workers"], f"{r['files']} ({len(r['failed'])})", r["wall_s"], r["audio_h_per_h"],
                     r["core_h"], r["busy_core_h"], ", ".join(f"{x:.3f}" for x in r["rtf_per_worker"])]
                    for r in report["batch"]])
    return "\n".join(lines)
