"""`soundmond train-head` on real audio with the real YAMNet model: a labels CSV (fixtures + corpus rows) and a small
ESC-50-layout checkout built from the corpus's ESC-50 clips (its own folds); the shipped ESC-50 mapping."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
from PIL import Image

from soundmond.cli import main
from soundmond.head.loader import Head
from soundmond.workbench.train_head import DEFAULT_MAPPING, load_mapping

# The 50 ESC-50 classes (meta/esc50.csv `category`), from the data set's documentation.
ESC50_CLASSES = {
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind", "pouring_water",
    "toilet_flush", "thunderstorm",
    "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing", "brushing_teeth",
    "snoring", "drinking_sipping",
    "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening", "washing_machine",
    "vacuum_cleaner", "clock_alarm", "clock_tick", "glass_breaking",
    "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells", "airplane", "fireworks",
    "hand_saw",
}
FAST = ["--models", "logreg_C0.1,random_forest", "--no-progress"]


def test_default_mapping_covers_esc50_exactly() -> None:
    mapping = load_mapping(DEFAULT_MAPPING)
    assert len(ESC50_CLASSES) == 50
    assert set(mapping) == ESC50_CLASSES
    assert "jackhammer" not in mapping and "engine_idling" not in mapping
    industrial = {c for c, g in mapping.items() if g == "industrial"}
    assert industrial == {"airplane", "car_horn", "chainsaw", "engine", "helicopter", "siren", "train",
                          "vacuum_cleaner", "washing_machine"}
    assert {c for c, g in mapping.items() if g == "natural"} == {
        "chirping_birds", "crickets", "crow", "frog", "insects", "rain", "sea_waves", "thunderstorm", "wind"}


def _corpus_rows(shared_corpus: Path) -> list[dict[str, str]]:
    with open(shared_corpus / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _check_outputs(out: Path, report_dir: Path, features: str) -> dict[str, object]:
    head = Head.load(out.with_suffix(".skops"))  # the strict allow-list loader
    onnx_head = Head.load(out.with_suffix(".onnx"))  # what the daemon loads: both are written, whichever --out names
    assert onnx_head.meta == head.meta
    assert head.meta.features == features and head.meta.tagger_family == "yamnet"
    assert head.meta.classes == ["industrial", "natural", "other"] and len(head.meta.training_data_sha256) == 64
    assert 0.0 <= float(head.meta.cv_metrics["natural_vs_industrial_balanced_accuracy"]) <= 1.0
    report = json.loads((report_dir / "report.json").read_text())
    with Image.open(report_dir / "confusion.png") as img:
        img.verify()
    assert "](confusion.png)" in (report_dir / "report.md").read_text()
    with open(report_dir / "wrong_windows.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == report["wrong_windows"]
    assert {k.split("/")[1] for k in report["comparison"]} == {"logreg_C0.1", "random_forest"}
    cm = report["cv"]["confusion_matrix"]["rows_true_columns_predicted"]
    assert sum(map(sum, cm)) == report["data"]["windows"]
    files = report["files"]
    assert (files["onnx"], files["skops"]) == (out.with_suffix(".onnx").name, out.with_suffix(".skops").name)
    parity = files["onnx_parity"]
    assert parity["max_abs_diff"] <= 1e-9 and parity["training_feature_rows"] == report["data"]["windows"]
    # every training file's content hash is in the head (what `evaluate` checks), one per clip
    assert len(head.meta.training_files_sha256) == report["data"]["clips"]
    assert all(len(v) == 64 for v in head.meta.training_files_sha256.values())
    source = report["source_held_out_cv"]["head"]  # the source-held-out CV of the chosen head, pooled and per source
    assert sum(v["windows"] for v in source["per_source"].values()) == source["windows"] == report["data"]["windows"]
    assert source["per_clip"]["windows"] == report["data"]["clips"]  # and per clip, issue 15's unit
    assert head.meta.cv_metrics["source_held_out_natural_vs_industrial_balanced_accuracy"] == (
        source["natural_vs_industrial"]["balanced_accuracy"])
    return report


@pytest.mark.shared
def test_train_head_from_labels_csv(tmp_path: Path, shared_corpus: Path, fixture_audio: Path, yamnet_dir: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    root.mkdir()
    rows: list[dict[str, str]] = []
    with open(fixture_audio / "labels.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            shutil.copy(fixture_audio / r["file"], root / r["file"])
            rows.append(r)
    corpus = _corpus_rows(shared_corpus)
    picks = [next(r for r in corpus if r["category"] == c) for c in ("dog", "clapping", "cat", "chainsaw", "siren")]
    for r in picks:
        dest = root / r["file"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_corpus / r["file"], dest)
        rows.append(dict(r, group="") if r["category"] == "siren" else r)  # siren: group from the mapping
    rows.append({"file": "gone.flac", "group": "natural", "category": "rain"})  # a bad row: named, skipped
    labels = root / "labels.csv"
    fields = ["file", "group", "category", "original_id", "source_repo", "source_path"]
    with open(labels, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "heads" / "mine.skops"

    code = main(["train-head", "--labels", str(labels), "--out", str(out), "--tagger", str(yamnet_dir),
                 "--features", "probs", "--folds", "3", "--cache", str(tmp_path / "cache"), *FAST])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "gone.flac" in captured.err and "not found" in captured.err
    summary = json.loads(captured.out)
    assert summary["chosen"] == {"features": "probabilities", "model": "logreg_C0.1"}
    report = _check_outputs(out, tmp_path / "heads" / "mine-report", "probabilities")
    assert report["data"]["clips"] == 13 and "StratifiedGroupKFold(3" in report["cv_scheme"]
    assert report["cv_per_category"]["siren"]["group"] == "industrial"
    # the fixtures' sources are held out whole; the five ESC-50 clips are split by freesound id
    folds = report["source_held_out_cv"]["head"]["folds"]
    assert {"scikit-maad", "opensoundscape", "whisp"} <= set(folds) and "esc50:0" in folds
    assert set(report["source_held_out_cv"]["head"]["per_source"]) >= {"esc50", "whisp", "scikit-maad"}


@pytest.mark.shared
def test_train_head_from_esc50_checkout(tmp_path: Path, shared_corpus: Path, yamnet_dir: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    corpus = [r for r in _corpus_rows(shared_corpus) if r["file"].split("/")[-1].startswith("esc50_")]
    wanted = {"rain": 4, "crickets": 2, "engine": 3, "siren": 3, "dog": 1, "clapping": 1, "cat": 1, "footsteps": 1}
    mapping = load_mapping(DEFAULT_MAPPING)
    target = {c: i for i, c in enumerate(sorted(ESC50_CLASSES))}
    esc = tmp_path / "ESC-50-master"
    (esc / "audio").mkdir(parents=True)
    (esc / "meta").mkdir()
    meta_rows = []
    per_group: dict[str, int] = {}
    for category, n in wanted.items():
        for r in [r for r in corpus if r["category"] == category][:n]:
            src = r["original_id"].split(":")[1].split()[0]
            group = mapping[category]
            fold = per_group.get(group, 0) % 2 + 1  # alternate folds 1 / 2 within each group
            per_group[group] = per_group.get(group, 0) + 1
            name = f"{fold}-{src}-A-{target[category]}.wav"
            data, rate = sf.read(str(shared_corpus / r["file"]))
            sf.write(str(esc / "audio" / name), data, rate)
            meta_rows.append({"filename": name, "fold": fold, "target": target[category], "category": category,
                              "esc10": "False", "src_file": src, "take": "A"})
    with open(esc / "meta" / "esc50.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(meta_rows[0]))
        writer.writeheader()
        writer.writerows(meta_rows)
    out = tmp_path / "esc50.onnx"

    code = main(["train-head", "--labels", str(esc), "--out", str(out), "--tagger", str(yamnet_dir),
                 "--features", "both", "--no-cache", *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = _check_outputs(out, tmp_path / "esc50-report", "probabilities+embedding")
    assert report["cv_scheme"].startswith("ESC-50's own folds [1, 2]")
    assert report["data"]["kind"] == "esc50" and report["data"]["clips"] == len(meta_rows)
    assert report["data"]["windows_per_group"] == {"industrial": 6, "natural": 6, "other": 4}
    assert report["source_held_out_cv"]["head"]["folds"] == [f"esc50:{k}" for k in range(5)]


def test_train_head_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train-head", "--labels", str(tmp_path / "none.csv"), "--out", str(tmp_path / "h.skops")]) == 2
    assert "no such labels file" in capsys.readouterr().err
    (tmp_path / "ESC").mkdir()
    assert main(["train-head", "--labels", str(tmp_path / "ESC"), "--out", str(tmp_path / "h.skops")]) == 2
    assert "meta/esc50.csv not found" in capsys.readouterr().err
    assert main(["train-head", "--labels", str(tmp_path / "ESC"), "--out", str(tmp_path / "h.pkl")]) == 2
    assert "a head file ends in .onnx or .skops" in capsys.readouterr().err
    bad = tmp_path / "map.yaml"
    bad.write_text("groups:\n  natural: [rain]\n  industrial: [rain]\n")
    labels = tmp_path / "l.csv"
    labels.write_text("file,category\nx.wav,rain\n")
    assert main(["train-head", "--labels", str(labels), "--mapping", str(bad), "--out", str(tmp_path / "h.skops")]) == 2
    assert "listed under both" in capsys.readouterr().err
    assert not (tmp_path / "h.skops").exists() and not (tmp_path / "h.onnx").exists()


def test_train_head_ast_tagger_on_fixtures(tmp_path: Path, fixture_audio: Path, ast_tiny_dir: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """An AST tagger (no frame outputs): features through `tag`, the head records the AST family."""
    root = tmp_path / "data"
    shutil.copytree(fixture_audio, root)
    night = "maad_jura_forest_night_20190522_0000.flac"
    shutil.copy(root / night, root / "night_copy.flac")  # a second 'other' source: grouped CV needs two per group
    with open(root / "labels.csv", "a", newline="") as fh:
        csv.writer(fh).writerow(["night_copy.flac", "other", "quiet_background"])
    out = tmp_path / "ast.skops"
    code = main(["train-head", "--labels", str(root / "labels.csv"), "--out", str(out), "--tagger", str(ast_tiny_dir),
                 "--features", "embedding", "--folds", "2", "--models", "logreg_C0.1", "--no-cache", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    head = Head.load(out.with_suffix(".onnx"))
    assert head.meta.tagger_family == "ast" and head.meta.features == "embedding" and head.meta.feature_dim == 32
    assert Head.load(out).meta == head.meta
    assert json.loads(captured.out)["clips"] == 9
