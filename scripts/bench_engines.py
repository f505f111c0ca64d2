"""Measure Dask distributed and Ray for `soundmond analyze --cluster` (issue 20): import time, local cluster start,
throughput of `batch.worker.analyse_file` on corpus files with two workers (models loaded once per worker), and what
happens when a worker process is SIGKILLed mid-job (does the job complete, is every file in the dataset once).

    python scripts/bench_engines.py --config CONFIG [--files 10] [--engine dask ray]

Prints one JSON object per engine. Needs both engines installed (dask[distributed], ray[data]); the numbers depend on
the machine's load (state it with the figures).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from soundmond.batch import dataset
from soundmond.batch.worker import FileOutcome, analyse_file, warm

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "corpus"


def corpus_files(n: int) -> list[str]:
    with (CORPUS / "labels.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if 9.5 <= float(r["duration_s"]) <= 10.5]
    return [str(CORPUS / r["file"]) for r in sorted(rows, key=lambda r: r["file"])[:n]]


def import_s(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def exactly_once(root: Path, outcomes: list[FileOutcome], files: list[str]) -> dict[str, object]:
    parts = Counter(p.stem for p in (root / "windows").rglob("*.parquet"))
    done = {o.path for o in outcomes if o.outcome in ("done", "skipped")}
    markers = {m.sha256 for m in dataset.markers(root)}
    return {"files_done": len(done), "files": len(files), "markers": len(markers),
            "window_parts_per_file_max": max(parts.values(), default=0), "stray_temporaries":
            len(list(root.rglob(f".*{dataset.TEMP_MARK}*")))}


def kill_one(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def bench_dask(config: str, files: list[str], work: Path) -> dict[str, object]:
    from dask.distributed import Client, LocalCluster

    from soundmond.batch.cluster import models_plugin

    out: dict[str, object] = {"engine": "dask", "import_s": import_s("dask.distributed")}
    t = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", processes=True,
                           dashboard_address=":0")
    client = Client(cluster)
    out["cluster_start_s"] = time.perf_counter() - t
    t = time.perf_counter()
    client.register_plugin(models_plugin(config))
    out["models_loaded_s"] = time.perf_counter() - t
    for run in ("throughput", "sigkill"):
        root = work / f"dask-{run}"
        t = time.perf_counter()
        futures = [client.submit(analyse_file, f, str(root), config, pure=False) for f in files]
        outcomes: list[FileOutcome] = []
        killed = None
        from dask.distributed import as_completed
        for fut in as_completed(futures):
            try:
                outcomes.append(fut.result())
            except Exception as exc:
                outcomes.append(FileOutcome("?", "failed", error=repr(exc)))
            if run == "sigkill" and killed is None:
                pids = client.run(os.getpid)
                killed = next(iter(pids.values()))
                kill_one(killed)
        wall = time.perf_counter() - t
        audio = sum(o.audio_s for o in outcomes if o.outcome == "done")
        out[run] = {"wall_s": wall, "audio_s": audio, "audio_h_per_h": audio / wall,
                    "failed": [o.error for o in outcomes if o.outcome == "failed"],
                    "killed_pid": killed, **exactly_once(root, outcomes, files)}
    client.close()
    cluster.close()
    return out


def bench_ray(config: str, files: list[str], work: Path) -> dict[str, object]:
    import ray

    out: dict[str, object] = {"engine": "ray", "import_s": import_s("ray")}
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    out["cluster_start_s"] = time.perf_counter() - t

    @ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=3)
    class Analyser:
        def __init__(self, config: str) -> None:
            warm(config)

        def pid(self) -> int:
            return os.getpid()

        def run(self, path: str, root: str) -> FileOutcome:
            return analyse_file(path, root, config)

    t = time.perf_counter()
    actors = [Analyser.remote(config) for _ in range(2)]  # type: ignore[attr-defined]
    pids = ray.get([a.pid.remote() for a in actors])
    out["models_loaded_s"] = time.perf_counter() - t
    for run in ("throughput", "sigkill"):
        root = work / f"ray-{run}"
        t = time.perf_counter()
        refs = [actors[i % 2].run.remote(f, str(root)) for i, f in enumerate(files)]
        outcomes: list[FileOutcome] = []
        killed = None
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                outcomes.append(ray.get(ready[0]))
            except Exception as exc:
                outcomes.append(FileOutcome("?", "failed", error=repr(exc)[:300]))
            if run == "sigkill" and killed is None:
                killed = pids[0]
                kill_one(killed)
        wall = time.perf_counter() - t
        audio = sum(o.audio_s for o in outcomes if o.outcome == "done")
        out[run] = {"wall_s": wall, "audio_s": audio, "audio_h_per_h": audio / wall,
                    "failed": [o.error for o in outcomes if o.outcome == "failed"],
                    "killed_pid": killed, **exactly_once(root, outcomes, files)}
    ray.shutdown()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--files", type=int, default=10)
    p.add_argument("--engine", nargs="+", default=["dask", "ray"])
    args = p.parse_args()
    files = corpus_files(args.files)
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engine:
            result = (bench_dask if engine == "dask" else bench_ray)(args.config, files, Path(tmp))
            print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
