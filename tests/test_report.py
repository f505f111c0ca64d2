"""`soundmond report` end to end: a store written by `analyze --store` (real models) on corpus recordings, the report
rendered, opened in headless Chromium (tests/browser.py), screenshotted and checked; and its refusals."""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import matplotlib.image as plt_image
import numpy as np
import pytest
import soundfile as sf

from soundmond.config import StoreConfig
from soundmond.outputs.store.database import Store
from soundmond.workbench.station_report.command import make_report
from soundmond.workbench.station_report.figures import GROUP_COLOURS
from tests.browser import Chromium, chromium_available

REPO = Path(__file__).resolve().parent.parent
DAY = "2026-05-01"


def soundmond(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soundmond.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, shared_corpus: Path, yamnet_dir: Path,
          birdnet_dir: Path) -> Path:
    """A store from a file run of 12 corpus recordings (6 birds, 3 industrial, 3 other), renamed so their start
    times (from the name) spread over one UTC day, 01:00 to 23:00."""
    root = tmp_path_factory.mktemp("report-store")
    audio = shared_corpus / "audio"
    chosen = (sorted((audio / "natural").glob("bird_*"))[:6] + sorted((audio / "industrial").iterdir())[:3]
              + sorted((audio / "other").iterdir())[:3])
    (root / "rec").mkdir()
    for i, path in enumerate(chosen):
        shutil.copyfile(path, root / "rec" / f"{DAY.replace('-', '')}_{(2 * i + 1) % 24:02d}0000{path.suffix}")
    config = root / "config.yaml"
    config.write_text(f"station: {{id: meadow-3}}\nmodels:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n"
                      f"  birds: {{path: {birdnet_dir}}}\n")
    db = root / "store.db"
    proc = soundmond("analyze", str(root / "rec"), "--config", str(config), "--store", str(db))
    assert proc.returncode == 0, proc.stderr
    return db


@pytest.fixture(scope="module")
def report(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "day"
    proc = soundmond("report", "--store", str(store), "--day", DAY, "--station", "meadow-3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "windows" in proc.stderr
    return out


@pytest.mark.shared
def test_report_numbers_match_the_store(store: Path, report: Path) -> None:
    data = json.loads((report / "report.json").read_text())
    conn = sqlite3.connect(store)
    windows = conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
    per_species = dict(conn.execute("SELECT scientific_name, COUNT(*) FROM detections GROUP BY scientific_name"))
    assert data["station"] == "meadow-3"
    assert data["windows"] == windows > 0
    assert sum(sum(v) for v in data["shares"].values()) + sum(data["unanalysed"]) == windows
    assert {s["scientific_name"]: s["detections"] for s in data["species"]} == per_species
    assert len(per_species) >= 3  # the bird recordings are heard as birds
    assert sum(map(sum, data["hour_counts"].values())) == sum(per_species.values())  # < 30 species: all rows
    assert set(data["models"]) == {"tagger", "birds", "head"} and "BirdNET" in data["models"]["birds"]
    assert data["bin_s"] == 600 and len(data["rtf"]) == 144
    # the shares figure draws every group that has windows (its colour is in the picture), none that has not
    pixels = (plt_image.imread(report / "shares.png")[..., :3] * 255).round().astype(int)
    pixels = pixels[: int(pixels.shape[0] * 0.7)]  # the plot, without the legend below it (its swatches)
    for group, colour in GROUP_COLOURS.items():
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        drawn = int((np.abs(pixels - rgb).sum(axis=-1) <= 6).sum())
        windows_of_group = sum(data["shares"][group])
        assert (drawn > 200) == (windows_of_group > 0) or group == "quiet", (group, drawn, windows_of_group)


@pytest.mark.shared
def test_report_page_in_headless_chromium(report: Path, store: Path, tmp_path: Path) -> None:
    if (why := chromium_available()) is not None:
        pytest.skip(why)
    n_species = sqlite3.connect(store).execute("SELECT COUNT(DISTINCT scientific_name) FROM detections").fetchone()[0]
    with Chromium(tmp_path) as browser:
        page = browser.open((report / "index.html").as_uri())
        images = page.evaluate("[...document.images].map(i => [i.getAttribute('src'), i.naturalWidth])")
        sections = page.evaluate("[...document.querySelectorAll('section')].map(s => s.id)")
        species_rows = page.evaluate("[...document.querySelectorAll('tr.species-row')].map(r => r.cells.length)")
        shot = page.screenshot(tmp_path / "report.png")
        errors = page.errors
    assert errors == []
    assert images and all(width > 0 for _, width in images), images
    srcs = {src for src, _ in images}
    assert {"shares.png", "heatmap.png", "frequency.png", "health.png"} <= srcs
    assert sum(src.startswith("thumb-") for src in srcs) == n_species  # every best window read back from its file
    assert {"fig-shares", "alerts", "species", "fig-heatmap", "fig-frequency", "fig-health", "health",
            "models"} <= set(sections)
    assert len(species_rows) == n_species and set(species_rows) == {8}
    width, height = _png_size(shot)
    assert width >= 1000 and height > 2000  # the whole page, not the viewport


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_the_browser_check_sees_a_missing_image_and_a_console_error(tmp_path: Path) -> None:
    if (why := chromium_available()) is not None:
        pytest.skip(why)
    page_file = tmp_path / "bad.html"
    page_file.write_text("<html><body><img src='nothere.png'><script>console.error('boom')</script></body></html>")
    with Chromium(tmp_path) as browser:
        page = browser.open(page_file.as_uri())
        widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
        errors = page.errors
    assert widths == [0]
    assert any("boom" in e for e in errors) and any("nothere.png" in e for e in errors)


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"day": None, "since": None, "until": None, "station": None}
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.mark.shared
def test_an_evidence_clip_gets_an_audio_player(store: Path, tmp_path: Path) -> None:
    """The hook for saved evidence clips: a clip the EvidenceClips finds is copied beside the page and played."""
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(16000, dtype=np.float32), 16000)

    class OneClip:
        reason = "one test clip"

        def clip_for(self, window_id: str, scientific_name: str) -> Path | None:
            return clip

    data = make_report(store, tmp_path / "out", _args(day=DAY), clips=OneClip())
    html = (tmp_path / "out" / "index.html").read_text()
    assert html.count("<audio controls") == len(data.species) > 0
    assert (tmp_path / "out" / "clip-0.wav").read_bytes() == clip.read_bytes()
    default = make_report(store, tmp_path / "plain", _args(day=DAY))
    assert "<audio" not in (tmp_path / "plain" / "index.html").read_text() and default.species


@pytest.mark.shared
@pytest.mark.parametrize(("args", "says"), [
    (["--day", "2026-13-01"], "is not a date"),
    (["--since", "yesterday"], "is not an ISO date"),
    (["--until", "2026-05-02"], "--until needs --since"),
    (["--since", "2026-05-02", "--until", "2026-05-01"], "is not after"),
    (["--station", "other-station"], "holds station 'meadow-3'"),
])
def test_bad_arguments_exit_2_and_write_nothing(store: Path, tmp_path: Path, args: list[str], says: str) -> None:
    proc = soundmond("report", "--store", str(store), "--out", str(tmp_path / "out"), *args)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and " - " in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.shared
def test_out_never_replaces_what_is_not_an_earlier_report(store: Path, tmp_path: Path) -> None:
    """`--out` names a folder of the user's (a recording and notes in it) or a file: refused, exit 2, nothing touched;
    an earlier report (it holds report.json) or an empty folder is replaced."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("important")
    recording = tmp_path / "20260501_053000.WAV"
    recording.write_bytes(b"RIFF....")
    for out, says in ((mine, "not an earlier report"), (recording, "is not a folder")):
        proc = soundmond("report", "--store", str(store), "--day", DAY, "--out", str(out))
        assert proc.returncode == 2 and says in proc.stderr and " - " in proc.stderr, proc.stderr
    assert (mine / "notes.txt").read_text() == "important" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert recording.read_bytes() == b"RIFF...." and sorted(p.name for p in tmp_path.iterdir()) == [
        "20260501_053000.WAV", "mine"]
    for out in (tmp_path / "empty", tmp_path / "again"):
        out.mkdir()
        if out.name == "again":
            (out / "report.json").write_text("{}")
            (out / "old.png").write_bytes(b"x")
        proc = soundmond("report", "--store", str(store), "--day", DAY, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        assert (out / "index.html").is_file() and not (out / "old.png").exists()
    proc = subprocess.run([sys.executable, "-m", "soundmond.cli", "evaluate", "--labels", str(tmp_path / "x.csv"),
                           "--out", str(mine)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not an earlier report" in proc.stderr, proc.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_a_missing_or_foreign_store_exits_2(tmp_path: Path) -> None:
    proc = soundmond("report", "--store", str(tmp_path / "none.db"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "no such store" in proc.stderr
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)")
    proc = soundmond("report", "--store", str(foreign), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "not a soundmond store" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_an_empty_store_gives_a_page_that_says_so(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    Store(db, StoreConfig()).close()
    proc = soundmond("report", "--store", str(db), "--station", "meadow-3", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "out" / "index.html").read_text()
    assert "No window was stored in this range" in html and "does not record its station" in html
    assert "No species was detected" in html and "heatmap.png" not in html
    assert json.loads((tmp_path / "out" / "report.json").read_text())["windows"] == 0
