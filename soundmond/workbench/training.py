"""Training the natural / industrial / other head: the one path both `soundmond train-head` and
`scripts/train_default_head.py` take.

`train` (the orchestrator):
1. `dataset.build_dataset`: every clip's 5-s windows through the daemon's tagger (and BirdNET when given), cached.
2. `crossval.cv_splits` + `out_of_fold` for every candidate (feature set x model) -> the comparison table.
   Feature sets the daemon cannot supply (max-pooled YAMNet blocks) are compared but never shipped.
3. The chosen candidate: the best shippable one by `crossval.selection_key`. Optionally the same candidate under the
   stricter session grouping (`session_cv`) and a nested CV of the whole selection (`nested`, see `crossval`).
   Always the same candidate under the source-held-out CV (`source_held_out_cv`, see `crossval.source_held_out`),
   with the no-training ontology rule beside it when an AudioSet ontology.json is given (`workbench.ontology`).
4. The chosen candidate is fitted on every window and written with `head.meta.save_head`: `<out>.onnx` (what the
   daemon loads) and `<out>.skops` (the training artefact), the ONNX one checked against scikit-learn on the training
   features. The head's metadata: tagger family and label count, features, what it was trained on, the training-data
   checksum, every training file's sha256 (`training_files_sha256`) and audio hash (`training_audio_sha256`:
   `workbench.audio_hash`, the decoded samples; what `evaluate` marks in-sample by) and the CV figures.

`train_corpus_head` is the corpus frontend (`scripts/train_default_head.py`): `corpus.read_corpus`, every feature set
and model compared, the session-grouped figure and the nested CV, and the report written beside the head as .json
(the shipped heads' `soundmond/heads/*.json`). `soundmond train-head` is the labels-file frontend (`train_head`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sklearn

from soundmond.config import BIRDNET_CHUNK_S, BirdConfig, TaggerConfig
from soundmond.data import GROUPS
from soundmond.head.meta import HEAD_CLASSES, HeadMeta, needs_birds, utc_now_iso
from soundmond.head.save import HeadFiles, save_head
from soundmond.models.birds import BirdnetModel
from soundmond.models.hf import HfTagger
from soundmond.models.sidecar import ModelFolderError, verify_folder
from soundmond.models.taggers import AstTagger, YamnetTagger
from soundmond.workbench.corpus import (
    Clip,
    read_corpus,
    training_audio_sha256,
    training_data_sha256,
    training_files_sha256,
)
from soundmond.workbench.crossval import (
    CV_FOLDS,
    FEATURE_SETS,
    INNER_FOLDS,
    SEED,
    TARGET,
    TrainError,
    candidate_models,
    cross_validate,
    cv_splits,
    evaluate,
    nested_cross_validate,
    out_of_fold,
    per_category_recall,
    selection_key,
    shippable,
    source_breakdown,
    source_held_out,
)
from soundmond.workbench.dataset import HOP_S, WINDOW_S, Dataset, TrainingTagger, build_dataset, window_starts
from soundmond.workbench.ontology import (
    INDUSTRIAL_BRANCHES,
    NATURAL_BRANCHES,
    NATURAL_EXCLUDED,
    Ontology,
    ontology_rule,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedHead:
    """What `train` did: the data, every candidate's CV, the chosen one, the extra figures, the written head."""

    data: Dataset
    scheme: str  # the CV of the comparison, in words
    comparison: dict[str, dict[str, Any]]  # "features/model" -> metrics (crossval.evaluate)
    oof: dict[str, npt.NDArray[np.float64]]  # "features/model" -> out-of-fold probabilities
    kind: str  # chosen features
    name: str  # chosen model
    session_cv: tuple[dict[str, Any], npt.NDArray[np.float64]] | None  # (metrics, oof) under session grouping
    nested_cv: tuple[dict[str, Any], list[str]] | None  # (metrics, choice per outer fold)
    source_cv: dict[str, Any]  # the chosen candidate and the ontology rule under the source-held-out CV
    meta: HeadMeta
    files: HeadFiles

    @property
    def best(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def cv(self) -> dict[str, Any]:
        return self.comparison[self.best]


def load_training_models(
    tagger_dir: Path, birdnet_dir: Path | None, threads: int = 2
) -> tuple[TrainingTagger, BirdnetModel | None]:
    """The tagger (YAMNet, AST or an hf folder exported with `--role tagger`, with the daemon's default mean
    pooling) and, when given, BirdNET."""
    sidecar = verify_folder(tagger_dir)
    if sidecar.family not in ("yamnet", "ast", "hf"):
        raise ModelFolderError(tagger_dir, f"is a {sidecar.family} folder, not a tagger",
                               "pass a YAMNet, AST or hf (`python -m export hf --role tagger`) folder")
    config = TaggerConfig(family=sidecar.family, path=tagger_dir, threads=threads, pooling="mean")
    tagger: TrainingTagger
    if sidecar.family == "hf":
        tagger = HfTagger(tagger_dir, config)
    else:
        tagger = AstTagger(tagger_dir, config) if sidecar.family == "ast" else YamnetTagger(tagger_dir, config)
    birds = None
    if birdnet_dir is not None:
        birds = BirdnetModel(birdnet_dir, BirdConfig(path=birdnet_dir, threads=threads))
    return tagger, birds


def train(
    clips: Sequence[Clip], tagger: TrainingTagger, birds: BirdnetModel | None, out: Path, *,
    data_name: str, training_data_sha256: str, feature_sets: Sequence[str], models: Sequence[str] | None = None,
    folds: int = CV_FOLDS, clip_folds: Sequence[int] | None = None, cache_dir: Path | None = None,
    progress: bool = True, session_cv: bool = False, nested: bool = False, ontology: Path | None = None,
) -> TrainedHead:
    """Compare, choose, fit and write the head (`out`: .onnx or .skops, the other is written beside it).

    `data_name` names the data in the head's `trained_on`; `clip_folds` are the data set's own folds (one per clip),
    else grouped `folds`-fold CV. `session_cv`, `nested`: the extra figures (see the module docstring). The chosen
    candidate is always also scored under the source-held-out CV (`source_held_out_cv`), and beside it the ontology
    rule when `ontology` (an AudioSet ontology.json) is given."""
    factories = candidate_models()
    names = list(models) if models else list(factories)
    unknown = [m for m in names if m not in factories]
    if unknown:
        raise TrainError(f"--models: unknown {unknown}; choose from {list(factories)}")
    if not any(shippable(k, n) for k in feature_sets for n in names):
        raise TrainError("no shippable candidate to choose", "include a logistic regression (logreg_C*), the only "
                         "shippable head model, and a feature set the daemon supplies")
    present = Counter(c.group for c in clips)
    if set(present) != set(GROUPS):
        raise TrainError(f"the head needs clips of all three groups {list(GROUPS)}; have {dict(present)}")

    data = build_dataset(clips, tagger, birds, cache_dir, progress=progress)
    logger.info("%d clips -> %d windows, %d source recordings, %d sessions", len(clips), data.y.size,
                len(set(data.groups)), len(set(data.sessions)))
    splits, scheme = cv_splits(data, clip_folds, folds)
    comparison: dict[str, dict[str, Any]] = {}
    oofs: dict[str, npt.NDArray[np.float64]] = {}
    for kind in feature_sets:
        x = data.features(kind)
        for name in names:
            oofs[f"{kind}/{name}"] = oof = out_of_fold(x, data.y, splits, factories[name])
            comparison[f"{kind}/{name}"] = m = evaluate(data.y, oof)
            logger.info("%s/%s: natural vs industrial %.3f, 3-class balanced %.3f, log loss %.3f", kind, name,
                        m["natural_vs_industrial"]["balanced_accuracy"], m["balanced_accuracy_3class"],
                        m["calibration"]["log_loss"])
    candidates = [(k, n) for k in feature_sets for n in names if shippable(k, n)]
    kind, name = max(candidates, key=lambda c: selection_key(comparison[f"{c[0]}/{c[1]}"]))  # first of equals
    logger.info("chosen: %s/%s", kind, name)
    x = data.features(kind)
    session = cross_validate(x, data.y, data.sessions, factories[name]) if session_cv else None
    nested_result = nested_cross_validate(data, candidates, factories) if nested else None
    source_cv = source_held_out_cv(data, x, factories[name], tagger.labels, ontology)

    model = factories[name]().fit(x, data.y)
    cv = comparison[f"{kind}/{name}"]
    birds_text = ""
    if birds is not None and needs_birds(kind):
        birds_text = (f"; BirdNET {birds.sidecar.source.id} sha256 {birds.model_sha256[:12]} "
                      f"(window chunks every {birds.stride_s:g} s)")
    meta = HeadMeta(
        tagger_family=tagger.sidecar.family,
        tagger_label_count=len(tagger.labels),
        features=kind,
        feature_dim=int(x.shape[1]),
        classes=list(HEAD_CLASSES),
        trained_on=(f"{data_name}: {len(clips)} clips, {data.y.size} windows of {WINDOW_S:g} s (hop {HOP_S:g} s), "
                    f"{len(set(data.groups))} source recordings; model {name}; tagger exported from "
                    f"{tagger.sidecar.source.id}, ONNX sha256 {tagger.model_sha256[:12]} "
                    f"(pooling {tagger.config.pooling}){birds_text}"),
        training_data_sha256=training_data_sha256,
        cv_metrics={
            "scheme": scheme,
            "accuracy_3class": cv["accuracy_3class"],
            "balanced_accuracy_3class": cv["balanced_accuracy_3class"],
            "natural_vs_industrial_balanced_accuracy": cv["natural_vs_industrial"]["balanced_accuracy"],
            "log_loss": cv["calibration"]["log_loss"],
            "ece_top_probability": cv["calibration"]["ece_top_probability"],
            "nested_natural_vs_industrial_balanced_accuracy": (
                nested_result[0]["natural_vs_industrial"]["balanced_accuracy"] if nested_result else None),
            "session_grouped_natural_vs_industrial_balanced_accuracy": (
                session[0]["natural_vs_industrial"]["balanced_accuracy"] if session else None),
            "source_held_out_natural_vs_industrial_balanced_accuracy": (
                source_cv["head"]["natural_vs_industrial"]["balanced_accuracy"] if source_cv.get("head") else None),
        },
        sklearn_version=sklearn.__version__,
        created_utc=utc_now_iso(),
        training_files_sha256=training_files_sha256(clips),
        training_audio_sha256=training_audio_sha256(clips),
    )
    files = save_head(out, model, meta, features=x)
    return TrainedHead(data, scheme, comparison, oofs, kind, name, session, nested_result, source_cv, meta, files)


SOURCE_HELD_OUT_SCHEME = (
    "source-held-out: every source data set held out whole (one test fold each: the DCASE machines, Xeno-canto, "
    "each field-recording set), except ESC-50, split into 5 folds by recording (freesound id; StratifiedGroupKFold, "
    "shuffle, seed 0); pooled over all test folds, and per source"
)


def source_held_out_cv(
    data: Dataset, x: npt.NDArray[np.float64], factory: Any, labels: Sequence[str], ontology: Path | None
) -> dict[str, Any]:
    """The source-held-out figures (`crossval.source_held_out`) of a candidate (`head`) and, given the ontology, of
    the ontology rule (`ontology_rule`: no training, so the same on every fold). `head` is None, with `problem`,
    when the data hold fewer than two source data sets."""
    result: dict[str, Any] = {"scheme": SOURCE_HELD_OUT_SCHEME}
    try:
        result["head"], oof = source_held_out(data, x, factory)
    except TrainError as exc:
        logger.warning("source-held-out CV: %s", exc)
        return {**result, "head": None, "problem": str(exc)}
    logger.info("source-held-out CV: natural vs industrial %.3f",
                result["head"]["natural_vs_industrial"]["balanced_accuracy"])
    if ontology is not None:
        proba, counts = ontology_rule(Ontology(ontology), labels, data.blocks["probabilities"])
        rule = evaluate(data.y, proba)
        rule["per_source"] = source_breakdown(data, proba)
        rule["rule"] = {"natural": f"sum of the tagger's probabilities under {list(NATURAL_BRANCHES)} minus "
                        f"{list(NATURAL_EXCLUDED)}", "industrial": f"sum under {list(INDUSTRIAL_BRANCHES)}",
                        "decision": "natural if its sum >= the industrial sum; never other", **counts,
                        "ontology": str(ontology)}
        result["ontology_rule"] = rule
        result["tagger_contradicted"] = tagger_contradicted(Ontology(ontology), labels, data, oof)
        logger.info("ontology rule (no training): natural vs industrial %.3f",
                    rule["natural_vs_industrial"]["balanced_accuracy"])
    return result


# ---------------------------------------------------------------- the corpus head (scripts/train_default_head.py)


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    ni = metrics["natural_vs_industrial"]
    return {
        "natural_vs_industrial_balanced_accuracy": ni["balanced_accuracy"],
        "natural_vs_industrial_binary_balanced_accuracy": ni["binary_balanced_accuracy"],
        "natural_recall": ni["natural_recall"],
        "industrial_recall": ni["industrial_recall"],
        "balanced_accuracy_3class": metrics["balanced_accuracy_3class"],
        "log_loss": metrics["calibration"]["log_loss"],
        "ece_top_probability": metrics["calibration"]["ece_top_probability"],
    }


def train_corpus_head(
    corpus: Path, model_dir: Path, out: Path, cache_dir: Path | None, *, birdnet_dir: Path | None = None,
    command: str = "", progress: bool = True, models: Sequence[str] | None = None,
    feature_sets: Sequence[str] = FEATURE_SETS, nested: bool = True, tagger_only: bool = False,
    ontology: Path | None = None,
) -> dict[str, Any]:
    """Train, cross-validate, pick and write the head on the corpus (`out`: .onnx or .skops, the other is written
    beside it); returns the report (also written beside it as .json).

    `tagger_only`: compare and choose among feature sets the tagger alone supplies (`TAGGER_FEATURE_SETS`) and never
    load BirdNET (`birdnet_dir` is ignored): the head for stations with `models.birds.enabled: false`.
    """
    clips = read_corpus(corpus)
    tagger, birds = load_training_models(model_dir, None if tagger_only else birdnet_dir)
    if birds is None:
        feature_sets = [k for k in feature_sets if "birdnet_embedding" not in k.split("+")]
        if tagger_only:
            logger.info("tagger-only head: comparing %s; BirdNET is not loaded", ", ".join(feature_sets))
        else:
            logger.warning("no BirdNET folder given: feature sets with BirdNET's embedding are not compared")
    if not feature_sets:
        raise TrainError("no feature set left to compare")
    result = train(clips, tagger, birds, out, data_name=corpus.name,
                   training_data_sha256=training_data_sha256(corpus, clips), feature_sets=feature_sets,
                   models=models, cache_dir=cache_dir, progress=progress, session_cv=True, nested=nested,
                   ontology=ontology)
    data, kind, name, cv = result.data, result.kind, result.name, result.cv
    assert result.session_cv is not None
    strict, strict_oof = result.session_cv
    scheme = result.scheme
    report: dict[str, Any] = {
        "head": str(out.name),
        "files": result.files.report(),
        "chosen": {"features": kind, "model": name, "needs_birdnet": needs_birds(kind)},
        "tagger_only": birds is None,
        "feature_sets_compared": list(feature_sets),
        "selection_rule": (
            "among shippable candidates (StandardScaler + LogisticRegression on features the daemon supplies), max "
            "natural-vs-industrial balanced accuracy, then 3-class balanced accuracy, then lower log loss, then the "
            "earlier (simpler) candidate; made on the same grouped CV as `cv` (so `cv` is optimistic by the "
            "selection; `nested_cv` is not)"
        ),
        "cv_scheme": scheme,
        "cv": cv,
        "cv_per_category": per_category_recall(data, result.oof[result.best]),
        "nested_cv": None if result.nested_cv is None else {
            "scheme": f"outer {scheme}; in each outer fold the selection rule is rerun by an inner "
            f"StratifiedGroupKFold({INNER_FOLDS}) on the outer training part only",
            "chosen_per_outer_fold": result.nested_cv[1],
            **result.nested_cv[0],
        },
        "source_held_out_cv": result.source_cv,
        "session_grouped_cv": {
            "scheme": f"StratifiedGroupKFold({CV_FOLDS}, shuffle, seed {SEED}), groups = session (stricter: all "
            "DCASE clips = one machine; all scikit-maad Jura files = one recorder and day; whisp = one group; "
            "ESC-50 freesound ids of one category within 10 = one group); the chosen candidate, not reselected",
            "groups": len(set(data.sessions)),
            **strict,
            "per_category": per_category_recall(data, strict_oof),
        },
        "comparison": {k: {"shippable": shippable(*k.split("/", 1)), **_summary(v)}
                       for k, v in result.comparison.items()},
        "data": {
            "corpus": str(corpus),
            "clips": len(clips),
            "windows": int(data.y.size),
            "windows_per_group": {g: int((data.y == g).sum()) for g in HEAD_CLASSES},
            "source_recordings": len(set(data.groups)),
            "sessions": len(set(data.sessions)),
            "window_s": WINDOW_S,
            "hop_s": HOP_S,
            "training_data_sha256": result.meta.training_data_sha256,
            "training_files_sha256": result.meta.training_files_sha256,
            "training_audio_sha256": result.meta.training_audio_sha256,
        },
        "tagger": {
            "family": tagger.sidecar.family,
            "model_sha256": tagger.model_sha256,
            "source": tagger.sidecar.source.id,
            "pooling": tagger.config.pooling,
        },
        "birdnet": None if birds is None else {
            "model_sha256": birds.model_sha256,
            "source": birds.sidecar.source.id,
            "chunk_overlap_s": BIRDNET_CHUNK_S - birds.stride_s,
        },
        "sklearn_version": sklearn.__version__,
        "created_utc": result.meta.created_utc,
        "command": command,
        "cv_target": {"natural_vs_industrial_balanced_accuracy": TARGET, "checked_on": ["cv", "nested_cv"]},
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return report




def tagger_contradicted(
    ontology: Ontology, labels: Sequence[str], data: Dataset, proba: npt.NDArray[np.float64]
) -> dict[str, Any]:
    """Windows whose tagger top-1 label is under "Natural sounds" / "Animal" (not pets, livestock) but which `proba`
    (the head, out of fold) calls industrial, or whose top-1 is under "Vehicle" / "Mechanisms" / "Tools" and called
    natural: where the head overrules clear tagger evidence (each listed with its true group, to be explained)."""
    natural = ontology.mask(labels, NATURAL_BRANCHES, NATURAL_EXCLUDED)
    industrial = ontology.mask(labels, ("Vehicle", "Mechanisms", "Tools"))
    top = data.blocks["probabilities"].argmax(axis=1)
    predicted = np.array(HEAD_CLASSES)[proba.argmax(axis=1)]
    starts = window_starts(data.clip)
    rows = [
        {"file": data.clips[c].file, "start_s": starts[i], "true": str(data.y[i]), "predicted": str(predicted[i]),
         "tagger_top1": labels[int(top[i])], "tagger_top1_p": round(float(data.blocks["probabilities"][i, top[i]]), 3)}
        for i, c in enumerate(data.clip)
        if (natural[top[i]] and predicted[i] == "industrial") or (industrial[top[i]] and predicted[i] == "natural")
    ]
    return {"rule": "tagger top-1 under Natural sounds / Animal (not pets, livestock) called industrial, or under "
            "Vehicle / Mechanisms / Tools called natural (source-held-out predictions)",
            "windows": len(rows), "wrong_by_true_group": sum(r["true"] != r["predicted"] for r in rows), "list": rows}


def validate_head_report(
    report_path: Path, corpus: Path, model_dir: Path, birdnet_dir: Path | None, cache_dir: Path | None, *,
    ontology: Path | None, command: str = "", progress: bool = True,
) -> dict[str, Any]:
    """Score the recipe of an already trained corpus head (its report's `chosen` features and model) under the
    source-held-out CV, with the ontology rule beside it, and record in that report (`report_path`, the head's .json)
    the figures and every training file's sha256. The head itself is not touched. Refused unless the corpus is the
    one the head was trained on (its `training_data_sha256`)."""
    try:
        report = json.loads(report_path.read_text())
        kind, name = report["chosen"]["features"], report["chosen"]["model"]
        trained_sha = report["data"]["training_data_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrainError(f"{report_path}: not a corpus head's report ({exc})",
                         "pass the .json written beside a head by scripts/train_default_head.py") from exc
    clips = read_corpus(corpus)
    if training_data_sha256(corpus, clips) != trained_sha:
        raise TrainError(f"{corpus} is not the corpus {report_path.name} was trained on (training-data checksum "
                         "differs)", "pass the corpus it was trained on, or retrain the head")
    tagger, birds = load_training_models(model_dir, birdnet_dir if needs_birds(kind) else None)
    data = build_dataset(clips, tagger, birds, cache_dir, progress=progress)
    factories = candidate_models()
    if name not in factories:
        raise TrainError(f"{report_path}: model {name!r} is not one of {list(factories)}")
    source_cv = source_held_out_cv(data, data.features(kind), factories[name], tagger.labels, ontology)
    source_cv["measured_by"] = command
    report["source_held_out_cv"] = source_cv
    report["data"]["training_files_sha256"] = training_files_sha256(clips)
    report["data"]["training_audio_sha256"] = training_audio_sha256(clips)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return source_cv


__all__ = ["SOURCE_HELD_OUT_SCHEME", "TrainedHead", "load_training_models", "source_held_out_cv", "train",
           "train_corpus_head", "validate_head_report"]
