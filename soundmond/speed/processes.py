"""`soundmond run --source` in a fresh process (sensor-like or as installed): peak RSS, load time and wall RTF of
one configuration, read from /proc while it runs, from its log and from its store."""

from __future__ import annotations

import functools
import math
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from soundmond.speed.common import REPO
from soundmond.speed.inprocess import PipelineSpec
from soundmond.speed.measure import open_fds, proc_status

_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def _log_time(line: str) -> float | None:
    m = _LOG_TIME.match(line)
    if not m:
        return None
    return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000.0


def _store_figures(db: Path) -> dict[str, Any]:
    if not db.is_file():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        n, compute_ms, audio_s = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(compute_ms), 0), COALESCE(SUM(end_s - start_s), 0) FROM windows"
        ).fetchone()
        status = dict(conn.execute("SELECT status, COUNT(*) FROM windows GROUP BY status").fetchall())
    finally:
        conn.close()
    return {"windows": int(n), "audio_s": round(float(audio_s), 1), "analysis_compute_s": round(compute_ms / 1000, 2),
            "status": status}


# Packages a sensor does not have (the export extra, test tools). A sensor-like run makes them unimportable, as on a
# sensor, so that nothing the daemon imports can pick them up where they are installed (a skops head did: its import
# of scikit-learn pulled in torch, about +210 MB; the shipped head is ONNX now and the two runs should agree).
SENSOR_ABSENT = ("torch", "torchgen", "tensorflow", "transformers", "optimum", "tf2onnx", "pytest", "_pytest")
_SENSOR_BOOT = """
import importlib.abc, sys
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} (sensor-like run)", name=name)
        return None
sys.meta_path.insert(0, _Absent())
from soundmond.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start_daemon(config: Path, source: Path, log: Path, *, sensor_like: bool = False,
                 cpus: frozenset[int] | None = None) -> subprocess.Popen[bytes]:
    """`soundmond run --config --source` in a fresh process; `sensor_like`: without the export extra's packages;
    `cpus`: the only CPUs it (and every thread it starts) may run on, set before it executes anything."""
    if sensor_like:
        boot = _SENSOR_BOOT.replace("ABSENT", repr(set(SENSOR_ABSENT)))
        cmd = [sys.executable, "-c", boot, "run", "--config", str(config), "--source", str(source)]
    else:
        cmd = [sys.executable, "-m", "soundmond.cli", "run", "--config", str(config), "--source", str(source)]
    env = dict(os.environ)  # this soundmond, installed or run from a checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=fh, cwd=config.parent, env=env,
                                preexec_fn=None if cpus is None else functools.partial(os.sched_setaffinity, 0, cpus))


def watch_daemons(procs: Sequence[subprocess.Popen[bytes]], sample_s: float, timeout_s: float
                  ) -> tuple[list[dict[str, Any]], list[list[tuple[float, int, int, int | None]]]]:
    """Sample RSS / peak RSS (VmHWM) / open fds of running daemons every `sample_s` until they exit; returns per
    process {returncode, peak_rss_mb, wall_s} and the samples (t, rss kB, hwm kB, fds). The peak is the last VmHWM
    read (the kernel's high-water mark of this process image; ru_maxrss is not used: after fork + exec it can carry
    the parent's RSS)."""
    t0 = time.monotonic()
    done: dict[int, dict[str, Any]] = {}
    series: list[list[tuple[float, int, int, int | None]]] = [[] for _ in procs]
    while len(done) < len(procs):
        for k, p in enumerate(procs):
            if k in done:
                continue
            if p.poll() is not None:
                hwm = max((s[2] for s in series[k]), default=0)
                done[k] = {"returncode": p.returncode, "peak_rss_mb": round(hwm / 1024, 1) if hwm else None,
                           "wall_s": round(time.monotonic() - t0, 2), "samples": len(series[k])}
                continue
            st = proc_status(p.pid)
            if st:
                series[k].append((round(time.monotonic() - t0, 2), st.get("VmRSS", 0), st.get("VmHWM", 0),
                                  open_fds(p.pid)))
        if time.monotonic() - t0 > timeout_s:
            for k, p in enumerate(procs):
                if k not in done:
                    p.terminate()
            timeout_s = math.inf
        time.sleep(sample_s)
    return [done[k] for k in range(len(procs))], series


def daemon_figures(log: Path, started_unix: float, result: dict[str, Any], db: Path) -> dict[str, Any]:
    """Load time (process start -> 'running' log line), wall RTF (running -> stopping over the audio replayed)."""
    t_running = t_stopping = None
    rtf_status = None
    warnings = []
    for line in log.read_text(errors="replace").splitlines():
        if " running: " in line and t_running is None:
            t_running = _log_time(line)
        elif "stopping:" in line:
            t_stopping = _log_time(line)
        if "RTF" in line and "status:" in line:
            m = re.search(r"RTF ([0-9.]+)", line)
            rtf_status = float(m.group(1)) if m else rtf_status
        if " WARNING " in line or " ERROR " in line:
            warnings.append(line[:300])
    store = _store_figures(db)
    out = dict(result)
    out.update(store)
    if t_running is not None:
        out["start_to_running_s"] = round(t_running - started_unix, 2)
    if t_running is not None and t_stopping is not None and store.get("audio_s"):
        out["wall_rtf"] = round((t_stopping - t_running) / store["audio_s"], 4)
    if store.get("audio_s"):
        out["analysis_rtf"] = round(store["analysis_compute_s"] / store["audio_s"], 4)
    out["daemon_reported_rtf"] = rtf_status
    out["log_warnings"] = warnings[:5]
    return out


def bench_daemon(spec: PipelineSpec, source: Path, tmp: Path, *, sample_s: float = 0.1,
                 timeout_s: float = 1800, heartbeat_s: float = 60.0, sensor_like: bool = False
                 ) -> tuple[dict[str, Any], list[Any]]:
    """A fresh `soundmond run --source` process for one configuration: peak RSS, load time, RTF."""
    slug = re.sub(r"[^a-z0-9]+", "-", spec.name.lower()).strip("-") + ("-sensor" if sensor_like else "")
    work = tmp / f"daemon-{slug}"
    work.mkdir(parents=True, exist_ok=True)
    db = work / "store.db"
    cfg = spec.config(work / "config.yaml", db, source, heartbeat_s=heartbeat_s)
    log = work / "daemon.log"
    started = time.time()
    proc = start_daemon(cfg, source, log, sensor_like=sensor_like)
    (result,), (series,) = watch_daemons([proc], sample_s, timeout_s)
    out = daemon_figures(log, started, result, db)
    out["config"] = spec.name
    out["sensor_like"] = sensor_like
    if result["returncode"] != 0:
        out["log_tail"] = log.read_text(errors="replace")[-2000:]
    return out, series
