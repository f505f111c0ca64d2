"""The bounded queue of windows between the capture thread and the pipeline thread, and what happens when it is full.

The capture thread is its only writer (`put`, `end`) and owns its counters (`windows_in`, `windows_dropped`) and the
falling-behind episode; the pipeline thread only takes windows (`get`) and reads the counters.

Live sources: when inference is slower than real time and the backlog is full, `drop_oldest` drops the oldest waiting
window (the newest audio is kept), and `thin` drops every other incoming window while the backlog stays full. Every
dropped window is counted, and `on_falling_behind(windows_dropped)` is called once per episode (the episode ends when
the backlog is back to half full). Recordings that are not replayed in real time never drop: `put` waits for room.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Literal

from soundmond.data import AudioWindow

logger = logging.getLogger(__name__)

PUT_WAIT_S = 0.5  # a waiting `put` (recordings) or `end` looks at the stop event this often


class EndOfStream:
    """The marker `get` returns once the capture thread has ended the stream."""


END = EndOfStream()


class Backlog:
    def __init__(self, maxsize: int, policy: Literal["drop_oldest", "thin"], *, live: bool, stop: threading.Event,
                 on_falling_behind: Callable[[int], None]) -> None:
        self._queue: queue.Queue[AudioWindow | EndOfStream] = queue.Queue(maxsize=maxsize)
        self.maxsize = maxsize
        self.policy = policy
        self.live = live
        self._stop = stop
        self._on_falling_behind = on_falling_behind
        self.windows_in = 0  # capture thread's
        self.windows_dropped = 0  # capture thread's
        self._falling_behind = False
        self._thin_toggle = False

    def qsize(self) -> int:
        return self._queue.qsize()

    def get(self, timeout: float) -> AudioWindow | EndOfStream | None:
        """The next window, `END` after the last one, or None when nothing came within `timeout` (pipeline thread)."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def put(self, window: AudioWindow) -> None:
        """Queue a window (capture thread): waits for room (recordings) or applies the policy (live)."""
        self.windows_in += 1
        if not self.live:
            while not self._stop.is_set():
                try:
                    self._queue.put(window, timeout=PUT_WAIT_S)
                    return
                except queue.Full:
                    continue
            return
        if self._queue.full():
            if self.policy == "thin":  # while full, every other incoming window is dropped
                self._thin_toggle = not self._thin_toggle
                if self._thin_toggle:
                    self._drop(window)
                    return
            try:
                dropped = self._queue.get_nowait()
            except queue.Empty:
                pass
            else:
                if isinstance(dropped, AudioWindow):
                    self._drop(dropped)
        elif self._falling_behind and self._queue.qsize() <= self.maxsize // 2:
            self._falling_behind = False
            logger.info("inference keeps up again (backlog %d windows)", self._queue.qsize())
        try:
            self._queue.put_nowait(window)
        except queue.Full:
            self._drop(window)

    def end(self, reader_done: threading.Event) -> None:
        """Mark the end of the stream (capture thread), unless the reader has already stopped reading."""
        while not reader_done.is_set():
            try:
                self._queue.put(END, timeout=PUT_WAIT_S)
                return
            except queue.Full:
                continue

    def _drop(self, window: AudioWindow) -> None:
        self.windows_dropped += 1
        logger.debug("dropped window %s (%s) to keep up with real time", window.window_id, window.source)
        if not self._falling_behind:
            self._falling_behind = True
            self._on_falling_behind(self.windows_dropped)
