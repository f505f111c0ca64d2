"""Progress bars for long commands (`analyze` on folders, `evaluate`, `train-head`, `collect`): on stderr, only when
it is a terminal and `--no-progress` was not given; nothing at all otherwise (a pipe or the journal gets no `\\r`
lines). tqdm is a core dependency for this (pure Python, no dependencies of its own); `soundmond run` never
imports this module.

`AudioProgress` is the bar of `analyze`: audio seconds done of the total (read from the files' headers when the bar
is shown), files done, rate in audio seconds per second and the ETA. While the bar is shown, log records go through
tqdm (above the bar) so they do not tear it; `close()` puts the handlers back.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import soundfile as sf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from soundmond.capture.audio import find_audio_files


def show_progress(enabled: bool) -> bool:
    """A bar is drawn when the command was not given `--no-progress` and stderr is a terminal."""
    return enabled and sys.stderr.isatty()


def files_duration_s(paths: Sequence[Path]) -> dict[str, float]:
    """The duration of every audio file under `paths` (by the name windows carry as their source), from the headers;
    an unreadable file counts 0 s (the analysis reports it)."""
    durations = {}
    for f in (f for p in paths if Path(p).exists() for f in find_audio_files(p)):
        try:
            durations[str(f)] = float(sf.info(str(f)).duration)
        except (sf.LibsndfileError, RuntimeError, OSError):
            durations[str(f)] = 0.0
    return durations


class AudioProgress:
    """The bar over the audio seconds of a run on recordings; `window(source, end_s)` after each window."""

    def __init__(self, paths: Sequence[Path], enabled: bool) -> None:
        self.enabled = show_progress(enabled)
        self._bar: tqdm[None] | None = None
        self._files = 0
        self._current: str | None = None
        self._done_in_file = 0.0
        if not self.enabled:
            return
        self._durations = files_duration_s(paths)
        self._n_files = len(self._durations)
        self._bar = tqdm(total=round(sum(self._durations.values()), 1), unit="s", desc="audio", file=sys.stderr,
                         dynamic_ncols=True,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s "
                                    "[{elapsed}<{remaining}, {rate_fmt}]{postfix}")
        self._bar.set_postfix_str(f"files 0/{self._n_files}")
        self._logging = contextlib.ExitStack()
        self._logging.enter_context(logging_redirect_tqdm(loggers=[logging.getLogger()]))

    def window(self, source: str, end_s: float) -> None:
        if self._bar is None:
            return
        if source != self._current:
            self._file_done()
            self._current, self._done_in_file = source, 0.0
            self._bar.set_postfix_str(f"files {self._files}/{self._n_files}", refresh=False)
        step = max(0.0, end_s - self._done_in_file)
        self._done_in_file = max(self._done_in_file, end_s)
        self._bar.update(min(step, max(0.0, self._bar.total - self._bar.n)))

    def _file_done(self) -> None:
        """The file whose windows came last is finished: count it, and its tail shorter than a window."""
        if self._bar is None or self._current is None:
            return
        self._files += 1
        rest = self._durations.get(self._current, 0.0) - self._done_in_file
        self._bar.update(min(max(0.0, rest), max(0.0, self._bar.total - self._bar.n)))
        self._current = None

    def close(self) -> None:
        if self._bar is not None:
            self._file_done()
            self._bar.set_postfix_str(f"files {self._files}/{self._n_files}")
            self._bar.close()
            self._logging.close()
            self._bar = None
