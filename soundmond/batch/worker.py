"""One recording end to end in a worker process: the daemon's `Session.process` over its windows, its rows written
into the dataset (`batch.dataset`), its outcome returned.

The models are loaded once per process (`worker_models`, cached by config path) and shared by every file the process
analyses; each file gets a fresh session (aggregator and alert engine) from `build_session(models=...)`, so a file's
rows do not depend on which worker analysed it or what it analysed before: alerts are those of the file alone (span
rules and cooldowns see that file's windows). The same function runs in the local pool and on a Dask worker.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import soundfile as sf

from soundmond.analysis import ModelLoadError, build_session, load_models
from soundmond.batch import dataset, tables
from soundmond.capture.files import FileSource
from soundmond.config import ConfigError, LoadedConfig, load_config
from soundmond.data import Alert, WindowResult
from soundmond.identity import file_sha256
from soundmond.outputs.store.rows import clean

Outcome = Literal["done", "skipped", "failed"]


@dataclass(frozen=True)
class FileOutcome:
    path: str
    outcome: Outcome
    sha256: str | None = None
    audio_s: float = 0.0
    compute_s: float = 0.0
    windows: int = 0
    worker: str = ""
    error: str | None = None


@dataclass
class WorkerState:
    loaded: LoadedConfig
    models: Any  # load_models' tuple, or None when loading failed (`error` says why)
    error: str | None = None


_STATE: dict[str | None, WorkerState] = {}
_LOCK = threading.Lock()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_models(config: str | None) -> WorkerState:
    """This process's config and models, loaded on first use; a load failure is kept and reported per file."""
    with _LOCK:
        if config not in _STATE:
            try:
                loaded = load_config(config)
            except ConfigError as exc:
                raise RuntimeError(f"config: {exc}") from exc
            try:
                _STATE[config] = WorkerState(loaded, load_models(loaded))
            except ModelLoadError as exc:
                _STATE[config] = WorkerState(loaded, None, str(exc))
        return _STATE[config]


def warm(config: str | None) -> None:
    """Load the models now (a pool initializer, a Dask worker plugin's setup)."""
    worker_models(config)


def analyse_file(path: str, out: str, config: str | None, reanalyze: bool = False) -> FileOutcome:
    """Analyse one recording into the dataset at `out`: skipped when its marker says it is finished (unless
    `reanalyze`); any failure is returned with the reason, never raised."""
    started = time.perf_counter()
    me = worker_name()
    try:
        sha = file_sha256(path)
    except OSError as exc:
        return FileOutcome(path, "failed", worker=me, error=f"cannot read ({exc.strerror or exc})")
    root = Path(out)
    if not reanalyze and (done := dataset.read_marker(root, sha)) is not None:
        return FileOutcome(path, "skipped", sha, done.audio_s, 0.0, done.windows, me)
    try:
        return _analyse(path, sha, root, config, started, me)
    except Exception as exc:  # one file's failure is reported with the others, the worker goes on
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return FileOutcome(path, "failed", sha, compute_s=time.perf_counter() - started, worker=me, error=detail)


def _analyse(path: str, sha: str, root: Path, config: str | None, started: float, me: str) -> FileOutcome:
    state = worker_models(config)
    if state.models is None:
        return FileOutcome(path, "failed", sha, worker=me, error=f"models: {state.error}")
    cfg = state.loaded.config
    problems: list[str] = []
    source = FileSource([path], cfg.windows.length_s, cfg.windows.hop_s, station=cfg.station.id,
                        on_error=lambda p, problem: problems.append(problem), bird_stride_s=bird_stride(state.loaded),
                        models=state.models[3])  # window ids as `analyze --store` makes them
    session = build_session(state.loaded, models=state.models)
    results: list[WindowResult] = []
    alerts: list[Alert] = []
    end_s = 0.0
    try:
        for window in source.windows(threading.Event()):
            analysis, raised = session.process(window, now=window.start_unix_s + window.duration_s)
            results.append(analysis.result)
            alerts.extend(raised)
            end_s = max(end_s, window.end_s)
    finally:
        session.close()
    if problems:  # nothing of a file that could not be decoded whole is written: its retry starts clean
        return FileOutcome(path, "failed", sha, compute_s=time.perf_counter() - started, worker=me,
                           error="; ".join(problems))
    audio_s = _duration(path, end_s)
    parts = tables.partitioned(results, alerts, cfg.station.id, sha)
    written = dataset.write_parts(root, sha, parts)
    counts = {t: sum(p.num_rows for k, p in parts.items() if k[0] == t) for t in tables.TABLES}
    compute_s = time.perf_counter() - started
    dataset.write_marker(root, dataset.FileRecord(
        sha, path, counts["windows"], counts["detections"], counts["chunks"], counts["alerts"], audio_s, compute_s,
        me, written, time.time(), clean(session.model_versions)))
    return FileOutcome(path, "done", sha, audio_s, compute_s, counts["windows"], me)


def bird_stride(loaded: LoadedConfig) -> float | None:
    """The bird chunk stride the window ids derive from (None without a bird model), as `analyze` passes it."""
    birds = loaded.config.models.birds
    return birds.stride_s if birds.enabled else None


def _duration(path: str, fallback_s: float) -> float:
    """The recording's length from its header (the windows overlap when hop < length)."""
    try:
        info = sf.info(path)
        return float(info.frames) / float(info.samplerate)
    except (RuntimeError, OSError, ValueError):
        return fallback_s
