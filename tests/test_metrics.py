"""Live metrics (`metrics.port`): scraped over HTTP from a running daemon on a file source (real models, real-time
replay), parsed with prometheus_client's own parser; and the bounded species label set."""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from soundmond.data import Alert, AlertType, SpeciesScore, WindowResult
from soundmond.outputs.metrics import OTHER_SPECIES, Tally
from tests.configs import daemon_config

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    """Every sample of /metrics as {(name, labels): value}, or None while the server is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def exposed_names(port: int) -> set[str]:
    """The sample names /metrics declares, with a counter's `_total` even while it has no sample yet."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        families = list(text_string_to_metric_families(resp.read().decode()))
    return ({s.name for f in families for s in f.samples}
            | {f"{f.name}_total" for f in families if f.type == "counter"})


def scrape_until(port: int, proc: subprocess.Popen[str], ok: object, timeout_s: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout_s
    found = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the daemon ended before the metrics showed what was awaited"
        found = scrape(port)
        if found is not None and ok(found):  # type: ignore[operator]
            return found
        time.sleep(0.3)
    raise AssertionError(f"the metrics did not show what was awaited in {timeout_s:.0f} s: {found}")


def test_metrics_move_as_windows_flow(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path,
                                      fixture_audio: Path) -> None:
    port = free_port()
    cfg = daemon_config(tmp_path, yamnet_dir, birdnet_dir, f"metrics: {{port: {port}}}\n")
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "birds.flac").write_bytes((fixture_audio / "oss_birds_10s.flac").read_bytes())
    (rec / "spinetail.flac").write_bytes((fixture_audio / "maad_spinetail_Cranioleuca_erythrops.flac").read_bytes())
    proc = subprocess.Popen([sys.executable, "-m", "soundmond.cli", "run", "--config", str(cfg), "--source",
                             str(rec), "--realtime"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        first = scrape_until(port, proc, lambda m: m.get(("soundmond_windows_processed_total", ()), 0) >= 1)
        later = scrape_until(port, proc, lambda m: m[("soundmond_windows_processed_total", ())]
                             > first[("soundmond_windows_processed_total", ())]
                             and any(k[0] == "soundmond_detections_total" for k in m))
        names = exposed_names(port)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-3000:]
    assert f"metrics at http://127.0.0.1:{port}/metrics" in err
    for sample in ("soundmond_windows_dropped_total", "soundmond_windows_failed_total",
                   "soundmond_windows_quiet_total", "soundmond_rtf", "soundmond_store_bytes",
                   "soundmond_outbox_pending_alerts"):
        assert (sample, ()) in later, sample
    assert 0 < later[("soundmond_rtf", ())] < 5
    assert later[("soundmond_store_bytes", ())] > 0
    states = {dict(k[1])["state"]: v for k, v in later.items() if k[0] == "soundmond_capture_state"}
    assert set(states) == {"starting", "running", "lost", "flat", "clipped"} and sum(states.values()) == 1.0
    assert ("soundmond_outbox_rows", (("state", "pending"),)) in later
    species = {dict(k[1])["species"]: v for k, v in later.items() if k[0] == "soundmond_detections_total"}
    assert species and all(v >= 1 for v in species.values()) and all(" " in name for name in species)
    dashboard = set(re.findall(r"soundmond_[a-z_]+", (REPO / "docs" / "grafana-soundmond.json").read_text()))
    assert len(dashboard) >= 10 and dashboard <= names, dashboard - names  # the Grafana dashboard reads real metrics
    info = [k for k in later if k[0] == "soundmond_info"]
    assert info and dict(info[0][1])["station"] == "station-1"
    meta = dict(sqlite3.connect(tmp_path / "soundmond.db").execute("SELECT key, value FROM meta"))
    assert meta["station_id"] == "station-1" and "BirdNET" in json.loads(meta["models"])["birds"]  # for the report


def test_metrics_are_off_by_default(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path,
                                    fixture_audio: Path) -> None:
    cfg = daemon_config(tmp_path, yamnet_dir, birdnet_dir)
    proc = subprocess.run([sys.executable, "-m", "soundmond.cli", "run", "--config", str(cfg), "--source",
                           str(fixture_audio / "whisp_field_wind.flac")], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "metrics at" not in proc.stderr


def test_a_port_in_use_exits_2_naming_the_key(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path,
                                             fixture_audio: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = daemon_config(tmp_path, yamnet_dir, birdnet_dir, f"metrics: {{port: {port}}}\n")
        proc = subprocess.run([sys.executable, "-m", "soundmond.cli", "run", "--config", str(cfg), "--source",
                               str(fixture_audio / "whisp_field_wind.flac")], cwd=REPO, capture_output=True,
                              text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"metrics.port: cannot listen on 127.0.0.1:{port}" in proc.stderr and "pick a free port" in proc.stderr


def _result(i: int, *names: str) -> WindowResult:
    return WindowResult(f"w{i}", "test", 1000.0 + 5 * i, 5.0 * i, 5.0 * i + 5, None, (), 0.0,
                        tuple(SpeciesScore(n, n.upper(), 0.9) for n in names), 0.9, -30.0, 0.0, 10.0)


def test_species_labels_are_bounded_and_the_snapshot_is_a_frozen_copy() -> None:
    tally = Tally(max_species=3)
    tally.count(_result(0, "A a", "B b"), [])
    before = tally.snapshot
    tally.count(_result(1, "A a", "C c", "D d"), [Alert(AlertType.RARE_SPECIES, "k", "info", 1.0, "m")])
    tally.count(_result(2, "E e"), [])
    assert dict(before.detections_by_species) == {"A a": 1, "B b": 1}  # what a scrape read stays as it was
    assert dict(tally.snapshot.detections_by_species) == {"A a": 2, "B b": 1, "C c": 1, OTHER_SPECIES: 2}
    assert dict(tally.snapshot.alerts_by_type) == {"RARE_SPECIES": 1}
