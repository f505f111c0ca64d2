"""The numpy ring buffer and the window cutter."""

from __future__ import annotations

import numpy as np
import pytest

from soundmond.capture.windowing import RingBuffer, WindowCutter


def test_ring_buffer_wraps_and_keeps_order() -> None:
    ring = RingBuffer(5)
    ring.append(np.arange(4, dtype=np.float32))
    ring.drop(3)
    ring.append(np.arange(10, 14, dtype=np.float32))  # wraps around the end
    assert ring.peek(5).tolist() == [3, 10, 11, 12, 13]
    with pytest.raises(OverflowError):
        ring.append(np.zeros(1, dtype=np.float32))


@pytest.mark.parametrize(("window", "hop", "block", "total"), [(10, 10, 3, 45), (10, 5, 7, 45), (10, 3, 20, 61)])
def test_cutter_windows_match_the_stream(window: int, hop: int, block: int, total: int) -> None:
    stream = np.arange(total, dtype=np.float32)
    cutter = WindowCutter(window, hop, max_block_samples=block)
    got = []
    for i in range(0, total, block):
        got.extend(cutter.push(stream[i : i + block]))
    expected_starts = list(range(0, total - window + 1, hop))
    assert [w.start_sample for w in got] == expected_starts
    for w in got:
        assert np.array_equal(w.samples, stream[w.start_sample : w.start_sample + window])
    assert cutter.buffered_samples < window + block


def test_cutter_splits_oversized_blocks_and_resets() -> None:
    cutter = WindowCutter(4, 4, max_block_samples=2)
    out = list(cutter.push(np.arange(9, dtype=np.float32)))
    assert [w.start_sample for w in out] == [0, 4]
    cutter.reset(100)
    out = list(cutter.push(np.ones(4, dtype=np.float32)))
    assert [w.start_sample for w in out] == [100]
