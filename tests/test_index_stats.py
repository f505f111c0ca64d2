"""Acoustic indices over spans (`soundmond.soundscape.index_stats`, the aggregator), in the store and in messages."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import store_rows

from soundmond.config import StationConfig, StoreConfig
from soundmond.data import INDEX_NAMES, AcousticIndices, WindowResult
from soundmond.outputs import messages
from soundmond.outputs.store import Store
from soundmond.outputs.store.schema import MIGRATIONS
from soundmond.soundscape.aggregate import Aggregator, RunTotals
from soundmond.soundscape.index_stats import IndexHistory, IndexTotals, row, summarise

STATION = StationConfig(id="jura-1")


def ix(k: float, spl: bool = True) -> AcousticIndices:
    """Indices whose every value derives from k (levels in dB around -40)."""
    return AcousticIndices(ndsi=math.sin(k), aci=100 + k, adi=2 + k / 100, aei=k / 1000, bi=10 * k, hf=0.5,
                           ht=0.9, h=0.45, leq_dbfs=-40 - (k % 7), leq_db_spl=80 - (k % 7) if spl else None)


def window(start: float, indices: AcousticIndices | None) -> WindowResult:
    return WindowResult(window_id=f"w{start:.0f}", source="mic:test", start_unix_s=start, start_s=0.0, end_s=5.0,
                        group=None, tagger_top=(), tagger_top_score=0.0, species=(), bird_top_score=0.0,
                        rms_dbfs=-40.0, clipped_fraction=0.0, compute_ms=1.0, status="skipped_quiet",
                        indices=indices)


def test_summary_is_mean_and_percentiles_with_levels_as_energy() -> None:
    values = np.array([row(ix(k, spl=k < 5)) for k in range(20)])
    out = summarise(values)
    assert out is not None
    aci = out["aci"]
    assert aci is not None and aci.windows == 20
    assert aci.mean == pytest.approx(109.5) and aci.p10 == pytest.approx(np.percentile(100 + np.arange(20), 10))
    assert aci.p90 == pytest.approx(np.percentile(100 + np.arange(20), 90))
    leq = out["leq_dbfs"]
    levels = np.array([-40 - (k % 7) for k in range(20)], dtype=float)
    assert leq is not None
    assert leq.mean == pytest.approx(10 * np.log10(np.mean(10 ** (levels / 10))), abs=1e-6)
    assert leq.mean > np.mean(levels) + 0.4  # an energy mean: the loud windows weigh more than the dB mean says
    spl = out["leq_db_spl"]
    assert spl is not None and spl.windows == 5  # windows without a calibrated level count for the others only
    assert summarise(np.empty((0, len(INDEX_NAMES)))) is None
    only_dbfs = summarise(values[5:])
    assert only_dbfs is not None and only_dbfs["leq_db_spl"] is None


def test_spans_hold_their_windows_and_memory_stays_bounded() -> None:
    agg = Aggregator([60, 3600])
    hop = 5.0
    n = 3 * 3600 // 5  # three hours of windows, one in ten digital silence (no indices)
    for i in range(n):
        agg.add(window(i * hop, None if i % 10 == 0 else ix(float(i))))
    now = n * hop
    snap = agg.snapshot(now)
    minute = snap.span(60).indices
    assert minute is not None
    expected = [100 + i for i in range(n) if (i * hop) >= now - 60 and i % 10]
    assert minute["aci"] is not None and minute["aci"].windows == len(expected) == 11
    assert minute["aci"].mean == pytest.approx(np.mean(expected), abs=1e-6)
    hour = snap.span(3600).indices
    assert hour is not None and hour["aci"] is not None and hour["aci"].windows == 720 - 72
    # only the longest span's windows are kept, and the arrays at most double them
    kept = agg.sizes()["index_windows"]
    assert 648 <= kept <= 649  # the last hour's windows with indices (and the one at its very start)
    assert agg._indices.capacity <= 2 * 2048  # noqa: SLF001  (the bound itself is what is tested)
    # restoring the same windows after a restart gives the same figures
    again = Aggregator([60, 3600])
    again.restore([window(i * hop, None if i % 10 == 0 else ix(float(i))) for i in range(n)])
    assert again.snapshot(now).span(3600).indices == hour


def test_history_keeps_late_windows_and_evicts_by_the_newest() -> None:
    h = IndexHistory(100.0, capacity=4)
    for start in (0.0, 50.0, 40.0, 120.0, 130.0, 300.0):
        h.add(start, ix(start))
    assert len(h) == 1  # 300 - 100: everything before 200 is gone
    assert h.summary(0, 1000) is not None and h.summary(0, 299) is None
    with pytest.raises(ValueError, match="horizon_s"):
        IndexHistory(0)


def test_run_totals_summarise_every_window() -> None:
    totals = RunTotals()
    for i in range(30):
        totals.add(window(i * 5.0, ix(float(i))))
    figures = totals.figures()
    assert figures is not None and figures.indices is not None
    assert figures.indices["bi"] is not None and figures.indices["bi"].windows == 30
    assert figures.to_dict()["indices"]["bi"]["mean"] == pytest.approx(145.0)


def test_run_totals_stay_bounded_with_exact_means() -> None:
    """A run longer than the sample: means and counts stay exact, percentiles come from a uniform sample."""
    rng = np.random.default_rng(5)
    ks = rng.uniform(0, 1000, 5000)
    small, full = IndexTotals(sample_size=500), IndexTotals(sample_size=10_000)
    for k in ks:
        small.add(ix(float(k), spl=k < 500))
        full.add(ix(float(k), spl=k < 500))
    exact = summarise(np.array([row(ix(float(k), spl=k < 500)) for k in ks]))
    assert full.summary() == exact  # within the sample size: the same figures as from every window
    approx = small.summary()
    assert approx is not None and exact is not None
    assert small._sample.shape[0] == 500  # noqa: SLF001  (the bound itself is what is tested)
    for name in ("aci", "leq_dbfs", "leq_db_spl"):
        a, e = approx[name], exact[name]
        assert a is not None and e is not None
        assert (a.mean, a.windows) == (pytest.approx(e.mean, abs=1e-5), e.windows)
    aci, aci_exact = approx["aci"], exact["aci"]
    assert aci is not None and aci_exact is not None
    assert aci.p10 == pytest.approx(aci_exact.p10, abs=30) and aci.p90 == pytest.approx(aci_exact.p90, abs=30)


def test_messages_carry_the_indices_and_validate() -> None:
    w = window(1_700_000_000.0, ix(3.0))
    msg = messages.window_payload(w, STATION)
    messages.validate(msg)
    assert msg["indices"]["aci"] == 103.0 and msg["indices"]["leq_db_spl"] == 77.0
    assert "indices" not in messages.window_payload(window(1_700_000_000.0, None), STATION)
    agg = Aggregator([60])
    for i in range(12):
        agg.add(window(1_700_000_000.0 + 5 * i, ix(float(i), spl=False)))
    payload = messages.soundscape_payload(agg.snapshot(1_700_000_060.0), STATION, ts_unix_s=1_700_000_060.0)
    messages.validate(payload)
    span = payload["spans"][0]["indices"]
    assert span["aci"] == {"mean": 105.5, "p10": 101.1, "p90": 109.9, "windows": 12}
    assert span["leq_db_spl"] is None
    bad = dict(payload, spans=[dict(payload["spans"][0], indices={"aci": {"mean": 1.0}})])
    with pytest.raises(messages.InvalidMessage):
        messages.validate(bad)


def test_store_round_trips_the_indices_and_migrates_an_old_file(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for statements in MIGRATIONS[:4]:  # a store as the previous version left it, with a window in it
        for sql in statements:
            conn.execute(sql)
    conn.execute("PRAGMA user_version = 4")
    conn.execute("INSERT INTO windows(window_id, source, start_unix_s, start_s, end_s, status, tagger_top) "
                 "VALUES ('old', 'a.flac', 1.0, 0.0, 5.0, 'ok', '[]')")
    conn.close()
    with_spl, without = window(100.0, ix(2.0)), window(105.0, ix(3.0, spl=False))
    with Store(db, StoreConfig()) as store:
        store.write_batch([with_spl, without, window(110.0, None)], [], [])
        rebuilt = {r.window_id: r for r in store.recent_results(0)}
    assert rebuilt["w100"].indices == with_spl.indices
    assert rebuilt["w105"].indices == without.indices and rebuilt["w105"].indices.leq_db_spl is None
    assert rebuilt["w110"].indices is None and rebuilt["old"].indices is None  # NULLs: no indices, not zeros
    rows = {r["window_id"]: r for r in store_rows.windows(db)}
    assert rows["w100"]["aci"] == 102.0 and rows["w100"]["leq_db_spl"] == 78.0
    assert all(rows["old"][name] is None for name in INDEX_NAMES)
