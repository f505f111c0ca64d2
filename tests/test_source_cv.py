"""The source-held-out CV (every source data set held out whole, ESC-50 split by recording), the ontology rule, and
the figures recorded for the shipped heads."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from soundmond.head.meta import HEAD_CLASSES, HEADS_DIR
from soundmond.workbench.corpus import Clip, read_corpus, training_files_sha256
from soundmond.workbench.crossval import TrainError, clip_figures, per_clip, source_held_out_splits
from soundmond.workbench.dataset import Dataset
from soundmond.workbench.ontology import Ontology, ontology_rule


def _dataset(clips: list[Clip], windows: int = 2) -> Dataset:
    index = np.repeat(np.arange(len(clips)), windows)
    rng = np.random.default_rng(0)
    return Dataset({"probabilities": rng.random((index.size, 4)).astype(np.float32)},
                   np.array([clips[i].group for i in index]), np.array([clips[i].source for i in index]),
                   np.array([clips[i].source for i in index]), index.astype(np.int64), clips)


def _clip(n: int, group: str, source: str, dataset: str) -> Clip:
    return Clip(Path(f"/x/{n}.flac"), f"{n}.flac", group, "c", source, source, dataset)


def test_every_source_is_held_out_whole_and_esc50_by_recording() -> None:
    clips = []
    for n in range(30):  # ESC-50: 15 recordings, two takes each, all three groups
        clips.append(_clip(n, ("natural", "industrial", "other")[n // 2 % 3], f"freesound:{n // 2}", "esc50"))
    clips += [_clip(100 + n, "industrial", f"dcase:{n}", "dcase2020t2") for n in range(4)]
    clips += [_clip(200 + n, "natural", f"XC{n}", "xeno-canto") for n in range(5)]
    clips += [_clip(300, "natural", "maad:a", "scikit-maad"), _clip(301, "other", "maad:b", "scikit-maad")]
    data = _dataset(clips)

    splits, names = source_held_out_splits(data)
    assert names == ["dcase2020t2", "esc50:0", "esc50:1", "esc50:2", "esc50:3", "esc50:4", "scikit-maad",
                     "xeno-canto"]
    tested = np.concatenate([test for _, test in splits])
    assert sorted(tested.tolist()) == list(range(data.y.size))  # every window tested exactly once
    datasets = np.array([clips[i].dataset for i in data.clip])
    for (train, test), name in zip(splits, names, strict=True):
        assert not set(data.groups[train]) & set(data.groups[test])  # no recording on both sides
        if not name.startswith("esc50"):  # a whole data set, and nothing else, is the test part
            assert set(datasets[test]) == {name} and name not in set(datasets[train])
    esc_folds = [set(data.groups[test]) for (_, test), n in zip(splits, names, strict=True) if n.startswith("esc50")]
    assert sum(len(f) for f in esc_folds) == 15 and all(f for f in esc_folds)


def test_per_clip_figures_average_each_clips_windows() -> None:
    """Issue 15's unit: one call per clip from its windows' mean probabilities; "binary" takes the larger of natural
    and industrial (the rule's decision), the 3-class decision counts "other" for a natural clip as wrong."""
    clips = [_clip(0, "natural", "XC0", "xeno-canto"), _clip(1, "natural", "XC1", "xeno-canto"),
             _clip(2, "industrial", "dcase:0", "dcase2020t2"), _clip(3, "other", "maad:b", "scikit-maad")]
    data = _dataset(clips)  # two windows per clip
    n, i, o = (HEAD_CLASSES.index(g) for g in ("natural", "industrial", "other"))
    proba = np.zeros((8, 3))
    rows = [  # (window, natural, industrial, other)
        (0, 0.9, 0.1, 0.0), (1, 0.3, 0.7, 0.0),  # clip 0: mean natural 0.6: natural
        (2, 0.2, 0.1, 0.7), (3, 0.3, 0.1, 0.6),  # clip 1: "other" wins, natural still above industrial
        (4, 0.4, 0.6, 0.0), (5, 0.1, 0.9, 0.0),  # clip 2: industrial
        (6, 0.5, 0.0, 0.5), (7, 0.0, 0.0, 1.0),  # clip 3: other
    ]
    for w, pn, pi, po in rows:
        proba[w, [n, i, o]] = pn, pi, po
    assert per_clip(data, proba)[:, n] == pytest.approx([0.6, 0.25, 0.25, 0.25])
    figures = clip_figures(data, proba)
    ni = figures["natural_vs_industrial"]
    assert figures["windows"] == 4  # clips
    assert ni["natural_recall"] == 0.5 and ni["industrial_recall"] == 1.0 and ni["balanced_accuracy"] == 0.75
    assert ni["binary_balanced_accuracy"] == 1.0
    assert figures["per_source"]["xeno-canto"] == {"clips": 2, "natural_clips": 2, "natural_recall": 0.5,
                                                  "natural_binary_recall": 1.0}
    assert figures["per_source"]["scikit-maad"] == {"clips": 1, "other_clips": 1, "other_recall": 1.0}


def test_a_single_source_is_refused() -> None:
    data = _dataset([_clip(n, ("natural", "industrial")[n % 2], f"XC{n}", "xeno-canto") for n in range(4)])
    with pytest.raises(TrainError, match="at least two source data sets"):
        source_held_out_splits(data)


@pytest.mark.shared
def test_corpus_source_datasets(shared_corpus: Path) -> None:
    counts = Counter((c.dataset, c.group) for c in read_corpus(shared_corpus))
    assert counts == {("xeno-canto", "natural"): 171, ("esc50", "natural"): 45, ("esc50", "industrial"): 45,
                      ("esc50", "other"): 32, ("dcase2020t2", "industrial"): 14, ("scikit-maad", "natural"): 26,
                      ("scikit-maad", "other"): 6, ("whisp", "industrial"): 2, ("whisp", "natural"): 1,
                      ("opensoundscape", "natural"): 4, ("BirdNET-Analyzer", "natural"): 1}


@pytest.mark.shared
def test_ontology_rule_by_branch(shared_corpus: Path) -> None:
    ontology = Ontology(shared_corpus.parent / "audioset-ontology" / "ontology.json")
    labels = ["Thunderstorm", "Bird", "Dog", "Car", "Chainsaw", "Music"]
    p = np.array([[0.9, 0, 0, 0.1, 0, 0],  # thunder: natural
                  [0, 0.2, 0.9, 0.3, 0, 0],  # a pet is not nature: car wins
                  [0, 0, 0, 0, 0, 0.9]],  # neither side: natural (ties go to natural), never "other"
                 dtype=np.float32)
    proba, counts = ontology_rule(ontology, labels, p)
    assert counts == {"natural_labels": 2, "industrial_labels": 2}
    assert [HEAD_CLASSES[i] for i in proba.argmax(axis=1)] == ["natural", "industrial", "natural"]
    assert proba[0, HEAD_CLASSES.index("natural")] == pytest.approx(0.9)
    assert np.all(proba[:, HEAD_CLASSES.index("other")] == 0)
    with pytest.raises(TrainError, match="not AudioSet class names"):
        ontology_rule(ontology, ["a", "b"], np.zeros((1, 2)))


@pytest.mark.shared
@pytest.mark.parametrize("name", ["yamnet.json", "yamnet-tagger.json"])
def test_shipped_reports_hold_source_held_out_figures_and_training_hashes(shared_corpus: Path, name: str) -> None:
    report = json.loads((HEADS_DIR / name).read_text())
    assert report["data"]["training_files_sha256"] == training_files_sha256(read_corpus(shared_corpus))
    source = report["source_held_out_cv"]
    head, rule = source["head"], source["ontology_rule"]
    assert set(head["per_source"]) == {"BirdNET-Analyzer", "dcase2020t2", "esc50", "opensoundscape", "scikit-maad",
                                       "whisp", "xeno-canto"}
    assert head["windows"] == rule["windows"] == report["data"]["windows"]
    # measured, not assumed: per window with the 3-class decision (a natural window called "other" is wrong) neither
    # shipped head reaches 0.95 and the rule, which never says "other", does better; per clip on natural vs industrial
    # alone (issue 15's protocol, the target) both heads reach it
    strict = "balanced_accuracy"
    assert head["natural_vs_industrial"][strict] < rule["natural_vs_industrial"][strict] < 0.95
    assert head["per_clip"]["natural_vs_industrial"]["binary_balanced_accuracy"] >= 0.95
    assert report["cv_target"]["met"] is True


def test_target_needs_the_source_held_out_figure_too() -> None:
    from soundmond.workbench.crossval import target_met

    def figure(value: float) -> dict[str, dict[str, float]]:
        return {"natural_vs_industrial": {"balanced_accuracy": value}}

    report = {"cv": figure(0.97), "nested_cv": figure(0.96)}
    assert target_met(report)
    assert not target_met({**report, "source_held_out_cv": {"head": figure(0.83)}})
    assert target_met({**report, "source_held_out_cv": {"head": figure(0.951)}})
    assert target_met({**report, "source_held_out_cv": {"head": None, "problem": "one source"}})


@pytest.mark.shared
def test_shipped_reports_list_where_the_head_overrules_the_tagger(shared_corpus: Path) -> None:
    """Every window whose tagger top-1 is a natural label called industrial, or a Vehicle / Mechanisms / Tools label
    called natural, under the source-held-out CV, is listed with its true group and the tagger's top-1."""
    ontology = Ontology(shared_corpus.parent / "audioset-ontology" / "ontology.json")
    natural = ontology.descendants("Natural sounds") | ontology.descendants("Animal")
    machines = ontology.descendants("Vehicle") | ontology.descendants("Mechanisms") | ontology.descendants("Tools")
    listed = json.loads((HEADS_DIR / "yamnet.json").read_text())["source_held_out_cv"]["tagger_contradicted"]
    assert listed["windows"] == len(listed["list"]) > 0
    for row in listed["list"]:
        assert (row["tagger_top1"] in natural and row["predicted"] == "industrial") or (
            row["tagger_top1"] in machines and row["predicted"] == "natural")
        # each with its stated reason: right or wrong by the corpus label, and the tagger's summed evidence
        verdict = "right" if row["true"] == row["predicted"] else "wrong"
        assert row["reason"].startswith(f"{verdict}: the corpus labels it {row['true']} (")
        assert "summed evidence is natural" in row["reason"] and repr(row["tagger_top1"]) in row["reason"]
    assert listed["wrong_by_true_group"] == sum(r["true"] != r["predicted"] for r in listed["list"])
