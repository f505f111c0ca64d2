"""`FileSource`: replays a recording or a folder of recordings as analysis windows.

Files are decoded in blocks (a long recording never sits whole in memory) at their own sample rate and channel count,
mixed to mono (or one chosen channel) and cut into windows by the same `WindowCutter` the microphone uses. Each window
carries its wall-clock time: from the recording's start time in its name when known (AudioMoth-style
`YYYYMMDD_HHMMSS.WAV`, UTC; also `YYYYMMDD_HHMM`), else from the file's modification time minus its duration.

A file that cannot be decoded is reported through `on_error` with its name and the reason, and the replay goes on with
the next file. A file's tail that holds at least `min_tail_s` of audio not covered by an earlier window gets one more
window ending at the file's end (so it overlaps the window before it: a 6-s file gives 0-5 s and 1-6 s, and the
aggregate counts both windows); only a file shorter than one window is zero-padded, the padding recorded
(`AudioWindow.padded_samples`). A file's last window is
marked `final` (the bird chunk grid closes the file's last chunk there): windows are handed on one behind the decoding.

Window ids derive from the station, the file's content (SHA-256, hashed before decoding), the window settings (and
the bird chunk stride when it is not 3 s, and the models when given) and the window's sample offset
(`soundmond.identity`): the same recording analysed by the same models yields the same ids however often it is
replayed, and other models other ids.
With a `ledger` (the store), `open()` hashes every file and looks it up (`soundmond.capture.replay`): files already
analysed are skipped without decoding, a file a crash interrupted resumes after its stored windows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from soundmond.capture.audio import AudioError, check_finite, find_audio_files, to_mono
from soundmond.capture.replay import (
    FilePlan,
    ReplayReport,
    analysis_key,
    bird_stride_part,
    models_part,
    plan_files,
)
from soundmond.capture.windowing import WindowCutter
from soundmond.data import AudioWindow, CaptureStats
from soundmond.identity import file_sha256, file_source_identity, models_identity, window_id
from soundmond.protocols import ReplayLedger

logger = logging.getLogger(__name__)

_NAME_TIME = re.compile(r"(?<!\d)(\d{8})[_T-](\d{6}|\d{4})(?!\d)")
BLOCK_S = 1.0


def start_time_from_name(path: Path) -> float | None:
    """Recording start (UTC epoch seconds) from an AudioMoth-style name, or None."""
    match = _NAME_TIME.search(path.stem)
    if not match:
        return None
    date, clock = match.groups()
    fmt = "%Y%m%d%H%M%S" if len(clock) == 6 else "%Y%m%d%H%M"
    try:
        start = dt.datetime.strptime(date + clock, fmt).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None
    return start.timestamp()


def recording_start_unix_s(path: Path, duration_s: float) -> tuple[float, str]:
    """(start time, how it was found): the name when it carries one, else mtime - duration."""
    from_name = start_time_from_name(path)
    if from_name is not None:
        return from_name, "file name"
    return path.stat().st_mtime - duration_s, "file modification time"


LEAD_IN_S = 4.0  # audio before a resumed file's first window: a bird chunk (3 s) across the resume point, plus margin
LEAD_IN_WINDOWS = 8  # skipped windows kept for it (enough with any hop >= 0.5 s)


def lead_in(before: list[AudioWindow], window: AudioWindow) -> np.ndarray:
    """Up to `LEAD_IN_S` of the audio just before `window`, from the windows skipped before it (overlaps removed)."""
    rate = window.sample_rate_hz
    end = round(window.start_s * rate)
    first = max(0, end - round(LEAD_IN_S * rate))
    lead = np.zeros(end - first, dtype=np.float32)
    filled = np.zeros(end - first, dtype=bool)
    for w in before:
        w_first = round(w.start_s * rate)
        real = w.samples[: w.samples.shape[0] - w.padded_samples]
        lo, hi = max(first, w_first), min(end, w_first + real.shape[0])
        if lo < hi:
            lead[lo - first: hi - first] = real[lo - w_first: hi - w_first]
            filled[lo - first: hi - first] = True
    gaps = np.flatnonzero(~filled)
    return lead[gaps[-1] + 1:] if gaps.size else lead  # only the contiguous audio that ends at the window


class FileSource:
    """Implements `AudioSource` over files."""

    def __init__(
        self,
        paths: Sequence[Path | str],
        window_s: float,
        hop_s: float,
        *,
        realtime: bool = False,
        channel: int | None = None,
        min_tail_s: float = 1.0,
        on_error: Callable[[Path, str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        station: str = "",
        ledger: ReplayLedger | None = None,
        reanalyze: bool = False,
        bird_stride_s: float | None = None,
        models: Mapping[str, Any] | None = None,
    ) -> None:
        """`ledger`: the store's replay records, to skip what is stored (`reanalyze`: replace it instead).
        `bird_stride_s`: the bird model's chunk stride (None: no bird model); part of the analysis key and the window
        ids, so a file analysed again at another stride is analysed, and stored, anew. `models`: the session's model
        versions (`Session.model_versions`), the same for the same reason (None: ids without them)."""
        self.paths = [Path(p) for p in paths]
        self.window_s = window_s
        self.hop_s = hop_s
        self.realtime = realtime
        self.channel = channel
        self.min_tail_s = min_tail_s
        self.on_error = on_error or (lambda path, problem: None)
        self._sleep = sleep
        self._clock = clock
        self.files_done = 0
        self.files_failed = 0
        self.station = station
        self.ledger = ledger
        self.reanalyze = reanalyze
        self.bird_stride_s = bird_stride_s
        self.models = models_identity(models) if models is not None else None
        self.analysis = analysis_key(station, window_s, hop_s, channel, bird_stride_s, self.models)
        self.report = ReplayReport()
        self._plans: list[FilePlan] | None = None

    def open(self) -> None:
        """With a ledger: hash every file and decide what to replay (`capture.replay.plan_files`). Each file is
        opened when its turn comes (a bad file is reported, not fatal)."""
        if self.ledger is not None and self._plans is None:
            self._plans = plan_files(self.files(), self.ledger, self.analysis, reanalyze=self.reanalyze,
                                     report=self.report, on_error=self._fail)

    def _planned(self) -> Iterator[FilePlan]:
        if self._plans is not None:
            yield from self._plans
            return
        for path in self.files():  # no store to ask: every file is new, hashed as its turn comes
            try:
                yield FilePlan(path, file_sha256(path), "new")
            except OSError as exc:
                self._fail(path, f"cannot read ({exc.strerror or exc})")

    def close(self) -> None:
        """Nothing stays open between windows."""

    def stats(self) -> CaptureStats | None:
        """Recordings have no live capture to report on."""
        return None

    def files(self) -> list[Path]:
        found: list[Path] = []
        for p in self.paths:
            if not p.exists():
                self._fail(p, "no such file or folder")
                continue
            matches = find_audio_files(p)
            if p.is_dir() and not matches:
                self._fail(p, "no audio files (wav, flac, mp3, ogg, opus) in this folder")
            found.extend(matches)
        return found

    def _fail(self, path: Path, problem: str) -> None:
        self.files_failed += 1
        logger.error("%s: %s", path, problem)
        self.on_error(path, problem)

    def windows(self, stop: threading.Event) -> Iterator[AudioWindow]:
        if self.ledger is not None:
            self.open()
        started = self._clock()
        replayed_s = 0.0
        for plan in self._planned():
            if stop.is_set():
                return
            path = plan.path
            if plan.state in ("done", "duplicate"):
                self._skip(plan)
                continue
            try:
                for window in self._file_windows(plan, stop):
                    if self.realtime:
                        replayed_s += self.hop_s
                        ahead = started + replayed_s - self._clock()
                        if ahead > 0:
                            if self._sleep is time.sleep:
                                stop.wait(ahead)  # a stop request ends the wait at once
                            else:
                                self._sleep(ahead)
                    yield window
                self.files_done += 1
            except AudioError as exc:
                self._fail(path, exc.problem)
        if self.report.planned and not stop.is_set():
            logger.info("replay: %s", self.report.text())

    def _skip(self, plan: FilePlan) -> None:
        if plan.state == "done":
            self.report.done += 1
            logger.info("%s: already analysed (same content, same window settings and models): skipped", plan.path)
        else:
            self.report.duplicates += 1
            # a warning: a recorder that writes digital silence writes byte-identical files, and their time is not
            # analysed (RECORDER_SILENT counts the first one only)
            logger.warning("%s: the same bytes as %s: skipped, its time not analysed (byte-identical recordings are "
                           "what a recorder writing digital silence makes: check it)", plan.path,
                           plan.same_as or "an earlier file of this replay")

    def _file_windows(self, plan: FilePlan, stop: threading.Event) -> Iterator[AudioWindow]:
        """The file's windows, those already stored left out (a partial file), its decoding recorded in the ledger."""
        path = plan.path
        analysis = plan.analysis or self.analysis  # a record from before model identities goes on with its key
        if self.ledger is not None:
            self.ledger.replay_started(plan.sha256, analysis, str(path))
        last: AudioWindow | None = None
        count = 0
        skipped = 0
        before: list[AudioWindow] = []  # the last skipped windows: the lead-in of the first window analysed
        for window in self._decode(path, plan.sha256, stop, legacy=analysis != self.analysis):
            last = window
            count += 1
            if plan.state == "partial" and self.ledger is not None and self.ledger.has_window(window.window_id):
                skipped += 1
                before = [*before[-LEAD_IN_WINDOWS:], window]
                continue
            if skipped and count - 1 == skipped:  # the first window not stored of a partial file
                self.report.resumed.append((path, window.start_s))
                logger.info("%s: resumed at %.1f s (%d windows already stored, skipped)", path, window.start_s,
                            skipped)
                window = dataclasses.replace(window, lead_in=lead_in(before, window))
            yield window
        self.report.windows_skipped += skipped
        if stop.is_set() or last is None:
            return
        if self.ledger is not None:
            self.ledger.replay_decoded(plan.sha256, analysis, str(path), last.window_id, count)

    def _decode(self, path: Path, sha256: str, stop: threading.Event, legacy: bool = False) -> Iterator[AudioWindow]:
        """`legacy`: the window ids of a record from before model identities (without the models)."""
        source_id = (file_source_identity(sha256, self.channel) + bird_stride_part(self.bird_stride_s)
                     + models_part(None if legacy else self.models))
        if path.stat().st_size == 0:
            raise AudioError(path, "the file is empty (0 bytes)")
        try:
            handle = sf.SoundFile(str(path))
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise AudioError(path, f"cannot decode ({exc})") from exc
        with handle:
            rate = int(handle.samplerate)
            if handle.frames == 0:
                raise AudioError(path, "the file holds no audio frames")
            duration_s = handle.frames / rate if handle.frames > 0 else 0.0
            start_unix_s, how = recording_start_unix_s(path, duration_s)
            logger.info("%s: %.1f s at %d Hz, %d channel(s); start time from the %s",
                        path, duration_s, rate, handle.channels, how)
            window = round(self.window_s * rate)
            hop = round(self.hop_s * rate)
            block = round(BLOCK_S * rate)

            def cut(start_sample: int, samples: np.ndarray, padded: int = 0) -> AudioWindow:
                wid = window_id(self.station, source_id, window, hop, rate, start_sample)
                return self._window(wid, path, start_unix_s, start_sample, rate, samples, padded)

            cutter = WindowCutter(window, hop, block)
            total = 0
            covered_to = 0  # samples up to which earlier windows covered the file
            pending: AudioWindow | None = None  # held back one window, to mark the file's last one `final`
            while not stop.is_set():
                try:
                    data = handle.read(block, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    raise AudioError(path, f"decoding failed after {total / rate:.1f} s ({exc})") from exc
                if data.shape[0] == 0:
                    break
                try:
                    mono = to_mono(data, self.channel)
                except ValueError as exc:
                    raise AudioError(path, str(exc)) from exc
                mono = check_finite(mono, path)
                total += mono.shape[0]
                for piece in cutter.push(mono):
                    covered_to = piece.start_sample + window
                    if pending is not None:
                        yield pending
                    pending = cut(piece.start_sample, piece.samples)
            if stop.is_set():
                return
            if total == 0:
                raise AudioError(path, "the file holds no audio frames")
            if total < window:  # a file shorter than one window: analysed once, zero-padded
                handle.seek(0)
                samples = self._read(handle, path, total)
                logger.info("%s: %.2f s is shorter than a %.1f s window: analysed zero-padded",
                            path, total / rate, self.window_s)
                yield dataclasses.replace(cut(0, np.pad(samples, (0, window - total)), window - total), final=True)
            elif total - covered_to >= self.min_tail_s * rate:  # an uncovered tail: one last window ending at the end
                if pending is not None:
                    yield pending
                handle.seek(total - window)
                samples = self._read(handle, path, window)
                yield dataclasses.replace(cut(total - window, samples), final=True)
            elif pending is not None:
                yield dataclasses.replace(pending, final=True)

    def _read(self, handle: sf.SoundFile, path: Path, frames: int) -> np.ndarray:
        try:
            data = handle.read(frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(path, f"decoding failed ({exc})") from exc
        return check_finite(to_mono(data, self.channel), path)

    @staticmethod
    def _window(wid: str, path: Path, start_unix_s: float, start_sample: int, rate: int, samples: np.ndarray,
                padded: int) -> AudioWindow:
        return AudioWindow(
            window_id=wid,
            source=str(path),
            start_unix_s=start_unix_s + start_sample / rate,
            start_s=start_sample / rate,
            sample_rate_hz=rate,
            samples=samples,
            padded_samples=padded,
        )
