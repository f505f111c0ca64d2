"""What the MQTT publisher (`publish.py`) needs from the store, what it reports, and the counters behind that."""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from soundmond.data import OutboxCounts
from soundmond.outputs.store import OutboxRow


class OutboxStore(Protocol):
    """What the publisher needs from `soundmond.outputs.store.Store`."""

    def outbox_pending(self, limit: int, after_id: int = 0) -> Sequence[OutboxRow]: ...

    def outbox_mark_attempt(self, ids: Sequence[int]) -> None: ...

    def outbox_mark_sent(self, ids: Sequence[int], now: float) -> int: ...

    def outbox_counts(self) -> OutboxCounts: ...


@dataclass(frozen=True)
class PublisherState:
    """A snapshot of the publisher for health checks and the heartbeat."""

    connected: bool
    last_error_kind: str | None  # auth | unreachable | tls | refused | lost; None once connected
    last_error: str | None
    pending: int | None  # unsent outbox rows, as of the last count (None before the first)
    in_flight: int  # outbox rows published and waiting for PUBACK
    published: int  # outbox rows acknowledged by the broker since start
    direct_published: int  # status / soundscape / heartbeat / windows / discovery messages handed to the socket
    dropped: Mapping[str, int]  # direct messages dropped while disconnected, by kind
    rejected: int  # outbox publishes the broker answered with an error reason (MQTT 5); retried next connection
    ignored: Mapping[str, int]  # incoming messages ignored, by reason (oversized, malformed, unknown_command)
    connects: int  # successful connections since start
    resent: int = 0  # acknowledged rows queued to be published once more after a lost connection (resend_acked_s)
    republished: int = 0  # of those, published once more and acknowledged again


@dataclass
class Counters:
    """The publisher's counters (behind its lock), copied into `PublisherState`."""

    pending: int | None = None
    published: int = 0
    direct_published: int = 0
    rejected: int = 0
    connects: int = 0
    resent: int = 0
    republished: int = 0
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    ignored: collections.Counter[str] = field(default_factory=collections.Counter)
