"""Species summaries per span (soundscape.species, via the Aggregator's snapshot and RunTotals). Fake clock: every
query takes `now`; windows made by hand with chunk detections (ChunkDetection) or species only."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
import store_rows

from soundmond.config import StoreConfig
from soundmond.data import ChunkDetection, GroupPrediction, LabelScore, SpeciesScore, WindowResult
from soundmond.outputs.store import Store
from soundmond.soundscape.aggregate import DAY_S, Aggregator, RunTotals
from soundmond.soundscape.species import RunSpecies, SpeciesSpans, SpeciesSummary

DAY0 = 19675 * DAY_S  # 2023-11-14 00:00:00 UTC
T = DAY0 + 8 * 3600  # 08:00:00 UTC, on the minute grid

BLACKBIRD = ("Turdus merula", "Eurasian Blackbird")
ROBIN = ("Erithacus rubecula", "European Robin")

Chunk = tuple[tuple[str, str], float, float]  # (species, chunk start unix s, confidence)


def window(start: float, chunks: Sequence[Chunk] = (), species: Sequence[tuple[tuple[str, str], float]] = (),
           *, length: float = 5.0, wid: str | None = None) -> WindowResult:
    """A window at `start` with the given chunk detections (3-s chunks) and, when no `species` is given, the
    per-window species as their max (as the analyzer makes them)."""
    dets = tuple(ChunkDetection(sp[0], sp[1], conf, c0 - DAY0, c0 - DAY0 + 3.0, c0, c0 + 3.0)
                 for sp, c0, conf in chunks)
    if not species:
        best: dict[tuple[str, str], float] = {}
        for sp, _, conf in chunks:
            best[sp] = max(best.get(sp, 0.0), conf)
        species = tuple(best.items())
    return WindowResult(
        window_id=wid or f"w{start:.0f}", source="mic:test", start_unix_s=start, start_s=start - DAY0,
        end_s=start - DAY0 + length, group=GroupPrediction("natural", {"natural": 1.0, "industrial": 0.0,
                                                                        "other": 0.0}),
        tagger_top=(LabelScore("Bird", 0.9),), tagger_top_score=0.9,
        species=tuple(SpeciesScore(sp[0], sp[1], conf) for sp, conf in species),
        bird_top_score=max((c for _, c in species), default=0.0), rms_dbfs=-40.0, clipped_fraction=0.0,
        compute_ms=1.0, detections=dets,
    )


def summary(spans: SpeciesSpans | Aggregator, span_s: int, now: float) -> dict[str, SpeciesSummary]:
    got = spans.span(span_s, now) if isinstance(spans, SpeciesSpans) else spans.species_summary(span_s, now)
    return {s.scientific_name: s for s in got}


# (what the windows hold, the span asked at `now`, expected per species:
#  (detections, minutes, first, last, max_confidence, from_windows))
CASES = [
    pytest.param(
        [window(T, [(BLACKBIRD, T, 0.5), (BLACKBIRD, T + 1, 0.7), (ROBIN, T + 2, 0.4)])],
        3600, T + 5,
        {BLACKBIRD[0]: (2, 1, T, T + 4, 0.7, 0), ROBIN[0]: (1, 1, T + 2, T + 5, 0.4, 0)},
        id="chunks in one window",
    ),
    pytest.param(
        [window(T, [(BLACKBIRD, T + 1, 0.5)]), window(T + 60, [(BLACKBIRD, T + 61, 0.9)]),
         window(T + 65, [(BLACKBIRD, T + 66, 0.3)]), window(T + 600, [(BLACKBIRD, T + 601, 0.6)])],
        3600, T + 605,
        {BLACKBIRD[0]: (4, 3, T + 1, T + 604, 0.9, 0)},
        id="distinct minutes over a span",
    ),
    pytest.param(
        [window(T, species=[(BLACKBIRD, 0.8)]), window(T + 5, [(BLACKBIRD, T + 6, 0.6)])],
        3600, T + 10,
        {BLACKBIRD[0]: (2, 1, T, T + 9, 0.8, 1)},
        id="a window without chunk detections counts once, as a whole window",
    ),
    pytest.param(
        [window(T, [(BLACKBIRD, T + 2, 0.5)], length=5.0),
         window(T + 2.5, [(BLACKBIRD, T + 2, 0.5), (BLACKBIRD, T + 4, 0.6)], length=5.0, wid="w-overlap")],
        3600, T + 10,
        {BLACKBIRD[0]: (2, 1, T + 2, T + 7, 0.6, 0)},
        id="the same chunk from two overlapping windows counts once",
    ),
    pytest.param(
        [window(T - 120, [(ROBIN, T - 119, 0.5)]), window(T - 30, [(BLACKBIRD, T - 29, 0.5)]),
         window(T + 10, [(BLACKBIRD, T + 11, 0.7)])],
        60, T + 60,
        {BLACKBIRD[0]: (1, 1, T + 11, T + 14, 0.7, 0)},
        id="a span on the minute grid is exact",
    ),
    pytest.param(
        [window(T - 120, [(ROBIN, T - 119, 0.5)]), window(T - 30, [(BLACKBIRD, T - 29, 0.5)]),
         window(T + 10, [(BLACKBIRD, T + 11, 0.7)])],
        60, T + 30,
        {BLACKBIRD[0]: (2, 2, T - 29, T + 14, 0.7, 0)},
        id="off the grid the span sums the whole minutes it touches",
    ),
    pytest.param(
        [window(T, [(BLACKBIRD, T + 1, 0.5)]), window(T + 3600, [(ROBIN, T + 3601, 0.5)])],
        3600, T + 3660,
        {ROBIN[0]: (1, 1, T + 3601, T + 3604, 0.5, 0)},
        id="older minutes fall out of the span",
    ),
    pytest.param([window(T)], 3600, T + 5, {}, id="no species, no summary"),
]


@pytest.mark.parametrize(("windows", "span_s", "now", "expected"), CASES)
def test_span_summaries(windows: list[WindowResult], span_s: int, now: float,
                        expected: dict[str, tuple[int, int, float, float, float, int]]) -> None:
    spans = SpeciesSpans(86400)
    for w in windows:
        spans.add(w)
    got = summary(spans, span_s, now)
    assert {name: (s.detections, s.minutes, s.first_unix_s, s.last_unix_s, s.max_confidence, s.from_windows)
            for name, s in got.items()} == expected


def test_most_detections_first_and_common_names() -> None:
    spans = SpeciesSpans(3600)
    spans.add(window(T, [(ROBIN, T, 0.5), (BLACKBIRD, T + 1, 0.5), (BLACKBIRD, T + 2, 0.5)]))
    got = spans.span(3600, T + 5)
    assert [(s.scientific_name, s.common_name, s.detections) for s in got] == [
        (BLACKBIRD[0], BLACKBIRD[1], 2), (ROBIN[0], ROBIN[1], 1)]


def test_eviction_keeps_memory_to_the_longest_span() -> None:
    """A chorus of 20 species in every 1-s chunk for 1 h with a 10-min longest span: tallies stay at most
    (span minutes + 2) x species, and what is evicted is never counted again."""
    species = [(f"Avis species{i:02d}", f"Bird {i}") for i in range(20)]
    spans = SpeciesSpans(600)
    peak = 0
    for k in range(0, 3600, 5):
        start = T + k
        spans.add(window(start, [(sp, start + j, 0.5) for j in range(5) for sp in species]))
        peak = max(peak, spans.sizes()["tallies"])
    assert peak <= (10 + 2) * 20
    got = summary(spans, 600, T + 3600)
    assert {s.detections for s in got.values()} == {600}  # one per second of the last 10 minutes, each species
    assert {s.minutes for s in got.values()} == {10}
    assert spans.left_out == 0


def test_a_detection_older_than_the_kept_minutes_is_left_out_and_counted() -> None:
    spans = SpeciesSpans(600)
    spans.add(window(T + 3600, [(BLACKBIRD, T + 3601, 0.5)]))
    spans.add(window(T, [(ROBIN, T + 1, 0.5)]))  # the clock jumped back an hour
    assert spans.left_out == 1
    assert set(summary(spans, 600, T + 3605)) == {BLACKBIRD[0]}


def test_snapshot_carries_the_summaries_per_span_and_span_alone_does_not() -> None:
    agg = Aggregator([60, 3600])
    agg.add(window(T - 600, [(ROBIN, T - 599, 0.4)]))
    agg.add(window(T, [(BLACKBIRD, T + 1, 0.8)]))
    snap = agg.snapshot(T + 60)
    assert [s.scientific_name for s in snap.span(60).species_summary] == [BLACKBIRD[0]]
    assert sorted(s.scientific_name for s in snap.span(3600).species_summary) == sorted([BLACKBIRD[0], ROBIN[0]])
    assert agg.span(3600, T + 60).species_summary == ()
    d = json.loads(json.dumps(snap.to_dict()))  # the aggregates row of the store holds exactly this JSON
    blackbird = d["spans"][0]["species_summary"][0]
    assert blackbird == {
        "scientific_name": BLACKBIRD[0], "common_name": BLACKBIRD[1], "detections": 1, "minutes": 1,
        "first_unix_s": T + 1, "last_unix_s": T + 4, "first_utc": "2023-11-14T08:00:01.000Z",
        "last_utc": "2023-11-14T08:00:04.000Z", "max_confidence": 0.8, "from_windows": 0,
    }


def test_run_totals_summarise_every_window_whatever_its_date() -> None:
    totals = RunTotals()
    totals.add(window(T - 10 * DAY_S, [(BLACKBIRD, T - 10 * DAY_S + 1, 0.6)]))
    totals.add(window(T, [(BLACKBIRD, T + 1, 0.7)], wid="today"))
    totals.add(window(T + 5, species=[(ROBIN, 0.3)]))
    figures = totals.figures()
    assert figures is not None
    got = {s.scientific_name: s for s in figures.species_summary}
    assert (got[BLACKBIRD[0]].detections, got[BLACKBIRD[0]].minutes, got[BLACKBIRD[0]].first_unix_s) == (
        2, 2, T - 10 * DAY_S + 1)
    assert (got[ROBIN[0]].detections, got[ROBIN[0]].from_windows) == (1, 1)
    runs = RunSpecies()
    assert runs.summaries() == ()


def test_bad_longest_span_is_refused() -> None:
    with pytest.raises(ValueError, match="longest_span_s must be positive"):
        SpeciesSpans(0)


def test_the_stores_aggregates_row_carries_the_summaries(tmp_path: Path) -> None:
    """The store keeps the snapshot's JSON: the species summaries come back from a real SQLite file."""
    agg = Aggregator([60, 3600])
    agg.add(window(T, [(BLACKBIRD, T + 1, 0.8), (BLACKBIRD, T + 2, 0.6)]))
    snap = agg.snapshot(T + 60)
    store = Store(tmp_path / "s.db", StoreConfig())
    try:
        store.write_aggregate(T + 60, snap)
    finally:
        store.close()
    (row,) = store_rows.aggregates(tmp_path / "s.db")
    stored = row["snapshot"]["spans"][1]["species_summary"]
    assert stored == [s.to_dict() for s in snap.span(3600).species_summary]
    assert (stored[0]["scientific_name"], stored[0]["detections"], stored[0]["minutes"]) == (BLACKBIRD[0], 2, 1)


def test_spans_agree_with_a_count_by_hand_and_late_detections_update_cached_hours() -> None:
    """Random chunk detections over 3 h (some arriving late, behind newer ones): every span at every `now` equals a
    count over the detections themselves (the whole minutes the span touches), also after the hour sums are cached."""
    rng = random.Random(16)
    birds = [BLACKBIRD, ROBIN, ("Sylvia atricapilla", "Eurasian Blackcap")]
    heard: list[tuple[str, float, float]] = []  # (species, chunk start, confidence)
    spans = SpeciesSpans(86400)

    def by_hand(span_s: int, now: float) -> dict[str, tuple[int, int, float, float, float]]:
        lo, hi = math.floor((now - span_s) / 60), math.ceil(now / 60)
        out: dict[str, tuple[int, int, float, float, float]] = {}
        for name in {h[0] for h in heard}:
            mine = [h for h in heard if h[0] == name and lo <= math.floor(h[1] / 60) < hi]
            if mine:
                out[name] = (len(mine), len({math.floor(h[1] / 60) for h in mine}), min(h[1] for h in mine),
                             max(h[1] for h in mine) + 3.0, max(h[2] for h in mine))
        return out

    def check(now: float) -> None:
        for span_s in (60, 600, 3600, 7200, 86400):
            got = {name: (s.detections, s.minutes, s.first_unix_s, s.last_unix_s, s.max_confidence)
                   for name, s in summary(spans, span_s, now).items()}
            assert got == by_hand(span_s, now), (span_s, now)

    for k in range(400):
        start = T + 27 * k + rng.choice([0, 0, 0, -2000])  # now and then a window from half an hour back
        chunks = [(b, float(start + rng.randrange(0, 3)), round(rng.random(), 3)) for b in birds if rng.random() < 0.5]
        chunks = list({(b[0], c0): (b, c0, conf) for b, c0, conf in chunks}.values())
        spans.add(window(start, chunks, wid=f"r{k}"))
        heard.extend((b[0], c0, conf) for b, c0, conf in chunks)
        if k % 50 == 49:
            check(T + 27 * k + rng.choice([0, 13.5, 59.0]))
    check(T + 27 * 400)
