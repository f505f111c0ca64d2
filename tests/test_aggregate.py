"""Aggregator: span figures with exact window counts, eviction, UTC day roll-over, baselines, restore. Fake clock."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

import pytest

from soundmond.data import GroupPrediction, LabelScore, SpeciesScore, WindowResult
from soundmond.soundscape.aggregate import DAY_S, Aggregator

DAY0 = 19675 * DAY_S  # 2023-11-14 00:00:00 UTC
T = DAY0 + 8 * 3600  # 08:00 UTC, on the 60-s bin grid

BLACKBIRD = ("Turdus merula", "Eurasian Blackbird")
ROBIN = ("Erithacus rubecula", "European Robin")
OWL = ("Bubo bubo", "Eurasian Eagle-Owl")

PROBS = {
    "natural": {"natural": 0.8, "industrial": 0.1, "other": 0.1},
    "industrial": {"natural": 0.2, "industrial": 0.7, "other": 0.1},
    "other": {"natural": 0.3, "industrial": 0.1, "other": 0.6},
}


def win(
    start: float,
    group: str | None = "natural",
    species: Sequence[tuple[str, str]] = (),
    *,
    confidence: float = 0.8,
    status: str = "ok",
    tagger_score: float = 0.9,
    bird_score: float | None = None,
) -> WindowResult:
    """A WindowResult for a 5-s window starting at `start`; group None = skipped/failed."""
    return WindowResult(
        window_id=f"w{start:.0f}",
        source="mic:test",
        start_unix_s=float(start),
        start_s=0.0,
        end_s=5.0,
        group=None if group is None else GroupPrediction(group, dict(PROBS[group])),  # type: ignore[arg-type]
        tagger_top=(LabelScore("Bird", tagger_score),),
        tagger_top_score=tagger_score,
        species=tuple(SpeciesScore(sci, common, confidence) for sci, common in species),
        bird_top_score=bird_score if bird_score is not None else (confidence if species else 0.05),
        rms_dbfs=-40.0,
        clipped_fraction=0.0,
        compute_ms=10.0,
        status=status,  # type: ignore[arg-type]
    )


def run(start: float, end: float, hop: float = 5.0, **kw: object) -> list[WindowResult]:
    """Contiguous windows starting at start, start + hop, ... (< end)."""
    out = []
    t = start
    while t < end:
        out.append(win(t, **kw))  # type: ignore[arg-type]
        t += hop
    return out


def fed(results: Sequence[WindowResult], spans: Sequence[int] = (60, 3600, 86400), **kw: int) -> Aggregator:
    agg = Aggregator(spans, **kw)
    for r in results:
        agg.add(r)
    return agg


# --- span figures ----------------------------------------------------------------------------------------------------

MIXED = (
    [win(T + 5 * i, "natural", [BLACKBIRD]) for i in range(6)]
    + [win(T + 30 + 5 * i, "industrial") for i in range(3)]
    + [win(T + 45, None, status="skipped_quiet"), win(T + 50, None, status="error")]
    + [win(T + 55, "other", [BLACKBIRD, ROBIN])]
)


@pytest.mark.parametrize(
    ("results", "now", "span", "windows", "with_group", "shares", "species", "species_windows"),
    [
        pytest.param(run(T, T + 600), T + 600, 60, 12, 12, {"natural": 1.0, "industrial": 0.0, "other": 0.0}, {}, 0,
                     id="60s-aligned-now"),
        pytest.param(run(T, T + 605), T + 603, 60, 12, 12, {"natural": 1.0, "industrial": 0.0, "other": 0.0}, {}, 0,
                     id="60s-unaligned-now-exact"),
        pytest.param(run(T, T + 600), T + 600, 3600, 120, 120, {"natural": 1.0, "industrial": 0.0, "other": 0.0},
                     {}, 0, id="3600s-partial-history"),
        pytest.param([win(T), win(T - 0.5)], T + 60, 60, 1, 1, {"natural": 1.0, "industrial": 0.0, "other": 0.0},
                     {}, 0, id="start-exactly-now-minus-span-is-in-window-before-is-out"),
        pytest.param([win(T - 0.001), win(T + 59.999), win(T + 60)], T + 60, 60, 1, 1,
                     {"natural": 1.0, "industrial": 0.0, "other": 0.0}, {}, 0, id="window-starting-at-now-is-out"),
        pytest.param(MIXED, T + 60, 60, 12, 10, {"natural": 0.6, "industrial": 0.3, "other": 0.1},
                     {"Turdus merula": 7, "Erithacus rubecula": 1}, 7, id="skipped-and-failed-not-a-group"),
        pytest.param(MIXED, T + 60, 86400, 12, 10, {"natural": 0.6, "industrial": 0.3, "other": 0.1},
                     {"Turdus merula": 7, "Erithacus rubecula": 1}, 7, id="same-from-bins"),
        pytest.param([win(T, None, status="skipped_quiet")] * 3, T + 60, 60, 3, 0, {}, {}, 0,
                     id="only-skipped-no-shares"),
        pytest.param([], T, 60, 0, 0, {}, {}, 0, id="empty"),
    ],
)
def test_span_figures(
    results: list[WindowResult],
    now: float,
    span: int,
    windows: int,
    with_group: int,
    shares: dict[str, float],
    species: dict[str, int],
    species_windows: int,
) -> None:
    fig = fed(results).snapshot(now).span(span)
    assert (fig.windows, fig.windows_with_group) == (windows, with_group)
    assert fig.windows_without_group == windows - with_group
    assert fig.shares == pytest.approx(shares)
    assert fig.species_counts == species
    assert list(fig.species_counts) == sorted(species, key=lambda s: -species[s])  # most frequent first
    assert fig.species_windows == species_windows
    if with_group:
        assert sum(fig.shares.values()) == pytest.approx(1.0)


def quiet(start: float) -> WindowResult:
    return WindowResult(window_id=f"q{start:.0f}", source="mic:test", start_unix_s=float(start), start_s=0.0,
                        end_s=5.0, group=GroupPrediction("quiet", {}), tagger_top=(), tagger_top_score=0.0, species=(),
                        bird_top_score=0.0, rms_dbfs=-95.0, clipped_fraction=0.0, compute_ms=0.1,
                        status="skipped_quiet")


@pytest.mark.parametrize("span", [60, 86400], ids=["raw", "bins"])
def test_quiet_windows_are_a_share_of_their_own(span: int) -> None:
    """3 natural, 1 industrial, 6 quiet, 1 failed: the group shares are over the 4 windows a head saw, the quiet share
    over all 11; a quiet window never counts as natural or industrial, and never in the examples of a group."""
    results = ([win(T + 5 * i, "natural") for i in range(3)] + [win(T + 15, "industrial")]
               + [quiet(T + 20 + 5 * i) for i in range(6)] + [win(T + 50, None, status="error")])
    agg = fed(results)
    fig = agg.span(span, T + 60)
    assert (fig.windows, fig.windows_with_group, fig.windows_quiet) == (11, 4, 6)
    assert fig.shares == {"natural": 0.75, "industrial": 0.25, "other": 0.0}
    assert fig.quiet_share == round(6 / 11, 6)
    assert fig.to_dict()["windows_quiet"] == 6 and fig.to_dict()["quiet_share"] == round(6 / 11, 6)
    assert fig.mean_probabilities["natural"] == pytest.approx((3 * 0.8 + 0.2) / 4)
    assert [e["window_id"] for e in agg.examples(60, T + 60, group="industrial")] == [f"w{T + 15:.0f}"]
    only_quiet = fed([quiet(T + 5 * i) for i in range(12)]).span(span, T + 60)
    assert (only_quiet.shares, only_quiet.quiet_share, only_quiet.share("natural")) == ({}, 1.0, None)
    assert fed([]).span(span, T).quiet_share is None


def test_mean_probabilities_over_windows_with_group_only() -> None:
    fig = fed(MIXED).span(60, T + 60)
    # 6 natural (0.8), 3 industrial (0.2), 1 other (0.3) -> natural mean 0.61; skipped windows do not dilute it
    assert fig.mean_probabilities["natural"] == pytest.approx((6 * 0.8 + 3 * 0.2 + 0.3) / 10)
    assert fig.mean_probabilities["industrial"] == pytest.approx((6 * 0.1 + 3 * 0.7 + 0.1) / 10)
    assert fig.share("industrial") == pytest.approx(0.3)
    assert fed([]).span(60, T).share("industrial") is None


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(T + 60, [12, 12, 12], id="first-minute"),
        pytest.param(T + 120, [12, 24, 24], id="second-minute"),
        pytest.param(T + 3600, [12, 720, 720], id="one-hour"),
        pytest.param(T + 3600 + 60, [12, 720, 732], id="oldest-minute-evicted-from-hour"),
        pytest.param(T + 7200, [12, 720, 1440], id="two-hours"),
    ],
)
def test_sliding_spans_count_exact_windows(now: float, expected: list[int]) -> None:
    agg = fed(run(T, now))  # windows up to `now`, as in the daemon
    assert [s.windows for s in agg.snapshot(now).spans] == expected


def test_day_span_from_bins_is_exact_on_the_grid_and_rounded_off_it() -> None:
    assert fed(run(T, T + DAY_S + 3600, hop=30.0)).span(86400, T + DAY_S + 3600).windows == 2880  # on the grid
    agg = fed(run(T, T + DAY_S + 3600 - 45, hop=30.0))
    # off the grid: [now - 86400, now) holds 2880 windows (T+3570 ...); the bins leave out the one at T+3570,
    # which lies in the partial bin [T+3540, T+3600) at the old end
    assert agg.span(86400, T + DAY_S + 3600 - 45).windows == 2879
    assert agg.span(3600, T + DAY_S + 3600 - 45).windows == 120  # raw records: exact anywhere


# --- UTC day ---------------------------------------------------------------------------------------------------------

DAY1 = DAY0 + DAY_S


@pytest.mark.parametrize(
    ("now", "day_start", "windows", "owl"),
    [
        pytest.param(DAY1 - 1, DAY0, 12, 12, id="before-midnight"),
        pytest.param(DAY1, DAY1, 0, 0, id="at-midnight-new-day-empty"),
        pytest.param(DAY1 + 61, DAY1, 13, 0, id="after-midnight"),
    ],
)
def test_today_rolls_over_at_utc_midnight(now: float, day_start: float, windows: int, owl: int) -> None:
    results = run(DAY1 - 60, DAY1, species=[OWL]) + run(DAY1, DAY1 + 65, species=[ROBIN])
    today = fed(results).snapshot(now).today
    assert today.day_start_unix_s == day_start
    assert today.windows == windows
    assert today.species_counts.get("Bubo bubo", 0) == owl
    assert today.species_windows == windows


# --- bounded memory, ordering ----------------------------------------------------------------------------------------


def test_memory_stays_bounded_and_old_windows_are_dropped() -> None:
    agg = Aggregator([60, 3600, 86400], history_days=2)
    for r in run(T, T + 10 * DAY_S, hop=60.0):
        agg.add(r)
    sizes = agg.sizes()
    assert sizes["raw_windows"] <= 3600 // 60 + 1
    assert sizes["bins"] <= (2 * DAY_S + DAY_S) // 60 + 1
    now = T + 10 * DAY_S
    assert [b.windows for b in agg.baseline(3600, now, 7)] == [60, 60]  # only history_days of them
    agg.add(win(T))  # far older than the kept history
    assert agg.sizes() == sizes


def test_windows_older_than_the_history_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    agg = Aggregator([60, 3600, 86400], history_days=2)
    agg.add(win(T + 10 * DAY_S))
    with caplog.at_level("WARNING", logger="soundmond.soundscape.aggregate"):
        for k in range(5):
            agg.add(win(T + 5 * k))
    assert agg.too_old == 5
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "2023-11-14T08:00:00Z" in warnings[0] and "counted, not logged" in warnings[0]


def test_late_windows_are_placed_in_order() -> None:
    agg = fed([win(T + 10), win(T), win(T + 5, "industrial", [OWL])])
    assert agg.span(60, T + 15).windows == 3
    assert agg.span(60, T + 15).shares["industrial"] == pytest.approx(1 / 3)
    assert [e["window_id"] for e in agg.examples(60, T + 15, species="Bubo bubo")] == ["w1699948805"]
    assert agg.examples(60, T + 15, group="industrial")[0]["probability"] == pytest.approx(0.7)


# --- baselines -------------------------------------------------------------------------------------------------------


def test_baseline_same_time_of_day_on_previous_days() -> None:
    now = T + 5 * DAY_S
    results = []
    for d, n in ((1, 2), (2, 4), (3, 6)):  # blackbird in n of the 12 windows of 07:59-08:00 on day -d
        end = now - d * DAY_S
        results += run(end - 60, end - 60 + 5 * n, species=[BLACKBIRD]) + run(end - 60 + 5 * n, end)
        results += run(end, end + 60, species=[BLACKBIRD])  # just after the span: must not count
    results += run(now - 60, now)
    agg = fed(results)
    base = agg.baseline(60, now, 5)
    assert [b.species_counts.get("Turdus merula", 0) for b in base] == [2, 4, 6, 0, 0]
    assert [b.windows for b in base] == [12, 12, 12, 0, 0]  # days 4 and 5 were not recorded
    assert base[0].end_unix_s == now - DAY_S
    assert agg.common_name("Turdus merula") == "Eurasian Blackbird"


@pytest.mark.parametrize(
    ("first", "now", "history_days", "expected"),
    [
        pytest.param(None, T, 8, 0.0, id="nothing-yet"),
        pytest.param(T - 1.5 * DAY_S, T, 8, 1.5, id="a-day-and-a-half"),
        pytest.param(T - 20 * DAY_S, T, 8, 8.0, id="capped-at-history-days"),
    ],
)
def test_history_days_available(first: float | None, now: float, history_days: int, expected: float) -> None:
    agg = Aggregator([60], history_days=history_days)
    if first is not None:
        agg.add(win(first))
        agg.add(win(now - 5))
    assert agg.history_days_available(now) == pytest.approx(expected)


# --- restore, JSON, arguments ----------------------------------------------------------------------------------------


def test_restore_after_restart_reproduces_the_snapshot() -> None:
    results = (run(T, T + 7200, hop=10.0, species=[ROBIN]) + MIXED
               + run(T - 2 * DAY_S, T - 2 * DAY_S + 3600, group="industrial"))
    live = fed(results)
    shuffled = list(results)
    random.Random(7).shuffle(shuffled)  # stored rows come back in any order
    restored = Aggregator([60, 3600, 86400])
    assert restored.restore(shuffled) == len(results)
    for now in (T + 60, T + 3600 + 7, T + 7200):
        assert restored.snapshot(now).to_dict() == live.snapshot(now).to_dict()
    assert restored.baseline(3600, T + 3600, 3) == live.baseline(3600, T + 3600, 3)
    assert restored.snapshot(T + 7200).span(60).windows == 6  # the comparison is not between two empty snapshots
    assert restored.snapshot(T + 7200).span(86400).windows == 720 + 12  # day -2 is outside 24 h


def test_snapshot_to_dict_is_json() -> None:
    snap = fed(MIXED).snapshot(T + 60)
    data = json.loads(json.dumps(snap.to_dict()))
    assert [s["span_s"] for s in data["spans"]] == [60, 3600, 86400]
    assert data["spans"][0]["windows_without_group"] == 2
    assert data["today"]["species_counts"] == {"Turdus merula": 7, "Erithacus rubecula": 1}
    with pytest.raises(KeyError):
        snap.span(120)


@pytest.mark.parametrize(
    ("spans", "kw"),
    [
        pytest.param([], {}, id="no-spans"),
        pytest.param([0], {}, id="zero-span"),
        pytest.param([60], {"bin_s": 7}, id="bin-not-dividing-a-day"),
        pytest.param([60], {"history_days": -1}, id="negative-history"),
    ],
)
def test_bad_arguments(spans: list[int], kw: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Aggregator(spans, **kw)
