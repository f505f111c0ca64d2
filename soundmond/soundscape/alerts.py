"""Alert rules with hysteresis and cooldown per key. Pure: no threads, no I/O, no clock reads (`now` is passed in).

Two entry points feed the rules: `on_window` (per-window rules, once per analysed window) and `on_tick` (span rules
against an `Aggregator`, e.g. once a minute). `external` lets the daemon raise its own events (CAPTURE_LOST, ...)
through the same bookkeeping.

Severity table

=====================  ========  =========================================  ============
type                   severity  key (what hysteresis/cooldown is per)       fed by
=====================  ========  =========================================  ============
RARE_SPECIES           warning   RARE_SPECIES:<scientific name>              on_window
LOW_CONFIDENCE         info      LOW_CONFIDENCE                              on_window
UNKNOWN_SOUND          info      UNKNOWN_SOUND                               on_window
HIGH_FREQUENCY         info      HIGH_FREQUENCY:<scientific name>:<span_s>   on_tick
LOW_FREQUENCY          info      LOW_FREQUENCY:<scientific name>:<span_s>    on_tick
INDUSTRIAL_RISE        warning   INDUSTRIAL_RISE:<span_s>                    on_tick
BIRD_ACTIVITY_DROP     warning   BIRD_ACTIVITY_DROP:<span_s>                 on_tick
CAPTURE_LOST           critical  chosen by the daemon                        external
CAPTURE_RESTORED       info      chosen by the daemon                        external
CAPTURE_FLAT           warning   chosen by the daemon                        external
CAPTURE_CLIPPED        warning   chosen by the daemon                        external
FALLING_BEHIND         warning   chosen by the daemon                        external
RECORDER_SILENT        warning   RECORDER_SILENT:<episode>                   on_window (soundscape/silence.py)
=====================  ========  =========================================  ============

(`SEVERITY` holds this table; `external` takes the severity from its caller.)

Hysteresis and cooldown, per key
- A rule evaluation observes its condition as true for some keys; every other key of that rule seen before is
  observed false. An alert fires when a key's condition becomes true, and never again while it stays true.
- The key clears once its condition has been false for `clear_after_s`, measured from the first false observation
  to the next true one (or to `now` while it stays false). Time without any observation counts as whatever was
  last observed: after a true observation, a gap (no windows, rule not ready) does not clear the key.
- After clearing, the next true observation starts a new episode, which fires only if `cooldown_s` has passed since
  the key last fired; an episode that starts inside the cooldown is held silently until it clears again.
  So one noisy hour is one alert.
- `external` events have no condition to clear: each call fires unless the key fired less than `cooldown_s` ago.
- Rule types listed in `disabled` (case-insensitive) are neither evaluated nor fired, external ones included.
- Across restarts: `state()` gives all of this as a frozen, JSON-serialisable `EngineState` (soundscape/alert_state.py)
  and `load_state()` takes it over in a new engine, so a restart inside a cooldown does not fire again and an active
  condition stays active.

Baselines (HIGH_FREQUENCY, LOW_FREQUENCY, INDUSTRIAL_RISE, BIRD_ACTIVITY_DROP)
- The current span (rule's `span_s`, ending at `now`) is compared with the same span at the same UTC time of day on
  each of the previous `baseline_days` days (`Aggregator.baseline`).
- Coverage: a period counts only if it holds at least MIN_COVERAGE (80 %) of the windows of the best-covered period
  among the current span and the previous days, so hours the station was off (or half off) are skipped.
- A rule is ready once `min_baseline_days` previous days count; until then it does not fire, and
  `baseline_status()` says so (the daemon publishes that).
- HIGH_FREQUENCY: count > mean + k x max(std, min_std) (std = sample standard deviation of the per-day counts,
  0 for a single day; the floor `min_std`, default 1, keeps a constant baseline from alerting on +1 and makes a
  species never heard at this hour alert from k + 1 windows on). Evaluated for every species in the current span.
- LOW_FREQUENCY: count < mean - k x max(std, min_std), only for species with baseline mean >= `low_min_mean`
  (default 5 windows per span) and only when the current span is complete: the station has been running for at
  least span_s and the span is covered (as above). Without that, every restart would report missing birds.
- INDUSTRIAL_RISE: industrial share of the span's windows with a group > mean of the previous days' shares +
  `margin` (absolute), with at least `min_windows` windows with a group in the span.
- BIRD_ACTIVITY_DROP: windows with any species < (1 - drop_fraction) x the previous days' mean, only when that mean
  is >= `min_baseline_mean` and the current span is complete.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from soundmond.config import AlertsConfig, alert_span_refusals
from soundmond.data import Alert, AlertType, BaselineRule, BaselineStatus, Severity, SpeciesScore, WindowResult
from soundmond.identity import alert_id, at_second
from soundmond.soundscape.aggregate import Aggregator, SpanFigures
from soundmond.soundscape.alert_state import EngineState, KeyState
from soundmond.soundscape.silence import SilenceWatch

logger = logging.getLogger(__name__)


SEVERITY: dict[AlertType, Severity] = {
    AlertType.RARE_SPECIES: "warning",
    AlertType.LOW_CONFIDENCE: "info",
    AlertType.UNKNOWN_SOUND: "info",
    AlertType.HIGH_FREQUENCY: "info",
    AlertType.LOW_FREQUENCY: "info",
    AlertType.INDUSTRIAL_RISE: "warning",
    AlertType.BIRD_ACTIVITY_DROP: "warning",
    AlertType.CAPTURE_LOST: "critical",
    AlertType.CAPTURE_RESTORED: "info",
    AlertType.CAPTURE_FLAT: "warning",
    AlertType.CAPTURE_CLIPPED: "warning",
    AlertType.FALLING_BEHIND: "warning",
    AlertType.RECORDER_SILENT: "warning",
}
MIN_COVERAGE = 0.8
EXAMPLES = 5  # example windows in span-rule evidence

OccurrenceLookup = Callable[[str], float | None]


@dataclass
class _KeyState:
    type: AlertType
    active: bool = False  # inside an episode (fired, or held silently by the cooldown)
    false_since_s: float | None = None  # first false observation since the condition was last true
    last_fired_s: float | None = None


@dataclass(frozen=True)
class _Draft:
    """What a rule proposes for a key whose condition holds; fired or not by the hysteresis."""

    message: str
    evidence: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class _Baseline:
    current: SpanFigures
    days: list[SpanFigures]  # usable previous days (covered), d = 1 first
    days_needed: int
    complete: bool  # the current span is full enough for "fewer than usual" rules

    @property
    def ready(self) -> bool:
        return len(self.days) >= self.days_needed


class AlertEngine:
    """Evaluates the alert rules and keeps their hysteresis/cooldown state. Not thread-safe: one owner."""

    def __init__(self, config: AlertsConfig, spans_s: Sequence[int]) -> None:
        """`config` and `spans_s` as in a validated `Config` (its validators refuse a rule span longer than every
        aggregation span, and `min_baseline_days` above `baseline_days`); the same span rule is checked here for
        engines built from parts."""
        refusals = alert_span_refusals(config, spans_s)
        if refusals:
            raise ValueError("; ".join(str(r) for r in refusals))
        self.config = config
        self._disabled = set(config.disabled)
        self._rare_names = {n.strip().casefold() for n in config.rare_species if n.strip()}
        self._states: dict[str, _KeyState] = {}
        self._episodes: dict[str, int] = {}
        self._silence = SilenceWatch(config.silent_recorder_s, break_after_s=config.silent_recorder_break_s)

    def enabled(self, alert_type: AlertType) -> bool:
        return alert_type not in self._disabled

    # --- entry points ----------------------------------------------------------------------------------------------

    def on_window(
        self, result: WindowResult, now: float, *, occurrence: OccurrenceLookup | None = None
    ) -> list[Alert]:
        """Per-window rules for one analysed window. `occurrence(scientific_name)` is asked only when a species
        carries no `occurrence` of its own."""
        alerts: list[Alert] = []
        origin = result.window_id  # the alert's id derives from its key and this window
        if self.enabled(AlertType.RARE_SPECIES):
            alerts += self._observe(AlertType.RARE_SPECIES, self._rare(result, occurrence), now, origin)
        if self.enabled(AlertType.LOW_CONFIDENCE):
            alerts += self._observe(AlertType.LOW_CONFIDENCE, self._low_confidence(result), now, origin)
        if self.enabled(AlertType.UNKNOWN_SOUND):
            alerts += self._observe(AlertType.UNKNOWN_SOUND, self._unknown(result), now, origin)
        quiet_s = self._silence.observe(result)  # followed even when disabled, so enabling it later is on time
        if quiet_s is not None and self.enabled(AlertType.RECORDER_SILENT):
            key = f"RECORDER_SILENT:{self.next_episode('RECORDER_SILENT')}"  # once per episode: no cooldown
            alerts.append(self._make(AlertType.RECORDER_SILENT, key, now, _Draft(
                f"The recorder has been silent for {quiet_s:.0f} s (digital silence or below the quiet floor) "
                f"up to window {_short(result.window_id)}: check the microphone, its cable and its gain",
                {"window_id": result.window_id, "quiet_since_unix_s": self._silence.state.quiet_since_s,
                 "quiet_s": quiet_s, "rms_dbfs": result.rms_dbfs, "silent_recorder_s": self.config.silent_recorder_s},
            ), SEVERITY[AlertType.RECORDER_SILENT], origin))
        return alerts

    def on_tick(self, aggregator: Aggregator, now: float) -> list[Alert]:
        """Span rules against the aggregator's current figures and previous-day baselines."""
        alerts: list[Alert] = []
        cfg = self.config
        origin = at_second(now)  # span rules have no window: the alert's id derives from its key and the tick's time
        if self.enabled(AlertType.HIGH_FREQUENCY) or self.enabled(AlertType.LOW_FREQUENCY):
            b = self._baseline(aggregator, now, cfg.frequency.span_s, cfg.frequency.baseline_days,
                               cfg.frequency.min_baseline_days)
            if b.ready:
                if self.enabled(AlertType.HIGH_FREQUENCY):
                    high = self._high_frequency(aggregator, b, now)
                    alerts += self._observe(AlertType.HIGH_FREQUENCY, high, now, origin)
                if self.enabled(AlertType.LOW_FREQUENCY) and b.complete:
                    alerts += self._observe(AlertType.LOW_FREQUENCY, self._low_frequency(aggregator, b), now, origin)
        if self.enabled(AlertType.INDUSTRIAL_RISE):
            r = cfg.industrial_rise
            b = self._baseline(aggregator, now, r.span_s, r.baseline_days, r.min_baseline_days)
            if b.ready:
                rise = self._industrial_rise(aggregator, b, now)
                alerts += self._observe(AlertType.INDUSTRIAL_RISE, rise, now, origin)
        if self.enabled(AlertType.BIRD_ACTIVITY_DROP):
            d = cfg.bird_activity_drop
            b = self._baseline(aggregator, now, d.span_s, d.baseline_days, d.min_baseline_days)
            if b.ready and b.complete:
                alerts += self._observe(AlertType.BIRD_ACTIVITY_DROP, self._bird_activity_drop(b), now, origin)
        self._prune(now)
        return alerts

    def external(
        self,
        alert_type: AlertType,
        key: str,
        severity: Severity,
        message: str,
        evidence: Mapping[str, object] | None,
        now: float,
    ) -> Alert | None:
        """An event from the daemon (CAPTURE_LOST, CAPTURE_RESTORED, FALLING_BEHIND, ...): fires unless its type is
        disabled or `key` fired less than cooldown_s ago."""
        if not self.enabled(alert_type):
            return None
        st = self._states.setdefault(key, _KeyState(alert_type))
        if st.last_fired_s is not None and now - st.last_fired_s < self.config.cooldown_s:
            logger.debug("alert %s held by its cooldown (fired %.0f s ago)", key, now - st.last_fired_s)
            return None
        st.last_fired_s = now
        return self._make(alert_type, key, now, _Draft(message, dict(evidence or {})), severity, at_second(now))

    # --- memory across restarts ------------------------------------------------------------------------------------

    def state(self, now: float) -> EngineState:
        """What this engine remembers (every key still active or cooling down, the episode counters), for the store."""
        keys = tuple(KeyState(k, st.type, st.active, st.false_since_s, st.last_fired_s)
                     for k, st in sorted(self._states.items()))
        return EngineState(now, keys, dict(self._episodes), self._silence.state)

    def load_state(self, state: EngineState, now: float) -> None:
        """After a restart: take over the state `state()` gave before it, so a key fired inside its cooldown does not
        fire again and an active condition stays active (the hysteresis goes on as if the time in between had been
        observed as last seen, as for any gap). Keys this configuration cannot raise (type disabled, a span rule's
        span changed) are dropped with a log line; keys past their cooldown and not active are forgotten. Times after
        `now` (the clock moved back) are taken as `now`."""
        if state.saved_unix_s > now:
            logger.warning("the alert state was saved %.0f s in the future (clock moved back?): its times are "
                           "taken as now", state.saved_unix_s - now)
        dropped: list[str] = []
        for ks in state.keys:
            if not self._raisable(ks.type, ks.key):
                dropped.append(ks.key)
                continue
            st = _KeyState(ks.type, ks.active, _not_after(ks.false_since_s, now), _not_after(ks.last_fired_s, now))
            if st.active or (st.last_fired_s is not None and now - st.last_fired_s < self.config.cooldown_s):
                self._states[ks.key] = st
        for name, count in state.episodes.items():
            self._episodes[name] = max(self._episodes.get(name, 0), count)
        self._silence.state = state.silence
        if dropped:
            logger.info("alert state: %d keys this configuration does not raise were dropped: %s", len(dropped),
                        ", ".join(dropped))
        logger.info("alert state restored (saved %.0f s ago): %d keys active, %d cooling down",
                    max(0.0, now - state.saved_unix_s), sum(st.active for st in self._states.values()),
                    sum(not st.active for st in self._states.values()))

    def _raisable(self, alert_type: AlertType, key: str) -> bool:
        """Whether this configuration can raise `key` (span rules carry their span in the key)."""
        if not self.enabled(alert_type):
            return False
        spans = {AlertType.HIGH_FREQUENCY: self.config.frequency.span_s,
                 AlertType.LOW_FREQUENCY: self.config.frequency.span_s,
                 AlertType.INDUSTRIAL_RISE: self.config.industrial_rise.span_s,
                 AlertType.BIRD_ACTIVITY_DROP: self.config.bird_activity_drop.span_s}
        return alert_type not in spans or key.endswith(f":{spans[alert_type]}")

    def next_episode(self, name: str) -> int:
        """Start a new episode of the daemon's own events (`name`, e.g. "CAPTURE") and return its number; kept in the
        state, so numbers go on after a restart and a new episode never reuses a key still cooling down."""
        self._episodes[name] = self._episodes.get(name, 0) + 1
        return self._episodes[name]

    def episode(self, name: str) -> int:
        """The current episode number of `name` (0 before the first)."""
        return self._episodes.get(name, 0)

    def baseline_status(self, aggregator: Aggregator, now: float) -> BaselineStatus:
        """Whether the baseline rules can fire yet, for the daemon to publish."""
        cfg = self.config
        rules: dict[AlertType, BaselineRule] = {}
        for types, span_s, days, needed in (
            ((AlertType.HIGH_FREQUENCY, AlertType.LOW_FREQUENCY), cfg.frequency.span_s, cfg.frequency.baseline_days,
             cfg.frequency.min_baseline_days),
            ((AlertType.INDUSTRIAL_RISE,), cfg.industrial_rise.span_s, cfg.industrial_rise.baseline_days,
             cfg.industrial_rise.min_baseline_days),
            ((AlertType.BIRD_ACTIVITY_DROP,), cfg.bird_activity_drop.span_s, cfg.bird_activity_drop.baseline_days,
             cfg.bird_activity_drop.min_baseline_days),
        ):
            b = self._baseline(aggregator, now, span_s, days, needed)
            for t in types:
                if self.enabled(t):
                    rules[t] = BaselineRule(ready=b.ready, usable_days=len(b.days), days_needed=needed, span_s=span_s)
        days_available = round(aggregator.history_days_available(now), 2)
        waiting = [t for t, r in rules.items() if not r.ready]
        needed_max = max((r.days_needed for r in rules.values()), default=0)
        if not rules:
            message = "No baseline alert rules are enabled."
        elif not waiting:
            message = "Baselines ready: frequency, industrial and bird-activity alerts are active."
        else:
            message = (
                f"Learning this station's usual soundscape ({days_available:g} days recorded so far): "
                f"{', '.join(waiting)} alerts start once {needed_max} previous days are recorded at the same "
                "time of day."
            )
        return BaselineStatus(ready=not waiting, days_available=days_available, days_needed=needed_max,
                              message=message, rules=rules)

    # --- per-window rules ------------------------------------------------------------------------------------------

    def _rare(self, r: WindowResult, occurrence: OccurrenceLookup | None) -> dict[str, _Draft]:
        out: dict[str, _Draft] = {}
        below = self.config.rare_occurrence_below
        for s in r.species:
            occ = s.occurrence
            if occ is None and occurrence is not None:
                occ = occurrence(s.scientific_name)
            listed = (s.scientific_name.casefold() in self._rare_names
                      or (bool(s.common_name) and s.common_name.casefold() in self._rare_names))
            unlikely = below is not None and occ is not None and occ < below
            if not (listed or unlikely):
                continue
            why = "on the rare-species list" if listed else f"expected occurrence here {occ:.3g} < {below:g}"
            out[f"{AlertType.RARE_SPECIES}:{s.scientific_name}"] = _Draft(
                f"Rare species: {_name(s.scientific_name, s.common_name)} at {s.confidence:.2f} in window "
                f"{_short(r.window_id)} ({why})",
                {
                    "window_id": r.window_id,
                    "start_unix_s": r.start_unix_s,
                    "scientific_name": s.scientific_name,
                    "common_name": s.common_name,
                    "confidence": s.confidence,
                    "occurrence": occ,
                    "reason": "listed" if listed else "occurrence",
                    "rare_occurrence_below": below,
                },
            )
        return out

    def _low_confidence(self, r: WindowResult) -> dict[str, _Draft]:
        if not r.species:
            return {}
        top: SpeciesScore = max(r.species, key=lambda s: s.confidence)
        threshold = self.config.low_confidence_below
        if top.confidence >= threshold:
            return {}
        return {
            AlertType.LOW_CONFIDENCE: _Draft(
                f"Uncertain identification: {_name(top.scientific_name, top.common_name)} at "
                f"{_below(top.confidence, threshold)} in window {_short(r.window_id)} (below {threshold:.2f})",
                {
                    "window_id": r.window_id,
                    "start_unix_s": r.start_unix_s,
                    "scientific_name": top.scientific_name,
                    "common_name": top.common_name,
                    "confidence": top.confidence,
                    "low_confidence_below": threshold,
                },
            )
        }

    def _unknown(self, r: WindowResult) -> dict[str, _Draft]:
        threshold = self.config.unknown_sound_below
        if r.status != "ok" or r.tagger_top_score >= threshold or r.bird_top_score >= threshold:
            return {}
        head_below = self.config.unknown_sound_head_below
        head_p = max(r.group.probabilities.values()) if r.group is not None and r.group.probabilities else None
        if head_below is not None and head_p is not None and head_p >= head_below:
            return {}  # the head recognised it (its summed ontology evidence), even if no single label reached 0.3
        label = r.tagger_top[0].label if r.tagger_top else "none"
        return {
            AlertType.UNKNOWN_SOUND: _Draft(
                f"Unidentified sound in window {_short(r.window_id)}: best tag {label} at "
                f"{_below(r.tagger_top_score, threshold)}, best bird {_below(r.bird_top_score, threshold)}, "
                f"both below {threshold:.2f}",
                {
                    "window_id": r.window_id,
                    "start_unix_s": r.start_unix_s,
                    "tagger_top": [{"label": t.label, "score": t.score} for t in r.tagger_top],
                    "tagger_top_score": r.tagger_top_score,
                    "bird_top_score": r.bird_top_score,
                    "rms_dbfs": r.rms_dbfs,
                    "unknown_sound_below": threshold,
                    "head_probability": head_p,
                    "unknown_sound_head_below": head_below,
                },
            )
        }

    # --- span rules ------------------------------------------------------------------------------------------------

    def _baseline(self, agg: Aggregator, now: float, span_s: int, days: int, needed: int) -> _Baseline:
        current = agg.span(span_s, now)
        previous = agg.baseline(span_s, now, days)
        reference = max([current.windows, *(p.windows for p in previous)])
        usable = [p for p in previous if p.windows > 0 and p.windows >= MIN_COVERAGE * reference]
        complete = (agg.history_s(now) >= span_s and current.windows > 0
                    and current.windows >= MIN_COVERAGE * reference)
        return _Baseline(current, usable, needed, complete)

    def _frequency_stats(self, b: _Baseline, species: str) -> tuple[list[int], float, float]:
        counts = [d.species_counts.get(species, 0) for d in b.days]
        mean = statistics.fmean(counts)
        std = statistics.stdev(counts) if len(counts) > 1 else 0.0
        return counts, mean, max(std, self.config.frequency.min_std)

    def _high_frequency(self, agg: Aggregator, b: _Baseline, now: float) -> dict[str, _Draft]:
        f = self.config.frequency
        out: dict[str, _Draft] = {}
        for sp, count in b.current.species_counts.items():
            counts, mean, std = self._frequency_stats(b, sp)
            threshold = mean + f.k * std
            if count > threshold:
                out[f"{AlertType.HIGH_FREQUENCY}:{sp}:{f.span_s}"] = _Draft(
                    f"Unusually many {_name(sp, agg.common_name(sp))}: {count} windows in the last "
                    f"{_span(f.span_s)}, usually {mean:.1f} ± {std:.1f} at this time "
                    f"(previous {len(counts)} days)",
                    {**self._freq_evidence(sp, count, b, counts, mean, std, threshold),
                     "examples": agg.examples(f.span_s, now, species=sp, limit=EXAMPLES)},
                )
        return out

    def _low_frequency(self, agg: Aggregator, b: _Baseline) -> dict[str, _Draft]:
        f = self.config.frequency
        out: dict[str, _Draft] = {}
        candidates = sorted({sp for d in b.days for sp in d.species_counts})
        for sp in candidates:
            counts, mean, std = self._frequency_stats(b, sp)
            if mean < f.low_min_mean:
                continue
            count = b.current.species_counts.get(sp, 0)
            threshold = mean - f.k * std
            if count < threshold:
                out[f"{AlertType.LOW_FREQUENCY}:{sp}:{f.span_s}"] = _Draft(
                    f"Unusually few {_name(sp, agg.common_name(sp))}: {count} windows in the last "
                    f"{_span(f.span_s)}, usually {mean:.1f} ± {std:.1f} at this time "
                    f"(previous {len(counts)} days)",
                    self._freq_evidence(sp, count, b, counts, mean, std, threshold),
                )
        return out

    @staticmethod
    def _freq_evidence(
        sp: str, count: int, b: _Baseline, counts: list[int], mean: float, std: float, threshold: float
    ) -> dict[str, object]:
        return {
            "scientific_name": sp,
            "count": count,
            "span_s": b.current.span_s,
            "windows": b.current.windows,
            "baseline_counts": counts,
            "baseline_windows": [d.windows for d in b.days],
            "baseline_mean": mean,
            "baseline_std": std,
            "threshold": threshold,
        }

    def _industrial_rise(self, agg: Aggregator, b: _Baseline, now: float) -> dict[str, _Draft]:
        r = self.config.industrial_rise
        cur = b.current
        share = cur.share("industrial")
        shares = [s for s in (d.share("industrial") for d in b.days) if s is not None]
        if share is None or cur.windows_with_group < r.min_windows or len(shares) < b.days_needed:
            return {}
        base = statistics.fmean(shares)
        if share - base <= r.margin:
            return {}
        return {
            f"{AlertType.INDUSTRIAL_RISE}:{r.span_s}": _Draft(
                f"Industrial sound up: {share:.0%} of {cur.windows_with_group} windows in the last "
                f"{_span(r.span_s)}, usually {base:.0%} at this time (previous {len(shares)} days)",
                {
                    "span_s": r.span_s,
                    "share": share,
                    "windows_with_group": cur.windows_with_group,
                    "baseline_shares": shares,
                    "baseline_windows_with_group": [d.windows_with_group for d in b.days],
                    "baseline_share": base,
                    "margin": r.margin,
                    "examples": agg.examples(r.span_s, now, group="industrial", limit=EXAMPLES),
                },
            )
        }

    def _bird_activity_drop(self, b: _Baseline) -> dict[str, _Draft]:
        d = self.config.bird_activity_drop
        counts = [day.species_windows for day in b.days]
        mean = statistics.fmean(counts)
        if mean < d.min_baseline_mean:
            return {}
        threshold = (1 - d.drop_fraction) * mean
        count = b.current.species_windows
        if count >= threshold:
            return {}
        return {
            f"{AlertType.BIRD_ACTIVITY_DROP}:{d.span_s}": _Draft(
                f"Bird activity down: birds in {count} of {b.current.windows} windows in the last "
                f"{_span(d.span_s)}, usually {mean:.0f} at this time (previous {len(counts)} days)",
                {
                    "span_s": d.span_s,
                    "species_windows": count,
                    "windows": b.current.windows,
                    "baseline_species_windows": counts,
                    "baseline_windows": [day.windows for day in b.days],
                    "baseline_mean": mean,
                    "threshold": threshold,
                    "drop_fraction": d.drop_fraction,
                },
            )
        }

    # --- hysteresis and cooldown -----------------------------------------------------------------------------------

    def _observe(self, alert_type: AlertType, holding: dict[str, _Draft], now: float, origin: str) -> list[Alert]:
        """One evaluation of a rule: the keys in `holding` are true now, every other known key of the type false.
        `origin` is what raised the evaluation (a window id, or the tick's time): alert ids derive from it."""
        for key, st in self._states.items():
            if st.type == alert_type and key not in holding:
                self._step(key, st, False, now)
        alerts = []
        for key, draft in holding.items():
            st = self._states.setdefault(key, _KeyState(alert_type))
            if self._step(key, st, True, now):
                alerts.append(self._make(alert_type, key, now, draft, SEVERITY[alert_type], origin))
        return alerts

    def _step(self, key: str, st: _KeyState, holds: bool, now: float) -> bool:
        """Advance one key's state; True when it fires."""
        clear_after = self.config.clear_after_s
        if not holds:
            if st.active:
                if st.false_since_s is None:
                    st.false_since_s = now
                if now - st.false_since_s >= clear_after:
                    st.active = False
                    st.false_since_s = None
                    logger.info("alert %s cleared", key)
            return False
        if st.active and st.false_since_s is not None and now - st.false_since_s >= clear_after:
            st.active = False  # it cleared between observations
            logger.info("alert %s cleared", key)
        st.false_since_s = None
        if st.active:
            return False
        st.active = True
        if st.last_fired_s is not None and now - st.last_fired_s < self.config.cooldown_s:
            logger.debug("alert %s held by its cooldown (fired %.0f s ago)", key, now - st.last_fired_s)
            return False
        st.last_fired_s = now
        return True

    def _prune(self, now: float) -> None:
        """Forget keys that are neither active nor cooling down (keeps the state bounded)."""
        cooldown = self.config.cooldown_s
        stale = [k for k, st in self._states.items()
                 if not st.active and (st.last_fired_s is None or now - st.last_fired_s >= cooldown)]
        for k in stale:
            del self._states[k]

    def _make(self, alert_type: AlertType, key: str, now: float, draft: _Draft, severity: Severity,
              origin: str) -> Alert:
        alert = Alert(type=alert_type, key=key, severity=severity, ts_unix_s=now, message=draft.message,
                      evidence=draft.evidence, alert_id=alert_id(key, origin))
        logger.log(logging.INFO if severity == "info" else logging.WARNING, "alert %s (%s): %s", key, severity,
                   draft.message)  # the one log line of every alert raised
        return alert

    def active_keys(self) -> list[str]:
        """Keys inside an episode (fired, or held by the cooldown), for status pages and tests."""
        return sorted(k for k, st in self._states.items() if st.active)


def _not_after(t: float | None, now: float) -> float | None:
    return None if t is None else min(t, now)


def _short(window_id: str) -> str:
    return window_id[:8] + ".." if len(window_id) > 8 else window_id


def _below(value: float, threshold: float) -> str:
    """`value` with as few decimals (2 to 6) as read below `threshold`: 0.4976 vs 0.50 gives 0.498, not 0.50."""
    return next((t for d in range(2, 7) if float(t := f"{value:.{d}f}") < threshold), repr(value))


def _name(scientific: str, common: str | None) -> str:
    return f"{scientific} ({common})" if common and common != scientific else scientific


def _span(span_s: int) -> str:
    if span_s >= 7200 and span_s % 3600 == 0:
        return f"{span_s // 3600} h"
    if span_s % 60 == 0:
        return f"{span_s // 60} min"
    return f"{span_s} s"
