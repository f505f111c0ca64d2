"""Species summaries for ecologists: per span, each species' detections, distinct UTC minutes with a detection, first
and last heard, and best confidence.

Pure: no threads, no I/O, no clock reads. Queries take `now` (UTC epoch seconds).

What is counted. A detection is one species in one bird-model chunk (`WindowResult.detections`: BirdNET's unit, a
3-s chunk on the stream grid, with its own UTC times). A window that carries species but no chunk detections (a result
made before the chunk grid, or restored from rows without chunk times) counts as ONE detection per species at the
window's own start and end, and the summary says how many of a species' detections are such whole windows
(`from_windows`), so nobody mistakes window counts for chunk counts. A chunk that two overlapping windows both report
(same species, same chunk start) counts once.

Memory, bounded for 24/7 running: one tally per species per UTC minute in which it was heard (detections, whole-window
detections, best confidence, first chunk start, last chunk end), keyed by the minute of the detection's start and
evicted once older than the longest span (plus one minute), by the newest detection seen; individual detections are
never kept (only the keys of the last two minutes of chunks, to count a chunk reported twice once). A 24-h span over a
chorus of 50 species heard in every minute holds at most 1440 x 50 = 72 000 tallies, whatever the chunk stride;
a span sums whole UTC hours from a cached per-hour sum (dropped when a minute of the hour changes or goes) and the
rest minute by minute. Measured on an AMD EPYC (2 shared cores): a chorus of 50 species in every 1-s chunk (250
detections per 5-s window) takes ~2 ms per window to add; 24 h of 50 species in every minute holds 72 050 tallies in
~12 MB, and a 24-h span takes ~2 ms with its hour sums cached (~150-200 ms the first time, after a start or restore).

Span edges. The summary of the span [now - S, now) sums the whole UTC minutes it touches: minutes
floor((now - S) / 60) .. ceil(now / 60) - 1. It is exact when both ends fall on the minute grid; otherwise it may hold
up to 59 s of detections from before the span's start (first_unix_s then precedes the span). This keeps `minutes` a
count of calendar minutes and memory to one tally per species per minute.

`RunSpecies` does the same over every window of a batch run (`analyze --summary`), whatever its dates (no eviction:
one tally per species per minute of recordings analysed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from soundmond.data import WindowResult

MINUTE_S = 60
_HOUR_MINUTES = 60
_DEDUPE_MINUTES = 2  # minutes a chunk's key is kept, to recognise the same chunk from an overlapping window


@dataclass(frozen=True)
class SpeciesSummary:
    """One species over one span."""

    scientific_name: str
    common_name: str
    detections: int  # chunk detections (plus whole windows without chunk detections, see from_windows)
    minutes: int  # distinct UTC minutes with at least one detection
    first_unix_s: float  # start of the first detection (chunk start, or window start), UTC epoch seconds
    last_unix_s: float  # end of the last detection (chunk end, or window end)
    max_confidence: float
    from_windows: int = 0  # of `detections`, whole windows that carried no chunk detections (one per window)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scientific_name": self.scientific_name,
            "common_name": self.common_name,
            "detections": self.detections,
            "minutes": self.minutes,
            "first_unix_s": self.first_unix_s,
            "last_unix_s": self.last_unix_s,
            "first_utc": _iso(self.first_unix_s),
            "last_utc": _iso(self.last_unix_s),
            "max_confidence": round(self.max_confidence, 6),
            "from_windows": self.from_windows,
        }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Tally:
    """One species in one minute (or summed over a span)."""

    __slots__ = ("count", "from_windows", "best", "first", "last", "minutes")

    def __init__(self) -> None:
        self.count = 0
        self.from_windows = 0
        self.best = -math.inf
        self.first = math.inf
        self.last = -math.inf
        self.minutes = 0

    def add(self, confidence: float, start: float, end: float, whole_window: bool) -> None:
        self.count += 1
        self.from_windows += whole_window
        self.best = max(self.best, confidence)
        self.first = min(self.first, start)
        self.last = max(self.last, end)

    def merge(self, other: _Tally) -> None:
        self.count += other.count
        self.from_windows += other.from_windows
        self.best = max(self.best, other.best)
        self.first = min(self.first, other.first)
        self.last = max(self.last, other.last)
        self.minutes += other.minutes


@dataclass(frozen=True, slots=True)
class _Heard:
    scientific_name: str
    common_name: str
    confidence: float
    start_unix_s: float
    end_unix_s: float
    whole_window: bool


def _heard(result: WindowResult) -> Iterator[_Heard]:
    """The detections a window contributes: its chunk detections, or one per species for a window without any."""
    if result.detections:
        for d in result.detections:
            yield _Heard(d.scientific_name, d.common_name, float(d.confidence), float(d.start_unix_s),
                         float(d.end_unix_s), False)
        return
    end = result.start_unix_s + (result.end_s - result.start_s)
    for s in result.species:
        yield _Heard(s.scientific_name, s.common_name, float(s.confidence), float(result.start_unix_s), float(end),
                     True)


class _Minutes:
    """Tallies per UTC minute per species, the common names heard, and the recent chunk keys (dedupe)."""

    def __init__(self) -> None:
        self.minutes: dict[int, dict[str, _Tally]] = {}  # minute index -> species -> tally; ~ time order
        self.hours: dict[int, dict[str, _Tally]] = {}  # hour index -> its minutes summed (a cache, dropped on change)
        self.common_names: dict[str, str] = {}
        self._recent: dict[int, set[tuple[str, int]]] = {}  # minute -> (species, chunk start in ms) tallied
        self._recent_newest = -(2**62)

    def add(self, result: WindowResult, oldest_minute: int | None = None) -> tuple[int, int | None]:
        """Tally a window's detections. Returns how many were left out (older than `oldest_minute`, or without a
        finite time) and the newest minute tallied (None when none)."""
        left_out = 0
        newest: int | None = None
        for h in _heard(result):
            if not math.isfinite(h.start_unix_s) or not math.isfinite(h.end_unix_s):
                left_out += 1
                continue
            if not h.whole_window and self._seen(h):
                continue
            minute = math.floor(h.start_unix_s / MINUTE_S)
            if oldest_minute is not None and minute < oldest_minute:
                left_out += 1
                continue
            per_species = self.minutes.get(minute)
            if per_species is None:
                per_species = self.minutes[minute] = {}
            tally = per_species.get(h.scientific_name)
            if tally is None:
                tally = per_species[h.scientific_name] = _Tally()
                tally.minutes = 1
                self.hours.pop(minute // _HOUR_MINUTES, None)
            elif self.hours:
                self.hours.pop(minute // _HOUR_MINUTES, None)
            tally.add(h.confidence, h.start_unix_s, h.end_unix_s, h.whole_window)
            if h.common_name:
                self.common_names[h.scientific_name] = h.common_name
            newest = minute if newest is None else max(newest, minute)
        return left_out, newest

    def _seen(self, h: _Heard) -> bool:
        """True when this chunk (species, start) was already tallied; keys are kept per minute, two minutes back."""
        minute = math.floor(h.start_unix_s / MINUTE_S)
        keys = self._recent.get(minute)
        if keys is None:
            keys = self._recent[minute] = set()
            if minute > self._recent_newest:
                self._recent_newest = minute
                for m in [m for m in self._recent if m < minute - _DEDUPE_MINUTES]:
                    del self._recent[m]
        key = (h.scientific_name, round(h.start_unix_s * 1000.0))
        if key in keys:
            return True
        keys.add(key)
        return False

    def evict_before(self, cutoff: int) -> None:
        """Drop the minutes before `cutoff` (from the front: a late minute inserted behind newer ones goes when it
        reaches the front; a span never asks for it) and their hours' sums."""
        while self.minutes:
            first = next(iter(self.minutes))
            if first >= cutoff:
                break
            del self.minutes[first]
            self.hours.pop(first // _HOUR_MINUTES, None)

    def parts(self, lo: int, hi: int) -> Iterator[dict[str, _Tally]]:
        """The tallies of minutes lo .. hi - 1: whole UTC hours from their cached sums, the rest minute by minute."""
        m = lo
        while m < hi:
            if m % _HOUR_MINUTES == 0 and m + _HOUR_MINUTES <= hi:
                yield self._hour(m // _HOUR_MINUTES)
                m += _HOUR_MINUTES
                continue
            per_species = self.minutes.get(m)
            if per_species:
                yield per_species
            m += 1

    def _hour(self, hour: int) -> dict[str, _Tally]:
        summed = self.hours.get(hour)
        if summed is None:
            summed = self.hours[hour] = _merged(
                self.minutes.get(m, {}) for m in range(hour * _HOUR_MINUTES, (hour + 1) * _HOUR_MINUTES))
        return summed

    def summaries(self, parts: Iterable[dict[str, _Tally]]) -> tuple[SpeciesSummary, ...]:
        total = _merged(parts)
        out = [
            SpeciesSummary(
                scientific_name=name,
                common_name=self.common_names.get(name, ""),
                detections=t.count,
                minutes=t.minutes,
                first_unix_s=t.first,
                last_unix_s=t.last,
                max_confidence=t.best,
                from_windows=t.from_windows,
            )
            for name, t in total.items()
        ]
        out.sort(key=lambda s: (-s.detections, s.scientific_name))
        return tuple(out)


def _merged(parts: Iterable[dict[str, _Tally]]) -> dict[str, _Tally]:
    total: dict[str, _Tally] = {}
    for per_species in parts:
        for name, tally in per_species.items():
            t = total.get(name)
            if t is None:
                t = total[name] = _Tally()
            t.merge(tally)
    return total


class SpeciesSpans:
    """Species summaries over rolling spans up to `longest_span_s`. Not thread-safe: one owner (the aggregator's)."""

    def __init__(self, longest_span_s: int) -> None:
        if longest_span_s <= 0:
            raise ValueError(f"longest_span_s must be positive seconds, e.g. 86400, not {longest_span_s}")
        self.longest_span_s = int(longest_span_s)
        self._keep_minutes = math.ceil(self.longest_span_s / MINUTE_S) + 1
        self._tallies = _Minutes()
        self._newest_minute: int | None = None
        self.left_out = 0  # detections older than the kept minutes when they arrived (e.g. after a clock jump)

    def add(self, result: WindowResult) -> None:
        oldest = None if self._newest_minute is None else self._newest_minute - self._keep_minutes
        left_out, newest = self._tallies.add(result, oldest)
        self.left_out += left_out
        if newest is not None and (self._newest_minute is None or newest > self._newest_minute):
            self._newest_minute = newest
            self._tallies.evict_before(newest - self._keep_minutes)

    def span(self, span_s: int, now: float) -> tuple[SpeciesSummary, ...]:
        """Each species heard in the UTC minutes the span [now - span_s, now) touches, most detections first."""
        lo = math.floor((now - span_s) / MINUTE_S)
        hi = math.ceil(now / MINUTE_S)
        return self._tallies.summaries(self._tallies.parts(lo, hi))

    def sizes(self) -> dict[str, int]:
        """What is held: minutes with a tally and tallies (species x minutes)."""
        return {"minutes": len(self._tallies.minutes),
                "tallies": sum(len(v) for v in self._tallies.minutes.values())}


class RunSpecies:
    """Species summaries over every window of a batch run (`analyze --summary`), whatever its dates."""

    def __init__(self) -> None:
        self._tallies = _Minutes()

    def add(self, result: WindowResult) -> None:
        self._tallies.add(result)

    def summaries(self) -> tuple[SpeciesSummary, ...]:
        return self._tallies.summaries(self._tallies.minutes.values())
