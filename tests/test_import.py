"""`soundmond import DATASET --store DB` on datasets written by the dataset job's own writers (`batch.tables`,
`batch.dataset`) from hand-made results: what it imports equals what the daemon's write path stores, twice adds
nothing, and what it cannot import is refused (or named per file) with `problem - how to fix`. The real models on
corpus recordings (the dataset job against `analyze --store`) are in tests/test_batch.py."""

from __future__ import annotations

import math
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import store_rows

from soundmond.batch import dataset, job, tables
from soundmond.cli import main
from soundmond.config import StoreConfig
from soundmond.data import (
    AcousticIndices,
    Alert,
    AlertType,
    ChunkDetection,
    GroupPrediction,
    LabelScore,
    SpeciesScore,
    WindowResult,
)
from soundmond.errors import ExitCode
from soundmond.identity import models_identity
from soundmond.outputs.store import Store

STATION = "station-7"
ANALYSIS = f"station={STATION};window_s=5;hop_s=5;channel=mix"
MIDNIGHT = 1_780_000_000.0 - 1_780_000_000.0 % 86400  # a UTC day boundary: file A's windows straddle it


def chunk(name: str, confidence: float, start_s: float, t0: float) -> ChunkDetection:
    return ChunkDetection(name, name.upper(), confidence, start_s, start_s + 3.0, t0 + start_s, t0 + start_s + 3.0,
                          0.25)


def window(wid: str, source: str, t0: float, start_s: float, **kw: Any) -> WindowResult:
    base: dict[str, Any] = dict(
        window_id=wid, source=source, start_unix_s=t0 + start_s, start_s=start_s, end_s=start_s + 5.0,
        group=GroupPrediction("natural", {"natural": 0.7, "industrial": 0.2, "other": 0.1}),
        tagger_top=(LabelScore("Bird", 0.61), LabelScore("Wind", 0.2)), tagger_top_score=0.61, species=(),
        bird_top_score=0.4, rms_dbfs=-31.5, clipped_fraction=0.0, compute_ms=80.25)
    return WindowResult(**{**base, **kw})


def results() -> dict[str, tuple[str, list[WindowResult], list[Alert]]]:
    """Two recordings: A (three windows over a UTC midnight: species with several chunks, a quiet window, indices; an
    alert) and B (one window, nothing heard)."""
    t0 = MIDNIGHT - 7.0
    a_src, b_src = "/archive/a.wav", "/archive/b.wav"
    blackbird = (chunk("Turdus merula", 0.55, 0.0, t0), chunk("Turdus merula", 0.81, 1.5, t0),
                 chunk("Parus major", 0.33, 1.5, t0))
    a = [
        window("a0", a_src, t0, 0.0, species=(SpeciesScore("Turdus merula", "TURDUS MERULA", 0.81, 0.25),
                                              SpeciesScore("Parus major", "PARUS MAJOR", 0.33, 0.25)),
               detections=blackbird,
               indices=AcousticIndices(0.4, 120.5, 1.9, 0.3, 6.5, 0.8, 0.95, 0.76, -33.0)),
        window("a1", a_src, t0, 5.0, group=GroupPrediction("quiet", {}), status="skipped_quiet",
               tagger_top=(), tagger_top_score=math.nan, bird_top_score=math.nan, rms_dbfs=-80.0),
        window("a2", a_src, t0, 10.0, species=(SpeciesScore("Turdus merula", "TURDUS MERULA", 0.5, None),)),
    ]
    alert = Alert(AlertType.RARE_SPECIES, "RARE_SPECIES:Turdus merula", "warning", t0 + 5.0, "rare: Turdus merula",
                  {"window_id": "a0", "confidence": 0.81, "nested": {"x": [1, 2]}}, "alert-a0")
    b = [window("b0", b_src, MIDNIGHT + 3600.0, 0.0, group=None, status="error", error="models failed")]
    return {"a" * 64: (a_src, a, [alert]), "b" * 64: (b_src, b, [])}


def make_dataset(root: Path, station: str = STATION) -> dict[str, tuple[str, list[WindowResult], list[Alert]]]:
    files = results()
    dataset.bind(root, job.meta(ANALYSIS, station, "-"))
    for sha, (path, rs, alerts) in files.items():
        parts = tables.partitioned(rs, alerts, station, sha)
        written = dataset.write_parts(root, sha, parts)
        dataset.write_marker(root, dataset.FileRecord(sha, path, len(rs), 0, 0, len(alerts), 15.0, 1.0, "here:1",
                                                      written, 0.0, {"tagger": "yamnet test"}))
    return files


def comparable(db: Path) -> dict[str, list[dict[str, Any]]]:
    windows = store_rows.windows(db)
    for w in windows:
        w.pop("stored_unix_s")
    return {"windows": sorted(windows, key=lambda w: w["window_id"]),
            "detections": sorted(store_rows.detections(db), key=lambda d: (d["window_id"], d["rank"])),
            "alerts": store_rows.alerts(db)}


def replay_records(db: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT sha256, analysis, path, last_window_id, windows FROM replay_sources "
                            "ORDER BY sha256").fetchall()


def import_cli(root: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["import", str(root), "--store", str(db)])
    return code, capsys.readouterr().err


def test_an_import_stores_what_the_daemons_write_path_stores_and_twice_adds_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "dataset"
    files = make_dataset(root)
    assert len({p.parent.name for p in (root / "windows").rglob("*.parquet")}) == 2  # A's windows on two days
    daemon = tmp_path / "daemon.db"
    with Store(daemon, StoreConfig()) as store:
        for _, rs, alerts in files.values():
            store.write_batch(rs, alerts, ())
    imported = tmp_path / "imported.db"
    code, err = import_cli(root, imported, capsys)
    assert code == ExitCode.OK, err
    assert "2 files: 2 imported (4 windows, 3 detections, 1 alerts" in err
    first = comparable(imported)
    assert first == comparable(daemon)
    assert [d["chunk_start_s"] for d in first["detections"] if d["window_id"] == "a0"] == [1.5, 1.5]  # best chunks
    keyed = f"{ANALYSIS};models={models_identity({'tagger': 'yamnet test'})}"  # each file's models, as a replay keys
    assert replay_records(imported) == [("a" * 64, keyed, "/archive/a.wav", "a2", 3),
                                        ("b" * 64, keyed, "/archive/b.wav", "b0", 1)]
    with Store(imported, StoreConfig()) as store:
        meta = store.meta()
    assert (meta["station_id"], meta["models"]) == (STATION, '{"tagger":"yamnet test"}')

    code, err = import_cli(root, imported, capsys)
    assert code == ExitCode.OK, err
    assert "0 imported" in err and "2 already in the store" in err
    assert comparable(imported) == first and len(replay_records(imported)) == 2


def test_a_store_holding_the_windows_without_replay_records_gets_no_duplicates(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "dataset"
    files = make_dataset(root)
    db = tmp_path / "store.db"
    with Store(db, StoreConfig()) as store:  # as a daemon fed the same windows would hold them
        for _, rs, alerts in files.values():
            store.write_batch(rs, alerts, ())
    before = comparable(db)
    code, err = import_cli(root, db, capsys)
    assert code == ExitCode.OK and "2 imported" in err
    assert comparable(db) == before


def test_what_cannot_be_imported_is_refused_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "store.db"
    code, err = import_cli(tmp_path, db, capsys)
    assert code == ExitCode.USAGE and "is not a soundmond dataset" in err and "--format parquet --out" in err

    root = tmp_path / "dataset"
    make_dataset(root)
    with Store(db, StoreConfig()) as store:
        store.record_run("elsewhere", {})
    code, err = import_cli(root, db, capsys)
    assert code == ExitCode.USAGE and "holds station 'elsewhere'" in err and "or a new --store" in err
    assert store_rows.windows(db) == []

    part = next((root / "detections").rglob("*.parquet"))
    data = pq.read_table(part)
    pq.write_table(data.append_column("loudness_phon", pa.array([1.0] * data.num_rows)), part)
    code, err = import_cli(root, tmp_path / "new.db", capsys)
    assert code == ExitCode.USAGE and "not known here: ['loudness_phon']" in err
    assert "import it with the version that wrote it" in err
    assert store_rows.windows(tmp_path / "new.db") == []


def test_a_file_whose_parts_are_gone_is_named_and_the_others_imported(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "dataset"
    make_dataset(root)
    (root / dataset.marker_path(root, "b" * 64).relative_to(root)).unlink()  # b unfinished: parts, no marker
    marker = dataset.read_marker(root, "a" * 64)
    assert marker is not None
    (root / next(p for p in marker.parts if p.startswith("detections"))).unlink()
    sha_c = "c" * 64
    dataset.write_marker(root, dataset.FileRecord(sha_c, "/archive/c.wav", 0, 0, 0, 0, 0.0, 0.0, "here:1", [], 0.0))
    db = tmp_path / "store.db"
    code, err = import_cli(root, db, capsys)
    assert code == ExitCode.PARTIAL, err
    assert "failed: /archive/a.wav: FileNotFoundError" in err and "--reanalyze`), then import again" in err
    assert "1 unfinished files left out" in err and "2 files: 1 imported" in err
    assert store_rows.windows(db) == [] and replay_records(db) == []  # c has no windows: nothing to record



def test_a_damaged_part_fails_its_file_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "dataset"
    make_dataset(root)
    marker = dataset.read_marker(root, "a" * 64)
    assert marker is not None
    (root / marker.parts[-1]).write_bytes(b"PAR1 not a parquet file PAR1")  # one of a's windows parts
    db = tmp_path / "store.db"
    code, err = import_cli(root, db, capsys)
    assert code == ExitCode.PARTIAL, err
    assert "failed: /archive/a.wav: ArrowInvalid" in err and "2 files: 1 imported" in err
    assert [w["window_id"] for w in store_rows.windows(db)] == ["b0"]
