"""Acoustic indices over a span: mean, 10th and 90th percentile of the per-window values, exact.

Pure, like the aggregator that owns it: no clock reads, every query takes its time range. The per-window values of
the last `horizon_s` seconds (the aggregator's longest span) are kept in two numpy arrays: 8 bytes for the start plus
8 per index, 88 bytes a window, so 1.5 MB for a 24-h span at a 5-s hop (17280 windows) and at most twice that while
the arrays wait to be compacted. A query scans them once (~2 ms for 24 h of windows).

Levels (`leq_dbfs`, `leq_db_spl`) average as energy: the mean of a span is 10 log10(mean(10^(L/10))), the span's Leq,
not the mean of the decibels. Percentiles are of the per-window values, linear interpolation (numpy's default): a
span's level p90 is the level exceeded by 10 % of its windows (acoustics' L10), its p10 the L90. A window without
indices (indices off, digital silence, a short tail) is not counted; a window without a calibrated level counts for the
others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from soundmond.data import INDEX_NAMES, AcousticIndices

LEVELS = frozenset({"leq_dbfs", "leq_db_spl"})
_LEVEL_COLUMNS = np.array([name in LEVELS for name in INDEX_NAMES])
DIGITS = 6  # as the aggregator's shares: readable JSON, and the same figures whatever order windows came in


@dataclass(frozen=True)
class IndexSummary:
    """One index over a span's windows that have it."""

    mean: float  # arithmetic mean; energy mean for levels
    p10: float
    p90: float
    windows: int  # windows behind the figures

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "p10": self.p10, "p90": self.p90, "windows": self.windows}


SpanIndices = Mapping[str, IndexSummary | None]  # INDEX_NAMES -> summary, None where no window of the span has it


def _linear(name: str, values: np.ndarray) -> np.ndarray:
    """What is averaged: the values, or a level's energy (10^(L/10))."""
    return np.power(10.0, values / 10.0) if name in LEVELS else values


def _mean(name: str, linear_mean: float) -> float:
    return 10.0 * math.log10(linear_mean) if name in LEVELS else linear_mean


def summarise(values: np.ndarray, totals: tuple[np.ndarray, np.ndarray] | None = None) -> SpanIndices | None:
    """Summaries of rows of per-window values (columns in INDEX_NAMES order, NaN = missing); None without rows.
    `totals` (sums of `_linear` values and counts per column, over more windows than `values` holds: a sample) give
    the means and window counts instead."""
    if values.shape[0] == 0:
        return None
    out: dict[str, IndexSummary | None] = {}
    for i, name in enumerate(INDEX_NAMES):
        col = values[:, i]
        col = col[np.isfinite(col)]
        if col.size == 0:
            out[name] = None
            continue
        if totals is None:
            mean, n = _mean(name, float(np.mean(_linear(name, col)))), int(col.size)
        else:
            n = int(totals[1][i])
            mean = _mean(name, float(totals[0][i]) / n)
        p10, p90 = (float(v) for v in np.percentile(col, [10.0, 90.0]))
        out[name] = IndexSummary(round(mean, DIGITS), round(p10, DIGITS), round(p90, DIGITS), n)
    return out


def row(ix: AcousticIndices) -> list[float]:
    """One window's values in INDEX_NAMES order, None as NaN."""
    return [math.nan if (v := getattr(ix, name)) is None else float(v) for name in INDEX_NAMES]


class IndexHistory:
    """Per-window indices of the last `horizon_s` seconds (by window start, relative to the newest start seen).
    `math.inf` keeps everything (a batch run's totals). Not thread-safe: one owner (the aggregator's)."""

    def __init__(self, horizon_s: float, capacity: int = 1024) -> None:
        if not horizon_s > 0:
            raise ValueError(f"horizon_s must be positive seconds, not {horizon_s}")
        self.horizon_s = horizon_s
        self._starts = np.empty(capacity)
        self._values = np.empty((capacity, len(INDEX_NAMES)))
        self._lo = 0  # live rows are [_lo, _hi)
        self._hi = 0
        self._newest = -math.inf

    def __len__(self) -> int:
        return self._hi - self._lo

    @property
    def capacity(self) -> int:
        return int(self._starts.shape[0])

    def add(self, start_unix_s: float, ix: AcousticIndices) -> None:
        if self._hi == self.capacity:
            self._make_room()
        self._starts[self._hi] = start_unix_s
        self._values[self._hi] = row(ix)
        self._hi += 1
        self._newest = max(self._newest, start_unix_s)
        cutoff = self._newest - self.horizon_s
        while self._lo < self._hi and self._starts[self._lo] < cutoff:
            self._lo += 1

    def summary(self, lo: float, hi: float) -> SpanIndices | None:
        """Figures over the windows starting in [lo, hi); None when there is none."""
        starts = self._starts[self._lo:self._hi]
        inside = (starts >= lo) & (starts < hi)
        return summarise(self._values[self._lo:self._hi][inside])

    def _make_room(self) -> None:
        live = self._hi - self._lo
        if live > self.capacity // 2:  # more than half live: grow (bounded by the windows within horizon_s)
            grown = self.capacity * 2
            self._starts = np.resize(self._starts, grown)
            self._values = np.resize(self._values, (grown, len(INDEX_NAMES)))
        self._starts[:live] = self._starts[self._lo:self._hi]
        self._values[:live] = self._values[self._lo:self._hi]
        self._lo, self._hi = 0, live


class IndexTotals:
    """A whole run's indices (`analyze --summary`, whatever its length) in bounded memory: exact means and window
    counts from running sums, percentiles from a uniform sample (reservoir, fixed seed) of at most `sample_size`
    windows, so they are exact up to that many windows (12 days of 5-s windows at the default) and estimates beyond."""

    def __init__(self, sample_size: int = 200_000) -> None:
        if sample_size < 1:
            raise ValueError(f"sample_size must be at least 1, not {sample_size}")
        self.sample_size = sample_size
        self._sample = np.empty((min(sample_size, 1024), len(INDEX_NAMES)))
        self._kept = 0
        self._seen = 0
        self._sums = np.zeros(len(INDEX_NAMES))
        self._counts = np.zeros(len(INDEX_NAMES), dtype=np.int64)
        self._rng = np.random.default_rng(0)

    def add(self, ix: AcousticIndices) -> None:
        values = np.array(row(ix))
        finite = np.isfinite(values)
        linear = values.copy()
        linear[_LEVEL_COLUMNS] = np.power(10.0, values[_LEVEL_COLUMNS] / 10.0)
        self._sums += np.where(finite, linear, 0.0)
        self._counts += finite
        self._seen += 1
        if self._kept < self.sample_size:
            if self._kept == self._sample.shape[0]:
                self._sample = np.resize(self._sample, (min(2 * self._kept, self.sample_size), len(INDEX_NAMES)))
            self._sample[self._kept] = values
            self._kept += 1
        elif (j := int(self._rng.integers(self._seen))) < self.sample_size:  # Algorithm R: uniform over all seen
            self._sample[j] = values

    def summary(self) -> SpanIndices | None:
        return summarise(self._sample[: self._kept], (self._sums, self._counts))


def span_indices_dict(indices: SpanIndices | None) -> dict[str, Any] | None:
    """`SpanFigures.indices` as JSON values."""
    if indices is None:
        return None
    return {name: (s.to_dict() if s is not None else None) for name, s in indices.items()}
