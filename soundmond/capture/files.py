"""`FileSource`: replays a recording or a folder of recordings as analysis windows.

Files are decoded in blocks (a long recording never sits whole in memory) at their own sample rate and channel count,
mixed to mono (or one chosen channel) and cut into windows by the same `WindowCutter` the microphone uses. Each window
carries its wall-clock time: from the recording's start time in its name when known (AudioMoth-style
`YYYYMMDD_HHMMSS.WAV`, UTC; also `YYYYMMDD_HHMM`), else from the file's modification time minus its duration.

A file that cannot be decoded is reported through `on_error` with its name and the reason, and the replay goes on with
the next file. A file's tail shorter than a window is analysed zero-padded when it holds at least `min_tail_s` of audio
not covered by an earlier window; the padding is recorded (`AudioWindow.padded_samples`).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from soundmond.capture.audio import AudioError, check_finite, find_audio_files, to_mono
from soundmond.capture.windowing import WindowCutter
from soundmond.data import AudioWindow, CaptureStats, new_id

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
    ) -> None:
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

    def open(self) -> None:
        """Nothing to open ahead: each file is opened when its turn comes (a bad file is reported, not fatal)."""

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
        started = self._clock()
        replayed_s = 0.0
        for path in self.files():
            if stop.is_set():
                return
            try:
                for window in self._file_windows(path, stop):
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

    def _file_windows(self, path: Path, stop: threading.Event) -> Iterator[AudioWindow]:
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
            cutter = WindowCutter(window, hop, block)
            total = 0
            covered_to = 0  # samples up to which earlier windows covered the file
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
                for cut in cutter.push(mono):
                    covered_to = cut.start_sample + window
                    yield self._window(path, start_unix_s, cut.start_sample, rate, cut.samples, 0)
            if stop.is_set():
                return
            if total == 0:
                raise AudioError(path, "the file holds no audio frames")
            if total < window:  # a file shorter than one window: analysed once, zero-padded
                handle.seek(0)
                samples = self._read(handle, path, total)
                logger.info("%s: %.2f s is shorter than a %.1f s window: analysed zero-padded",
                            path, total / rate, self.window_s)
                yield self._window(path, start_unix_s, 0, rate, np.pad(samples, (0, window - total)), window - total)
            elif total - covered_to >= self.min_tail_s * rate:  # an uncovered tail: one last window ending at the end
                handle.seek(total - window)
                samples = self._read(handle, path, window)
                yield self._window(path, start_unix_s, total - window, rate, samples, 0)

    def _read(self, handle: sf.SoundFile, path: Path, frames: int) -> np.ndarray:
        try:
            data = handle.read(frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(path, f"decoding failed ({exc})") from exc
        return check_finite(to_mono(data, self.channel), path)

    @staticmethod
    def _window(path: Path, start_unix_s: float, start_sample: int, rate: int, samples: np.ndarray,
                padded: int) -> AudioWindow:
        return AudioWindow(
            window_id=new_id(),
            source=str(path),
            start_unix_s=start_unix_s + start_sample / rate,
            start_s=start_sample / rate,
            sample_rate_hz=rate,
            samples=samples,
            padded_samples=padded,
        )
