"""Cutting a stream of audio blocks into analysis windows with a numpy ring buffer.

Blocks of any size go in (`push`); complete windows of `window_samples` every `hop_samples` come out, each with its
offset in the stream. The buffer holds at most one window plus one block: memory stays flat however long it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class CutWindow:
    start_sample: int  # offset of the window's first sample in the stream
    samples: Float32Array


class RingBuffer:
    """Fixed-capacity float32 ring buffer: append blocks, read the oldest `n` samples, drop consumed samples."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._start = 0  # index of the oldest sample
        self._size = 0

    @property
    def capacity(self) -> int:
        return self._buf.shape[0]

    def __len__(self) -> int:
        return self._size

    def append(self, block: Float32Array) -> None:
        n = block.shape[0]
        if self._size + n > self.capacity:
            raise OverflowError(f"ring buffer full: {self._size} + {n} > {self.capacity}")
        end = (self._start + self._size) % self.capacity
        first = min(n, self.capacity - end)
        self._buf[end : end + first] = block[:first]
        if first < n:
            self._buf[: n - first] = block[first:]
        self._size += n

    def peek(self, n: int) -> Float32Array:
        """A copy of the oldest `n` samples."""
        if n > self._size:
            raise ValueError(f"only {self._size} samples buffered, {n} asked")
        first = min(n, self.capacity - self._start)
        out = np.empty(n, dtype=np.float32)
        out[:first] = self._buf[self._start : self._start + first]
        if first < n:
            out[first:] = self._buf[: n - first]
        return out

    def drop(self, n: int) -> None:
        n = min(n, self._size)
        self._start = (self._start + n) % self.capacity
        self._size -= n

    def clear(self) -> None:
        self._start = 0
        self._size = 0


class WindowCutter:
    """Blocks in, windows of `window_samples` every `hop_samples` out."""

    def __init__(self, window_samples: int, hop_samples: int, max_block_samples: int) -> None:
        if not 0 < hop_samples <= window_samples:
            raise ValueError("need 0 < hop_samples <= window_samples")
        self.window_samples = window_samples
        self.hop_samples = hop_samples
        self._ring = RingBuffer(window_samples + max_block_samples)
        self._max_block = max_block_samples
        self._next_start = 0  # stream offset of the buffer's oldest sample

    def push(self, block: Float32Array) -> Iterator[CutWindow]:
        """Add a block (split if larger than the configured maximum) and yield every window now complete."""
        for i in range(0, block.shape[0], self._max_block):
            self._ring.append(block[i : i + self._max_block])
            while len(self._ring) >= self.window_samples:
                yield CutWindow(self._next_start, self._ring.peek(self.window_samples))
                self._ring.drop(self.hop_samples)
                self._next_start += self.hop_samples

    def reset(self, stream_offset: int) -> None:
        """Forget buffered audio (after a gap, e.g. a device reopen); the next sample is at `stream_offset`."""
        self._ring.clear()
        self._next_start = stream_offset

    @property
    def buffered_samples(self) -> int:
        return len(self._ring)
