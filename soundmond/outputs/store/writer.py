"""`StoreWriter`: the stage that takes the store's writes off the inference thread."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from soundmond.data import Alert, WindowResult, WriterHealth
from soundmond.outputs.store.database import Store
from soundmond.outputs.store.rows import ALERT_KIND, OutboxItem, SavedState
from soundmond.outputs.store.schema import (
    WRITER_DROPPED_OUTBOX,
    WRITER_DROPPED_WINDOWS,
    WRITER_REJECTED,
    StoreDataError,
    StoreError,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Item:
    result: WindowResult | None
    alerts: tuple[Alert, ...]
    outbox: tuple[OutboxItem, ...]
    state: SavedState | None = None

    @property
    def rows(self) -> int:
        return ((1 + len(self.result.species) if self.result else 0) + len(self.alerts) + len(self.outbox)
                + (self.state is not None))


@dataclass(frozen=True)
class _FlushMarker:
    done: threading.Event = field(default_factory=threading.Event)


class StoreWriter:
    """The stage that takes writes off the inference thread.

    `submit()` puts an item on a bounded queue; one thread writes items in batches of up to `store.batch_size`
    or every `store.flush_interval_s`, whichever comes first, and runs retention every `retention_interval_s`.

    Never losing an alert: when the queue stays full for `submit_timeout_s`, the window and its non-alert outbox
    items are dropped (counted in `store_queue_dropped_windows` / `store_queue_dropped_outbox`, logged), but its
    alerts and their outbox rows go to an unbounded side list written with the next batch; `submit_alert` never
    blocks and never drops. A failed write (locked, disk full) is logged, retried with backoff and kept; only
    `close()` gives up on it, after its timeout, with an ERROR naming what is lost.
    """

    def __init__(
        self,
        store: Store,
        stop: threading.Event,
        *,
        queue_items: int = 500,
        submit_timeout_s: float = 1.0,
        retention_interval_s: float | None = 3600.0,
        backoff_s: tuple[float, float] = (0.2, 30.0),
    ) -> None:
        self._store = store
        self._stop = stop
        self._queue: queue.Queue[_Item | _FlushMarker] = queue.Queue(maxsize=queue_items)
        self._submit_timeout_s = submit_timeout_s
        self._retention_interval_s = retention_interval_s
        self._backoff_s = backoff_s
        self._overflow: deque[_Item] = deque()  # alerts that found the queue full; deque append/popleft are atomic
        self._lock = threading.Lock()  # guards the statistics and pending counters below
        self._pending_counters: dict[str, int] = {}
        self._closing = threading.Event()
        self._give_up = threading.Event()
        self._drain_lock = threading.Lock()  # one writer at a time: the thread, or flush/close after it ended
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._next_retention = time.monotonic()
        self._last_error: str | None = None
        self._last_error_unix_s: float | None = None
        self._failing = False
        self._batches_written = 0
        self._rows_written = 0
        self._dropped_windows = 0
        self._dropped_outbox = 0
        self._rejected = 0

    def start(self) -> StoreWriter:
        self._thread.start()
        return self

    # --- producer side --------------------------------------------------------------------------------------

    def submit(self, result: WindowResult, alerts: Sequence[Alert] = (), outbox: Sequence[OutboxItem] = ()) -> bool:
        """Queue a window with the alerts it raised and their outbox items; False if the window had to be dropped."""
        item = _Item(result, tuple(alerts), tuple(outbox))
        try:
            self._queue.put(item, timeout=self._submit_timeout_s)
            return True
        except queue.Full:
            pass
        kept = _Item(None, item.alerts, tuple(o for o in item.outbox if o.kind == ALERT_KIND))
        if kept.alerts or kept.outbox:
            self._overflow.append(kept)
        dropped_outbox = len(item.outbox) - len(kept.outbox)
        with self._lock:
            self._dropped_windows += 1
            self._dropped_outbox += dropped_outbox
            self._count(WRITER_DROPPED_WINDOWS, 1)
            self._count(WRITER_DROPPED_OUTBOX, dropped_outbox)
            total = self._dropped_windows
        logger.warning(
            "store queue full for %.1f s: dropped window %s and %d outbox items, kept its %d alerts "
            "(%d windows dropped so far; last write error: %s)",
            self._submit_timeout_s, result.window_id, dropped_outbox, len(kept.alerts), total, self._last_error,
        )
        return False

    def submit_alert(self, alert: Alert, outbox_item: OutboxItem | None = None) -> None:
        """Queue an alert not tied to a window (capture lost, ...). Never blocks, never drops."""
        item = _Item(None, (alert,), (outbox_item,) if outbox_item is not None else ())
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._overflow.append(item)

    def submit_state(self, state: SavedState) -> bool:
        """Queue a stage's state (the alert engine's) to replace its stored one, written after everything submitted
        before it (in the same transaction or a later one): the state never claims an alert the store does not hold.
        Waits up to submit_timeout_s for room; False (logged) when the queue stays full: the next save carries it."""
        try:
            self._queue.put(_Item(None, (), (), state), timeout=self._submit_timeout_s)
            return True
        except queue.Full:
            logger.warning("store queue full for %.1f s: the %r state was not saved this time (the next save "
                           "carries it)", self._submit_timeout_s, state.name)
            return False

    def _count(self, name: str, by: int) -> None:
        if by:
            self._pending_counters[name] = self._pending_counters.get(name, 0) + by

    # --- shutdown -------------------------------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Return True once everything submitted before this call is committed; False if `timeout` ran out."""
        deadline = time.monotonic() + timeout
        marker = _FlushMarker()
        if self._thread.is_alive():
            try:
                self._queue.put(marker, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                return False
            while not marker.done.wait(0.05):
                if not self._thread.is_alive():
                    break  # the thread ended (stop) before reaching the marker: finish here
                if time.monotonic() >= deadline:
                    return False
            if marker.done.is_set():
                return True
        return self._drain_inline(deadline)

    def close(self, timeout: float = 10.0) -> bool:
        """Write everything still queued, stop the thread; True if nothing was lost."""
        deadline = time.monotonic() + timeout
        self._closing.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._give_up.set()  # the thread is retrying a failing write: let it log what it loses and end
            self._thread.join(5.0)
        ok = self._drain_inline(deadline) and not self._thread.is_alive()
        left = list(self._overflow) + [x for x in list(self._queue.queue) if isinstance(x, _Item)]
        if left:
            logger.error(
                "store writer closed with %d items NOT stored (%d windows, %d alerts): %s",
                len(left), sum(i.result is not None for i in left), sum(len(i.alerts) for i in left), left,
            )
        return ok and not left

    def _drain_inline(self, deadline: float) -> bool:
        """Write what is queued from the calling thread (the writer thread has ended)."""
        with self._drain_lock:
            while True:
                items, markers = self._take(block=False)
                if not items and not markers:
                    return True
                if items and not self._write_items(items, deadline=deadline):
                    return False  # the items are back in the side list, for a later flush/close
                for m in markers:
                    m.done.set()

    # --- the thread -----------------------------------------------------------------------------------------

    def _take(self, block: bool) -> tuple[list[_Item], list[_FlushMarker]]:
        """Up to batch_size items (waiting up to flush_interval_s if `block`); a flush marker ends the batch."""
        items: list[_Item] = []
        markers: list[_FlushMarker] = []
        batch_size = self._store.config.batch_size
        deadline: float | None = None  # flush_interval_s after the first item
        while len(items) < batch_size and not markers:
            stopping = self._stop.is_set() or self._closing.is_set()
            wait = 0.0
            if block and not stopping:
                wait = 0.1 if deadline is None else deadline - time.monotonic()  # 0.1: poll the stop event
            try:
                x = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(x, _FlushMarker):
                markers.append(x)
            else:
                items.append(x)
                if deadline is None:
                    deadline = time.monotonic() + self._store.config.flush_interval_s
        while self._overflow:
            items.insert(0, self._overflow.popleft())
        return items, markers

    def _run(self) -> None:
        logger.info("store writer started (%s)", self._store.path)
        while True:
            try:
                self._maybe_retention()
                with self._drain_lock:
                    items, markers = self._take(block=True)
                    if items and not self._write_items(items, deadline=None):
                        break  # close() gave up on a failing database; it accounts for what is left
                    for m in markers:
                        m.done.set()
                if (
                    not items and not markers
                    and (self._stop.is_set() or self._closing.is_set())
                    and self._queue.empty() and not self._overflow
                ):
                    break
            except Exception:  # the top of the thread's loop: log, back off, carry on
                logger.exception("store writer: unexpected error")
                self._give_up.wait(1.0)
        h = self.health()
        logger.info("store writer stopped: %d rows in %d batches written, %d windows and %d outbox rows dropped, "
                    "%d items rejected%s", h.rows_written, h.batches_written, h.dropped_windows,
                    h.dropped_outbox_items, h.rejected_items, f"; last error: {h.last_error}" if h.last_error else "")

    def _maybe_retention(self) -> None:
        if self._retention_interval_s is None or time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + self._retention_interval_s
        try:
            self._store.enforce_retention(time.time())
        except Exception:
            logger.exception("store retention failed; retrying in %.0f s", self._retention_interval_s)

    def _write_items(self, items: list[_Item], deadline: float | None) -> bool:
        """Write items in one transaction, retrying with backoff until it works (or `deadline` / give-up).

        A batch the database refuses as invalid is split so one bad item cannot block the others; a bad item is
        counted and logged whole (its alerts are still written on their own if they can be).
        """
        backoff, backoff_max = self._backoff_s
        while True:
            with self._lock:
                counters = dict(self._pending_counters)
            try:
                self._store.write_batch(
                    [i.result for i in items if i.result is not None],
                    [a for i in items for a in i.alerts],
                    [o for i in items for o in i.outbox],
                    counters=counters,
                    states=[i.state for i in items if i.state is not None],
                )
            except StoreDataError as exc:
                if len(items) > 1:
                    return all([self._write_items([i], deadline) for i in items])
                self._reject(items[0], exc)
                return True
            except Exception as exc:
                with self._lock:
                    self._last_error = str(exc)
                    self._last_error_unix_s = time.time()
                    first = not self._failing
                    self._failing = True
                if first:
                    logger.exception("store write failed; keeping %d items and retrying", len(items))
                else:
                    logger.warning("store write failed again (%s); retrying in %.1f s", exc, backoff)
                if self._give_up.is_set() or (deadline is not None and time.monotonic() + backoff > deadline):
                    logger.error(
                        "store: %d items (%d windows, %d alerts) not written yet, out of time: %s",
                        len(items), sum(i.result is not None for i in items), sum(len(i.alerts) for i in items), exc,
                    )
                    self._overflow.extendleft(reversed(items))  # kept in memory, in order, for flush/close
                    return False
                self._give_up.wait(backoff)
                backoff = min(backoff * 2, backoff_max)
                continue
            with self._lock:
                for name, by in counters.items():
                    self._pending_counters[name] -= by
                    if not self._pending_counters[name]:
                        del self._pending_counters[name]
                self._batches_written += 1
                self._rows_written += sum(i.rows for i in items)
                if self._failing:
                    logger.info("store writes work again")
                self._failing = False
            return True

    def _reject(self, item: _Item, exc: StoreDataError) -> None:
        logger.error("store: the database refused this item, it is not stored: %r", item, exc_info=exc)
        with self._lock:
            self._rejected += 1
            self._count(WRITER_REJECTED, 1)
        if item.result is not None and (item.alerts or item.outbox):
            alerts_only = _Item(None, item.alerts, tuple(o for o in item.outbox if o.kind == ALERT_KIND))
            with contextlib.suppress(StoreError):
                self._store.write_batch([], alerts_only.alerts, alerts_only.outbox)
                logger.warning("store: the refused item's %d alerts were stored on their own", len(item.alerts))

    def health(self) -> WriterHealth:
        with self._lock:
            return WriterHealth(
                alive=self._thread.is_alive(),
                queue_depth=self._queue.qsize(),
                overflow_alerts=len(self._overflow),
                failing=self._failing,
                last_error=self._last_error,
                last_error_unix_s=self._last_error_unix_s,
                batches_written=self._batches_written,
                rows_written=self._rows_written,
                dropped_windows=self._dropped_windows,
                dropped_outbox_items=self._dropped_outbox,
                rejected_items=self._rejected,
            )

