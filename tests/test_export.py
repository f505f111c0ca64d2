"""`soundmond export` on a real store: the daemon's own rows from real models on real recordings, written out as CSV,
JSON lines and Parquet and read back equal to the store's."""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from configs import daemon_config

from soundmond.cli import main
from soundmond.commands import export
from soundmond.data import INDEX_NAMES
from soundmond.outputs.store.schema import SCHEMA_VERSION

REPO = Path(__file__).resolve().parent.parent
TABLES = tuple(export.TIME_COLUMNS)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, yamnet_dir: Path, birdnet_dir: Path, fixture_audio: Path) -> Path:
    """A store the daemon filled from the fixture recordings: windows with indices (and dB SPL), detections, a
    RARE_SPECIES alert per spinetail window, soundscape aggregates, evidence clips."""
    tmp = tmp_path_factory.mktemp("export-store")
    cfg = daemon_config(tmp, yamnet_dir, birdnet_dir,
                        "alerts: {rare_species: [Cranioleuca erythrops]}\nmqtt: {soundscape_interval_s: 1}\n"
                        f"evidence: {{enabled: true, path: {tmp / 'evidence'}, min_confidence: 0.3}}\n")
    cfg.write_text(cfg.read_text().replace("models:", "source: {type: file, calibration_db: 110}\nmodels:", 1))
    proc = subprocess.run([sys.executable, "-m", "soundmond.cli", "run", "--config", str(cfg), "--source",
                           str(fixture_audio)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    db = tmp / "soundmond.db"
    for table in TABLES:
        assert stored(db, table), f"the daemon stored no {table}"
    return db


def stored(db: Path, table: str, where: str = "", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        sql = f"SELECT * FROM {table} {where} ORDER BY {export.ORDER[table]}"
        return [dict(r) for r in conn.execute(sql, params)]


def declared_types(db: Path, table: str) -> dict[str, str]:
    with closing(sqlite3.connect(db)) as conn:
        return {r[1]: r[2].upper() for r in conn.execute(f"PRAGMA table_info({table})")}


def from_csv(text: str, types: dict[str, str]) -> list[dict[str, Any]]:
    def value(v: str, t: str) -> Any:
        if v == "":
            return None
        return float(v) if t == "REAL" else int(v) if t == "INTEGER" else v

    return [{k: value(v, types[k]) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


@pytest.mark.parametrize("table", TABLES)
def test_csv_and_parquet_read_back_equal_to_the_store(store: Path, table: str, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    expected = stored(store, table)
    out = tmp_path / f"{table}.csv"
    assert export.export(store, table, fmt="csv", out=out) == len(expected)
    assert from_csv(out.read_text(), declared_types(store, table)) == expected
    parquet = tmp_path / f"{table}.parquet"
    assert export.export(store, table, fmt="parquet", out=parquet) == len(expected)
    assert pq.read_table(parquet).to_pylist() == expected
    if table == "windows":  # the indices are there, with the calibrated level
        assert all(row["leq_db_spl"] == pytest.approx(row["leq_dbfs"] + 110) for row in expected)
        assert set(INDEX_NAMES) <= set(expected[0])


def test_jsonl_nests_the_json_columns(store: Path, tmp_path: Path) -> None:
    for table in TABLES:
        out = tmp_path / f"{table}.jsonl"
        export.export(store, table, fmt="jsonl", out=out)
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        expected = stored(store, table)
        assert len(lines) == len(expected)
        for line, row in zip(lines, expected, strict=True):
            for key, v in row.items():
                if key in export.JSON_COLUMNS.get(table, ()):
                    assert line[key] == json.loads(v)
                elif isinstance(v, float) and not math.isfinite(v):
                    assert line[key] is None
                else:
                    assert line[key] == v
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    rare = [a for a in alerts if a["type"] == "RARE_SPECIES"]
    assert rare and isinstance(rare[0]["evidence"], dict) and rare[0]["evidence"]  # nested, not JSON text


def test_since_until_select_a_time_range_and_data_goes_to_stdout(store: Path) -> None:
    starts = sorted({r["start_unix_s"] for r in stored(store, "windows")})
    since, until = starts[2], starts[-2]
    expected = stored(store, "windows", "WHERE start_unix_s >= ? AND start_unix_s < ?", (since, until))
    assert 0 < len(expected) < len(starts)
    proc = subprocess.run([sys.executable, "-m", "soundmond.cli", "export", "--store", str(store), "--what", "windows",
                           "--since", repr(since), "--until", repr(until)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert from_csv(proc.stdout, declared_types(store, "windows")) == expected
    assert f"{len(expected)} windows rows exported" in proc.stderr


def test_parquet_streams_in_row_groups_to_stdout(store: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "w.parquet"
    with out.open("wb") as f:
        proc = subprocess.run(
            [sys.executable, "-c", "import sys; from soundmond.commands import export; export.BATCH_ROWS = 4; "
             "from soundmond.cli import main; sys.exit(main(sys.argv[1:]))",
             "export", "--store", str(store), "--what", "windows", "--format", "parquet"],
            cwd=REPO, stdout=f, stderr=subprocess.PIPE, text=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    expected = stored(store, "windows")
    assert pq.read_table(out).to_pylist() == expected
    assert pq.ParquetFile(out).num_row_groups == math.ceil(len(expected) / 4)  # written batch by batch


def test_iso_times_are_utc() -> None:
    assert export.parse_time("2026-05-01", "--since") == 1_777_593_600.0
    assert export.parse_time("2026-05-01T06:00:00Z", "--since") == 1_777_593_600.0 + 6 * 3600
    assert export.parse_time("2026-05-01T08:00:00+02:00", "--since") == 1_777_593_600.0 + 6 * 3600
    assert export.parse_time("1777593600.5", "--since") == 1_777_593_600.5


def test_bad_requests_are_refused_with_a_hint(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*argv: str) -> str:
        assert main(["export", *argv]) == 2
        return capsys.readouterr().err

    assert "not a time - give ISO-8601" in refused("--store", str(store), "--what", "windows", "--since", "May")
    assert "no such file" in refused("--store", str(tmp_path / "nope.db"), "--what", "alerts")
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE t (x)")
    assert "not a soundmond store" in refused("--store", str(other), "--what", "alerts")
    newer = tmp_path / "newer.db"
    newer.write_bytes(store.read_bytes())
    with closing(sqlite3.connect(newer)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    assert "newer soundmond" in refused("--store", str(newer), "--what", "alerts")
    assert "--until is not after --since" in refused("--store", str(store), "--what", "alerts", "--since", "10",
                                                     "--until", "5")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # pyarrow not installed
    err = refused("--store", str(store), "--what", "alerts", "--format", "parquet", "--out", str(tmp_path / "a.pq"))
    assert "needs pyarrow" in err and "soundmond[parquet]" in err
    assert not (tmp_path / "a.pq").exists()
    with pytest.raises(SystemExit) as info:  # argparse: not one of the tables
        main(["export", "--store", str(store), "--what", "outbox"])
    assert info.value.code == 2 and "invalid choice: 'outbox'" in capsys.readouterr().err
