"""Cross-validation, candidate selection and metrics of the natural / industrial / other head.

`cv_splits`: grouped, stratified k-fold CV (`StratifiedGroupKFold`, fixed seed; clips of one source recording never
straddle folds), or a data set's own folds (ESC-50). Every candidate (feature set x model from `candidate_models`) is
scored on out-of-fold probabilities; the shipped candidate is the best *shippable* one (`shippable`: a StandardScaler +
LogisticRegression on a feature set the daemon supplies) by `selection_key`. Because that choice is made on the same
CV it reports, `nested_cross_validate` redoes the selection in every outer fold by an inner grouped CV on the outer
training part only and scores the chosen candidate on the outer test part: the estimate of the whole procedure.
`source_held_out` scores a candidate the way a new site would see it: every source data set (`Clip.dataset`: the DCASE
machines, Xeno-canto, each field-recording set) is one test fold held out whole, except ESC-50, which holds most of
the industrial examples and is split into `ESC50_GROUPS` folds by recording (freesound id); pooled and per source
(`source_breakdown`). Grouped CV shares sources (recording styles, machines, sites) between folds and overstates it.

Metric definitions (`evaluate`), per 5-s window:
- `balanced_accuracy_3class`: sklearn's balanced accuracy over natural / industrial / other.
- `natural_vs_industrial.balanced_accuracy` (the target, >= 0.95): the 3-class head's own predictions on the
  windows whose true group is natural or industrial; the mean of the natural and the industrial recall, where a
  window predicted as "other" counts as wrong. This is how the daemon's head is used, and stricter than a binary
  re-decision.
- `natural_vs_industrial.binary_balanced_accuracy`: the same windows, deciding only between natural and industrial
  (argmax of those two probabilities): what a natural / industrial ratio computed from the two probabilities sees.
- `calibration`: out-of-fold log loss, multi-class Brier score, and the expected calibration error of the top
  probability (10 equal-width bins): whether "0.9 natural" is right about 9 times in 10.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, log_loss, precision_recall_fscore_support
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from soundmond.errors import HintedError
from soundmond.head.meta import HEAD_CLASSES, feature_parts
from soundmond.workbench.corpus import ESC50
from soundmond.workbench.dataset import Dataset

logger = logging.getLogger(__name__)

CV_FOLDS = 5
INNER_FOLDS = 4
SEED = 0
TARGET = 0.95  # natural-vs-industrial balanced accuracy the shipped head must reach (grouped, nested, source-held-out)

# Feature sets compared ("+"-joined blocks of `dataset.BLOCKS`).
FEATURE_SETS: tuple[str, ...] = (
    "probabilities",
    "probabilities_max",
    "probabilities+probabilities_max",
    "embedding",
    "embedding+embedding_max",
    "probabilities+embedding",
    "birdnet_embedding",
    "probabilities+birdnet_embedding",
    "embedding+birdnet_embedding",
    "probabilities+embedding+birdnet_embedding",
)
# The feature sets a tagger alone supplies (no BirdNET block): the candidates of the tagger-only head
# (`soundmond/heads/<family>-tagger.onnx`, used when `models.birds.enabled` is false).
TAGGER_FEATURE_SETS: tuple[str, ...] = tuple(k for k in FEATURE_SETS if "birdnet_embedding" not in k.split("+"))
SHIPPABLE_MODEL_PREFIX = "logreg"  # the head loader's allow-list holds StandardScaler + LogisticRegression only

Splits = list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]


class TrainError(HintedError):
    """Bad usage or unusable training data (exit 2)."""


LOGREG_C: tuple[float, ...] = (1.0, 0.1, 0.01, 0.001)


def candidate_models(seed: int = SEED) -> dict[str, Callable[[], Any]]:
    """Model name -> factory of an unfitted estimator. Logistic regressions first (the shippable head)."""
    def logreg(c: float) -> Callable[[], Any]:
        return lambda: make_pipeline(
            StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=5000, random_state=seed)
        )

    models: dict[str, Callable[[], Any]] = {f"logreg_C{c:g}": logreg(c) for c in LOGREG_C}
    models["svm_rbf"] = lambda: CalibratedClassifierCV(  # Platt scaling on inner (ungrouped) folds
        make_pipeline(StandardScaler(), SVC(C=1.0, kernel="rbf", class_weight="balanced")), ensemble=False
    )
    models["random_forest"] = lambda: RandomForestClassifier(
        n_estimators=300, class_weight="balanced", min_samples_leaf=2, random_state=seed, n_jobs=1
    )
    return models


def shippable(kind: str, model: str) -> bool:
    """A candidate the daemon can run: every feature block is one it supplies, and a logistic-regression head."""
    try:
        feature_parts(kind)
    except ValueError:
        return False
    return model.startswith(SHIPPABLE_MODEL_PREFIX)


def calibration(y_true: npt.NDArray[np.str_], proba: npt.NDArray[np.float64], bins: int = 10) -> dict[str, float]:
    """Log loss, multi-class Brier score and expected calibration error (top probability, equal-width bins)."""
    proba = np.asarray(proba, dtype=np.float64)
    proba = proba / proba.sum(axis=1, keepdims=True)  # float32 models' rows sum to 1 only to ~1e-7
    onehot = (y_true[:, None] == np.array(HEAD_CLASSES)[None, :]).astype(np.float64)
    top = proba.max(axis=1)
    correct = np.array(HEAD_CLASSES)[proba.argmax(axis=1)] == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(top, edges[1:-1]), 0, bins - 1)
    ece = sum(
        abs(float(correct[which == b].mean()) - float(top[which == b].mean())) * float((which == b).mean())
        for b in range(bins)
        if (which == b).any()
    )
    return {
        "log_loss": float(log_loss(y_true, proba, labels=HEAD_CLASSES)),
        "brier": float(np.mean(np.sum((proba - onehot) ** 2, axis=1))),
        "ece_top_probability": float(ece),
        "mean_top_probability": float(top.mean()),
        "accuracy": float(correct.mean()),
    }


def evaluate(y_true: npt.NDArray[np.str_], proba: npt.NDArray[np.float64]) -> dict[str, Any]:
    """Metrics of [n, 3] probabilities (HEAD_CLASSES order) against true groups; see the module docstring."""
    classes = np.array(HEAD_CLASSES)
    y_pred = classes[np.argmax(proba, axis=1)]
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=HEAD_CLASSES, zero_division=0)
    ni = np.isin(y_true, ["natural", "industrial"])
    # a group without windows has no recall (None), and then there is no natural-vs-industrial balanced accuracy
    recalls = [float(np.mean(y_pred[ni & (y_true == g)] == g)) if (ni & (y_true == g)).any() else None
               for g in ("natural", "industrial")]
    both = None not in recalls
    i_nat, i_ind = HEAD_CLASSES.index("natural"), HEAD_CLASSES.index("industrial")
    binary_pred = np.where(proba[ni, i_nat] >= proba[ni, i_ind], "natural", "industrial")
    return {
        "windows": int(y_true.size),
        # sklearn's balanced accuracy (the mean recall over the classes present), also when only one is present
        "balanced_accuracy_3class": float(np.mean([np.mean(y_pred[y_true == c] == c) for c in HEAD_CLASSES
                                                   if (y_true == c).any()])),
        "accuracy_3class": float(np.mean(y_true == y_pred)),
        "natural_vs_industrial": {
            "balanced_accuracy": float(np.mean([r for r in recalls if r is not None])) if both else None,
            "natural_recall": recalls[0],
            "industrial_recall": recalls[1],
            "binary_balanced_accuracy": float(balanced_accuracy_score(y_true[ni], binary_pred)) if both else None,
            "windows": int(ni.sum()),
        },
        "confusion_matrix": {
            "labels": HEAD_CLASSES,
            "rows_true_columns_predicted": confusion_matrix(y_true, y_pred, labels=HEAD_CLASSES).tolist(),
        },
        "per_class": {
            c: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(support[k])}
            for k, c in enumerate(HEAD_CLASSES)
        },
        "calibration": calibration(y_true, proba),
    }


def grouped_splits(
    y: npt.NDArray[np.str_], groups: npt.NDArray[np.str_], folds: int = CV_FOLDS, seed: int = SEED
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """StratifiedGroupKFold splits (shuffled, fixed seed); checks that no group is on both sides."""
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = []
    for train, test in splitter.split(np.zeros(y.size), y, groups):
        if set(groups[train]) & set(groups[test]):  # pragma: no cover - guaranteed by StratifiedGroupKFold
            raise RuntimeError("a group is in both the training and the test fold")
        splits.append((train, test))
    return splits


def out_of_fold(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.str_],
    splits: Sequence[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]],
    factory: Callable[[], Any],
) -> npt.NDArray[np.float64]:
    """Out-of-fold probabilities [n, 3] (`HEAD_CLASSES` order). A group missing from a training part (possible when
    a whole source is held out) gets probability 0 on that fold; a training part with a single group is an error."""
    oof = np.zeros((y.size, len(HEAD_CLASSES)), dtype=np.float64)
    for train, test in splits:
        present = sorted(set(y[train]))
        if len(present) < 2:
            raise TrainError(f"a training part holds only {present}: the held-out part holds every other group")
        model = factory().fit(x[train], y[train])
        proba = model.predict_proba(x[test])
        for j, c in enumerate(HEAD_CLASSES):
            oof[test, j] = proba[:, list(model.classes_).index(c)] if c in model.classes_ else 0.0
    return oof


def cross_validate(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.str_],
    groups: npt.NDArray[np.str_],
    factory: Callable[[], Any],
    folds: int = CV_FOLDS,
    seed: int = SEED,
) -> tuple[dict[str, Any], npt.NDArray[np.float64]]:
    """Grouped stratified k-fold CV; returns (metrics, out-of-fold probabilities [n, 3])."""
    oof = out_of_fold(x, y, grouped_splits(y, groups, folds, seed), factory)
    return evaluate(y, oof), oof


def selection_key(metrics: dict[str, Any]) -> tuple[float, float, float]:
    """Higher is better: natural-vs-industrial balanced accuracy, then 3-class balanced accuracy, then -log loss."""
    return (
        round(metrics["natural_vs_industrial"]["balanced_accuracy"], 4),
        round(metrics["balanced_accuracy_3class"], 4),
        -round(metrics["calibration"]["log_loss"], 4),
    )


def select(
    data: Dataset,
    rows: npt.NDArray[np.int64],
    candidates: Sequence[tuple[str, str]],
    factories: dict[str, Callable[[], Any]],
    folds: int,
) -> tuple[tuple[str, str], dict[tuple[str, str], dict[str, Any]]]:
    """The best candidate by grouped CV restricted to `rows` (ties: the earlier candidate, i.e. simpler)."""
    y, groups = data.y[rows], data.groups[rows]
    splits = grouped_splits(y, groups, folds)
    scores = {}
    for kind, name in candidates:
        scores[(kind, name)] = evaluate(y, out_of_fold(data.features(kind)[rows], y, splits, factories[name]))
    best = max(candidates, key=lambda c: selection_key(scores[c]))  # max keeps the first of equals
    return best, scores


def nested_cross_validate(
    data: Dataset,
    candidates: Sequence[tuple[str, str]],
    factories: dict[str, Callable[[], Any]],
    folds: int = CV_FOLDS,
    inner_folds: int = INNER_FOLDS,
) -> tuple[dict[str, Any], list[str]]:
    """Outer grouped CV of the whole selection procedure (inner grouped CV on each outer training part)."""
    oof = np.zeros((data.y.size, len(HEAD_CLASSES)), dtype=np.float64)
    chosen = []
    for k, (train, test) in enumerate(grouped_splits(data.y, data.groups, folds)):
        (kind, name), _ = select(data, train, candidates, factories, inner_folds)
        chosen.append(f"{kind}/{name}")
        logger.info("nested CV outer fold %d: inner CV chose %s/%s", k + 1, kind, name)
        x = data.features(kind)
        model = factories[name]().fit(x[train], data.y[train])
        order = [list(model.classes_).index(c) for c in HEAD_CLASSES]
        oof[test] = model.predict_proba(x[test])[:, order]
    return evaluate(data.y, oof), chosen


def per_category_recall(data: Dataset, proba: npt.NDArray[np.float64]) -> dict[str, dict[str, Any]]:
    """Out-of-fold share of each corpus category's windows predicted as its group (where the errors are)."""
    predicted = np.array(HEAD_CLASSES)[np.argmax(proba, axis=1)]
    categories = np.array([data.clips[i].category for i in data.clip])
    report: dict[str, dict[str, Any]] = {}
    for category in sorted(set(categories)):
        rows = categories == category
        wrong = predicted[rows][predicted[rows] != data.y[rows]]
        report[category] = {
            "group": str(data.y[rows][0]),
            "windows": int(rows.sum()),
            "recall": float(np.mean(predicted[rows] == data.y[rows])),
            "predicted_instead": {g: int((wrong == g).sum()) for g in HEAD_CLASSES if (wrong == g).any()},
        }
    return report


def cv_splits(data: Dataset, clip_folds: Sequence[int] | None, folds: int = CV_FOLDS) -> tuple[Splits, str]:
    """The CV splits and their description: the data set's own folds (one per clip), else grouped stratified k-fold
    with k at most the number of source recordings of the smallest group."""
    if clip_folds is not None:
        fold_per_window = np.array([clip_folds[i] for i in data.clip])
        values = sorted(int(v) for v in set(fold_per_window))
        if len(values) < 2:
            raise TrainError("the ESC-50 data holds a single fold: cross-validation needs at least two")
        splits = [(np.flatnonzero(fold_per_window != f), np.flatnonzero(fold_per_window == f)) for f in values]
        return splits, f"ESC-50's own folds {values} (clips of one freesound source share a fold)"
    per_class = {g: len(set(data.groups[data.y == g])) for g in sorted(set(data.y))}
    k = min(folds, min(per_class.values()))
    if k < 2:
        raise TrainError(f"every group needs at least 2 source recordings for grouped CV (have {per_class})")
    return grouped_splits(data.y, data.groups, k), (
        f"StratifiedGroupKFold({k}, shuffle, seed {SEED}), groups = source recording")


ESC50_GROUPS = 5  # ESC-50 holds most industrial examples: split into this many groups of recordings, not held out whole


def source_held_out_splits(
    data: Dataset, esc50_groups: int = ESC50_GROUPS, seed: int = SEED
) -> tuple[Splits, list[str]]:
    """Source-held-out CV: every source data set (`Clip.dataset`) is one test fold, held out whole, except ESC-50,
    which is split into `esc50_groups` folds by recording (freesound id; StratifiedGroupKFold, fixed seed). Returns
    the splits and each fold's name ("dcase2020t2", "esc50:1", ...). What a new site sees: no recording style, machine
    or site of the test fold is in its training part."""
    datasets = np.array([data.clips[i].dataset or "other" for i in data.clip], dtype=object)
    fold = datasets.copy()
    esc = np.flatnonzero(datasets == ESC50)
    if esc.size:
        k = min(esc50_groups, len(set(data.groups[esc])))
        if k >= 2:
            recordings_per_group = min(len(set(data.groups[esc][data.y[esc] == g])) for g in set(data.y[esc]))
            splitter: StratifiedGroupKFold | GroupKFold = (  # stratified when every group has k recordings
                StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed) if recordings_per_group >= k
                else GroupKFold(n_splits=k))
            for n, (_, test) in enumerate(splitter.split(np.zeros(esc.size), data.y[esc], data.groups[esc])):
                fold[esc[test]] = f"{ESC50}:{n}"
    names = sorted(set(fold))
    if len(names) < 2:
        raise TrainError(f"source-held-out CV needs at least two source data sets, have {names}",
                         "add a `dataset` column naming where each clip comes from")
    splits = [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in names]
    for train, test in splits:
        if set(data.groups[train]) & set(data.groups[test]):
            raise RuntimeError("a source recording is in both the training and the test part")
    return splits, names


def source_breakdown(data: Dataset, proba: npt.NDArray[np.float64]) -> dict[str, dict[str, Any]]:
    """Per source data set (ESC-50's folds pooled): windows and the recall of natural and industrial (the
    natural-vs-industrial balanced accuracy where the source holds both; "other" predicted counts as wrong)."""
    datasets = np.array([data.clips[i].dataset or "other" for i in data.clip])
    predicted = np.array(HEAD_CLASSES)[np.argmax(proba, axis=1)]
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(datasets)):
        rows = datasets == name
        entry: dict[str, Any] = {"windows": int(rows.sum())}
        recalls = {}
        for g in ("natural", "industrial", "other"):
            sel = rows & (data.y == g)
            if sel.any():
                entry[f"{g}_windows"] = int(sel.sum())
                entry[f"{g}_recall"] = recalls[g] = float(np.mean(predicted[sel] == g))
        entry["natural_vs_industrial_balanced_accuracy"] = (
            float(np.mean([recalls["natural"], recalls["industrial"]]))
            if "natural" in recalls and "industrial" in recalls else None)
        out[name] = entry
    return out


def per_clip(data: Dataset, proba: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """[clips, 3]: each clip's windows' probabilities averaged: one call per clip, the unit of issue 15's figures."""
    n = len(data.clips)
    out = np.zeros((n, proba.shape[1]))
    np.add.at(out, data.clip, proba)
    return out / np.bincount(data.clip, minlength=n)[:, None]


def clip_figures(data: Dataset, proba: npt.NDArray[np.float64]) -> dict[str, Any]:
    """`evaluate` per clip (`per_clip`), and per source data set the clips and their recalls: with the 3-class
    decision ("other" for a natural or industrial clip is wrong) and with the larger of the natural and industrial
    probabilities alone (`binary`, the ontology rule's own decision, which never says "other")."""
    y = np.array([c.group for c in data.clips])
    proba_clip = per_clip(data, proba)
    metrics = evaluate(y, proba_clip)
    predicted = np.array(HEAD_CLASSES)[proba_clip.argmax(axis=1)]
    k_nat, k_ind = HEAD_CLASSES.index("natural"), HEAD_CLASSES.index("industrial")
    binary = np.where(proba_clip[:, k_nat] >= proba_clip[:, k_ind], "natural", "industrial")
    datasets = np.array([c.dataset or "other" for c in data.clips])
    per_source: dict[str, dict[str, Any]] = {}
    for name in sorted(set(datasets)):
        entry: dict[str, Any] = {"clips": int((datasets == name).sum())}
        for g in HEAD_CLASSES:
            rows = (datasets == name) & (y == g)
            if rows.any():
                entry[f"{g}_clips"] = int(rows.sum())
                entry[f"{g}_recall"] = float(np.mean(predicted[rows] == g))
                if g != "other":
                    entry[f"{g}_binary_recall"] = float(np.mean(binary[rows] == g))
        per_source[name] = entry
    metrics["per_source"] = per_source
    return metrics


def source_held_out(
    data: Dataset, x: npt.NDArray[np.float64], factory: Callable[[], Any]
) -> tuple[dict[str, Any], npt.NDArray[np.float64]]:
    """The source-held-out CV of one candidate: (metrics pooled over every test fold + `per_source`, oof)."""
    splits, names = source_held_out_splits(data)
    oof = out_of_fold(x, data.y, splits, factory)
    metrics = evaluate(data.y, oof)
    metrics["folds"] = names
    metrics["per_source"] = source_breakdown(data, oof)
    metrics["per_clip"] = clip_figures(data, oof)
    return metrics, oof


def target_met(report: dict[str, Any]) -> bool:
    """The target holds on the chosen head's CV, on the nested CV of the selection when it was run, and on the
    source-held-out CV when the report holds it (the figure that predicts a new site)."""
    scores = [report["cv"]["natural_vs_industrial"]["balanced_accuracy"]]
    if report.get("nested_cv"):
        scores.append(report["nested_cv"]["natural_vs_industrial"]["balanced_accuracy"])
    if (report.get("source_held_out_cv") or {}).get("head"):
        scores.append(report["source_held_out_cv"]["head"]["natural_vs_industrial"]["balanced_accuracy"])
    return min(scores) >= TARGET


__all__ = ["CV_FOLDS", "FEATURE_SETS", "INNER_FOLDS", "SEED", "TAGGER_FEATURE_SETS", "TARGET", "Splits",
           "TrainError", "ESC50_GROUPS", "calibration", "candidate_models", "clip_figures", "cross_validate",
           "cv_splits", "evaluate",
           "grouped_splits", "nested_cross_validate", "out_of_fold", "per_category_recall", "per_clip", "select",
           "selection_key", "shippable", "source_breakdown", "source_held_out", "source_held_out_splits",
           "target_met"]
