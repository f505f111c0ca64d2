"""`soundmond evaluate`: how well do the daemon's models do on labelled recordings?

Input: a labels CSV (`file` relative to `--audio-root`; `species` = scientific name where known, BirdNET V2.4
spelling; `group` = natural / industrial / other where known; optional `latitude` / `longitude` (or `lat` / `lon`)
and `date` (YYYY-MM-DD) for BirdNET's location / season filter). Every bad row (missing file, undecodable audio,
unknown group) is named on stderr and in the JSON; the rest is still evaluated (exit 1).

Species (rows with `species`), per file: the file is cut into 5-s windows (hop 5 s, as the daemon; a file shorter
than 5 s is zero-padded), each window into BirdNET's 3-s chunks (the daemon's `BirdnetModel.chunk_outputs`), and a
species' file score is its highest confidence (sigmoid of the logit) over every chunk. Non-species classes (Engine,
Dog, ...) are never predictions. Top-1 is the best-scoring species, top-3 the three best; no confidence threshold
(the daemon's `min_confidence` decides what it reports, not what ranks first). Labelled species BirdNET does not know
are listed and left out. Per-species precision / recall / F1 (over the true and predicted species), macro and
weighted F1 (over the labelled species, weighted by their file counts), the confusion matrix of the most-confused
species and a species-frequency chart. Where coordinates are known, the same files are scored again with the location
filter: species whose BirdNET meta-model occurrence at (latitude, longitude, week of `date`, or the whole year when no
date) is below `--filter-threshold` (the daemon's default 0.03) are removed before ranking.

Groups (rows with `group`), per 5-s window: the tagger + head in use (the daemon's features and head), scored with
`training.evaluate` (3-class and natural-vs-industrial balanced accuracy, per-class precision / recall / F1, confusion
matrix, calibration) and the windows it got wrong. What the head saw: each evaluated file's content sha256 is looked up
in the head's training files (`HeadMeta.training_files_sha256`, or `data.training_files_sha256` in the .json report
beside the head), and `groups.in_sample` is true (all files were trained on), false (none) or "partial", with the counts
(`in_sample_files`) and the figures of each part (`in_sample_part`, `out_of_sample_part`); `group_errors.csv` marks
each window. A copy re-encoded or cut differently has other bytes and counts as unseen. A head that records no
training files is in-sample only when its training-data checksum matches this labels file and its files.

Output folder (written atomically): `report.md` (figures embedded), `report.json` (every number), `species_results.csv`
(file, species, predicted, score, top-3, ...), `species_confusion.png`, `species_frequency.png`,
`group_confusion.png`, `group_errors.csv`. The JSON summary goes to stdout too.

Exit codes: 0 evaluated, 1 some rows could not be evaluated (named on stderr), 2 bad usage (labels file missing or
without the needed columns), 3 a model folder or head is missing or damaged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import f1_score, precision_recall_fscore_support
from tqdm import tqdm

from soundmond.capture.audio import AudioError, load_audio, resample
from soundmond.config import BirdConfig, ConfigError, TaggerConfig
from soundmond.data import GROUPS
from soundmond.errors import ExitCode
from soundmond.head.loader import load_head
from soundmond.head.meta import HEAD_CLASSES, HeadError, head_features
from soundmond.identity import file_sha256
from soundmond.logs import setup_logging
from soundmond.models.birds import BirdnetMetaModel, BirdnetModel, birdnet_week
from soundmond.models.sessions import sigmoid
from soundmond.models.sidecar import ModelFolderError, verify_folder
from soundmond.models.taggers import load_tagger
from soundmond.progress import show_progress
from soundmond.workbench.corpus import training_data_sha256
from soundmond.workbench.crossval import evaluate
from soundmond.workbench.dataset import HOP_S, WINDOW_S, cut_windows
from soundmond.workbench.labels import LabelsError, read_label_rows
from soundmond.workbench.report import (
    atomic_dir,
    markdown_table,
    output_folder_problem,
    plot_confusion,
    plot_frequency,
    write_csv,
    write_json,
)

logger = logging.getLogger(__name__)

TOP_K = 3
DEFAULT_FILTER_THRESHOLD = 0.03


@dataclass(frozen=True)
class Row:
    line: int
    file: str
    path: Path
    species: str
    group: str
    latitude: float | None
    longitude: float | None
    week: int  # BirdNET week 1-48 from `date`, -1 (all year) without one


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _week(date: str | None) -> int:
    try:
        day = dt.datetime.strptime((date or "").strip()[:10], "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return -1
    return birdnet_week(day.timestamp())


def read_rows(labels: Path, audio_root: Path) -> tuple[list[Row], list[dict[str, str]]]:
    """Rows of the labels CSV and the problems of the rows that cannot be used (file, line, problem)."""
    rows, problems = [], []
    for r in read_label_rows(labels, audio_root, one_of=("species", "group"), joiner="and/or"):
        group = r.group
        species = " ".join((r.columns.get("species") or "").split())
        if not r.file:
            problems.append({"file": "", "line": str(r.line), "problem": f"{r.where}: empty 'file'"})
            continue
        if group and group not in GROUPS:
            problems.append({"file": r.file, "line": str(r.line), "problem": f"{r.where}: group {group!r} is not "
                             f"one of {list(GROUPS)}"})
            group = ""
        if not species and not group:
            continue
        if not r.audio_exists:
            problems.append({"file": r.file, "line": str(r.line), "problem": f"{r.where}: audio file {r.path} "
                             "not found"})
            continue
        lat = _float(r.columns.get("latitude") or r.columns.get("lat"))
        lon = _float(r.columns.get("longitude") or r.columns.get("lon") or r.columns.get("lng"))
        rows.append(Row(r.line, r.file, r.path, species, group, lat, lon, _week(r.columns.get("date"))))
    return rows, problems


# ---------------------------------------------------------------- species


def file_species_scores(birds: Any, path: Path) -> npt.NDArray[np.float32]:
    """Per class, the highest confidence over every BirdNET chunk of every 5-s window of the file."""
    samples, rate = load_audio(path, birds.sample_rate_hz)
    best: npt.NDArray[np.float32] | None = None
    for window in cut_windows(samples, rate):
        logits, _ = birds.chunk_outputs(window)
        conf = sigmoid(birds.logit_scale * logits.astype(np.float64)).max(axis=0)  # as BirdnetModel
        best = conf if best is None else np.maximum(best, conf)
    assert best is not None
    return best


def _top(scores: npt.NDArray[np.float32], names: Sequence[str], k: int) -> list[tuple[str, float]]:
    idx = np.argsort(-scores, kind="stable")[:k]
    return [(names[i], float(scores[i])) for i in idx]


def species_metrics(truth: Sequence[str], top: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Top-1 / top-3 accuracy, per-species precision / recall / F1, macro / weighted F1 (over labelled species)."""
    y_true = list(truth)
    y_pred = [t[0] for t in top]
    n = len(y_true)
    if n == 0:
        return {"files": 0}
    labels = sorted(set(y_true) | set(y_pred))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    true_labels = sorted(set(y_true))
    predicted = Counter(y_pred)
    return {
        "files": n,
        "species_labelled": len(true_labels),
        "top1_accuracy": float(np.mean([a == b for a, b in zip(y_true, y_pred, strict=True)])),
        "top3_accuracy": float(np.mean([a in t[:TOP_K] for a, t in zip(y_true, top, strict=True)])),
        "top1_correct": int(sum(a == b for a, b in zip(y_true, y_pred, strict=True))),
        "top3_correct": int(sum(a in t[:TOP_K] for a, t in zip(y_true, top, strict=True))),
        "macro_f1": float(f1_score(y_true, y_pred, labels=true_labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=true_labels, average="weighted", zero_division=0)),
        "per_species": {
            lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i]),
                  "predicted": int(predicted[lab])}
            for i, lab in enumerate(labels)
        },
    }


def most_confused(
    truth: Sequence[str], pred: Sequence[str], limit: int
) -> tuple[list[str], list[str], list[list[int]]]:
    """Rows (true species) and columns (predicted) of the `limit` most frequent confusions, with their counts."""
    pairs = Counter((t, p) for t, p in zip(truth, pred, strict=True) if t != p)
    chosen = [pair for pair, _ in pairs.most_common(limit)]
    rows = sorted({t for t, _ in chosen})
    cols = sorted({p for _, p in chosen} | set(rows) & set(pred))
    counts = Counter(zip(truth, pred, strict=True))
    matrix = [[counts[(t, p)] for p in cols] for t in rows]
    return rows, cols, matrix


def evaluate_species(
    rows: Sequence[Row], birds: Any, meta: BirdnetMetaModel | None, threshold: float, progress: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, str]]]:
    names = birds.scientific_names
    known = set(names)
    species_mask = ~np.asarray(birds.sound_class_mask)
    results: list[dict[str, Any]] = []
    problems: list[dict[str, str]] = []
    unknown: list[str] = []
    truth, tops, truth_geo, tops_geo, tops_geo_filtered = [], [], [], [], []
    for row in tqdm([r for r in rows if r.species], desc="BirdNET species", unit="file", file=sys.stderr,
                    disable=not show_progress(progress)):
        if row.species not in known:
            unknown.append(row.species)
            problems.append({"file": row.file, "line": str(row.line),
                             "problem": f"{row.file}: species {row.species!r} is not in BirdNET's label list "
                             "(left out of the species figures)"})
            continue
        try:
            scores = file_species_scores(birds, row.path)
        except AudioError as exc:
            problems.append({"file": row.file, "line": str(row.line), "problem": str(exc)})
            continue
        scores = np.where(species_mask, scores, -1.0).astype(np.float32)
        top = _top(scores, names, TOP_K)
        truth.append(row.species)
        tops.append([n for n, _ in top])
        result: dict[str, Any] = {
            "file": row.file, "species": row.species, "predicted": top[0][0], "score": round(top[0][1], 4),
            "top3": "; ".join(f"{n}:{s:.4f}" for n, s in top), "correct_top1": top[0][0] == row.species,
            "correct_top3": row.species in [n for n, _ in top], "score_of_true": round(float(
                scores[names.index(row.species)]), 4),
        }
        if meta is not None and row.latitude is not None and row.longitude is not None:
            occ = meta.occurrence(row.latitude, row.longitude, row.week)
            filtered = np.where(occ >= threshold, scores, -1.0).astype(np.float32)
            ftop = _top(filtered, names, TOP_K)
            truth_geo.append(row.species)
            tops_geo.append([n for n, _ in top])
            tops_geo_filtered.append([n for n, _ in ftop])
            result |= {"filtered_predicted": ftop[0][0], "filtered_top3": "; ".join(f"{n}:{s:.4f}" for n, s in ftop),
                       "true_occurrence": round(float(occ[names.index(row.species)]), 4), "week": row.week}
        results.append(result)
    report: dict[str, Any] = {
        "method": "file score = max over 5-s windows and 3-s BirdNET chunks of sigmoid(logit); non-species classes "
                  "excluded; no confidence threshold; macro/weighted F1 over the labelled species",
        "unfiltered": species_metrics(truth, tops),
        "unknown_to_model": sorted(set(unknown)),
        "location_filter": {
            "threshold": threshold,
            "files_with_coordinates": len(truth_geo),
            "available": meta is not None,
            "without_filter": species_metrics(truth_geo, tops_geo) if truth_geo else None,
            "with_filter": species_metrics(truth_geo, tops_geo_filtered) if truth_geo else None,
        },
    }
    report["_confusion"] = most_confused(truth, [t[0] for t in tops], 25)
    report["_frequency"] = (Counter(truth), Counter(t[0] for t in tops))
    return report, results, problems


# ---------------------------------------------------------------- groups


def evaluate_groups(
    rows: Sequence[Row], tagger: Any, head: Any, birds: Any, progress: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, str]]]:
    y: list[str] = []
    probas: list[npt.NDArray[np.float64]] = []
    where: list[tuple[str, float]] = []
    problems: list[dict[str, str]] = []
    for row in tqdm([r for r in rows if r.group], desc="tagger + head", unit="file", file=sys.stderr,
                    disable=not show_progress(progress)):
        try:
            samples, rate = load_audio(row.path)
        except AudioError as exc:
            problems.append({"file": row.file, "line": str(row.line), "problem": str(exc)})
            continue
        for k, window in enumerate(cut_windows(samples, rate)):
            out = tagger.tag(resample(window, rate, tagger.sample_rate_hz))
            bird_out = None
            if head.needs_birds:
                bird_out = birds.detect(resample(window, rate, birds.sample_rate_hz), start_unix_s=0.0)
            probas.append(head.predict_proba(head_features(out, head.meta.features, bird_out))[0])
            y.append(row.group)
            where.append((row.file, k * HOP_S))
    if not y:
        return {"windows": 0}, [], problems
    proba = np.stack(probas)
    y_true = np.array(y)
    metrics = evaluate(y_true, proba)
    predicted = np.array(HEAD_CLASSES)[proba.argmax(axis=1)]
    seen = training_hashes(head)
    file_in = {f: seen is not None and file_sha256(path) in seen for f, path in
               {r.file: r.path for r in rows if r.group}.items() if f in {w for w, _ in where}}
    errors = [
        {"file": f, "start_s": s, "end_s": s + WINDOW_S, "true": t, "predicted": p,
         **{f"p_{c}": round(float(proba[i, j]), 4) for j, c in enumerate(HEAD_CLASSES)},
         "in_sample": file_in.get(f, False)}
        for i, ((f, s), t, p) in enumerate(zip(where, y_true, predicted, strict=True)) if t != p
    ]
    metrics["files"] = len({f for f, _ in where})
    metrics["head"] = {"path": str(head.path), "tagger_family": head.meta.tagger_family,
                       "features": head.meta.features, "trained_on": head.meta.trained_on,
                       "training_data_sha256": head.meta.training_data_sha256}
    if seen is not None:
        in_rows = np.array([file_in[f] for f, _ in where])
        n_in = sum(file_in.values())
        metrics["in_sample"] = True if n_in == len(file_in) else False if n_in == 0 else "partial"
        metrics["in_sample_basis"] = ("content sha256 of each file against the head's training files "
                                      f"({len(seen)} recorded)")
        metrics["in_sample_files"] = {"in": n_in, "out": len(file_in) - n_in,
                                      "files_in": sorted(f for f, v in file_in.items() if v)}
        metrics["in_sample_part"] = part_metrics(y_true[in_rows], predicted[in_rows], n_in)
        metrics["out_of_sample_part"] = part_metrics(y_true[~in_rows], predicted[~in_rows], len(file_in) - n_in)
    return metrics, errors, problems


def training_hashes(head: Any) -> set[str] | None:
    """The content hashes of the files `head` was trained on: its meta's `training_files_sha256`, else those in the
    report beside it (`<head>.json`, `data.training_files_sha256`) when that report is this head's (same
    training-data checksum); None when the head records none (then the labels-file checksum decides, `_in_sample`)."""
    recorded = dict(getattr(head.meta, "training_files_sha256", {}) or {})
    if not recorded:
        report_path = Path(head.path).with_suffix(".json")
        try:
            data = json.loads(report_path.read_text()).get("data", {})
        except (OSError, ValueError, AttributeError):
            return None
        if not isinstance(data, dict) or data.get("training_data_sha256") != head.meta.training_data_sha256:
            return None
        recorded = data.get("training_files_sha256") or {}
    return {str(v) for v in recorded.values()} or None


def part_metrics(y_true: npt.NDArray[np.str_], predicted: npt.NDArray[np.str_], files: int) -> dict[str, Any]:
    """Accuracy figures of one part (in-sample or out-of-sample windows): None where the part has no such windows."""
    recalls = {g: float(np.mean(predicted[y_true == g] == g)) for g in HEAD_CLASSES if (y_true == g).any()}
    return {
        "files": files,
        "windows": int(y_true.size),
        "accuracy_3class": float(np.mean(predicted == y_true)) if y_true.size else None,
        "recall": recalls,
        "balanced_accuracy_3class": float(np.mean(list(recalls.values()))) if recalls else None,
        "natural_vs_industrial_balanced_accuracy": (
            (recalls["natural"] + recalls["industrial"]) / 2 if {"natural", "industrial"} <= set(recalls) else None),
    }


def _in_sample(head_sha: str, labels: Path, rows: Sequence[Row]) -> bool:
    """Whether the head was trained on exactly this labels file and these files (its training-data checksum)."""
    if labels.name != "labels.csv":
        return False
    clips = [SimpleNamespace(file=r.file, path=r.path) for r in rows if r.group]
    return bool(head_sha) and training_data_sha256(labels.parent, clips) == head_sha  # type: ignore[arg-type]


# ---------------------------------------------------------------- report


def _species_markdown(sp: dict[str, Any]) -> list[str]:
    u = sp["unfiltered"]
    lines = ["## Species (BirdNET)", "", sp["method"] + ".", ""]
    if not u.get("files"):
        return [*lines, "No file with a known species was evaluated.", ""]
    lines += [
        f"- files: {u['files']} ({u['species_labelled']} species)",
        f"- top-1 accuracy: **{u['top1_accuracy']:.3f}** ({u['top1_correct']}/{u['files']})",
        f"- top-3 accuracy: **{u['top3_accuracy']:.3f}** ({u['top3_correct']}/{u['files']})",
        f"- macro F1: {u['macro_f1']:.3f}, weighted F1: {u['weighted_f1']:.3f}",
    ]
    if sp["unknown_to_model"]:
        lines.append(f"- labelled species unknown to BirdNET (left out): {', '.join(sp['unknown_to_model'])}")
    lf = sp["location_filter"]
    if lf["files_with_coordinates"]:
        wo, wi = lf["without_filter"], lf["with_filter"]
        lines += ["", f"Location / season filter (threshold {lf['threshold']}), on the "
                  f"{lf['files_with_coordinates']} files with coordinates:", "",
                  "| | top-1 | top-3 | macro F1 |", "|---|---|---|---|",
                  f"| without filter | {wo['top1_accuracy']:.3f} | {wo['top3_accuracy']:.3f} | {wo['macro_f1']:.3f} |",
                  f"| with filter | {wi['top1_accuracy']:.3f} | {wi['top3_accuracy']:.3f} | {wi['macro_f1']:.3f} |"]
    else:
        lines += ["", "Location / season filter: not evaluated - no labelled file has coordinates "
                  "(`latitude` / `longitude` columns)" + ("" if lf["available"] else " or the model has no meta model")
                  + "."]
    lines += ["", "![Most-confused species](species_confusion.png)", "",
              "![Species frequency](species_frequency.png)", "",
              "Per-file results: [species_results.csv](species_results.csv).", ""]
    return lines


def _f3(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _groups_markdown(gr: dict[str, Any]) -> list[str]:
    lines = ["## Groups (natural / industrial / other: tagger + head)", ""]
    if not gr.get("windows"):
        return [*lines, "No file with a group was evaluated.", ""]
    ni = gr["natural_vs_industrial"]
    lines += [
        f"Head: `{gr['head']['path']}` ({gr['head']['tagger_family']}, features `{gr['head']['features']}`).",
        "",
        f"- windows: {gr['windows']} from {gr['files']} files",
        f"- accuracy (3 classes): {gr['accuracy_3class']:.3f}, balanced accuracy: {gr['balanced_accuracy_3class']:.3f}",
        f"- natural vs industrial balanced accuracy: **{_f3(ni['balanced_accuracy'])}** "
        f"(natural recall {_f3(ni['natural_recall'])}, industrial recall {_f3(ni['industrial_recall'])})",
        f"- calibration: log loss {gr['calibration']['log_loss']:.3f}, "
        f"ECE {gr['calibration']['ece_top_probability']:.3f}",
    ]
    if gr.get("in_sample") is True:
        lines.append("- **in-sample**: the head was trained on these files; these figures are not a test")
    elif gr.get("in_sample") == "partial":
        files = gr["in_sample_files"]
        lines.append(f"- **partly in-sample**: the head was trained on {files['in']} of these files "
                     f"({files['out']} it never saw); only the out-of-sample part is a test")
    for key, title in (("in_sample_part", "in-sample part (trained on)"),
                       ("out_of_sample_part", "out-of-sample part (never seen)")):
        part = gr.get(key)
        if part and part["windows"]:
            ni = part["natural_vs_industrial_balanced_accuracy"]
            lines.append(f"- {title}: {part['files']} files, {part['windows']} windows, accuracy "
                         f"{part['accuracy_3class']:.3f}, natural vs industrial "
                         + ("n/a" if ni is None else f"{ni:.3f}"))
    lines += ["", markdown_table(["class", "precision", "recall", "F1", "windows"],
                                 [[c, v["precision"], v["recall"], v["f1"], v["support"]]
                                  for c, v in gr["per_class"].items()]),
              "", "![Group confusion matrix](group_confusion.png)", "",
              f"Windows it got wrong: {gr['wrong_windows']} ([group_errors.csv](group_errors.csv)).", ""]
    return lines


def write_report(out: Path, report: dict[str, Any], species_rows: list[dict[str, Any]],
                 group_errors: list[dict[str, Any]]) -> None:
    with atomic_dir(out) as tmp:
        sp = report.get("species")
        figures = []
        if sp is not None:
            rows_, cols, matrix = sp.pop("_confusion")
            truth_counts, pred_counts = sp.pop("_frequency")
            if rows_:
                plot_confusion(matrix, rows_, cols, tmp / "species_confusion.png",
                               title=f"Most-confused species (BirdNET top-1; {len(rows_)} true species)",
                               xlabel="predicted species (top-1)", ylabel="true species", unit="files")
            else:
                plot_confusion([[0]], ["(no confusions)"], ["(no confusions)"], tmp / "species_confusion.png",
                               title="Most-confused species: none", xlabel="predicted species (top-1)",
                               ylabel="true species")
            names = sorted(set(truth_counts) | set(pred_counts),
                           key=lambda n: (-max(truth_counts[n], pred_counts[n]), n))[:30]
            plot_frequency(names, {"labelled": [truth_counts[n] for n in names],
                                   "BirdNET top-1": [pred_counts[n] for n in names]},
                           tmp / "species_frequency.png",
                           title=f"Species frequency (top {len(names)} of {len(set(truth_counts) | set(pred_counts))})",
                           xlabel="files")
            fields = ["file", "species", "predicted", "score", "top3", "correct_top1", "correct_top3",
                      "score_of_true", "filtered_predicted", "filtered_top3", "true_occurrence", "week"]
            write_csv(tmp / "species_results.csv", species_rows, fields)
            figures += ["species_confusion.png", "species_frequency.png"]
        gr = report.get("groups")
        if gr is not None and gr.get("windows"):
            plot_confusion(gr["confusion_matrix"]["rows_true_columns_predicted"], HEAD_CLASSES, HEAD_CLASSES,
                           tmp / "group_confusion.png", title="Groups: true vs predicted (5-s windows)",
                           xlabel="predicted group", ylabel="true group", unit="windows")
            write_csv(tmp / "group_errors.csv", group_errors,
                      ["file", "start_s", "end_s", "true", "predicted", "p_industrial", "p_natural", "p_other",
                       "in_sample"])
            figures.append("group_confusion.png")
        report["figures"] = figures
        write_json(tmp / "report.json", report)
        md = [f"# soundmond evaluate: {report['labels']}", "", f"Created {report['created_utc']}.", ""]
        if sp is not None:
            md += _species_markdown(sp)
        if gr is not None:
            md += _groups_markdown(gr)
        if report["problems"]:
            md += ["## Rows not evaluated", ""] + [f"- {p['problem']}" for p in report["problems"]] + [""]
        (tmp / "report.md").write_text("\n".join(md))


# ---------------------------------------------------------------- CLI


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", type=Path, required=True, metavar="CSV",
                   help="labels CSV: file, species and/or group, optional latitude/longitude/date")
    p.add_argument("--audio-root", type=Path, default=None, metavar="DIR",
                   help="folder the 'file' column is relative to (default: the CSV's folder)")
    p.add_argument("--out", type=Path, default=Path("soundmond-evaluate"), metavar="REPORT_DIR",
                   help="report folder, replaced atomically (default ./soundmond-evaluate)")
    p.add_argument("--birdnet", type=Path, default=Path("models/birdnet"), help="BirdNET model folder")
    p.add_argument("--tagger", type=Path, default=Path("models/yamnet"), help="tagger model folder (yamnet or ast)")
    p.add_argument("--head", type=Path, default=None, help="head file (default: the one shipped for the tagger)")
    p.add_argument("--no-species", action="store_true", help="skip the species evaluation")
    p.add_argument("--no-groups", action="store_true", help="skip the natural / industrial / other evaluation")
    p.add_argument("--filter-threshold", type=float, default=DEFAULT_FILTER_THRESHOLD,
                   help="location filter: minimum meta-model occurrence (default 0.03, as the daemon)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads per model (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run_evaluate(args: argparse.Namespace) -> int:
    setup_logging("DEBUG" if args.verbose else "INFO")
    if (problem := output_folder_problem(args.out)) is not None:  # before any work: the user's files are not ours
        print(f"soundmond evaluate: --out {problem}", file=sys.stderr)
        return ExitCode.USAGE
    audio_root = args.audio_root or args.labels.parent
    try:
        rows, problems = read_rows(args.labels, audio_root)
    except LabelsError as exc:
        print(f"soundmond evaluate: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    want_species = not args.no_species and any(r.species for r in rows)
    want_groups = not args.no_groups and any(r.group for r in rows)
    if not want_species and not want_groups:
        for p in problems:
            print(f"soundmond evaluate: {p['problem']}", file=sys.stderr)
        print(f"soundmond evaluate: {args.labels}: no usable row with a species or a group", file=sys.stderr)
        return ExitCode.USAGE
    progress = not args.no_progress
    report: dict[str, Any] = {"labels": str(args.labels), "audio_root": str(audio_root),
                              "created_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()}
    species_rows: list[dict[str, Any]] = []
    group_errors: list[dict[str, Any]] = []
    try:
        birds = None
        if want_species or want_groups:
            needs_birds_for_head = False
            tagger = head = None
            if want_groups:
                sidecar = verify_folder(args.tagger)
                if sidecar.family not in ("yamnet", "ast"):
                    raise ModelFolderError(args.tagger, f"is a {sidecar.family} folder, not a tagger",
                                           "pass a YAMNet or AST folder")
                tagger = load_tagger(args.tagger, TaggerConfig(family=sidecar.family, path=args.tagger,
                                                               threads=args.threads))
                head = load_head(args.head, sidecar.family, len(tagger.labels))
                needs_birds_for_head = head.needs_birds
            if want_species or needs_birds_for_head:
                birds = BirdnetModel(args.birdnet, BirdConfig(path=args.birdnet, threads=args.threads))
        if want_species:
            assert birds is not None
            meta = None
            try:
                meta = BirdnetMetaModel(args.birdnet, birds.sidecar)
            except ModelFolderError as exc:
                logger.warning("%s: the location filter cannot be evaluated", exc)
            sp, species_rows, sp_problems = evaluate_species(rows, birds, meta, args.filter_threshold, progress)
            problems += sp_problems
            report["species"] = sp
            report["birdnet"] = {"folder": str(args.birdnet), "model_sha256": birds.model_sha256,
                                 "source": birds.sidecar.source.id}
        if want_groups:
            gr, group_errors, gr_problems = evaluate_groups(rows, tagger, head, birds, progress)
            problems += gr_problems
            if gr.get("windows"):
                gr["wrong_windows"] = len(group_errors)
                if "in_sample" not in gr:  # the head records no training files: the labels-file checksum decides
                    gr["in_sample"] = _in_sample(gr["head"]["training_data_sha256"], args.labels, rows)
                    gr["in_sample_basis"] = "the labels file and its files against the head's training-data checksum"
            report["groups"] = gr
    except (ModelFolderError, HeadError) as exc:
        print(f"soundmond evaluate: {exc}", file=sys.stderr)
        return ExitCode.MODELS
    except ConfigError as exc:
        print(f"soundmond evaluate: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    report["problems"] = problems
    write_report(args.out, report, species_rows, group_errors)
    summary: dict[str, Any] = {"report": str(args.out / "report.md"), "json": str(args.out / "report.json")}
    if "species" in report:
        u = report["species"]["unfiltered"]
        summary["species"] = {k: u.get(k) for k in ("files", "top1_accuracy", "top3_accuracy", "macro_f1",
                                                     "weighted_f1")}
        lf = report["species"]["location_filter"]
        summary["species_location_filter"] = {
            "files_with_coordinates": lf["files_with_coordinates"],
            "top1_without": lf["without_filter"]["top1_accuracy"] if lf["without_filter"] else None,
            "top1_with": lf["with_filter"]["top1_accuracy"] if lf["with_filter"] else None,
        }
    if report.get("groups", {}).get("windows"):
        g = report["groups"]
        summary["groups"] = {"windows": g["windows"], "balanced_accuracy_3class": g["balanced_accuracy_3class"],
                             "natural_vs_industrial_balanced_accuracy":
                                 g["natural_vs_industrial"]["balanced_accuracy"], "in_sample": g["in_sample"]}
        if "in_sample_files" in g:
            summary["groups"]["in_sample_files"] = {k: g["in_sample_files"][k] for k in ("in", "out")}
    summary["problems"] = len(problems)
    print(json.dumps(summary, indent=2))
    for p in problems:
        print(f"soundmond evaluate: {p['problem']}", file=sys.stderr)
    return ExitCode.PARTIAL if problems else ExitCode.OK


__all__ = ["add_evaluate_arguments", "evaluate_groups", "evaluate_species", "most_confused",
           "read_rows", "run_evaluate", "species_metrics"]
