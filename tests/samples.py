"""Stage dataclasses as the pipeline hands them to the outputs (store, messages, publisher), for output tests."""

from __future__ import annotations

import dataclasses
from typing import Any

from soundmond.data import (
    AlertType,
    BaselineRule,
    BaselineStatus,
    CaptureStats,
    DiskUsage,
    Heartbeat,
    OutboxCounts,
    WriterHealth,
)
from soundmond.soundscape.aggregate import DayFigures, SoundscapeSnapshot, SpanFigures


def span(span_s: int, windows: int, shares: dict[str, float] | None = None, species: dict[str, int] | None = None,
         *, ts: float = 0.0, quiet: int = 0) -> SpanFigures:
    """A span ending at `ts` whose windows all have a group when `shares` is given (none otherwise) except `quiet`
    quiet ones."""
    with_group = windows - quiet if shares else 0
    species = species or {}
    return SpanFigures(span_s=span_s, start_unix_s=ts - span_s, end_unix_s=ts, windows=windows,
                       windows_with_group=with_group, shares=dict(shares or {}), mean_probabilities=dict(shares or {}),
                       species_counts=dict(species), species_windows=min(windows, sum(species.values())),
                       windows_quiet=quiet)


def snapshot(ts: float, *spans: SpanFigures) -> SoundscapeSnapshot:
    """The aggregator's snapshot at `ts` with these spans (shortest first, as the aggregator orders them)."""
    ordered = tuple(sorted(spans, key=lambda s: s.span_s))
    day_start = ts - ts % 86400
    if not ordered:
        return SoundscapeSnapshot(ts, (), DayFigures(day_start, 0, 0, {}))
    longest = ordered[-1]  # today's species: as the longest span saw them
    return SoundscapeSnapshot(
        ts, ordered, DayFigures(day_start, longest.windows, longest.species_windows, dict(longest.species_counts))
    )


def heartbeat(**changes: Any) -> Heartbeat:
    """A live station's heartbeat with every part present; `changes` replace fields."""
    rule = BaselineRule(ready=False, usable_days=2, days_needed=7, span_s=3600)
    hb = Heartbeat(
        uptime_s=12.5,
        rtf=0.05,
        windows_processed=140,
        dropped_windows=0,
        failed_windows=1,
        skipped_quiet_windows=3,
        capture_state="running",
        capture=CaptureStats(state="running", device="hw:1,0", blocks=4000, overflows=0, queue_drops=0, gaps=0,
                             reopen_attempts=0, clock_reanchors=0, last_block_age_s=0.02, stream_rate_hz=48000.0,
                             queue_depth=1),
        disk=DiskUsage(store_bytes=1000, free_bytes=10**9, total_bytes=2 * 10**9),
        models={"tagger": "yamnet abc", "birds": None},
        config_sha256="0" * 64,
        version="0.1.0",
        outbox=OutboxCounts(pending=2, pending_alerts=1, sent=30, dropped=0, refused=0),
        store_writer=WriterHealth(alive=True, queue_depth=0, overflow_alerts=0, failing=False, last_error=None,
                                  last_error_unix_s=None, batches_written=10, rows_written=400, dropped_windows=0,
                                  dropped_outbox_items=0, rejected_items=0),
        baseline=BaselineStatus(ready=False, days_available=2.5, days_needed=7, message="Learning.",
                                rules={AlertType.HIGH_FREQUENCY: rule, AlertType.INDUSTRIAL_RISE: rule}),
    )
    return dataclasses.replace(hb, **changes)
