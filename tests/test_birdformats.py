"""The formats bird people use (outputs.birdformats, `analyze --format raven|birdnet-csv|audacity`): written from
hand-made WindowResults and read back as BirdNET-Analyzer's documentation describes them (a Raven selection table is
tab-separated text with a header row; the CSV is read with the csv module; an Audacity label track is start, end,
label, confidence split on tabs); then the command on real audio with the real models."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from soundmond.data import ChunkDetection, GroupPrediction, LabelScore, SpeciesScore, WindowResult
from soundmond.outputs import birdformats
from soundmond.outputs.birdformats import BirdFormatError, BirdFormatWriter, where_problem

REPO = Path(__file__).resolve().parent.parent
T0 = 1_716_537_600.0  # the recordings' start, UTC

BLACKBIRD = ("Turdus merula", "Eurasian Blackbird")
ROBIN = ("Erithacus rubecula", "European Robin")
WREN = ("Troglodytes troglodytes", "Eurasian Wren")

RAVEN_COLUMNS = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                 "High Freq (Hz)", "Common Name", "Species Code", "Confidence", "Begin Path", "File Offset (s)"]
CSV_COLUMNS = ["Start (s)", "End (s)", "Scientific name", "Common name", "Confidence", "File"]


def window(source: str, start_s: float, chunks: Sequence[tuple[tuple[str, str], float, float]],
           length_s: float = 5.0) -> WindowResult:
    """A window of `source` at `start_s` holding these chunk detections ((species, chunk start in the file, conf))."""
    dets = tuple(ChunkDetection(sp[0], sp[1], conf, c0, c0 + 3.0, T0 + c0, T0 + c0 + 3.0) for sp, c0, conf in chunks)
    best: dict[tuple[str, str], float] = {}
    for sp, _, conf in chunks:
        best[sp] = max(best.get(sp, 0.0), conf)
    return WindowResult(
        window_id=f"{source}@{start_s}", source=source, start_unix_s=T0 + start_s, start_s=start_s,
        end_s=start_s + length_s, group=GroupPrediction("natural", {"natural": 1.0, "industrial": 0.0, "other": 0.0}),
        tagger_top=(LabelScore("Bird", 0.9),), tagger_top_score=0.9,
        species=tuple(SpeciesScore(sp[0], sp[1], c) for sp, c in best.items()),
        bird_top_score=max(best.values(), default=0.0), rms_dbfs=-40.0, clipped_fraction=0.0, compute_ms=1.0,
        detections=dets,
    )


# Two recordings, as FileSource yields them: windows of one, then of the other. Chunks on BirdNET's 3-s grid end in
# the window they are reported with; the chunk 3-6 s comes twice (two overlapping windows) and counts once.
FOREST = "/data/2024/forest_0600.wav"
MEADOW = "/data/2024/meadow_0600.flac"
WINDOWS = [
    window(FOREST, 0.0, [(BLACKBIRD, 0.0, 0.5123456), (ROBIN, 0.0, 0.91)]),
    window(FOREST, 2.5, [(BLACKBIRD, 3.0, 0.8)]),
    window(FOREST, 5.0, [(BLACKBIRD, 3.0, 0.8), (WREN, 6.0, 0.25)]),
    window(MEADOW, 0.0, []),
]


def write(fmt: str, out_dir: Path | None, windows: Sequence[WindowResult] = WINDOWS,
          rates: dict[str, int] | None = None) -> tuple[BirdFormatWriter, str]:
    stdout = io.StringIO()
    w = BirdFormatWriter(fmt, out_dir, stdout)
    for r in windows:
        w.add(r, (rates or {}).get(r.source, 48000))
    w.close()
    return w, stdout.getvalue()


def read_raven(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        return list(reader.fieldnames or []), list(reader)


def test_raven_tables_one_per_recording(tmp_path: Path) -> None:
    w, stdout = write("raven", tmp_path, rates={MEADOW: 22050})
    assert stdout == ""
    assert [p.name for p in w.written] == ["forest_0600.BirdNET.selection.table.txt",
                                           "meadow_0600.BirdNET.selection.table.txt"]
    columns, rows = read_raven(tmp_path / "forest_0600.BirdNET.selection.table.txt")
    assert columns == RAVEN_COLUMNS
    assert [(r["Selection"], r["Begin Time (s)"], r["End Time (s)"], r["Common Name"], r["Confidence"])
            for r in rows] == [
        ("1", "0.0", "3.0", "European Robin", "0.9100"),  # same chunk: highest confidence first
        ("2", "0.0", "3.0", "Eurasian Blackbird", "0.5123"),
        ("3", "3.0", "6.0", "Eurasian Blackbird", "0.8000"),  # reported by two windows, written once
        ("4", "6.0", "9.0", "Eurasian Wren", "0.2500"),
    ]
    for r in rows:
        assert (r["View"], r["Channel"], r["Low Freq (Hz)"], r["High Freq (Hz)"]) == ("Spectrogram 1", "1", "0",
                                                                                      "15000")
        assert r["Begin Path"] == FOREST and r["File Offset (s)"] == r["Begin Time (s)"]
    assert rows[0]["Species Code"] == "Erithacus rubecula_European Robin"  # BirdNET's fallback without eBird codes
    # a recording with no detection: BirdNET-Analyzer's placeholder row; a 22.05-kHz file tops out at 11025 Hz
    _, empty = read_raven(tmp_path / "meadow_0600.BirdNET.selection.table.txt")
    assert [(r["Common Name"], r["Species Code"], r["Begin Time (s)"], r["End Time (s)"], r["High Freq (Hz)"],
             r["Begin Path"]) for r in empty] == [("nocall", "nocall", "0", "3", "11025.0", MEADOW)]
    text = (tmp_path / "forest_0600.BirdNET.selection.table.txt").read_bytes()
    assert b"\r" not in text and text.endswith(b"\n")


def test_birdnet_csv_per_recording_and_on_stdout(tmp_path: Path) -> None:
    w, _ = write("birdnet-csv", tmp_path)
    with (tmp_path / "forest_0600.BirdNET.results.csv").open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == CSV_COLUMNS
    assert [list(r.values()) for r in rows] == [
        ["0.0", "3.0", "Erithacus rubecula", "European Robin", "0.9100", FOREST],
        ["0.0", "3.0", "Turdus merula", "Eurasian Blackbird", "0.5123", FOREST],
        ["3.0", "6.0", "Turdus merula", "Eurasian Blackbird", "0.8000", FOREST],
        ["6.0", "9.0", "Troglodytes troglodytes", "Eurasian Wren", "0.2500", FOREST],
    ]
    assert (tmp_path / "meadow_0600.BirdNET.results.csv").read_text() == ",".join(CSV_COLUMNS) + "\n"
    # on stdout: one table, one header, every recording's rows (BirdNET-Analyzer's combined CSV)
    _, stdout = write("birdnet-csv", None, WINDOWS + [window(MEADOW, 5.0, [(WREN, 4.5, 0.3333)])])
    table = list(csv.reader(io.StringIO(stdout)))
    assert table[0] == CSV_COLUMNS and table.count(CSV_COLUMNS) == 1
    assert [row[5] for row in table[1:]] == [FOREST] * 4 + [MEADOW]
    assert table[-1] == ["4.5", "7.5", "Troglodytes troglodytes", "Eurasian Wren", "0.3333", MEADOW]
    assert write("birdnet-csv", None, [])[1] == ",".join(CSV_COLUMNS) + "\n"  # nothing analysed: still a table


def test_audacity_label_tracks(tmp_path: Path) -> None:
    write("audacity", tmp_path)
    lines = (tmp_path / "forest_0600.BirdNET.results.txt").read_text(encoding="utf-8").splitlines()
    labels = [line.split("\t") for line in lines]
    assert labels == [
        ["0.0", "3.0", "Erithacus rubecula, European Robin", "0.9100"],
        ["0.0", "3.0", "Turdus merula, Eurasian Blackbird", "0.5123"],
        ["3.0", "6.0", "Turdus merula, Eurasian Blackbird", "0.8000"],
        ["6.0", "9.0", "Troglodytes troglodytes, Eurasian Wren", "0.2500"],
    ]
    assert all(float(a) < float(b) for a, b, _, _ in labels)
    assert (tmp_path / "meadow_0600.BirdNET.results.txt").read_text() == ""
    _, stdout = write("audacity", None, WINDOWS[:3])
    assert stdout.splitlines() == lines


def test_a_recording_that_failed_is_not_written(tmp_path: Path) -> None:
    stdout = io.StringIO()
    w = BirdFormatWriter("raven", tmp_path, stdout)
    w.add(WINDOWS[0], 48000)
    w.discard(FOREST)  # what analyze does when FileSource reports FOREST's decoding failed
    w.add(WINDOWS[3], 48000)
    w.close()
    assert [p.name for p in w.written] == ["meadow_0600.BirdNET.selection.table.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meadow_0600.BirdNET.selection.table.txt"]


def test_an_unwritable_folder_is_a_hinted_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    w = BirdFormatWriter("raven", blocker / "out", io.StringIO())
    w.add(WINDOWS[0], 48000)
    with pytest.raises(BirdFormatError, match="cannot write forest_0600.BirdNET.selection.table.txt .* - check that"):
        w.close()


@pytest.mark.parametrize("rate, text", [(48000, "15000"), (32000, "15000"), (22050, "11025.0"), (16000, "8000.0")])
def test_high_freq_as_birdnet_computes_it(rate: int, text: str) -> None:
    assert birdformats.high_freq_text(rate) == text


def test_times_and_confidences_as_birdnet_writes_them() -> None:
    assert [birdformats.seconds_text(x) for x in (0.0, 3.0000000001, 1.5, 4.4999999, 12.25)] == [
        "0.0", "3.0", "1.5", "4.5", "12.2"]
    assert [birdformats.confidence_text(c) for c in (0.1, 0.99995, 1.0)] == ["0.1000", "1.0000", "1.0000"]


def recordings(tmp_path: Path, *names: str) -> list[Path]:
    out = []
    for n in names:
        p = tmp_path / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")  # find_audio_files goes by name
        out.append(p)
    return out


def test_where_each_format_may_go(tmp_path: Path) -> None:
    one = recordings(tmp_path / "one", "a.wav")
    two = recordings(tmp_path / "two", "a.wav", "b.flac")
    clash = recordings(tmp_path / "clash", "x/a.wav", "y/a.flac")[0].parent.parent
    out = tmp_path / "out"
    ok = [("raven", out, two, True), ("birdnet-csv", None, two, False), ("birdnet-csv", out, two, True),
          ("audacity", None, one, False), ("audacity", out, two, False), ("jsonl", None, two, True),
          ("csv", None, two, False), ("jsonl", None, two, True)]
    for fmt, where, paths, summary in ok:
        assert where_problem(fmt, where, paths, summary=summary) is None, (fmt, where, paths, summary)
    refused = [
        ("raven", None, one, False, "raven writes one selection table per recording - give the folder"),
        ("audacity", None, [tmp_path / "two"], False, "no file column and these paths hold 2 recordings - give --out"),
        ("birdnet-csv", None, one, True, "--summary would mix JSON into the birdnet-csv table on stdout - give --out"),
        ("jsonl", out, one, False, "--out is for the bird formats .* - redirect stdout"),
        ("csv", None, two, True, "--summary would mix JSON into the CSV table on stdout - use the default jsonl"),
        ("raven", one[0], one, False, "is a file - give a folder"),
        ("raven", out, [clash], False, "would both write a.BirdNET.selection.table.txt - analyse them"),
    ]
    for fmt, where, paths, summary, problem in refused:
        got = where_problem(fmt, where, paths, summary=summary)
        assert got is not None and re.search(problem, got), (fmt, got)


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soundmond.cli", "analyze", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_the_command_refuses_a_raven_table_without_a_folder(fixture_audio: Path, tmp_path: Path) -> None:
    proc = analyze(str(fixture_audio / "oss_birds_10s.flac"), "--format", "raven", "--config",
                   str(tmp_path / "never-read.yaml"))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "raven writes one selection table per recording - give the folder for them with --out DIR" in proc.stderr


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, yamnet_dir: Path, birdnet_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(
        f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n  birds: {{path: {birdnet_dir}}}\n"
    )
    return path


def test_analyze_writes_raven_tables_and_the_species_summary(config: Path, fixture_audio: Path,
                                                             tmp_path: Path) -> None:
    """Real models on two real recordings: one Raven table each, named after the recording, that parse with the
    documented columns; the summary on stdout names the spinetail with its detections. Holds before the chunk grid
    (no chunk detections: placeholder tables, the summary counts whole windows and says so) and after it (the table
    rows are the chunk detections, and the summary counts exactly those rows)."""
    audio = tmp_path / "in"
    audio.mkdir()
    for name in ("maad_spinetail_Cranioleuca_erythrops.flac", "maad_jura_forest_night_20190522_0000.flac"):
        shutil.copy(fixture_audio / name, audio / name)
    out = tmp_path / "tables"
    proc = analyze(str(audio), "--config", str(config), "--format", "raven", "--out", str(out), "--summary")
    assert proc.returncode == 0, proc.stderr
    assert "2 raven files written to" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "maad_jura_forest_night_20190522_0000.BirdNET.selection.table.txt",
        "maad_spinetail_Cranioleuca_erythrops.BirdNET.selection.table.txt"]
    columns, rows = read_raven(out / "maad_spinetail_Cranioleuca_erythrops.BirdNET.selection.table.txt")
    assert columns == RAVEN_COLUMNS
    assert all(r["Begin Path"] == str(audio / "maad_spinetail_Cranioleuca_erythrops.flac") for r in rows)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    species = {s["scientific_name"]: s for s in summary["analysed"]["species_summary"]}
    spinetail = species["Cranioleuca erythrops"]
    assert spinetail["detections"] >= 3 and spinetail["minutes"] >= 1 and spinetail["max_confidence"] > 0.5
    chunk_rows = [r for r in rows if r["Common Name"] != "nocall"]
    if spinetail["from_windows"] == spinetail["detections"]:  # before the chunk grid: no chunk detections at all
        assert [r["Species Code"] for r in rows] == ["nocall"]
        assert "whole windows without chunk detections" in proc.stderr
    else:  # with the grid: every chunk detection is a row, and the summary counts the same
        assert spinetail["from_windows"] == 0
        named = [r for r in chunk_rows if r["Species Code"].startswith("Cranioleuca erythrops_")]
        assert len(named) == spinetail["detections"]
        assert max(float(r["Confidence"]) for r in named) == pytest.approx(spinetail["max_confidence"], abs=1e-4)


def test_analyze_birdnet_csv_on_stdout_is_one_table(config: Path, fixture_audio: Path) -> None:
    """Real models, birdnet-csv on stdout: nothing but the table (read with the csv module), its rows naming the file;
    with --summary on stdout as well it is refused before any model loads."""
    birds = str(fixture_audio / "oss_birds_10s.flac")
    proc = analyze(birds, "--config", str(config), "--format", "birdnet-csv")
    assert proc.returncode == 0, proc.stderr
    reader = csv.DictReader(io.StringIO(proc.stdout))
    rows = list(reader)
    assert reader.fieldnames == CSV_COLUMNS
    for r in rows:
        assert r["File"] == birds
        assert 0.0 <= float(r["Start (s)"]) < float(r["End (s)"]) <= 10.5
        assert 0.0 < float(r["Confidence"]) <= 1.0 and len(r["Confidence"].split(".")[1]) == 4
    refused = analyze(birds, "--config", str(config), "--format", "birdnet-csv", "--summary")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "--summary would mix JSON into the birdnet-csv table on stdout - give --out DIR" in refused.stderr
