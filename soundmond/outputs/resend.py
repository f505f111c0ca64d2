"""What the publisher publishes once more after a lost connection, at most once per row (`mqtt.resend_acked_s`).

A PUBACK says the broker has a message, not that it will keep it: Mosquitto holds what it received in memory until
its next autosave, so a broker that is SIGKILLed loses what it acknowledged since then. After a LOST connection, the
outbox rows the broker acknowledged in the last `window_s` before the loss are published once more on the next
connection (subscribers dedupe on `event_id`).

Bounds. Before issue 14 the publisher made those rows pending again in the store, and their new PUBACK gave them a new
"sent" time, so at the next loss they were "recent" again and went out again: every fault re-sent everything since
the first fault, and the traffic grew with each one (about 39 copies per event in a fault run). Here:
- only a row's FIRST acknowledgement puts it in the window: a row published again is never queued again, however
  many losses follow (at most one deliberate resend per row and process);
- a resend still unacknowledged when the next connection is lost is published again on the connection after
  (once per connection, like an unacknowledged outbox row);
- the window holds at most `max_rows` rows, and only for `window_s`.
It lives in memory: a daemon that dies before re-sending forgets it (those rows were acknowledged once). Rows never
acknowledged are not its business: they are still pending in the outbox.

Used by the publisher's thread only (no lock).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from soundmond.outputs.store import OutboxRow


class ResendWindow:
    """Rows acknowledged recently (by their first PUBACK) and rows queued to be published once more."""

    def __init__(self, window_s: float, max_rows: int = 10_000) -> None:
        self.window_s = window_s
        self.max_rows = max_rows
        self._acked: collections.deque[tuple[float, OutboxRow]] = collections.deque()
        self._queue: collections.deque[OutboxRow] = collections.deque()
        self.forgotten = 0  # rows that fell out of a full window or queue (max_rows)

    def __len__(self) -> int:
        """Rows waiting to be published once more."""
        return len(self._queue)

    def acknowledged(self, row: OutboxRow, now: float) -> None:
        """`row` got its first PUBACK at `now` (store clock)."""
        if self.window_s <= 0:
            return
        self._acked.append((now, row))
        self._prune(now)

    def lost(self, now: float, unacknowledged_resends: Iterable[OutboxRow] = ()) -> int:
        """The connection was lost at `now`: queue the rows first acknowledged in the last `window_s` (each leaves the
        window for good) after the resends that were still waiting for their PUBACK; returns how many were added."""
        self._prune(now)
        back = list(unacknowledged_resends)
        self._queue.extendleft(reversed(back))
        added = [row for _, row in self._acked]
        self._acked.clear()
        self._queue.extend(added)
        while len(self._queue) > self.max_rows:
            self._queue.popleft()
            self.forgotten += 1
        return len(added)

    def take(self, n: int) -> list[OutboxRow]:
        """Up to `n` queued rows, oldest first, to publish now."""
        return [self._queue.popleft() for _ in range(min(n, len(self._queue)))]

    def put_back(self, rows: Iterable[OutboxRow]) -> None:
        """Rows `take` gave out that could not be handed to the client: first in line again."""
        self._queue.extendleft(reversed(list(rows)))

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        while self._acked and self._acked[0][0] < horizon:
            self._acked.popleft()
        while len(self._acked) > self.max_rows:
            self._acked.popleft()
            self.forgotten += 1
