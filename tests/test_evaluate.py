"""`soundmond evaluate` with the real BirdNET / YAMNet models and the shipped head on real recordings: the repository's
fixtures and (marked `shared`) known-species Xeno-canto rows of the shared corpus."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from soundmond.cli import main
from soundmond.workbench.evaluate import most_confused, species_metrics


def test_species_metrics_by_hand() -> None:
    m = species_metrics(["A a", "A a", "B b", "C c"], [["A a", "B b"], ["B b", "A a"], ["B b"], ["A a", "C c"]])
    assert m["top1_accuracy"] == 0.5 and m["top3_accuracy"] == 1.0
    assert m["per_species"]["A a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2, "predicted": 2}
    assert m["per_species"]["B b"]["precision"] == 0.5 and m["per_species"]["C c"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert m["weighted_f1"] == pytest.approx((0.5 * 2 + 2 / 3 + 0.0) / 4)
    rows, cols, matrix = most_confused(["A a", "A a", "B b", "C c"], ["A a", "B b", "B b", "A a"], 5)
    assert rows == ["A a", "C c"] and cols == ["A a", "B b"] and matrix == [[1, 1], [1, 0]]


def _write_labels(path: Path, rows: list[dict[str, str]]) -> None:
    fields = ["file", "group", "category", "species", "latitude", "longitude", "date"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.shared
def test_evaluate_corpus_rows(
    tmp_path: Path, shared_corpus: Path, fixture_audio: Path, birdnet_dir: Path, yamnet_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with open(shared_corpus / "labels.csv", newline="") as fh:
        corpus = list(csv.DictReader(fh))
    birds = [r for r in corpus if r["species"] and r["original_id"].startswith("XC")][::17][:10]
    industrial = [r for r in corpus if r["category"] in ("engine", "chainsaw")][:2]
    other = [r for r in corpus if r["category"] in ("dog", "clapping")][:2]
    root = tmp_path / "audio"
    rows: list[dict[str, str]] = []
    for r in birds + industrial + other:
        dest = root / r["file"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_corpus / r["file"], dest)
        rows.append(r)
    # fixtures: a focal recording with its species and coordinates (Jura, France; Cranioleuca is South American,
    # so the location filter must drop it), and a field recording with a group only
    for name, extra in (("maad_spinetail_Cranioleuca_erythrops.flac",
                         {"species": "Cranioleuca erythrops", "group": "natural", "latitude": "46.5",
                          "longitude": "6.1", "date": "2019-05-22"}),
                        ("whisp_field_engine.flac", {"group": "industrial"})):
        shutil.copy(fixture_audio / name, root / name)
        rows.append({"file": name, **extra})
    rows.append({"file": "missing.flac", "species": "Turdus merula"})  # a bad row: named, the rest evaluated
    labels = tmp_path / "labels.csv"
    _write_labels(labels, rows)
    out = tmp_path / "report"

    code = main(["evaluate", "--labels", str(labels), "--audio-root", str(root), "--out", str(out),
                 "--birdnet", str(birdnet_dir), "--tagger", str(yamnet_dir), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "missing.flac" in captured.err and "not found" in captured.err
    summary = json.loads(captured.out)
    report = json.loads((out / "report.json").read_text())

    sp = report["species"]["unfiltered"]
    assert sp["files"] == len(birds) + 1 == summary["species"]["files"]
    assert 0.0 <= sp["top1_accuracy"] <= sp["top3_accuracy"] <= 1.0
    assert sp["top1_correct"] == round(sp["top1_accuracy"] * sp["files"])
    assert sp["top1_accuracy"] >= 0.3  # BirdNET on focal Xeno-canto recordings
    for v in (sp["macro_f1"], sp["weighted_f1"]):
        assert 0.0 <= v <= 1.0
    for stats in sp["per_species"].values():
        assert all(0.0 <= stats[k] <= 1.0 for k in ("precision", "recall", "f1"))
    assert sum(s["support"] for s in sp["per_species"].values()) == sp["files"]
    assert sum(s["predicted"] for s in sp["per_species"].values()) == sp["files"]
    lf = report["species"]["location_filter"]
    assert lf["files_with_coordinates"] == 1
    assert lf["with_filter"]["top1_accuracy"] <= lf["without_filter"]["top1_accuracy"] + 1e-9

    with open(out / "species_results.csv", newline="") as fh:
        results = list(csv.DictReader(fh))
    assert len(results) == sp["files"]
    assert all(len(r["top3"].split("; ")) == 3 for r in results)
    assert sum(r["correct_top1"] == "True" for r in results) == sp["top1_correct"]
    spinetail = next(r for r in results if r["file"].startswith("maad_spinetail"))
    assert float(spinetail["true_occurrence"]) < 0.03 and spinetail["filtered_predicted"] != "Cranioleuca erythrops"

    gr = report["groups"]
    assert gr["windows"] >= len(industrial) + len(other) + 2
    assert 0.0 <= gr["balanced_accuracy_3class"] <= 1.0
    assert gr["wrong_windows"] == len((out / "group_errors.csv").read_text().splitlines()) - 1
    assert sum(map(sum, gr["confusion_matrix"]["rows_true_columns_predicted"])) == gr["windows"]
    # every corpus clip and both fixtures (copies of corpus clips) were trained on: in-sample by content hash
    assert gr["in_sample"] is True and summary["groups"]["in_sample"] is True
    assert gr["in_sample_files"]["in"] == gr["files"] and gr["in_sample_files"]["out"] == 0
    assert gr["in_sample_part"]["windows"] == gr["windows"] and gr["out_of_sample_part"]["windows"] == 0

    md = (out / "report.md").read_text()
    for png in ("species_confusion.png", "species_frequency.png", "group_confusion.png"):
        assert f"]({png})" in md
        with Image.open(out / png) as img:
            img.verify()
        with Image.open(out / png) as img:
            assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 300
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]  # no temporary folder left


def _hum(path: Path, seconds: float = 10.0, rate: int = 16000) -> None:
    """A recording the head never saw: a 100-Hz machine hum with harmonics and a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(7)
    signal = sum(0.2 / k * np.sin(2 * np.pi * 100 * k * t) for k in range(1, 6)) + 0.01 * rng.standard_normal(t.size)
    sf.write(path, signal.astype(np.float32), rate)


@pytest.mark.shared
def test_evaluate_marks_what_the_head_saw(
    tmp_path: Path, shared_corpus: Path, birdnet_dir: Path, yamnet_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Corpus clips the shipped head was trained on are in-sample, a new recording is out-of-sample, and each part is
    reported on its own (`in_sample: "partial"` with counts)."""
    with open(shared_corpus / "labels.csv", newline="") as fh:
        corpus = list(csv.DictReader(fh))
    trained = [r for r in corpus if r["category"] in ("engine", "rain")][:3]
    root = tmp_path / "audio"
    rows: list[dict[str, str]] = []
    for r in trained:
        dest = root / r["file"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_corpus / r["file"], dest)
        rows.append({"file": r["file"], "group": r["group"]})
    _hum(root / "new_hum.wav")
    rows.append({"file": "new_hum.wav", "group": "industrial"})
    labels = tmp_path / "mixed.csv"
    _write_labels(labels, rows)

    code = main(["evaluate", "--labels", str(labels), "--audio-root", str(root), "--out", str(tmp_path / "r"),
                 "--birdnet", str(birdnet_dir), "--tagger", str(yamnet_dir), "--no-progress", "--no-species"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    gr = json.loads((tmp_path / "r" / "report.json").read_text())["groups"]
    assert gr["in_sample"] == "partial"
    assert {k: gr["in_sample_files"][k] for k in ("in", "out", "files_in")} == {
        "in": 3, "out": 1, "files_in": sorted(r["file"] for r in trained)}
    assert gr["out_of_sample_part"]["files"] == 1 and gr["out_of_sample_part"]["windows"] == 2  # 10 s, 5-s windows
    assert gr["in_sample_part"]["windows"] + gr["out_of_sample_part"]["windows"] == gr["windows"]
    assert "partly in-sample" in (tmp_path / "r" / "report.md").read_text()
    assert {k: v for k, v in json.loads(captured.out)["groups"]["in_sample_files"].items() if k != "by_audio"} == {
        "in": 3, "out": 1}

    # only the new recording: out-of-sample
    only_new = tmp_path / "new.csv"
    _write_labels(only_new, [rows[-1]])
    assert main(["evaluate", "--labels", str(only_new), "--audio-root", str(root), "--out", str(tmp_path / "r2"),
                 "--birdnet", str(birdnet_dir), "--tagger", str(yamnet_dir), "--no-progress", "--no-species"]) == 0
    capsys.readouterr()
    gr = json.loads((tmp_path / "r2" / "report.json").read_text())["groups"]
    assert gr["in_sample"] is False and gr["in_sample_files"]["in"] == 0 and gr["in_sample_part"]["windows"] == 0


def test_evaluate_bad_labels_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nx.wav,bird\n")
    assert main(["evaluate", "--labels", str(labels), "--out", str(tmp_path / "r")]) == 2
    assert "needs a 'file' column" in capsys.readouterr().err
    assert main(["evaluate", "--labels", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "r")]) == 2
    assert "no such labels file" in capsys.readouterr().err
    # a folder: not "no such file" (it exists) but that a labels CSV file is needed, and with which columns
    assert main(["evaluate", "--labels", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "is a folder, not a labels file" in err and "labels CSV file" in err and "'file' column" in err
    assert "no such" not in err
    assert not (tmp_path / "r").exists()
