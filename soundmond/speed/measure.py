"""Timing and process figures: the spread of repeated runs, interleaved timing of variants, /proc figures (RSS, open
fds, CPU features) and the machine a report was measured on."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

# --- statistics and process figures ---------------------------------------------------------------------------------


def summarize(values_ms: Sequence[float]) -> dict[str, float | int]:
    """median, p10, p90, min, max and count of a list of milliseconds (the spread of repeated runs)."""
    a = np.asarray(values_ms, dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "median": math.nan, "p10": math.nan, "p90": math.nan, "min": math.nan, "max": math.nan}
    return {
        "n": int(a.size),
        "median": round(float(np.median(a)), 2),
        "p10": round(float(np.percentile(a, 10)), 2),
        "p90": round(float(np.percentile(a, 90)), 2),
        "min": round(float(a.min()), 2),
        "max": round(float(a.max()), 2),
    }


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) / VmSize of a process, in kB, from /proc/<pid>/status (Linux)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "VmSize"):
            out[key] = int(value.split()[0])
    return out


def open_fds(pid: int | str = "self") -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


# The CPU features that decide which kernels ONNX Runtime, PyTorch and XNNPACK pick (and so the ratios between them:
# the same variants rank differently on an AVX2 EPYC, an AVX-512 / AMX Xeon and a Pi's NEON).
SIMD_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
                 "asimd", "asimddp", "i8mm", "bf16", "sve")


def read_cpuinfo() -> str:
    """/proc/cpuinfo's text; empty where it cannot be read (not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_features(cpuinfo: str | None = None) -> list[str]:
    """Which of `SIMD_FEATURES` this CPU has (from /proc/cpuinfo's flags / Features line; empty if unreadable)."""
    if cpuinfo is None:
        cpuinfo = read_cpuinfo()
    have: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            have.update(value.split())
    return [f for f in SIMD_FEATURES if f in have]


def cpu_name(cpuinfo: str | None = None) -> str:
    """The first processor's model name with its family, model and stepping (a virtual machine's model name may be
    as vague as "AMD EPYC": these name the generation); the platform's processor name if /proc/cpuinfo is unreadable."""
    if cpuinfo is None:
        cpuinfo = read_cpuinfo()
    fields: dict[str, str] = {}  # the first processor's block, then (a Raspberry Pi's "Model") the machine's
    first_block = True
    for line in cpuinfo.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if not key:
            first_block = False
        elif first_block or key == "Model":
            fields.setdefault(key, value)
    name = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine()
    ids = [f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping") if fields.get(k)]
    return f"{name} ({', '.join(ids)})" if ids else name


def machine_info() -> dict[str, Any]:
    cpuinfo = read_cpuinfo()
    mem_mb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_mb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1]) // 1024
    versions = {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": ort.__version__}
    for name in ("torch", "transformers", "ai_edge_litert"):  # the workstation's reference paths, where installed
        with contextlib.suppress(Exception):
            versions[name] = importlib.metadata.version(name.replace("_", "-"))
    return {
        "cpu": cpu_name(cpuinfo),
        "cpu_features": cpu_features(cpuinfo),
        "cores": os.cpu_count(),
        "memory_mb": mem_mb,
        "platform": platform.platform(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
        "date_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    }


# --- interleaved timing ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Variant:
    """One thing to time: `run(i)` processes item i (a window or a chunk) and returns its [classes] output."""

    name: str
    run: Callable[[int], npt.NDArray[np.floating] | None]
    load_s: float | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def time_interleaved(
    variants: Sequence[Variant], items: int, repeats: int
) -> tuple[dict[str, list[float]], dict[str, npt.NDArray[np.floating]]]:
    """Each repeat runs every variant on every item in turn (variant order rotates per repeat); one untimed
    warm-up pass first. Returns per-variant milliseconds per item and the first pass's outputs [items, classes]."""
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    outputs: dict[str, list[npt.NDArray[np.floating]]] = {v.name: [] for v in variants}
    for v in variants:  # warm-up, and the outputs compared for agreement
        for i in range(items):
            out = v.run(i)
            if out is not None:
                outputs[v.name].append(np.asarray(out).reshape(-1))
    order = list(variants)
    for r in range(repeats):
        rot = order[r % len(order) :] + order[: r % len(order)]
        for i in range(items):
            for v in rot:
                t0 = time.perf_counter()
                v.run(i)
                times[v.name].append((time.perf_counter() - t0) * 1000.0)
    return times, {k: np.stack(v) for k, v in outputs.items() if v}


def timed(make: Callable[[], Any]) -> tuple[Any, float]:
    """`make()` and the seconds it took (a model's load time)."""
    t0 = time.perf_counter()
    obj = make()
    return obj, time.perf_counter() - t0


def timing_rows(times: dict[str, list[float]], variants: Sequence[Variant], baseline: str | None,
                per: str, audio_s: float) -> list[dict[str, Any]]:
    """One report row per variant: the spread of its milliseconds, RTF over `audio_s`, load time, its `info`, and its
    speed-up over `baseline` (a variant's name) when given."""
    base = float(np.median(times[baseline])) if baseline else None
    rows = []
    for v in variants:
        s = summarize(times[v.name])
        row: dict[str, Any] = {"variant": v.name, "per": per, "ms": s,
                               "rtf": round(float(s["median"]) / 1000.0 / audio_s, 4),
                               "load_s": None if v.load_s is None else round(v.load_s, 2), **v.info}
        if base:
            row["speedup_vs_baseline"] = round(base / float(s["median"]), 2)
        rows.append(row)
    return rows
