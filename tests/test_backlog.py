"""The backlog's policies, table-style: which windows a full live backlog keeps, what it counts, and that FALLING_BEHIND
is noticed once per episode."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from soundmond.capture.backlog import END, Backlog
from soundmond.data import AudioWindow


def window(i: int) -> AudioWindow:
    return AudioWindow(f"w{i}", "test", 1.7e9 + i, float(i), 16000, np.zeros(16, np.float32))


def drain(b: Backlog) -> list[str]:
    out = []
    while (item := b.get(timeout=0.01)) is not None:
        out.append("END" if item is END else item.window_id)  # type: ignore[union-attr]
    return out


@pytest.mark.parametrize(("policy", "puts", "kept", "dropped"), [
    ("drop_oldest", 3, ["w0", "w1", "w2"], 0),  # room for all
    ("drop_oldest", 5, ["w2", "w3", "w4"], 2),  # the newest audio is kept
    ("thin", 5, ["w1", "w2", "w4"], 2),  # while full: every other incoming window, else the oldest
    ("thin", 7, ["w2", "w4", "w6"], 4),
])
def test_a_full_live_backlog_applies_its_policy(policy: str, puts: int, kept: list[str], dropped: int) -> None:
    notices: list[int] = []
    b = Backlog(3, policy, live=True, stop=threading.Event(), on_falling_behind=notices.append)  # type: ignore[arg-type]
    for i in range(puts):
        b.put(window(i))
    assert drain(b) == kept
    assert (b.windows_in, b.windows_dropped) == (puts, dropped)
    assert notices == ([1] if dropped else [])  # once per episode, with the drops so far


def test_falling_behind_is_a_new_episode_after_the_backlog_recovers() -> None:
    notices: list[int] = []
    b = Backlog(2, "drop_oldest", live=True, stop=threading.Event(), on_falling_behind=notices.append)
    for i in range(4):
        b.put(window(i))  # 2 dropped: one episode
    assert notices == [1]
    drain(b)
    b.put(window(4))  # at most half full: the episode ends
    for i in range(5, 8):
        b.put(window(i))
    assert notices == [1, 3]


def test_recordings_wait_for_room_and_never_drop() -> None:
    stop = threading.Event()
    b = Backlog(1, "drop_oldest", live=False, stop=stop, on_falling_behind=lambda n: None)
    b.put(window(0))
    reader = threading.Thread(target=lambda: [b.get(timeout=5) for _ in range(3)])
    reader.start()
    b.put(window(1))  # waits until the reader took w0
    b.put(window(2))
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert (b.windows_in, b.windows_dropped) == (3, 0)


def test_the_end_marker_is_not_put_once_the_reader_is_done() -> None:
    b = Backlog(1, "drop_oldest", live=True, stop=threading.Event(), on_falling_behind=lambda n: None)
    b.put(window(0))
    done = threading.Event()
    done.set()
    b.end(done)  # full, and nobody reads any more: returns at once instead of waiting for room
    assert drain(b) == ["w0"]
    b.end(threading.Event())
    assert drain(b) == ["END"]
