"""Bench processes pinned to CPUs (the one-core figures): which CPUs a process's threads may run on, read from
/proc/<pid>/task/*/status while it runs; the CPU a core is (/proc/cpuinfo's block for that processor); a
`soundmond run --source` process, pinned or not, with the features its config turns on and what they left in its
store."""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from soundmond.config import load_config
from soundmond.models.sidecar import ModelFolderError, read_sidecar
from soundmond.speed.inprocess import PipelineSpec
from soundmond.speed.measure import SIMD_FEATURES, read_cpuinfo
from soundmond.speed.processes import daemon_figures, start_daemon, watch_daemons


def cpu_list(text: str) -> set[int]:
    """The CPUs of a kernel CPU list ("0-1,3" -> {0, 1, 3}; /proc's Cpus_allowed_list, taskset -c)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def thread_cpus(pid: int | str = "self") -> dict[int, set[int]]:
    """Each thread of a process -> the CPUs it may run on (Cpus_allowed_list of /proc/<pid>/task/<tid>/status);
    empty when the process is gone (or not Linux)."""
    out: dict[int, set[int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue  # the thread ended between the listing and the read
        m = re.search(r"^Cpus_allowed_list:\s*(\S+)", text, re.MULTILINE)
        if m:
            out[int(tid)] = cpu_list(m.group(1))
    return out


def default_core() -> int:
    """The core the one-core runs use unless told: the highest-numbered CPU this process may run on."""
    return max(os.sched_getaffinity(0))


def core_info(core: int, cpuinfo: str | None = None) -> dict[str, Any]:
    """What CPU `core` is, from its own /proc/cpuinfo block: model name, family, model, stepping and the SIMD
    features that decide the kernels (`SIMD_FEATURES`); {"core": core} alone where /proc/cpuinfo says nothing."""
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    out: dict[str, Any] = {"core": core}
    for block in text.split("\n\n"):
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}
        if fields.get("processor") != str(core):
            continue
        for key in ("model name", "cpu family", "model", "stepping", "cpu MHz"):
            if fields.get(key):
                out[key.replace(" ", "_")] = fields[key]
        flags = set((fields.get("flags") or fields.get("Features") or "").split())
        out["simd"] = [f for f in SIMD_FEATURES if f in flags]
        out["avx512"] = sorted(f for f in flags if f.startswith("avx512"))
        break
    return out


def core_text(info: dict[str, Any]) -> str:
    """"core 1: AMD EPYC (cpu family 25, model 17, stepping 1); SIMD avx2, fma, avx512f, avx512_vnni"."""
    ids = ", ".join(f"{k.replace('_', ' ')} {info[k]}" for k in ("cpu_family", "model", "stepping") if info.get(k))
    name = info.get("model_name", "CPU unknown") + (f" ({ids})" if ids else "")
    return f"core {info['core']}: {name}; SIMD {', '.join(info.get('simd') or ['unknown'])}"


class AffinityProbe(threading.Thread):
    """Samples, until the process ends or `stop()`, which CPUs each of its threads may run on: the CPUs seen on any
    thread, the most threads seen, and whether every sampled thread had exactly `expected`."""

    def __init__(self, pid: int, sample_s: float = 0.05) -> None:
        super().__init__(name=f"affinity-{pid}", daemon=True)
        self.pid = pid
        self.sample_s = sample_s
        self.cpus: set[int] = set()
        self.threads_max = 0
        self.thread_sets: list[list[int]] = []  # the distinct per-thread CPU sets seen
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            seen = thread_cpus(self.pid)
            if not seen:
                return  # the process has ended
            self.samples += 1
            self.threads_max = max(self.threads_max, len(seen))
            for cpus in seen.values():
                self.cpus |= cpus
                if sorted(cpus) not in self.thread_sets:
                    self.thread_sets.append(sorted(cpus))
            self._stop_event.wait(self.sample_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5.0)

    def result(self, expected: Iterable[int] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"cpus_allowed": sorted(self.cpus), "thread_cpu_sets": self.thread_sets,
                               "threads_max": self.threads_max, "samples": self.samples}
        if expected is not None:
            out["pinned_as_asked"] = bool(self.samples) and self.thread_sets == [sorted(expected)]
        return out


def features_used(config: Path) -> dict[str, Any]:
    """This turn's features as the config a daemon ran with has them (read back from that file, not from the spec)."""
    loaded = load_config(config)
    cfg = loaded.config
    birds = cfg.models.birds
    folders = {"tagger": cfg.models.tagger.path, **({"birds": birds.path} if birds.enabled else {})}
    return {
        "models": {role: model_identity(loaded.resolve(path)) for role, path in folders.items()},
        "tagger": cfg.models.tagger.family, "tagger_threads": cfg.models.tagger.threads,
        "birds": birds.enabled, "birds_threads": birds.threads, "side_by_side": cfg.models.side_by_side,
        "birds_stride_s": birds.stride_s, "birds_sensitivity": birds.sensitivity,
        "birds_min_confidence": birds.min_confidence,
        "quiet_below_dbfs": cfg.windows.quiet_below_dbfs, "min_rms_dbfs": cfg.windows.min_rms_dbfs,
        "indices": cfg.indices.enabled, "evidence": cfg.evidence.enabled,
        "evidence_min_confidence": cfg.evidence.min_confidence, "evidence_alerts": cfg.evidence.alerts,
        "privacy": cfg.privacy.enabled, "privacy_mode": cfg.privacy.mode, "store": True, "mqtt": cfg.mqtt.enabled,
    }


def model_identity(folder: Path) -> str:
    """"<folder> model.onnx sha256:<12 hex>, <quantization>, exported <date>": which export a run used (a folder can be
    re-exported between two runs)."""
    try:
        side = read_sidecar(folder)
    except (ModelFolderError, OSError, ValueError) as exc:
        return f"{folder}: {exc}"
    return (f"{folder} model.onnx sha256:{side.files.get('model.onnx', '?')[:12]}, {side.quantization}, exported "
            f"{side.created_utc}")


def features_text(f: dict[str, Any]) -> str:
    """One line naming what a run had on: "BirdNET stride 3 s, quiet floor -75 dBFS, indices on, ..."."""
    on = {True: "on", False: "off"}
    quiet = "off" if f["quiet_below_dbfs"] is None else f"{f['quiet_below_dbfs']:g} dBFS"
    parts = [f"BirdNET stride {f['birds_stride_s']:g} s" if f["birds"] else "BirdNET off",
             f"quiet floor {quiet}", f"indices {on[f['indices']]}",
             f"evidence clips {on[f['evidence']]}" + (f" (>= {f['evidence_min_confidence']:g}"
                                                       f"{', alerts' if f['evidence_alerts'] else ''})"
                                                       if f["evidence"] else ""),
             f"privacy {on[f['privacy']]}" + (f" ({f['privacy_mode']})" if f["privacy"] else ""),
             "store on", f"MQTT {on[f['mqtt']]}"]
    if f["min_rms_dbfs"] is not None:
        parts.insert(2, f"RMS gate {f['min_rms_dbfs']:g} dBFS")
    return ", ".join(parts)


def store_effects(db: Path) -> dict[str, Any]:
    """What the features left in a run's store: windows with acoustic indices, quiet windows, detections, evidence
    clips by status."""
    if not db.is_file():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        with_indices = conn.execute("SELECT COUNT(*) FROM windows WHERE ndsi IS NOT NULL").fetchone()[0]
        quiet = conn.execute("SELECT COUNT(*) FROM windows WHERE \"group\" = 'quiet'").fetchone()[0]
        detections = conn.execute("SELECT COUNT(*) FROM detections").fetchone()[0]
        evidence = dict(conn.execute("SELECT status, COUNT(*) FROM evidence GROUP BY status").fetchall())
        skipped = dict(conn.execute("SELECT COALESCE(reason, '-'), COUNT(*) FROM evidence WHERE status = 'skipped' "
                                    "GROUP BY reason").fetchall())
    finally:
        conn.close()
    return {"windows_with_indices": int(with_indices), "quiet_windows": int(quiet), "detections": int(detections),
            "evidence": {str(k): int(v) for k, v in evidence.items()},
            "evidence_skipped": {str(k): int(v) for k, v in skipped.items()}}


def run_daemon(spec: PipelineSpec, source: Path, work: Path, *, cpus: frozenset[int] | None = None,
               sensor_like: bool = True, timeout_s: float = 3600.0) -> dict[str, Any]:
    """One `soundmond run --source` process of `spec` (`cpus`: pinned to them from its start): peak RSS, load time,
    wall and analysis RTF (`daemon_figures`), the features its config had on, what they left in its store, which CPUs
    its threads were allowed (sampled while it ran) and the load average around it."""
    work.mkdir(parents=True, exist_ok=True)
    db = work / "store.db"
    config = spec.config(work / "config.yaml", db, source)
    log = work / "daemon.log"
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.time()
    proc = start_daemon(config, source, log, sensor_like=sensor_like, cpus=cpus)
    probe = AffinityProbe(proc.pid)
    probe.start()
    try:
        (result,), _ = watch_daemons([proc], 0.1, timeout_s)
    finally:
        probe.stop()
    out = daemon_figures(log, started, result, db)
    out.update(config=spec.name, sensor_like=sensor_like, config_file=str(config),
               features=features_used(config), effects=store_effects(db),
               affinity=probe.result(cpus), loadavg_before=load_before,
               loadavg_after=[round(x, 2) for x in os.getloadavg()])
    if result["returncode"] != 0:
        out["log_tail"] = log.read_text(errors="replace")[-2000:]
    return out
