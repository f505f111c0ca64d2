"""`soundmond analyze --format parquet`: the dataset job with the real models on corpus recordings, and `soundmond
import` of its dataset into a store.

The three-way comparison (a Dask cluster, the local pool, `analyze --store`) and the import run on the issue's 40
recordings (5 s each, 13-14 per group); the kill and restart tests on 12 of them (four per group), whose properties
(every file once after a SIGKILL, resume, failures per file) do not depend on the count. The file took 86 s here at a
load average of 5-7 on 2 cores (the 40-file comparison's fixtures and test 45 s of it); with 12 recordings for the
comparison it took 36-39 s at 6-9, 67-77 s at 10-15 (mostly starting worker processes and loading the models in each).
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import store_rows

from soundmond.batch import cluster, dataset, job
from soundmond.batch.worker import FileOutcome

distributed = pytest.importorskip("distributed", reason="the cluster tests need the cluster extra (dask distributed)")

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.shared, pytest.mark.slow]  # the corpus, the real models, worker processes


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, yamnet_dir: Path, birdnet_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n  birds: {{path: {birdnet_dir}}}\n")
    return path


def shortest(corpus: Path, per_group: dict[str, int]) -> list[Path]:
    """The shortest recordings of each group (5 s), bird recordings among the natural ones."""
    with (corpus / "labels.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    chosen: list[Path] = []
    for group, count in per_group.items():
        mine = sorted((r for r in rows if r["group"] == group), key=lambda r: (float(r["duration_s"]), r["file"]))
        chosen += [corpus / r["file"] for r in mine[:count]]
    return chosen


@pytest.fixture(scope="module")
def recordings(shared_corpus: Path) -> list[Path]:
    """12 recordings (four per group) for the kill and restart tests."""
    return shortest(shared_corpus, {"natural": 4, "industrial": 4, "other": 4})


@pytest.fixture(scope="module")
def compared(shared_corpus: Path) -> list[Path]:
    """The issue's 40 recordings (14 natural, 13 industrial, 13 other) for the cluster / pool / store comparison."""
    return shortest(shared_corpus, {"natural": 14, "industrial": 13, "other": 13})


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[object]:
    """A real local Dask cluster on 127.0.0.1: a scheduler and two worker processes (one thread each, nannies)."""
    local = distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", processes=True,
                                     dashboard_address=":0")
    try:
        yield local
    finally:
        local.close()


def soundmond(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soundmond.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return soundmond("analyze", *args)


def table(root: Path, name: str) -> list[dict]:
    return pq.read_table(root / name).to_pylist() if (root / name).is_dir() else []


def window_parts(root: Path) -> Counter[str]:
    return Counter(p.stem for p in (root / "windows").rglob("*.parquet"))


@pytest.fixture(scope="module")
def pool_dataset(tmp_path_factory: pytest.TempPathFactory, config: Path, compared: list[Path]) -> Path:
    out = tmp_path_factory.mktemp("pool") / "dataset"
    proc = analyze(*map(str, compared), "--config", str(config), "--format", "parquet", "--out", str(out),
                   "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(compared)} files: {len(compared)} analysed, 0 already done, 0 failed" in proc.stderr
    assert "real-time factor per worker" in proc.stderr and "core-hours" in proc.stderr
    return out


@pytest.fixture(scope="module")
def analyzed_store(tmp_path_factory: pytest.TempPathFactory, config: Path, compared: list[Path]) -> Path:
    """The store `soundmond analyze --store` makes of the recordings (one process, one session)."""
    store = tmp_path_factory.mktemp("store") / "store.db"
    proc = analyze(*map(str, compared), "--config", str(config), "--store", str(store))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return store


def test_cluster_pool_and_store_give_the_same_rows(tmp_path: Path, config: Path, compared: list[Path],
                                                   pool_dataset: Path, analyzed_store: Path,
                                                   dask_cluster: distributed.LocalCluster) -> None:
    on_cluster = tmp_path / "cluster"
    proc = analyze(*map(str, compared), "--config", str(config), "--format", "parquet", "--out", str(on_cluster),
                   "--cluster", dask_cluster.scheduler_address)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 2 workers" in proc.stderr
    with closing(sqlite3.connect(analyzed_store)) as db:
        stored = {w: (g, pn) for w, g, pn in db.execute('SELECT window_id, "group", p_natural FROM windows')}
        stored_detections = set(db.execute("SELECT window_id, scientific_name FROM detections"))

    pool_windows, cluster_windows = table(pool_dataset, "windows"), table(on_cluster, "windows")
    assert len(pool_windows) == len(stored) >= len(compared)  # one window or more per recording
    for rows in (pool_windows, cluster_windows):
        assert {r["window_id"] for r in rows} == set(stored)
        for r in rows:
            group, p_natural = stored[r["window_id"]]
            assert r["group"] == group
            assert r["p_natural"] == pytest.approx(p_natural, abs=1e-5)
    assert {r["group"] for r in pool_windows} >= {"natural", "industrial"}
    pool_detections = {(d["window_id"], d["scientific_name"]) for d in table(pool_dataset, "detections")}
    assert pool_detections and pool_detections == stored_detections
    assert {(d["window_id"], d["scientific_name"]) for d in table(on_cluster, "detections")} == stored_detections
    assert sorted(d["detection_id"] for d in table(pool_dataset, "detections")) == sorted(
        d["detection_id"] for d in table(on_cluster, "detections"))
    pool_chunks = sorted(c["chunk_id"] for c in table(pool_dataset, "chunks"))
    assert pool_chunks and pool_chunks == sorted(c["chunk_id"] for c in table(on_cluster, "chunks"))
    assert {c["window_id"] for c in table(pool_dataset, "chunks")} <= set(stored)
    # alerts are per file in a dataset job (a fresh session per file), so the pool and the cluster agree on them
    assert sorted(a["alert_id"] for a in table(pool_dataset, "alerts")) == sorted(
        a["alert_id"] for a in table(on_cluster, "alerts"))


WINDOW_SAME = ("window_id", "source", "start_unix_s", "start_s", "end_s", "status", "group")  # compute_ms is timing
CHUNK_TIMES = ("chunk_start_s", "chunk_end_s", "chunk_start_unix_s", "chunk_end_unix_s")


def test_an_imported_dataset_holds_what_analyze_stores_and_the_stations_tools_read_it(
        tmp_path: Path, config: Path, compared: list[Path], pool_dataset: Path, analyzed_store: Path) -> None:
    imported = tmp_path / "imported.db"
    proc = soundmond("import", str(pool_dataset), "--store", str(imported))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(compared)} files: {len(compared)} imported" in proc.stderr

    mine, theirs = store_rows.windows(imported), {w["window_id"]: w for w in store_rows.windows(analyzed_store)}
    assert len(mine) == len(theirs) >= len(compared)
    for w in mine:
        assert {k: w[k] for k in WINDOW_SAME} == {k: theirs[w["window_id"]][k] for k in WINDOW_SAME}
        for p in ("p_natural", "p_industrial", "p_other"):
            assert w[p] == pytest.approx(theirs[w["window_id"]][p], abs=1e-5, nan_ok=True)
    detections = store_rows.detections(imported)
    assert detections and [(d["window_id"], d["rank"], d["scientific_name"], *(d[c] for c in CHUNK_TIMES))
                           for d in detections] == [
        (d["window_id"], d["rank"], d["scientific_name"], *(d[c] for c in CHUNK_TIMES))
        for d in store_rows.detections(analyzed_store)]
    assert any(d["chunk_start_s"] is not None for d in detections)
    # alerts: the dataset's are per file (a fresh session per file), the store's come from one session over every
    # file (its cooldowns span files); every alert of the store is one of the dataset's, the same id, type and time
    alerts = {a["alert_id"]: a for a in store_rows.alerts(imported)}
    assert set(alerts) == {a["alert_id"] for a in table(pool_dataset, "alerts")}
    stored_alerts = store_rows.alerts(analyzed_store)
    assert stored_alerts and all(
        (a["type"], a["key"], a["severity"], a["ts_unix_s"]) == (alerts[a["alert_id"]]["type"],
                                                                 alerts[a["alert_id"]]["key"],
                                                                 alerts[a["alert_id"]]["severity"],
                                                                 alerts[a["alert_id"]]["ts_unix_s"])
        for a in stored_alerts)

    counts = (len(mine), len(detections), len(alerts))
    again = soundmond("import", str(pool_dataset), "--store", str(imported))
    assert again.returncode == 0 and "0 imported" in again.stderr
    assert f"{len(compared)} already in the store" in again.stderr
    held = tmp_path / "held.db"
    shutil.copy(analyzed_store, held)
    into_held = soundmond("import", str(pool_dataset), "--store", str(held))
    assert into_held.returncode == 0 and f"{len(compared)} already in the store" in into_held.stderr
    for db, before in ((imported, counts), (held, (len(theirs), len(store_rows.detections(analyzed_store)),
                                                    len(stored_alerts)))):
        assert (len(store_rows.windows(db)), len(store_rows.detections(db)), len(store_rows.alerts(db))) == before

    report = soundmond("report", "--store", str(imported), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr[-3000:]
    assert f"{len(mine)} windows" in report.stderr and (tmp_path / "report" / "index.html").is_file()
    replay = analyze(*map(str, compared[:2]), "--config", str(config), "--store", str(imported))
    assert replay.returncode == 0 and "2 files already analysed, skipped" in replay.stderr


def killed_mid_job(outcomes: Iterator[FileOutcome]) -> tuple[list[FileOutcome], int]:
    """Drain the job's outcomes, SIGKILLing the process of the first file's worker once that file is done (it has
    taken the next file by then)."""
    seen: list[FileOutcome] = []
    killed = 0
    for outcome in outcomes:
        seen.append(outcome)
        if not killed and outcome.outcome == "done":
            killed = int(outcome.worker.rsplit(":", 1)[1])
            os.kill(killed, signal.SIGKILL)
    return seen, killed


def assert_every_file_once(root: Path, outcomes: list[FileOutcome], recordings: list[Path]) -> None:
    assert sorted(Path(o.path).name for o in outcomes) == sorted(p.name for p in recordings)
    assert all(o.outcome in ("done", "skipped") for o in outcomes), [o.error for o in outcomes]
    finished = list(dataset.markers(root))
    assert len(finished) == len(recordings)
    assert set(window_parts(root).values()) == {1}
    windows = table(root, "windows")
    assert len(windows) == len({w["window_id"] for w in windows}) == sum(m.windows for m in finished)
    assert not list(root.rglob(f".*{dataset.TEMP_MARK}*"))


def spec(root: Path, config: Path, recordings: list[Path]) -> job.JobSpec:
    dataset.bind(root, job.meta("test", "station-1", "-"))
    return job.JobSpec([str(p) for p in recordings], str(root), str(config))


def test_a_dask_worker_killed_mid_job_loses_and_duplicates_nothing(
        tmp_path: Path, config: Path, recordings: list[Path], dask_cluster: distributed.LocalCluster) -> None:
    root = tmp_path / "dataset"
    with distributed.Client(dask_cluster.scheduler_address) as client:
        outcomes, killed = killed_mid_job(cluster.run_tasks(client, spec(root, config, recordings)))
    assert killed
    assert_every_file_once(root, outcomes, recordings)


def test_a_pool_worker_killed_mid_job_loses_and_duplicates_nothing(tmp_path: Path, config: Path,
                                                                   recordings: list[Path]) -> None:
    root = tmp_path / "dataset"
    outcomes, killed = killed_mid_job(job.run_local(spec(root, config, recordings[:4]), 2))
    assert killed
    assert_every_file_once(root, outcomes, recordings[:4])


def test_a_restarted_job_skips_finished_files_redoes_unfinished_and_names_corrupt_ones(
        tmp_path: Path, config: Path, recordings: list[Path]) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    for p in recordings[:2]:
        (archive / p.name).write_bytes(p.read_bytes())
    (archive / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot audio at all" * 10)
    out = tmp_path / "dataset"
    args = (str(archive), "--config", str(config), "--format", "parquet", "--out", str(out), "--workers", "1")
    first = analyze(*args)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "2 analysed, 0 already done, 1 failed" in first.stderr
    assert "failed: " + str(archive / "corrupt.wav") in first.stderr
    before = sorted(w["window_id"] for w in table(out, "windows"))
    unfinished = next(dataset.markers(out))
    dataset.marker_path(out, unfinished.sha256).unlink()  # as if the worker died after its parts, before its marker
    stray = out / "windows" / ".left-by-a-killed-writer.parquet.tmp-1-abcdef"
    stray.write_bytes(b"partial")
    second = analyze(*args)
    assert second.returncode == 1, second.stderr[-3000:]
    assert "1 analysed, 1 already done, 1 failed" in second.stderr
    assert sorted(w["window_id"] for w in table(out, "windows")) == before
    assert dataset.read_marker(out, unfinished.sha256) is not None and not stray.exists()


def test_usage_is_refused_before_any_work(tmp_path: Path, config: Path, recordings: list[Path]) -> None:
    proc = analyze(str(recordings[0]), "--workers", "2")
    assert proc.returncode == 2 and "add --format parquet --out DATASET" in proc.stderr
    proc = analyze(str(recordings[0]), "--format", "parquet")
    assert proc.returncode == 2 and "give it with --out DATASET" in proc.stderr
    proc = analyze(str(recordings[0]), "--format", "parquet", "--out", str(tmp_path / "d"), "--store", "x.db")
    assert proc.returncode == 2 and "leave out --store" in proc.stderr
    proc = analyze(str(recordings[0]), "--format", "parquet", "--out", str(tmp_path / "d"), "--evidence", "clips")
    assert proc.returncode == 2 and "leave out --evidence" in proc.stderr
    other = tmp_path / "other"
    other.mkdir()
    (other / dataset.META).write_text('{"analysis": "station=elsewhere;window_s=3;hop_s=3;channel=mix"}')
    proc = analyze(str(recordings[0]), "--config", str(config), "--format", "parquet", "--out", str(other))
    assert proc.returncode == 2 and "written with other settings" in proc.stderr
    assert not (other / "windows").exists()


def test_a_missing_cluster_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` raises ImportError
    with pytest.raises(cluster.ClusterError, match=r"pip install 'soundmond\[cluster\]'") as caught:
        cluster.connect("tcp://127.0.0.1:8786")
    assert caught.value.usage
