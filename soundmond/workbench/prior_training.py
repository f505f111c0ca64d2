"""Training the shipped corpus head as an ontology-prior head (`workbench.prior_head`), judged by source-held-out CV.

`train_prior_corpus_head` (what `scripts/train_default_head.py` runs):
1. `dataset.build_dataset`: the corpus's 5-s windows through the daemon's tagger (and BirdNET, for the previous
   recipe's figure only), cached.
2. The headline figure: the source-held-out CV (`crossval.source_held_out_splits`: each source data set held out
   whole, ESC-50 in 5 folds by freesound id) of the *whole procedure*: in every outer fold the head's parameters are
   chosen (`prior_head.choose`: leave-one-source-out CV of the outer training part only) and the chosen head predicts
   the held-out source. Pooled and per source, natural-vs-industrial and 3-class.
3. Beside it, under the same folds: the ontology rule (no training), the previous shipped recipe (a logistic
   regression on the previous head's features, refitted in each fold) and every grid point with fixed parameters
   (optimistic by the selection: for the table only).
4. The grouped 5-fold CV (source recordings kept together), its nested version and the session-grouped figure, as for
   the previous heads (`cv`, `nested_cv`, `session_grouped_cv`).
5. The head's parameters chosen on the whole corpus, fitted on every window, folded into a StandardScaler +
   LogisticRegression on the `probabilities` block (`OntologyPriorHead.to_pipeline`) and written with
   `head.save.save_head`; the report (.json beside it) as `training.train_corpus_head` writes it, plus `recipe`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sklearn

from soundmond.head.meta import HEAD_CLASSES, HeadMeta, utc_now_iso
from soundmond.head.save import save_head
from soundmond.workbench.corpus import (
    read_corpus,
    training_audio_sha256,
    training_data_sha256,
    training_files_sha256,
)
from soundmond.workbench.crossval import (
    CV_FOLDS,
    SEED,
    TARGET,
    TrainError,
    candidate_models,
    clip_figures,
    evaluate,
    grouped_splits,
    out_of_fold,
    per_category_recall,
    source_breakdown,
    source_held_out_splits,
)
from soundmond.workbench.dataset import HOP_S, WINDOW_S, Dataset, build_dataset, window_starts
from soundmond.workbench.ontology import (
    INDUSTRIAL_BRANCHES,
    NATURAL_BRANCHES,
    NATURAL_EXCLUDED,
    Ontology,
    ontology_rule,
)
from soundmond.workbench.prior_head import (
    GRID,
    OTHER_BRANCHES,
    OntologyMatrices,
    OntologyPriorHead,
    calibrate,
    choose,
    nested_source_held_out,
    oof_proba,
    prior_factory,
)
from soundmond.workbench.training import SOURCE_HELD_OUT_SCHEME, load_training_models

logger = logging.getLogger(__name__)

PREVIOUS_RECIPE = ("probabilities+embedding+birdnet_embedding", "logreg_C0.1")  # the head shipped before this one
PREVIOUS_TAGGER_RECIPE = ("probabilities+embedding", "logreg_C0.01")
FEATURES = "probabilities"
MODEL_NAME = "ontology_prior"


def source_figures(data: Dataset, proba: npt.NDArray[np.float64]) -> dict[str, Any]:
    """Per window (`evaluate`, `per_source`) and per clip (`per_clip`: `clip_figures`)."""
    metrics = evaluate(data.y, proba)
    metrics["per_source"] = source_breakdown(data, proba)
    metrics["per_clip"] = clip_figures(data, proba)
    return metrics


def target_figure(metrics: dict[str, Any]) -> float:
    """The figure the 0.95 target is checked on (issue 15's protocol, as its own figures were measured): per clip,
    natural vs industrial balanced accuracy with the larger of the two probabilities (the rule's decision)."""
    return float(metrics["per_clip"]["natural_vs_industrial"]["binary_balanced_accuracy"])


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    ni = metrics["natural_vs_industrial"]
    return {"natural_vs_industrial_balanced_accuracy": ni["balanced_accuracy"],
            "natural_recall": ni["natural_recall"], "industrial_recall": ni["industrial_recall"],
            "natural_vs_industrial_binary_balanced_accuracy": ni["binary_balanced_accuracy"],
            "balanced_accuracy_3class": metrics["balanced_accuracy_3class"],
            **({"per_clip": {k: metrics["per_clip"]["natural_vs_industrial"][k]
                             for k in ("balanced_accuracy", "binary_balanced_accuracy")}
                | {"balanced_accuracy_3class": metrics["per_clip"]["balanced_accuracy_3class"]}}
               if "per_clip" in metrics else {}),
            "log_loss": metrics["calibration"]["log_loss"],
            "ece_top_probability": metrics["calibration"]["ece_top_probability"],
            **({"per_source": {k: {f: v for f, v in e.items() if f.endswith("recall") or f.startswith("natural_vs")}
                               for k, e in metrics["per_source"].items()}} if "per_source" in metrics else {})}


def contradicted_with_reasons(
    ontology: Ontology, labels: Sequence[str], data: Dataset, proba: npt.NDArray[np.float64],
    matrices: OntologyMatrices,
) -> dict[str, Any]:
    """The windows whose tagger top-1 is under "Natural sounds" / "Animal" (not pets, livestock) but which the head
    (out of fold) calls industrial, or under "Vehicle" / "Mechanisms" / "Tools" and called natural, each with the
    reason: the tagger's summed evidence on each side (the head follows the sums, not the single top label) and
    whether the corpus label agrees with the head."""
    natural = ontology.mask(labels, NATURAL_BRANCHES, NATURAL_EXCLUDED)
    machines = ontology.mask(labels, ("Vehicle", "Mechanisms", "Tools"))
    p = data.blocks["probabilities"].astype(np.float64)
    top = p.argmax(axis=1)
    sums = p @ matrices.sides
    predicted = np.array(HEAD_CLASSES)[proba.argmax(axis=1)]
    starts = window_starts(data.clip)
    rows = []
    for i, c in enumerate(data.clip):
        if not ((natural[top[i]] and predicted[i] == "industrial") or (machines[top[i]] and predicted[i] == "natural")):
            continue
        s = {g: float(sums[i, k]) for k, g in enumerate(HEAD_CLASSES)}
        clip = data.clips[c]
        sums_agree = s[str(predicted[i])] > max(s[g] for g in ("natural", "industrial") if g != predicted[i])
        evidence = (f"the tagger's summed evidence is natural {s['natural']:.2f} vs industrial {s['industrial']:.2f} "
                    f"(other {s['other']:.2f}) against its single top label {labels[int(top[i])]!r} "
                    f"({p[i, top[i]]:.2f}): " + (
                        "the head follows the sums over the whole ontology branches" if sums_agree else
                        "the sums lean the other way, and the head's correction (learnt on the other sources) "
                        "outweighed them"))
        verdict = (f"right: the corpus labels it {clip.group} ({clip.category})" if predicted[i] == data.y[i] else
                   f"wrong: the corpus labels it {clip.group} ({clip.category})")
        rows.append({"file": clip.file, "start_s": starts[i], "dataset": clip.dataset, "true": str(data.y[i]),
                     "predicted": str(predicted[i]), "tagger_top1": labels[int(top[i])],
                     "tagger_top1_p": round(float(p[i, top[i]]), 3), "reason": f"{verdict}; {evidence}"})
    return {"rule": "tagger top-1 under Natural sounds / Animal (not pets, livestock) called industrial, or under "
            "Vehicle / Mechanisms / Tools called natural (source-held-out predictions of the shipped procedure)",
            "windows": len(rows), "wrong_by_true_group": sum(r["true"] != r["predicted"] for r in rows), "list": rows}


def fold_names(data: Dataset) -> tuple[list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]], list[str],
                                       npt.NDArray[Any]]:
    """The source-held-out splits, their names, and each window's fold name."""
    splits, names = source_held_out_splits(data)
    fold = np.empty(data.y.size, dtype=object)
    for (_, test), name in zip(splits, names, strict=True):
        fold[test] = name
    return splits, names, fold


def train_prior_corpus_head(
    corpus: Path, model_dir: Path, out: Path, cache_dir: Path | None, ontology_path: Path, *,
    birdnet_dir: Path | None = None, tagger_only: bool = False, command: str = "", progress: bool = True,
) -> dict[str, Any]:
    """Measure, choose, fit and write the ontology-prior head on the corpus (see the module docstring); returns the
    report (also written beside the head as .json). `birdnet_dir` only serves the previous recipe's figure (the
    ontology-prior head uses the tagger's probabilities alone); `tagger_only` names the head as the tagger-only one."""
    clips = read_corpus(corpus)
    tagger, birds = load_training_models(model_dir, None if tagger_only else birdnet_dir)
    ontology = Ontology(ontology_path)
    labels = list(tagger.labels)
    matrices = OntologyMatrices.build(ontology, labels)
    data = build_dataset(clips, tagger, birds, cache_dir, progress=progress)
    p = data.features("probabilities")
    y = data.y
    splits, names, fold = fold_names(data)

    # 2. the whole procedure under the source-held-out CV (nested choice)
    nested_oof, nested_choice = nested_source_held_out(matrices, p, y, fold, splits)
    head_figures = source_figures(data, nested_oof)
    head_figures["folds"] = names
    head_figures["chosen_per_fold"] = dict(zip(names, nested_choice, strict=True))
    logger.info("ontology-prior head, source-held-out (nested choice): natural vs industrial %.3f, 3-class %.3f",
                head_figures["natural_vs_industrial"]["balanced_accuracy"], head_figures["balanced_accuracy_3class"])

    # 3. beside it, the same folds
    rule_proba, rule_counts = ontology_rule(ontology, labels, data.blocks["probabilities"])
    rule = source_figures(data, rule_proba)
    rule["rule"] = {"natural": f"sum of the tagger's probabilities under {list(NATURAL_BRANCHES)} minus "
                    f"{list(NATURAL_EXCLUDED)}", "industrial": f"sum under {list(INDUSTRIAL_BRANCHES)}",
                    "decision": "natural if its sum >= the industrial sum; never other", **rule_counts}
    previous_kind, previous_model = PREVIOUS_TAGGER_RECIPE if birds is None else PREVIOUS_RECIPE
    previous_oof = out_of_fold(data.features(previous_kind), y, splits, candidate_models()[previous_model])
    previous = {"recipe": f"{previous_kind}/{previous_model} (the head shipped before; refitted in every fold)",
                **source_figures(data, previous_oof)}
    grid_table = {g.text(): summary(source_figures(data, oof_proba(p, y, splits, prior_factory(matrices, g))))
                  for g in GRID}

    # 4. grouped CV (as the previous heads report it)
    params, choice_scores, choice_oof = choose(matrices, p, y, fold)
    logger.info("chosen on the whole corpus: %s", params.text())
    temperature = calibrate(choice_oof, y)
    logger.info("temperature (leave-one-source-out log loss): %g", temperature)

    def factory() -> OntologyPriorHead:
        return OntologyPriorHead(matrices, params, temperature)

    grouped = grouped_splits(y, data.groups, CV_FOLDS)
    cv_oof = oof_proba(p, y, grouped, factory)
    cv = evaluate(y, cv_oof)
    grouped_nested_oof, grouped_choice = nested_source_held_out(matrices, p, y, fold, grouped)
    grouped_nested = evaluate(y, grouped_nested_oof)
    session_oof = oof_proba(p, y, grouped_splits(y, data.sessions, CV_FOLDS), factory)
    session = evaluate(y, session_oof)

    # 5. the head
    head = OntologyPriorHead(matrices, params, temperature).fit(p, y)
    pipeline = head.to_pipeline(p, y)
    if not np.allclose(pipeline.predict_proba(p), head.predict_proba(p), rtol=0, atol=1e-9):
        raise TrainError("the folded head differs from the ontology-prior head (internal error)")
    name = f"{MODEL_NAME}({params.text()}, T={temperature:g})"
    meta = HeadMeta(
        tagger_family=tagger.sidecar.family,
        tagger_label_count=len(labels),
        features=FEATURES,
        feature_dim=int(p.shape[1]),
        classes=list(HEAD_CLASSES),
        trained_on=(f"{corpus.name}: {len(clips)} clips, {y.size} windows of {WINDOW_S:g} s (hop {HOP_S:g} s), "
                    f"{len(set(data.groups))} source recordings; model {name} (AudioSet ontology prior + L2 "
                    f"'other' correction on {matrices.branches.shape[1]} branch sums); tagger exported from "
                    f"{tagger.sidecar.source.id}, ONNX sha256 {tagger.model_sha256[:12]} "
                    f"(pooling {tagger.config.pooling})"),
        training_data_sha256=training_data_sha256(corpus, clips),
        cv_metrics={
            "scheme": f"StratifiedGroupKFold({CV_FOLDS}, shuffle, seed {SEED}), groups = source recording",
            "accuracy_3class": cv["accuracy_3class"],
            "balanced_accuracy_3class": cv["balanced_accuracy_3class"],
            "natural_vs_industrial_balanced_accuracy": cv["natural_vs_industrial"]["balanced_accuracy"],
            "log_loss": cv["calibration"]["log_loss"],
            "ece_top_probability": cv["calibration"]["ece_top_probability"],
            "nested_natural_vs_industrial_balanced_accuracy": grouped_nested["natural_vs_industrial"][
                "balanced_accuracy"],
            "session_grouped_natural_vs_industrial_balanced_accuracy": session["natural_vs_industrial"][
                "balanced_accuracy"],
            "source_held_out_natural_vs_industrial_balanced_accuracy": head_figures["natural_vs_industrial"][
                "balanced_accuracy"],
            "source_held_out_balanced_accuracy_3class": head_figures["balanced_accuracy_3class"],
            "source_held_out_per_clip_natural_vs_industrial_balanced_accuracy": target_figure(head_figures),
            "source_held_out_per_clip_natural_vs_industrial_3class_decision": head_figures["per_clip"][
                "natural_vs_industrial"]["balanced_accuracy"],
        },
        sklearn_version=sklearn.__version__,
        created_utc=utc_now_iso(),
        training_files_sha256=training_files_sha256(clips),
        training_audio_sha256=training_audio_sha256(clips),
    )
    files = save_head(out, pipeline, meta, features=p)
    scheme = f"StratifiedGroupKFold({CV_FOLDS}, shuffle, seed {SEED}), groups = source recording"
    report: dict[str, Any] = {
        "head": out.with_suffix(".skops").name,
        "files": files.report(),
        "chosen": {"features": FEATURES, "model": name, "needs_birdnet": False},
        "tagger_only": tagger_only,
        "recipe": {
            "model": "logits = a * [S_industrial, S_natural, w_other * S_other] + [0, 0, standardised branch sums @ v] "
                     "(no intercept; the correction moves only 'other', so natural vs industrial is the rule's call); "
                     "softmax; v fitted with balanced class weights and L2 penalty lam "
                     "(soundmond/workbench/prior_head.py); shipped folded into StandardScaler + LogisticRegression on "
                     "the tagger's probabilities",
            "prior_sides": {"natural": f"{list(NATURAL_BRANCHES)} minus {list(NATURAL_EXCLUDED)}",
                            "industrial": list(INDUSTRIAL_BRANCHES),
                            "other": f"{list(OTHER_BRANCHES)} (labels not on another side)"},
            "correction_branches": list(matrices.branch_names),
            "params": {"a": params.a, "w_other": params.w_other, "lam": params.lam, "temperature": temperature},
            "temperature": "every logit divided by T (no decision changes): the T with the lowest log loss of the "
                           "chosen head's leave-one-source-out predictions of the training data (prior_head.calibrate)",
            "grid": [g.text() for g in GRID],
            "choice": "the grid point with the best mean of natural-vs-industrial and 3-class balanced accuracy "
                      "under leave-one-source-out CV of the training data (ties: the earlier)",
            "choice_scores_whole_corpus": choice_scores,
            "ontology": str(ontology_path),
        },
        "selection_rule": "parameters chosen by leave-one-source-out CV on the training data (see recipe.choice); "
                          "no candidate is chosen by the figures reported",
        "cv_scheme": scheme,
        "cv": cv,
        "cv_per_category": per_category_recall(data, cv_oof),
        "nested_cv": {"scheme": f"outer {scheme}; in each outer fold the parameters are rechosen by "
                      "leave-one-source-out CV of the outer training part only",
                      "chosen_per_outer_fold": grouped_choice, **grouped_nested},
        "session_grouped_cv": {
            "scheme": f"StratifiedGroupKFold({CV_FOLDS}, shuffle, seed {SEED}), groups = session (stricter); the "
            "chosen parameters, not rechosen", "groups": len(set(data.sessions)), **session,
            "per_category": per_category_recall(data, session_oof)},
        "source_held_out_cv": {
            "scheme": SOURCE_HELD_OUT_SCHEME + "; the head's parameters rechosen in every fold on its training part",
            "head": head_figures,
            "ontology_rule": rule,
            "previous_head": previous,
            "fixed_parameters": {"note": "every grid point with its parameters fixed (optimistic by the choice: "
                                 "for comparison only)", **grid_table},
            "tagger_contradicted": contradicted_with_reasons(ontology, labels, data, nested_oof, matrices),
        },
        "comparison": {f"{FEATURES}/{name}": {"shippable": True, **summary(cv)},
                       f"{previous_kind}/{previous_model}": {"shippable": True, "note": "the previous head's recipe",
                                                              **summary(previous)}},
        "data": {
            "corpus": str(corpus), "clips": len(clips), "windows": int(y.size),
            "windows_per_group": {g: int((y == g).sum()) for g in HEAD_CLASSES},
            "source_recordings": len(set(data.groups)), "sessions": len(set(data.sessions)),
            "window_s": WINDOW_S, "hop_s": HOP_S, "training_data_sha256": meta.training_data_sha256,
            "training_files_sha256": meta.training_files_sha256,
            "training_audio_sha256": meta.training_audio_sha256,
        },
        "tagger": {"family": tagger.sidecar.family, "model_sha256": tagger.model_sha256,
                   "source": tagger.sidecar.source.id, "pooling": tagger.config.pooling},
        "birdnet": None if birds is None else {"model_sha256": birds.model_sha256, "source": birds.sidecar.source.id,
                                               "used_by": "the previous recipe's figure only"},
        "sklearn_version": sklearn.__version__,
        "created_utc": meta.created_utc,
        "command": command,
        "cv_target": {"natural_vs_industrial_balanced_accuracy": TARGET,
                      "checked_on": ["source_held_out_cv.head.per_clip.natural_vs_industrial.binary_balanced_accuracy"],
                      "protocol": "per clip (the clip's windows' probabilities averaged), natural vs industrial "
                                  "clips only, the larger of the two probabilities: issue 15's protocol and the "
                                  "ontology rule's own decision; the per-window and 3-class-decision figures beside "
                                  "it are stricter", "met": target_figure(head_figures) >= TARGET},
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return report


__all__ = ["FEATURES", "MODEL_NAME", "PREVIOUS_RECIPE", "PREVIOUS_TAGGER_RECIPE", "contradicted_with_reasons",
           "fold_names", "source_figures", "summary", "target_figure", "train_prior_corpus_head"]
