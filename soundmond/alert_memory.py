"""A restart remembers: the alert engine's state (`soundscape/alert_state.py`) stored and restored by the daemon, and
the rolling aggregates rebuilt from the stored windows (`restore_aggregates`).

At start, before the pipeline thread runs, `restore()` gives the engine the state last saved under "alerts" in the
store's `engine_state` table, so a restart inside an alert's cooldown does not raise it again and an active condition
stays active. While running, the pipeline thread (the engine's only owner) calls `AlertMemory.save()` after alerts
fire and at every periodic snapshot; a state that did not change since the last save is not written again. The state
goes through the `StoreWriter` queue, behind the alerts it accounts for: it never says "fired" about an alert the
store does not hold.

A stored state that cannot be read (damaged, or written by another version) is logged and ignored: the engine starts
afresh, as before there was a memory, and the next save replaces it.
"""

from __future__ import annotations

import logging
import time

from soundmond.config import Config
from soundmond.outputs.store import SavedState, Store, StoreError
from soundmond.protocols import ResultStore, ResultWriter
from soundmond.soundscape.aggregate import Aggregator
from soundmond.soundscape.alert_state import EngineState
from soundmond.soundscape.alerts import AlertEngine

logger = logging.getLogger(__name__)

ALERT_STATE = "alerts"  # the row name in `engine_state`


def restore(store: ResultStore, engine: AlertEngine, now: float) -> bool:
    """Load the stored alert state into `engine`; True when there was one to take over."""
    try:
        saved = store.load_state(ALERT_STATE)
    except StoreError as exc:
        logger.warning("the stored alert state cannot be read, starting without it: %s", exc)
        return False
    if saved is None:
        logger.info("no stored alert state (first start, or a store from before soundmond kept it)")
        return False
    try:
        state, unknown = EngineState.from_dict(saved.state)
    except ValueError as exc:
        logger.warning("the stored alert state is not usable, starting without it: %s - the next save replaces it",
                       exc)
        return False
    if unknown:
        logger.info("alert state: %d keys of alert types this version does not know were dropped: %s", len(unknown),
                    ", ".join(unknown))
    engine.load_state(state, now)
    return True


class AlertMemory:
    """Saves the engine's state when it changed. Owned by the pipeline thread (it reads the engine)."""

    def __init__(self, writer: ResultWriter | None) -> None:
        self.writer = writer
        self._last: EngineState | None = None

    def save(self, engine: AlertEngine, now: float) -> bool:
        """Queue the state for the store when it differs from the last one saved; True when queued."""
        if self.writer is None:
            return False
        state = engine.state(now)
        if self._last is not None and (state.keys, state.episodes) == (self._last.keys, self._last.episodes):
            return False
        if not self.writer.submit_state(SavedState(ALERT_STATE, now, state.to_dict())):
            return False
        self._last = state
        return True


def restore_aggregates(cfg: Config, aggregator: Aggregator, store: Store) -> None:
    """The rolling aggregates from the windows stored over the longest span / baseline (a restart goes on)."""
    history_s = max(max(cfg.aggregation.spans_s), cfg.alerts.frequency.baseline_days * 86400)
    restored = store.recent_results(time.time() - history_s)
    if restored:
        aggregator.restore(restored)
        logger.info("restored %d stored windows into the rolling aggregates", len(restored))
