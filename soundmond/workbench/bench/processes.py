"""Several `soundmond run --source` processes at once: batch throughput with several workers, and the soak (RSS and
open fds over >= 1 h of audio). One process per configuration: `soundmond.speed.processes`."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from soundmond.capture.audio import read_info
from soundmond.speed.audio import source_dir
from soundmond.speed.common import BenchError
from soundmond.speed.inprocess import PipelineSpec
from soundmond.speed.processes import bench_daemon, daemon_figures, start_daemon, watch_daemons
from soundmond.workbench.bench.common import TARGETS
from soundmond.workbench.bench.measure import growth


def split_files(files: Sequence[Path], parts: int) -> list[list[Path]]:
    """`files` in `parts` groups of about equal duration (longest first into the lightest group)."""
    groups: list[list[Path]] = [[] for _ in range(parts)]
    load = [0.0] * parts
    sized = sorted(((read_info(f).duration, f) for f in files), key=lambda x: -x[0])
    for dur, f in sized:
        k = int(np.argmin(load))
        groups[k].append(f)
        load[k] += dur
    return groups


def bench_throughput(spec: PipelineSpec, files: Sequence[Path], tmp: Path, workers: int) -> dict[str, Any]:
    """Batch throughput: `workers` daemon processes replaying their share of the files as fast as they can, each
    with `spec.threads` threads per session; hours of audio analysed per hour of wall time (model loading included)."""
    slug = re.sub(r"[^a-z0-9]+", "-", spec.name.lower()).strip("-")
    work = tmp / f"throughput-{slug}-{workers}w"
    procs, dbs, logs = [], [], []
    started = time.time()
    for k, group in enumerate(split_files(files, workers)):
        d = work / f"w{k}"
        src = source_dir(group, d / "audio")
        dbs.append(d / "store.db")
        logs.append(d / "daemon.log")
        procs.append(start_daemon(spec.config(d / "config.yaml", dbs[-1], src), src, logs[-1], sensor_like=True))
    results, _ = watch_daemons(procs, 0.2, 3600)
    wall = max(r["wall_s"] for r in results)
    per = [daemon_figures(lg, started, r, db) for lg, r, db in zip(logs, results, dbs, strict=True)]
    window_s = sum(p.get("audio_s", 0.0) for p in per)  # window-seconds: tail windows of short files overlap
    audio_s = sum(read_info(f).duration for f in files)  # distinct seconds of audio replayed
    busy = max((p.get("wall_rtf") or 0.0) * p.get("audio_s", 0.0) for p in per)  # models loaded -> stopping
    return {
        "config": spec.name, "workers": workers, "threads_per_session": spec.threads, "audio_s": round(audio_s, 1),
        "window_audio_s": round(window_s, 1),
        "wall_s": round(wall, 2), "audio_hours_per_hour": round(audio_s / wall, 1) if wall else None,
        "audio_hours_per_hour_after_load": round(audio_s / busy, 1) if busy else None,
        "returncodes": [r["returncode"] for r in results],
        "peak_rss_mb": [r["peak_rss_mb"] for r in results],
    }


# --- soak -----------------------------------------------------------------------------------------------------------


def run_soak(spec: PipelineSpec, files: Sequence[Path], tmp: Path, *, min_audio_s: float = 3600.0,
             sample_s: float = 1.0, warmup_s: float = 60.0) -> dict[str, Any]:
    """Replay >= `min_audio_s` of audio (the files looped) through `soundmond run --source` as fast as it goes,
    sampling RSS and open file descriptors every `sample_s`; growth after `warmup_s` (target < 5 %)."""
    total = sum(read_info(f).duration for f in files)
    if total <= 0:
        raise BenchError("no audio for the soak")
    repeats = max(1, math.ceil(min_audio_s / total))
    src = source_dir(files, tmp / "soak-audio", repeats)
    result, series = bench_daemon(spec, src, tmp, sample_s=sample_s, timeout_s=6 * 3600,
                                  heartbeat_s=max(1.0, min(60.0, warmup_s)), sensor_like=True)
    t = [s[0] for s in series]
    warm = min(warmup_s, 0.2 * (t[-1] if t else 0.0))
    rss = growth([s[1] / 1024 for s in series], t, warm)
    fds = growth([float(s[3] or 0) for s in series], t, warm)
    passed = (rss.get("growth") is not None and rss["growth"] < TARGETS["soak_growth_max"]
              and fds.get("growth") is not None and fds["growth"] < TARGETS["soak_growth_max"])
    return {
        "config": spec.name, "files": len(files), "loops": repeats, "audio_s_planned": round(total * repeats, 1),
        "sample_every_s": sample_s, "warmup_s": round(warm, 1), "daemon": result,
        "rss_mb": rss, "open_fds": fds, "flat": bool(passed) and result.get("returncode") == 0,
        "series": [{"t": s[0], "rss_mb": round(s[1] / 1024, 1), "fds": s[3]} for s in series[:: max(1, len(series)
                                                                                                   // 300)]],
    }
