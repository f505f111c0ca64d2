"""Rolling soundscape figures over time spans, and the same-time-of-day history the alert rules compare against.

Pure: no threads, no I/O, no clock reads. Every query takes `now` (UTC epoch seconds); windows are keyed by
`WindowResult.start_unix_s`.

What a span means: the span of S seconds at `now` holds the windows whose *start* lies in [now - S, now). Windows
without a head's group (quiet, skipped by the gate, or failed) count in `windows` but never in a group: `shares` and
`mean_probabilities` are over `windows_with_group` only, so they sum to 1 whenever there is at least one such window
(and are empty dicts when there is none). Quiet windows (group "quiet") are counted apart: `windows_quiet`, and
`quiet_share` = windows_quiet / windows. Every figure carries the number of windows behind it.

Storage, bounded for 24/7 running:

- compact per-window records (start, id, group, probabilities, species confidences; no embeddings) for the last
  `raw_horizon_s` (default 3600 s = 720 windows at a 5-s hop). Spans up to `raw_horizon_s` are exact at any `now`,
  and the alert rules draw their example window ids from these records.
- per-bin counts (`bin_s`, default 60 s) for `history_days` x 24 h + max(longest span, 24 h). Longer spans, the UTC
  day and the previous-day baselines come from the bins. A bin belongs to a range when its start lies in the range,
  so a bin-built range is exact when its ends fall on the bin grid (the UTC day always does; a 24-h span does when
  `now` is a multiple of `bin_s`). Otherwise its old end moves up to the grid: at most `bin_s` - 1 s of the oldest
  windows are left out, and a baseline range is shifted (not shortened) by less than one bin.
  With the defaults: 9 days x 1440 bins = 12960 bins. Measured on a synthetic species-rich stream (5-s hop, 60
  species, ~1.2 per window, 9 days): ~20 MB, ~55 us per `add`, ~25 ms per `snapshot`. A larger `bin_s` (e.g. 300)
  cuts the bin count 5x at the price of coarser edges.
- the acoustic indices of each window over the longest span (`soundscape.index_stats`: 88 bytes a window, exact
  mean / p10 / p90 per span; 1.5 MB for 24 h at a 5-s hop).
- eviction is by the newest window start seen, so memory stays bounded whatever `now` the queries use. A window
  older than the kept history (e.g. after the clock jumped back by days) is dropped with a warning.

Baselines: `baseline(span_s, now, days)` gives the same span ending at now - d x 86400 s for d = 1..days (UTC, so no
daylight-saving shifts); a day the station did not record comes back with windows=0, and the alert rules skip it.

Species summaries (`SpanFigures.species_summary`: per species its chunk detections, distinct UTC minutes, first and
last heard, best confidence) come from `soundmond.soundscape.species`, one tally per species per minute, which sums
whole UTC minutes (see there); baselines carry none.

After a restart, `restore(stored_results)` on a fresh Aggregator rebuilds the same state (it sorts by start first).
Restoring the same rows twice counts them twice.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from soundmond.data import GROUPS, WindowResult
from soundmond.soundscape.index_stats import IndexHistory, IndexTotals, SpanIndices, span_indices_dict
from soundmond.soundscape.species import RunSpecies, SpeciesSpans, SpeciesSummary

logger = logging.getLogger(__name__)

DAY_S = 86400


def _utc(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
_NO_GROUP = -1
_QUIET = -2
_GROUP_INDEX: dict[str, int] = {g: i for i, g in enumerate(GROUPS)}


@dataclass(frozen=True, slots=True)
class _Window:
    """What the aggregator keeps of one window (no labels, no embeddings)."""

    start_unix_s: float
    window_id: str
    group: int  # index into GROUPS, _QUIET for a quiet window, _NO_GROUP when the models were skipped or failed
    probabilities: tuple[float, ...]  # per GROUPS, empty without a group
    species: tuple[tuple[str, float], ...]  # (scientific name, confidence), one entry per species

    @classmethod
    def of(cls, r: WindowResult) -> _Window:
        probs: tuple[float, ...] = ()
        if r.group is None:
            group = _NO_GROUP
        elif r.group.quiet:
            group = _QUIET
        else:
            group = _GROUP_INDEX[r.group.group]
            probs = tuple(float(r.group.probabilities.get(g, 0.0)) for g in GROUPS)
        best: dict[str, float] = {}
        for s in r.species:
            best[s.scientific_name] = max(best.get(s.scientific_name, 0.0), float(s.confidence))
        return cls(float(r.start_unix_s), r.window_id, group, probs, tuple(best.items()))


class _Counts:
    """Sums over any number of windows: one bin, or a span being computed."""

    __slots__ = ("windows", "with_group", "quiet", "groups", "prob_sums", "species", "species_windows")

    def __init__(self) -> None:
        self.windows = 0
        self.with_group = 0
        self.quiet = 0
        self.groups = [0] * len(GROUPS)
        self.prob_sums = [0.0] * len(GROUPS)
        self.species: dict[str, int] = {}
        self.species_windows = 0

    def add(self, w: _Window) -> None:
        self.windows += 1
        if w.group == _QUIET:
            self.quiet += 1
        elif w.group != _NO_GROUP:
            self.with_group += 1
            self.groups[w.group] += 1
            for i, p in enumerate(w.probabilities):
                self.prob_sums[i] += p
        if w.species:
            self.species_windows += 1
            for name, _ in w.species:
                self.species[name] = self.species.get(name, 0) + 1

    def merge(self, other: _Counts) -> None:
        self.windows += other.windows
        self.with_group += other.with_group
        self.quiet += other.quiet
        for i in range(len(GROUPS)):
            self.groups[i] += other.groups[i]
            self.prob_sums[i] += other.prob_sums[i]
        for name, n in other.species.items():
            self.species[name] = self.species.get(name, 0) + n
        self.species_windows += other.species_windows

    def figures(self, span_s: int, start_unix_s: float, end_unix_s: float) -> SpanFigures:
        n = self.with_group
        # rounded: readable JSON, and the same figures whatever order the windows were summed in (restore)
        shares: dict[str, float] = {g: round(self.groups[i] / n, 6) for i, g in enumerate(GROUPS)} if n else {}
        means: dict[str, float] = {g: round(self.prob_sums[i] / n, 6) for i, g in enumerate(GROUPS)} if n else {}
        return SpanFigures(
            span_s=span_s,
            start_unix_s=start_unix_s,
            end_unix_s=end_unix_s,
            windows=self.windows,
            windows_with_group=n,
            shares=shares,
            mean_probabilities=means,
            species_counts=_sorted_counts(self.species),
            species_windows=self.species_windows,
            windows_quiet=self.quiet,
        )


def _sorted_counts(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True)
class SpanFigures:
    """Figures over the windows starting in [start_unix_s, end_unix_s) (see the module docstring for bin edges)."""

    span_s: int
    start_unix_s: float
    end_unix_s: float
    windows: int  # all windows, with or without a group
    windows_with_group: int  # the denominator of `shares` and `mean_probabilities`
    shares: dict[str, float]  # group -> fraction of windows_with_group predicted as that group (6 decimals); {} if none
    mean_probabilities: dict[str, float]  # group -> mean probability over windows_with_group (6 decimals); {} if none
    species_counts: dict[str, int]  # scientific name -> windows with that species, most frequent first
    species_windows: int  # windows with at least one species
    windows_quiet: int = 0  # windows with the group "quiet" (among windows_without_group)
    # per species: chunk detections, distinct UTC minutes, first/last heard, best confidence (most detections first);
    # over the whole UTC minutes the span touches (soundscape.species); filled in by `snapshot`, empty otherwise
    species_summary: tuple[SpeciesSummary, ...] = ()
    # acoustic indices over the span's windows that have them (`soundscape.index_stats`): name -> mean / p10 / p90;
    # None when none has (indices off); filled for the rolling spans and a run's totals, not for baselines or days
    indices: SpanIndices | None = None

    @property
    def windows_without_group(self) -> int:
        return self.windows - self.windows_with_group

    @property
    def quiet_share(self) -> float | None:
        """Quiet windows over all windows of the span (6 decimals), None when the span holds none."""
        return round(self.windows_quiet / self.windows, 6) if self.windows else None

    def share(self, group: str) -> float | None:
        """The share of `group`, or None when no window in the span has a group."""
        return self.shares.get(group) if self.windows_with_group else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "span_s": self.span_s,
            "start_unix_s": self.start_unix_s,
            "end_unix_s": self.end_unix_s,
            "windows": self.windows,
            "windows_with_group": self.windows_with_group,
            "windows_without_group": self.windows_without_group,
            "windows_quiet": self.windows_quiet,
            "quiet_share": self.quiet_share,
            "shares": dict(self.shares),
            "mean_probabilities": dict(self.mean_probabilities),
            "species_counts": dict(self.species_counts),
            "species_windows": self.species_windows,
            "species_summary": [s.to_dict() for s in self.species_summary],
            "indices": span_indices_dict(self.indices),
        }


@dataclass(frozen=True)
class DayFigures:
    """Species seen so far in the current UTC day: windows starting in [day_start_unix_s, now)."""

    day_start_unix_s: float
    windows: int
    species_windows: int
    species_counts: dict[str, int]  # scientific name -> windows with that species, most frequent first

    def to_dict(self) -> dict[str, Any]:
        return {
            "day_start_unix_s": self.day_start_unix_s,
            "windows": self.windows,
            "species_windows": self.species_windows,
            "species_counts": dict(self.species_counts),
        }


@dataclass(frozen=True)
class SoundscapeSnapshot:
    """The soundscape at `ts_unix_s`: one SpanFigures per configured span (shortest first) and today's species."""

    ts_unix_s: float
    spans: tuple[SpanFigures, ...]
    today: DayFigures

    def span(self, span_s: int) -> SpanFigures:
        for s in self.spans:
            if s.span_s == span_s:
                return s
        raise KeyError(f"no span of {span_s} s in this snapshot (spans: {[s.span_s for s in self.spans]})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ts_unix_s": self.ts_unix_s,
            "spans": [s.to_dict() for s in self.spans],
            "today": self.today.to_dict(),
        }


class RunTotals:
    """Figures over every window of a batch run, whatever its dates (`analyze --summary`): the rolling spans end at
    the newest window, so recordings older than the longest span fall in none of them; this counts them all."""

    def __init__(self) -> None:
        self._counts = _Counts()
        self._species = RunSpecies()
        self._indices = IndexTotals()
        self._start: float | None = None
        self._end: float | None = None

    def add(self, result: WindowResult) -> None:
        self._counts.add(_Window.of(result))
        self._species.add(result)
        if result.indices is not None:
            self._indices.add(result.indices)
        end = result.start_unix_s + (result.end_s - result.start_s)
        self._start = result.start_unix_s if self._start is None else min(self._start, result.start_unix_s)
        self._end = end if self._end is None else max(self._end, end)

    @property
    def windows(self) -> int:
        return self._counts.windows

    def figures(self) -> SpanFigures | None:
        """Figures over [first window start, last window end) (`span_s` its length rounded up); None before any."""
        if self._start is None or self._end is None:
            return None
        figures = self._counts.figures(math.ceil(self._end - self._start), self._start, self._end)
        return replace(figures, species_summary=self._species.summaries(), indices=self._indices.summary())


class Aggregator:
    """Rolling figures per span, the UTC day's species, and previous-day baselines. Not thread-safe: one owner."""

    def __init__(
        self, spans_s: Sequence[int], history_days: int = 8, *, bin_s: int = 60, raw_horizon_s: int = 3600
    ) -> None:
        if not spans_s or any(s <= 0 for s in spans_s):
            raise ValueError(f"spans_s must be positive seconds, e.g. [60, 3600, 86400], not {list(spans_s)}")
        if history_days < 0:
            raise ValueError(f"history_days must be >= 0, not {history_days}")
        if bin_s <= 0 or DAY_S % bin_s:
            raise ValueError(f"bin_s must divide a day (86400 s), e.g. 10 or 60, not {bin_s}")
        if raw_horizon_s < 0:
            raise ValueError(f"raw_horizon_s must be >= 0, not {raw_horizon_s}")
        self.spans_s: tuple[int, ...] = tuple(sorted(set(int(s) for s in spans_s)))
        self.history_days = history_days
        self.bin_s = bin_s
        self.raw_horizon_s = raw_horizon_s
        self.retention_s = history_days * DAY_S + max(self.spans_s[-1], DAY_S)
        self._raw: deque[_Window] = deque()
        self._bins: dict[int, _Counts] = {}  # bin index -> counts; insertion order ~ time order (evicted from front)
        self._first_unix_s: float | None = None
        self._newest_unix_s: float | None = None
        self._common_names: dict[str, str] = {}
        self._species = SpeciesSpans(self.spans_s[-1])
        self._indices = IndexHistory(self.spans_s[-1])  # per-window acoustic indices over the longest span
        self.too_old = 0  # windows dropped as older than the kept history (the first one is logged)

    # --- feeding -------------------------------------------------------------------------------------------------

    def add(self, result: WindowResult) -> None:
        """Count one window. Results may arrive a little out of order."""
        w = _Window.of(result)
        start = w.start_unix_s
        if not math.isfinite(start):
            logger.warning("window %s has no valid start time (%s); not aggregated", result.window_id, start)
            return
        if self._newest_unix_s is not None and start < self._newest_unix_s - self.retention_s:
            self.too_old += 1
            if self.too_old == 1:  # one line, not one per window (a folder of old recordings gave dozens)
                logger.warning(
                    "window %s starts at %s, older than the kept history (newest window %s, history %.0f days); "
                    "not aggregated, nor are later windows that old (counted, not logged)", result.window_id,
                    _utc(start), _utc(self._newest_unix_s), self.retention_s / DAY_S,
                )
            return
        if self.raw_horizon_s:
            if not self._raw or start >= self._raw[-1].start_unix_s:
                self._raw.append(w)
            else:  # late window: walk back to its place (results are roughly ordered, so this is short)
                i = len(self._raw)
                while i > 0 and self._raw[i - 1].start_unix_s > start:
                    i -= 1
                self._raw.insert(i, w)
        idx = math.floor(start / self.bin_s)
        counts = self._bins.get(idx)
        if counts is None:
            counts = self._bins[idx] = _Counts()
        counts.add(w)
        self._species.add(result)
        if result.indices is not None:
            self._indices.add(start, result.indices)
        for s in result.species:
            if s.common_name:
                self._common_names[s.scientific_name] = s.common_name
        self._first_unix_s = start if self._first_unix_s is None else min(self._first_unix_s, start)
        self._newest_unix_s = start if self._newest_unix_s is None else max(self._newest_unix_s, start)
        self._evict(self._newest_unix_s)

    def restore(self, results: Iterable[WindowResult]) -> int:
        """Rebuild state from stored results after a restart (call on a fresh Aggregator). Returns how many."""
        ordered = sorted(results, key=lambda r: r.start_unix_s)
        for r in ordered:
            self.add(r)
        logger.info("aggregator restored from %s stored windows", len(ordered))
        return len(ordered)

    def _evict(self, newest: float) -> None:
        raw_cutoff = newest - self.raw_horizon_s
        while self._raw and self._raw[0].start_unix_s < raw_cutoff:
            self._raw.popleft()
        bin_cutoff = math.floor((newest - self.retention_s) / self.bin_s)
        while self._bins:
            first = next(iter(self._bins))
            if first >= bin_cutoff:
                break
            del self._bins[first]

    # --- queries ---------------------------------------------------------------------------------------------------

    def snapshot(self, now: float) -> SoundscapeSnapshot:
        """Figures for every configured span ending at `now`, and the current UTC day's species."""
        return SoundscapeSnapshot(
            ts_unix_s=now,
            spans=tuple(replace(self.span(s, now), species_summary=self.species_summary(s, now)) for s in self.spans_s),
            today=self.day(now),
        )

    def span(self, span_s: int, now: float) -> SpanFigures:
        """Figures over [now - span_s, now): exact from per-window records up to raw_horizon_s, else from bins."""
        lo, hi = now - span_s, now
        counts = self._from_raw(lo, hi) if span_s <= self.raw_horizon_s else self._from_bins(lo, hi)
        return replace(counts.figures(span_s, lo, hi), indices=self._indices.summary(lo, hi))

    def species_summary(self, span_s: int, now: float) -> tuple[SpeciesSummary, ...]:
        """Per species over the UTC minutes [now - span_s, now) touches (`soundscape.species`); `span` leaves it out
        (the alert rules ask for spans every window and need none), `snapshot` fills it in."""
        return self._species.span(span_s, now)

    def day(self, now: float) -> DayFigures:
        """The current UTC day so far (the day containing `now`)."""
        day_start = math.floor(now / DAY_S) * DAY_S
        c = self._from_bins(day_start, now)
        return DayFigures(float(day_start), c.windows, c.species_windows, _sorted_counts(c.species))

    def baseline(self, span_s: int, now: float, days: int) -> list[SpanFigures]:
        """The same span at the same UTC time of day on each of the previous `days` days (d = 1 first).

        At most `history_days` entries; a day without recordings comes back with windows=0."""
        out = []
        for d in range(1, min(days, self.history_days) + 1):
            hi = now - d * DAY_S
            out.append(self._from_bins(hi - span_s, hi).figures(span_s, hi - span_s, hi))
        return out

    def history_s(self, now: float) -> float:
        """Seconds from the oldest window still kept to `now` (0 before the first window)."""
        if self._first_unix_s is None or self._newest_unix_s is None:
            return 0.0
        oldest = max(self._first_unix_s, self._newest_unix_s - self.retention_s)
        return max(0.0, now - oldest)

    def history_days_available(self, now: float) -> float:
        """Days of history behind `now`, at most `history_days` (gaps in recording are not subtracted)."""
        return min(float(self.history_days), self.history_s(now) / DAY_S)

    def common_name(self, scientific_name: str) -> str | None:
        return self._common_names.get(scientific_name)

    def examples(
        self, span_s: int, now: float, *, species: str | None = None, group: str | None = None, limit: int = 5
    ) -> list[dict[str, object]]:
        """The most recent windows in the span with `species` (or predicted as `group`), newest first.

        Only from the per-window records, so empty for windows older than raw_horizon_s."""
        lo = now - span_s
        gi = _GROUP_INDEX.get(group) if group is not None else None
        out: list[dict[str, object]] = []
        for w in reversed(self._raw):
            if len(out) >= limit or w.start_unix_s < lo:
                break
            if w.start_unix_s >= now:
                continue
            if species is not None:
                conf = dict(w.species).get(species)
                if conf is not None:
                    out.append({"window_id": w.window_id, "start_unix_s": w.start_unix_s, "confidence": conf})
            elif gi is not None and w.group == gi:
                out.append(
                    {"window_id": w.window_id, "start_unix_s": w.start_unix_s, "probability": w.probabilities[gi]}
                )
        return out

    def sizes(self) -> dict[str, int]:
        """How much is held (for heartbeats and tests): per-window records and bins."""
        return {"raw_windows": len(self._raw), "bins": len(self._bins), **self._species.sizes(),
                "index_windows": len(self._indices)}

    def _from_raw(self, lo: float, hi: float) -> _Counts:
        c = _Counts()
        for w in self._raw:
            if lo <= w.start_unix_s < hi:
                c.add(w)
        return c

    def _from_bins(self, lo: float, hi: float) -> _Counts:
        c = _Counts()
        for idx in range(math.ceil(lo / self.bin_s), math.ceil(hi / self.bin_s)):
            b = self._bins.get(idx)
            if b is not None:
                c.merge(b)
        return c
