"""`soundmond analyze` end to end: real models on real recordings, as a user runs it (a subprocess)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from heads import bird_head

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, yamnet_dir: Path, birdnet_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(
        f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n  birds: {{path: {birdnet_dir}}}\n"
    )
    return path


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soundmond.cli", "analyze", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def records(config: Path, fixture_audio: Path) -> list[dict]:
    proc = analyze(str(fixture_audio), "--config", str(config), "--summary")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def by_file(records: list[dict], name: str) -> list[dict]:
    return [r for r in records if "file" in r and Path(r["file"]).name == name]


def test_every_window_has_a_complete_record(records: list[dict]) -> None:
    windows = [r for r in records if "window_id" in r]
    assert len(windows) == 15
    for r in windows:
        assert r["status"] == "ok"
        assert r["end_s"] > r["start_s"]
        assert set(r["group_probabilities"]) == {"natural", "industrial", "other"}
        assert sum(r["group_probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        assert len(r["tagger_top"]) == 5
        assert r["group"] == max(r["group_probabilities"], key=r["group_probabilities"].get)


def test_groups_match_the_recordings(records: list[dict]) -> None:
    assert [r["group"] for r in by_file(records, "whisp_field_horn.flac")] == ["industrial"]
    assert [r["group"] for r in by_file(records, "whisp_field_engine.flac")] == ["industrial"]
    assert {r["group"] for r in by_file(records, "maad_jura_forest_20190522_0600.flac")} == {"natural"}
    assert {r["group"] for r in by_file(records, "maad_spinetail_Cranioleuca_erythrops.flac")} == {"natural"}
    horn = by_file(records, "whisp_field_horn.flac")[0]
    assert horn["tagger_top"][0]["label"] == "Vehicle horn, car horn, honking"


def test_known_bird_is_named_by_species(records: list[dict]) -> None:
    spinetail = by_file(records, "maad_spinetail_Cranioleuca_erythrops.flac")
    tops = [r["species"][0]["scientific_name"] for r in spinetail if r["species"]]
    named = [r for r in spinetail if "Cranioleuca erythrops" in {s["scientific_name"] for s in r["species"]}]
    # BirdNET's 3-s grid from the file's start (as BirdNET-Analyzer's): 0-3 s holds it at 0.22, under min_confidence;
    # 3-6 s is the congeneric C. curtata's best (0.93, the spinetail 0.82); every later window names it, two first
    assert tops.count("Cranioleuca erythrops") >= 2 and len(named) >= 3
    assert by_file(records, "maad_jura_forest_night_20190522_0000.flac")[0]["species"] == []


def test_summary_holds_aggregate_and_alerts(records: list[dict]) -> None:
    summary = records[-1]
    assert summary["files_analysed"] == 8 and summary["files_failed"] == []
    spans = {s["span_s"]: s for s in summary["summary"]["spans"]}
    assert set(spans) == {60, 3600, 86400}
    # the two Jura files are dated 2019-05-22 by their names; the 11 windows of the other files (dated by their
    # modification time, i.e. now) are the ones inside the last 24 h
    assert spans[86400]["windows"] == 11
    assert spans[86400]["shares"]["industrial"] == pytest.approx(2 / 11)
    assert all(a["type"] and a["message"] and a["evidence"] is not None for a in summary["alerts"])


def test_summary_counts_every_window_analysed(records: list[dict]) -> None:
    """The rolling spans end at the newest window, so the 2019 Jura recordings fall in none of them: `analysed`
    counts every window, and `windows_outside_spans` says how many the spans leave out."""
    summary = records[-1]
    windows = [r for r in records if "window_id" in r]
    analysed = summary["analysed"]
    assert analysed["windows"] == len(windows) == 15
    assert analysed["windows_with_group"] + analysed["windows_without_group"] == 15
    assert summary["windows_outside_spans"] == 4
    longest = max(summary["summary"]["spans"], key=lambda s: s["span_s"])
    assert longest["windows"] + summary["windows_outside_spans"] == analysed["windows"]
    species: dict[str, int] = {}
    for r in windows:
        for name in {s["scientific_name"] for s in r["species"]}:
            species[name] = species.get(name, 0) + 1
    assert analysed["species_counts"] == species
    # only in the 2019 dawn recording (10 s): heard in the chunks 3-6 s and 6-9 s, both ending in its second window
    assert analysed["species_counts"]["Phylloscopus collybita"] == 1
    dawn = by_file(records, "maad_jura_forest_20190522_0600.flac")
    heard = [(d["start_s"], d["end_s"], d["start_utc"], d["end_utc"]) for r in dawn for d in r["detections"]
             if d["scientific_name"] == "Phylloscopus collybita"]
    assert heard == [(3.0, 6.0, "2019-05-22T06:00:03.000Z", "2019-05-22T06:00:06.000Z"),
                     (6.0, 9.0, "2019-05-22T06:00:06.000Z", "2019-05-22T06:00:09.000Z")]
    assert all(r["start_s"] < d["end_s"] <= r["end_s"] for r in windows for d in r["detections"])
    industrial = sum(r["group"] == "industrial" for r in windows)
    assert analysed["shares"]["industrial"] == pytest.approx(industrial / 15, abs=1e-6)
    starts = [r["start_utc"] for r in windows]
    assert analysed["start_unix_s"] == pytest.approx(1558483200.0)  # 2019-05-22T00:00:00Z, the night recording
    assert min(starts) == "2019-05-22T00:00:00.000Z"


def test_csv_output_and_bad_files_exit_1(config: Path, fixture_audio: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    sf.write(tmp_path / "tone.wav", (0.3 * np.sin(np.arange(16000 * 5) * 0.3)).astype(np.float32), 16000)
    proc = analyze(str(tmp_path), str(fixture_audio / "whisp_field_horn.flac"), "--config", str(config),
                   "--format", "csv")
    assert proc.returncode == 1
    assert "broken.wav" in proc.stderr and "Traceback" not in proc.stderr
    assert "soundmond analyze: 1 input(s) could not be analysed; the rest was processed" in proc.stderr.splitlines()
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [Path(r["file"]).name for r in rows] == ["tone.wav", "whisp_field_horn.flac"]
    assert rows[1]["group"] == "industrial"


def test_model_folder_mismatch_exits_3(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path,
                                       fixture_audio: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"models:\n  tagger: {{family: ast, path: {yamnet_dir}}}\n  birds: {{path: {birdnet_dir}}}\n")
    proc = analyze(str(fixture_audio), "--config", str(cfg))
    assert proc.returncode == 3
    assert "models.tagger" in proc.stderr and "Traceback" not in proc.stderr


def test_tampered_model_exits_3(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, fixture_audio: Path) -> None:
    import shutil

    copy = tmp_path / "yamnet"
    shutil.copytree(yamnet_dir, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"models:\n  tagger: {{family: yamnet, path: {copy}}}\n  birds: {{path: {birdnet_dir}}}\n")
    proc = analyze(str(fixture_audio), "--config", str(cfg))
    assert proc.returncode == 3
    assert "checksum" in proc.stderr


def test_bad_config_exits_2(tmp_path: Path, fixture_audio: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("windows:\n  length_s: -1\n")
    proc = analyze(str(fixture_audio), "--config", str(cfg))
    assert proc.returncode == 2
    assert "windows.length_s" in proc.stderr and "(line 2)" in proc.stderr


def test_birds_disabled_uses_the_tagger_only_head(tmp_path: Path, yamnet_dir: Path, fixture_audio: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n  birds: {{enabled: false}}\n")
    proc = analyze(str(fixture_audio / "whisp_field_horn.flac"), "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert "yamnet-tagger.onnx" in proc.stderr  # the log says which head and why
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["group"] for r in records] == ["industrial"]
    assert records[0]["status"] == "ok" and records[0]["species"] == []


def test_bird_head_with_birds_disabled_exits_3(tmp_path: Path, yamnet_dir: Path, fixture_audio: Path) -> None:
    cfg = tmp_path / "c.yaml"
    head = bird_head(tmp_path / "birds.onnx")  # needs BirdNET's embedding (the shipped heads do not)
    cfg.write_text(
        f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n  birds: {{enabled: false}}\n"
        f"  head: {{path: {head}}}\n"
    )
    proc = analyze(str(fixture_audio / "whisp_field_horn.flac"), "--config", str(cfg))
    assert proc.returncode == 3
    assert "models.head.path" in proc.stderr and "models.birds.enabled" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_a_missing_input_is_bad_usage_refused_before_any_model_loads(tmp_path: Path, fixture_audio: Path,
                                                                     yamnet_dir: Path) -> None:
    """As `run --source`: a path that does not exist is exit 2, named with a hint; the models are not loaded (the
    config's bird model folder does not exist either: loading it would exit 3)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n"
                   f"  birds: {{path: {tmp_path / 'no-model'}}}\n")
    missing = tmp_path / "missing.wav"
    proc = analyze(str(fixture_audio / "whisp_field_horn.flac"), str(missing), "--config", str(cfg))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [f"soundmond analyze: no such file or folder: {missing} - give analyze "
                                        "recordings or folders of recordings that exist"]
    assert proc.stdout == ""
