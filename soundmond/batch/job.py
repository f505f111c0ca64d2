"""A dataset job on the driver: which files, who analyses them, progress on stderr and the summary.

Files are the unit of work. The driver lists them and reads their lengths from the headers (for the ETA); the workers
hash, skip finished files and write (`batch.worker.analyse_file`). `run_local` is the embedded engine: a pool of
worker processes on this machine, each loading the models once (the pool's initializer). A worker process that dies
(killed, out of memory) breaks the pool: a new pool is started and the files that were in flight are analysed again,
at most `MAX_ATTEMPTS` times each (their parts are replaced, never added: `batch.dataset`). `batch.cluster` runs the
same function on a Dask cluster.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import soundfile as sf

from soundmond.batch import dataset
from soundmond.batch.worker import FileOutcome, analyse_file, bird_stride, warm
from soundmond.capture.audio import find_audio_files
from soundmond.capture.replay import analysis_key
from soundmond.config import LoadedConfig

MAX_ATTEMPTS = 3
PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True)
class JobSpec:
    files: Sequence[str]
    out: str
    config: str | None
    reanalyze: bool = False


@dataclass
class Archive:
    files: list[str] = field(default_factory=list)
    audio_s: dict[str, float] = field(default_factory=dict)  # from the headers; 0 where unreadable
    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, problem)


def find_files(paths: Iterable[Path]) -> Archive:
    """Every recording under `paths` (sorted per path) with its length; paths that hold none are named."""
    archive = Archive()
    seen: set[Path] = set()
    for p in paths:
        if not p.exists():
            archive.missing.append((str(p), "no such file or folder"))
            continue
        found = find_audio_files(p)
        if p.is_dir() and not found:
            archive.missing.append((str(p), "no audio files (wav, flac, mp3, ogg, opus) in this folder"))
        for f in found:
            if f.resolve() in seen:
                continue
            seen.add(f.resolve())
            archive.files.append(str(f))
            try:
                info = sf.info(str(f))
                archive.audio_s[str(f)] = float(info.frames) / float(info.samplerate) if info.samplerate else 0.0
            except (RuntimeError, OSError, ValueError):
                archive.audio_s[str(f)] = 0.0  # the worker reports why it cannot be decoded
    return archive


class Progress:
    """Hours of audio analysed per hour of wall time, the ETA and the failures so far, on stderr every
    `every_s` seconds (and at the end)."""

    def __init__(self, archive: Archive, stream: IO[str] | None = None, every_s: float = PROGRESS_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.archive = archive
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.clock = clock
        self.started = clock()
        self.last = self.started
        self.outcomes: list[FileOutcome] = []
        self.total_audio_s = sum(archive.audio_s.values())

    def add(self, outcome: FileOutcome) -> None:
        self.outcomes.append(outcome)
        if outcome.outcome == "failed":
            print(f"soundmond analyze: {outcome.path}: {outcome.error}", file=self.stream, flush=True)
        now = self.clock()
        if now - self.last >= self.every_s:
            self.last = now
            self.print()

    def line(self) -> str:
        wall_s = max(self.clock() - self.started, 1e-9)
        by = {k: [o for o in self.outcomes if o.outcome == k] for k in ("done", "skipped", "failed")}
        analysed_s = sum(self.archive.audio_s.get(o.path, o.audio_s) for o in by["done"])
        finished_s = analysed_s + sum(self.archive.audio_s.get(o.path, o.audio_s) for o in by["skipped"] + by["failed"])
        rate = analysed_s / wall_s  # audio hours per wall hour
        left_s = max(self.total_audio_s - finished_s, 0.0)
        eta = "ETA 0:00:00" if left_s == 0 else f"ETA {_clock_text(left_s / rate)}" if rate > 0 else "ETA unknown"
        return (f"soundmond analyze: {len(self.outcomes)}/{len(self.archive.files)} files ({len(by['done'])} analysed, "
                f"{len(by['skipped'])} already done, {len(by['failed'])} failed); {analysed_s / 3600:.2f} h of audio "
                f"at {rate:.1f} h/h; {eta}")

    def print(self) -> None:
        print(self.line(), file=self.stream, flush=True)


def _clock_text(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass(frozen=True)
class Summary:
    files: int
    analysed: int
    skipped: int
    failed: list[dict[str, str]]
    audio_h: float  # of every file in the archive that was analysed or already done
    analysed_audio_h: float  # analysed by this job
    wall_s: float
    workers: int
    core_h: float  # workers x wall time: what the job held
    busy_core_h: float  # time the workers spent on files
    rtf_per_worker: dict[str, float]  # busy seconds per second of audio, per worker (host:pid)
    audio_h_per_h: float  # analysed audio hours per wall hour

    def text(self) -> str:
        rtfs = ", ".join(f"{w} {r:.3f}" for w, r in sorted(self.rtf_per_worker.items())) or "none"
        workers = f"{self.workers} worker{'s' if self.workers != 1 else ''}"
        return (f"soundmond analyze: {self.files} files: {self.analysed} analysed, {self.skipped} already done, "
                f"{len(self.failed)} failed; {self.audio_h:.3f} h of audio ({self.analysed_audio_h:.3f} h analysed) "
                f"in {self.wall_s:.1f} s wall on {workers} = {self.audio_h_per_h:.1f} h of audio per "
                f"hour; {self.core_h:.4f} core-hours held, {self.busy_core_h:.4f} busy; real-time factor per worker: "
                f"{rtfs}")


def summarise(outcomes: Sequence[FileOutcome], wall_s: float, workers: int) -> Summary:
    done = [o for o in outcomes if o.outcome == "done"]
    finished = done + [o for o in outcomes if o.outcome == "skipped"]
    busy: dict[str, list[float]] = {}
    for o in done:
        b = busy.setdefault(o.worker, [0.0, 0.0])
        b[0] += o.compute_s
        b[1] += o.audio_s
    analysed_s = sum(o.audio_s for o in done)
    return Summary(
        files=len(outcomes), analysed=len(done), skipped=len(finished) - len(done),
        failed=[{"file": o.path, "problem": o.error or "failed"} for o in outcomes if o.outcome == "failed"],
        audio_h=sum(o.audio_s for o in finished) / 3600, analysed_audio_h=analysed_s / 3600, wall_s=wall_s,
        workers=workers, core_h=workers * wall_s / 3600, busy_core_h=sum(b[0] for b in busy.values()) / 3600,
        rtf_per_worker={w: b[0] / b[1] for w, b in busy.items() if b[1] > 0},
        audio_h_per_h=analysed_s / wall_s if wall_s > 0 else 0.0,
    )


def write_summary(root: Path, summary: Summary) -> None:
    text = json.dumps({**asdict(summary), "finished_unix_s": time.time()}, indent=1)
    dataset.write_atomically(root / "_job_summary.json", lambda tmp: tmp.write_text(text))


def run_local(spec: JobSpec, workers: int) -> Iterator[FileOutcome]:
    """The files through a pool of `workers` processes (spawned: no model or thread state inherited), outcomes as
    they finish; a dead worker's files are retried in a new pool."""
    attempts = dict.fromkeys(spec.files, 0)
    queue = list(reversed(spec.files))
    context = multiprocessing.get_context("spawn")
    while queue:
        in_flight: dict[Future[FileOutcome], str] = {}
        with ProcessPoolExecutor(workers, mp_context=context, initializer=warm, initargs=(spec.config,)) as pool:
            broken = False
            while (queue or in_flight) and not broken:
                while queue and len(in_flight) < 2 * workers:  # a small lead: killed workers lose little
                    path = queue.pop()
                    attempts[path] += 1
                    in_flight[pool.submit(analyse_file, path, spec.out, spec.config, spec.reanalyze)] = path
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    path = in_flight.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        broken = True
                        queue.append(path)
            if broken:
                queue.extend(in_flight.values())
                pool.shutdown(wait=False, cancel_futures=True)
        for path in [p for p in queue if attempts[p] >= MAX_ATTEMPTS]:
            queue.remove(path)
            yield FileOutcome(path, "failed", worker="", error=f"a worker process died on each of {MAX_ATTEMPTS} "
                                                                "attempts (killed, or out of memory)")


def run_job(spec: JobSpec, archive: Archive, engine: Callable[[JobSpec], Iterator[FileOutcome]], workers: int,
            stream: IO[str] | None = None) -> Summary:
    """Run the job on `engine`, report progress, write and return the summary."""
    progress = Progress(archive, stream)
    started = time.monotonic()
    for outcome in engine(spec):
        progress.add(outcome)
    progress.print()
    summary = summarise(progress.outcomes, time.monotonic() - started, workers)
    write_summary(Path(spec.out), summary)
    return summary


def meta_of(loaded: LoadedConfig) -> dict[str, Any]:
    """`meta` of a dataset this config makes (the window settings and bird chunk stride its ids derive from)."""
    cfg = loaded.config
    return meta(analysis_key(cfg.station.id, cfg.windows.length_s, cfg.windows.hop_s, None, bird_stride(loaded)),
                cfg.station.id, loaded.sha256)


def meta(analysis: str, station: str, config_sha256: str) -> dict[str, Any]:
    """What `_soundmond.json` says of the dataset."""
    return {"analysis": analysis, "station": station, "config_sha256": config_sha256,
            "tables": ["windows", "detections", "chunks", "alerts"], "partitioning": "station=<id>/date=<UTC day>"}
