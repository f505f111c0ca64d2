"""`soundmond evaluate` with Hugging Face models (`python -m export hf`): an hf bird model (`models.birds.family: hf`
in the config) and an hf tagger with its head, on corpus bird recordings, as with BirdNET / YAMNet: top-1, top-3,
per-species P/R/F1, the confusion matrix, the species frequency plot, in-sample marks; BirdNET's location filter is
said not to apply."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

os.environ.setdefault("USE_TF", "0")
pytest.importorskip("torch")
pytest.importorskip("optimum.exporters.onnx")

import hf_models  # noqa: E402

from soundmond.capture.audio import load_audio  # noqa: E402
from soundmond.cli import main  # noqa: E402
from soundmond.config import BirdConfig  # noqa: E402
from soundmond.identity import file_sha256  # noqa: E402
from soundmond.models.hf import HfBirdModel  # noqa: E402
from soundmond.workbench.dataset import cut_windows  # noqa: E402

pytestmark = [pytest.mark.export, pytest.mark.shared]

# made-up labels, four of them the species of corpus recordings (so a true positive is possible), one not a species
SPECIES_FILES = {
    "Amazilia yucatanensis": "audio/natural/bird_xc130831_Amazilia_yucatanensis.flac",
    "Melanitta americana": "audio/natural/bird_xc140734_Melanitta_americana.flac",
    "Aythya valisineria": "audio/natural/bird_xc169222_Aythya_valisineria.flac",
    "Archilochus colubris": "audio/natural/bird_xc195616_Archilochus_colubris.flac",
}
LABELS = (
    "Amazilia yucatanensis_Buff-bellied Hummingbird",
    "Melanitta americana_Black Scoter",
    "Aythya valisineria_Canvasback",
    "Archilochus colubris_Ruby-throated Hummingbird",
    "Turdus merula_Eurasian Blackbird",
    "Engine",
)
UNKNOWN = ("Bucephala albeola", "audio/natural/bird_xc203984_Bucephala_albeola.flac")  # not among the labels


@pytest.fixture(scope="module")
def bird_model(hf_check_audio: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval-hf")
    checkpoint = hf_models.make_checkpoints(root / "ck", ("wav2vec2",), labels=LABELS)["wav2vec2"]
    return hf_models.export(checkpoint, root / "birds", hf_check_audio)


def _labels_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "species", "group", "latitude", "longitude", "date"])
        writer.writeheader()
        writer.writerows(rows)


def test_evaluate_with_an_hf_bird_model_and_an_hf_tagger(
    bird_model: Path, hf_ast_tagger: Path, shared_corpus: Path, fixture_audio: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "audio"
    rows = []
    for species, rel in [*SPECIES_FILES.items(), UNKNOWN]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_corpus / rel, root / rel)
        rows.append({"file": rel, "species": species})
    rows[0] |= {"latitude": "27.5", "longitude": "-97.9", "date": "2010-05-01"}  # coordinates: the filter is BirdNET's
    for name, group in (("whisp_field_engine.flac", "industrial"), ("oss_birds_10s.flac", "natural")):
        shutil.copy(fixture_audio / name, root / name)
        rows.append({"file": name, "group": group})
    labels = tmp_path / "labels.csv"
    _labels_csv(labels, rows)
    # a head for the hf tagger that records one of the two group files as trained on: partly in-sample
    head = hf_models.random_hf_head(tmp_path / "head.onnx", len(hf_models.load_labels(hf_ast_tagger)),
                                    {"whisp_field_engine.flac": file_sha256(root / "whisp_field_engine.flac")})
    (tmp_path / "species.yaml").write_text("Engine: null\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"models:\n  tagger: {{family: hf, path: {hf_ast_tagger}}}\n"
        f"  birds: {{family: hf, path: {bird_model}, species_map: species.yaml}}\n  head: {{path: {head}}}\n"
    )
    out = tmp_path / "report"

    code = main(["evaluate", "--labels", str(labels), "--audio-root", str(root), "--out", str(out),
                 "--config", str(cfg), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err  # every file analysed: the species the model cannot name is said once
    assert ("1 file of 1 labelled species hf Wav2Vec2ForSequenceClassification cannot name left out of the species "
            "figures: 'Bucephala albeola' (1 file: not in hf Wav2Vec2ForSequenceClassification's labels)"
            ) in captured.err
    assert "the labels have coordinates, but BirdNET's location / season filter needs its meta model" in captured.err
    report = json.loads((out / "report.json").read_text())
    assert report["bird_model"]["family"] == "hf" and report["models"]["from"] == str(cfg)
    assert "birdnet" not in report

    sp = report["species"]
    assert sp["model"] == "hf Wav2Vec2ForSequenceClassification"
    assert sp["unknown_to_model"] == ["Bucephala albeola"]
    assert sp["left_out"] == [{"species": "Bucephala albeola", "files": 1,
                               "reason": "not in hf Wav2Vec2ForSequenceClassification's labels"}]
    u = sp["unfiltered"]
    assert u["files"] == 4 == json.loads(captured.out)["species"]["files"]
    assert 0.0 <= u["top1_accuracy"] <= u["top3_accuracy"] <= 1.0
    assert u["top1_correct"] == round(u["top1_accuracy"] * 4)
    assert {k for k, v in u["per_species"].items() if v["support"]} == set(SPECIES_FILES)
    assert set(u["per_species"]) <= {label.split("_")[0] for label in LABELS[:5]}  # never "Engine" (map: null)
    assert sum(v["predicted"] for v in u["per_species"].values()) == 4
    lf = sp["location_filter"]
    assert lf["applies"] is False and lf["files_with_coordinates"] == 1 and lf["with_filter"] is None
    assert sp["in_sample"] is None and "records no training files" in sp["in_sample_basis"]

    # each file's score is the daemon's hf scoring: max over 5-s windows of the clips' softmax
    with open(out / "species_results.csv", newline="") as fh:
        results = {r["file"]: r for r in csv.DictReader(fh)}
    model = HfBirdModel(bird_model, BirdConfig(family="hf", min_confidence=0.0), tmp_path / "species.yaml")
    rel = SPECIES_FILES["Melanitta americana"]
    samples, rate = load_audio(root / rel, 16000)
    best = np.max([model.clip_scores(w)[1].max(axis=0) for w in cut_windows(samples, rate)], axis=0)
    expected = float(best[model.scientific_names.index("Melanitta americana")])
    assert float(results[rel]["score_of_true"]) == pytest.approx(expected, abs=1e-4)
    assert sum(r["correct_top1"] == "True" for r in results.values()) == u["top1_correct"]

    md = (out / "report.md").read_text()
    assert "## Species (hf Wav2Vec2ForSequenceClassification)" in md
    assert "| species | precision | recall | F1 | support | predicted |" in md
    for species in SPECIES_FILES:
        assert f"| {species} | " in md
    assert "Location / season filter: does not apply - BirdNET's location / season filter needs its meta model" in md
    assert "- in-sample: unknown" in md
    for png in ("species_confusion.png", "species_frequency.png", "group_confusion.png"):
        assert f"]({png})" in md
        with Image.open(out / png) as img:
            assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 300

    gr = report["groups"]  # the hf tagger + its head, in-sample marks from the head's training files
    windows = {name: len(cut_windows(*load_audio(root / name))) for name in ("whisp_field_engine.flac",
                                                                                "oss_birds_10s.flac")}
    assert gr["head"]["tagger_family"] == "hf" and gr["windows"] == sum(windows.values())
    assert gr["in_sample"] == "partial"
    assert gr["in_sample_files"] == {"in": 1, "out": 1, "files_in": ["whisp_field_engine.flac"], "by_audio": 0,
                                     "files_by_audio": []}
    assert gr["in_sample_part"]["windows"] == windows["whisp_field_engine.flac"]
    assert gr["out_of_sample_part"]["windows"] == windows["oss_birds_10s.flac"] == 2
    assert "partly in-sample" in md
    with open(out / "group_errors.csv", newline="") as fh:
        errors = list(csv.DictReader(fh))
    assert len(errors) == gr["wrong_windows"]
    assert all(e["in_sample"] == str(e["file"] == "whisp_field_engine.flac") for e in errors)


def test_evaluate_flags_take_an_hf_folder_and_refuse_what_does_not_fit(
    bird_model: Path, hf_ast_tagger: Path, birdnet_dir: Path, fixture_audio: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--birds` takes an hf folder (its family from model.json); an hf tagger without a head, a bird folder as the
    tagger and a species map for BirdNET are refused with what to do."""
    shutil.copy(fixture_audio / "oss_birds_10s.flac", tmp_path / "b.flac")
    labels = tmp_path / "labels.csv"
    _labels_csv(labels, [{"file": "b.flac", "species": "Turdus merula", "group": "natural"}])
    base = ["evaluate", "--labels", str(labels), "--no-progress"]

    assert main([*base, "--out", str(tmp_path / "r1"), "--birds", str(bird_model), "--no-groups"]) == 0
    capsys.readouterr()
    sp = json.loads((tmp_path / "r1" / "report.json").read_text())["species"]
    assert sp["model"] == "hf Wav2Vec2ForSequenceClassification" and sp["unfiltered"]["files"] == 1

    assert main([*base, "--out", str(tmp_path / "r2"), "--birds", str(bird_model), "--tagger",
                 str(hf_ast_tagger)]) == 3
    err = capsys.readouterr().err
    assert "no head is shipped for the 'hf' tagger" in err
    # the hint names the key and the command that trains one, not a shipped path the user never wrote
    assert "heads/hf.onnx" not in err and "train_default_head" not in err
    assert "`soundmond train-head --labels CSV --tagger TAGGER_FOLDER --out HEAD.onnx`" in err
    assert "set models.head.path to HEAD.onnx (evaluate: --head HEAD.onnx)" in err
    # ... and the hint can be followed: train-head takes the hf tagger, evaluate takes the head
    head = tmp_path / "hf-head.onnx"
    train = tmp_path / "train"
    train.mkdir()
    rows = [{"file": n, "group": g} for n, g in (("whisp_field_engine.flac", "industrial"),
                                                  ("whisp_field_horn.flac", "industrial"),
                                                  ("oss_birds_10s.flac", "natural"),
                                                  ("whisp_field_wind.flac", "natural"))]
    for row in rows:
        shutil.copy(fixture_audio / row["file"], train / row["file"])
    night, rate = sf.read(fixture_audio / hf_models.NIGHT, dtype="float32")
    for i in range(2):  # two quiet recordings as "other": grouped CV needs two sources per group
        sf.write(train / f"night{i}.wav", night[i * 5 * rate:(i + 1) * 5 * rate], rate)
        rows.append({"file": f"night{i}.wav", "group": "other"})
    with open(train / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "group"])
        writer.writeheader()
        writer.writerows(rows)
    code = main(["train-head", "--labels", str(train / "labels.csv"), "--out", str(head), "--tagger",
                 str(hf_ast_tagger), "--features", "probs", "--folds", "2", "--models", "logreg_C0.1", "--no-cache",
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err[-2000:]
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "r2b"), "--birds", str(bird_model), "--tagger", str(hf_ast_tagger),
                 "--head", str(head)]) == 0, capsys.readouterr().err[-2000:]
    report = json.loads((tmp_path / "r2b" / "report.json").read_text())
    assert report["groups"]["head"]["tagger_family"] == "hf" and report["groups"]["windows"] == 2
    assert main([*base, "--out", str(tmp_path / "r3"), "--birds", str(bird_model), "--tagger",
                 str(bird_model)]) == 3
    assert "exported as a birds model but --tagger uses it as tagger" in capsys.readouterr().err
    (tmp_path / "map.yaml").write_text("x: null\n")
    assert main([*base, "--out", str(tmp_path / "r4"), "--birds", str(birdnet_dir), "--species-map",
                 str(tmp_path / "map.yaml"), "--no-groups"]) == 2
    assert "is a BirdNET folder: its labels name their species already" in capsys.readouterr().err


def test_evaluate_says_once_why_labelled_species_are_left_out_and_exits_0(
    bird_model: Path, fixture_audio: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A species the species map sets to null is left out because of the map (not "not in the label list"), and
    labelled species the model cannot name are one stderr line, not one per file: every file was analysed (exit 0)."""
    for i in range(3):
        shutil.copy(fixture_audio / "oss_birds_10s.flac", tmp_path / f"b{i}.flac")
    labels = tmp_path / "labels.csv"
    _labels_csv(labels, [{"file": "b0.flac", "species": "Turdus merula"},
                         {"file": "b1.flac", "species": "Turdus merula"},
                         {"file": "b2.flac", "species": "Amazilia yucatanensis"},
                         {"file": "b2.flac", "species": "Bucephala albeola"}])
    species_map = tmp_path / "species.yaml"
    species_map.write_text("Turdus merula_Eurasian Blackbird: null\n")
    out = tmp_path / "r"
    code = main(["evaluate", "--labels", str(labels), "--out", str(out), "--birds", str(bird_model),
                 "--species-map", str(species_map), "--no-groups", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    said = [line for line in captured.err.splitlines() if "left out" in line]
    assert said == [
        "soundmond evaluate: 3 files of 2 labelled species hf Wav2Vec2ForSequenceClassification cannot name left out "
        "of the species figures: 'Bucephala albeola' (1 file: not in hf Wav2Vec2ForSequenceClassification's labels); "
        f"'Turdus merula' (2 files: the species map {species_map} sets its label 'Turdus merula_Eurasian Blackbird' "
        "to null) (all of them: report.json species.left_out)"]
    assert "label list" not in captured.err
    summary = json.loads(captured.out)
    assert summary["problems"] == 0 and summary["species_left_out_files"] == 3 and summary["species"]["files"] == 1
    md = (out / "report.md").read_text()
    assert "'Turdus merula_Eurasian Blackbird' to null" in md


def test_evaluate_help_has_an_hf_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert "examples:\n  soundmond evaluate --labels" in text
    assert "soundmond evaluate --labels labels.csv --birds models/dima806 --species-map species.yaml" in text


def test_evaluate_says_how_to_set_the_stride_it_has_no_flag_for(
    hf_exports: dict[str, Path], fixture_audio: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """The tiny AST's 1.015-s clip is shorter than the 3-s stride: without --config the hint names --config FILE
    (evaluate has no stride flag); with one, the key in that file."""
    shutil.copy(fixture_audio / "oss_birds_10s.flac", tmp_path / "b.flac")
    labels = tmp_path / "labels.csv"
    _labels_csv(labels, [{"file": "b.flac", "species": "Turdus merula"}])
    ast = hf_exports["audio-spectrogram-transformer"]
    base = ["evaluate", "--labels", str(labels), "--out", str(tmp_path / "r"), "--no-groups", "--no-progress"]
    assert main([*base, "--birds", str(ast)]) == 2
    err = capsys.readouterr().err
    assert "3 s is longer than the hf model's 1.015-s clip" in err
    assert ("pass --config FILE whose models.birds has stride_s: 1.015 (or less); without --config it is 3 s"
            in err)
    assert "set models.birds.stride_s to at most" not in err
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"models:\n  birds: {{family: hf, path: {ast}, stride_s: 2.0}}\n")
    assert main([*base, "--config", str(cfg)]) == 2
    assert f"set models.birds.stride_s to at most 1.015 in {cfg}" in capsys.readouterr().err
    cfg.write_text(f"models:\n  birds: {{family: hf, path: {ast}, stride_s: 1.0}}\n")
    assert main([*base, "--config", str(cfg)]) == 0, capsys.readouterr().err
