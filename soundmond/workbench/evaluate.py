"""`soundmond evaluate`: how well do the daemon's models do on labelled recordings?

Input: a labels CSV (`file` relative to `--audio-root`; `species` = scientific name where known, BirdNET V2.4
spelling; `group` = natural / industrial / other where known; optional `latitude` / `longitude` (or `lat` / `lon`)
and `date` (YYYY-MM-DD) for BirdNET's location / season filter). Every bad row (missing file, undecodable audio,
unknown group) is named on stderr and in the JSON; the rest is still evaluated (exit 1).

Models: `--birds` (BirdNET, or a Hugging Face classifier exported by `python -m export hf`, with `--species-map`),
`--tagger` (YAMNet, AST or an hf tagger) and `--head`, or the models of a daemon config (`--config`: models.birds
family / path / species_map / sensitivity, models.tagger, models.head); `soundmond.workbench.evaluate_models`.

Species (rows with `species`), per file: the file is cut into 5-s windows (hop 5 s, as the daemon; a file shorter than
5 s is zero-padded), each window into the bird model's chunks (BirdNET's 3-s chunks, the daemon's
`BirdnetModel.chunk_outputs`; an hf model's clips of its own length every `stride_s`, `HfBirdModel.clip_scores`), and
a species' file score is its highest confidence (BirdNET: sigmoid of the logit; hf: the model's softmax or sigmoid, as
the transformers pipeline) over every chunk. Non-species classes (BirdNET's Engine, Dog, ...; labels an hf species map
sets to null) are never predictions. Top-1 is the best-scoring species, top-3 the three best; no confidence threshold
(the daemon's `min_confidence` decides what it reports, not what ranks first). Labelled species the model cannot name
(not among its labels, a label its species map sets to null, one of BirdNET's non-species classes) are left out,
counted, and said once with the reason (one stderr line; report.json `species.left_out`): nothing about those files
failed, so they do not change the exit code. Per-species precision / recall / F1 (over the true and predicted species;
a table in report.md), macro and weighted F1 (over the labelled species, weighted by their file counts), the confusion
matrix of the most-confused species and a species-frequency chart. In-sample: unknown (no bird model folder records
its training files); the report says so. Where coordinates are known and the model is BirdNET, the same files are
scored again with the location filter: species whose BirdNET meta-model occurrence at (latitude, longitude, week of
`date`, or the whole year when no date) is below `--filter-threshold` (the daemon's default 0.03) are removed before
ranking. An hf bird model has no meta model: the report says the filter does not apply (and a warning when the labels
have coordinates).

Groups (rows with `group`), per 5-s window: first the daemon's quiet decision (`soundmond.analysis.is_quiet`, the
same function: digital silence, or an RMS level under `windows.quiet_below_dbfs`, --config's floor, else the default
-75 dBFS). The daemon stores a quiet window as group "quiet" and runs no model on it, so it is not scored here either:
it is counted (`groups.quiet`: windows, per group, the floor; `quiet_windows` per file in `groups.per_file` and
`group_files.csv`), and a file whose every window is quiet is named in a warning (stderr, `groups.warnings`, report.md:
its group cannot be evaluated; the exit code is not changed). The other windows go through the tagger + head in use
(the daemon's features and head), scored with `training.evaluate` (3-class and natural-vs-industrial balanced
accuracy, per-class precision / recall / F1, confusion matrix, calibration), with the windows it got wrong. What the
head saw (`soundmond.workbench.evaluate_seen`): a file is in-sample when the sha256 of its bytes is among the head's
training files (`HeadMeta.training_files_sha256`), or else its audio hash (`workbench.audio_hash`: sample rate,
channels and the decoded samples) among `HeadMeta.training_audio_sha256` (a WAV of a training FLAC clip; either
taken from the .json report beside the head when the head lacks it). `groups.in_sample` is true (all files were
trained on), false (none) or "partial", with `in_sample_basis`, the counts (`in_sample_files`, with the files known by
their audio only: `by_audio`, `files_by_audio`) and the figures of each part (`in_sample_part`, `out_of_sample_part`);
`group_errors.csv` and `group_files.csv` mark each window / file (`in_sample_by`: bytes / audio). A resampled,
gain-changed or cut copy is other audio and counts as unseen; so does a re-encoded copy for a head that records no
audio hashes (the basis says so). A head that records no training files is in-sample only when its training-data
checksum matches this labels file and its files.

Output folder (written atomically): `report.md` (figures embedded), `report.json` (every number), `species_results.csv`
(file, species, predicted, score, top-3, ...), `species_confusion.png`, `species_frequency.png`,
`group_confusion.png`, `group_errors.csv`, `group_files.csv` (per file: windows, quiet windows, in-sample and by
what). The JSON summary goes to stdout too.

Exit codes: 0 evaluated (labelled species the model cannot name included), 1 some rows could not be evaluated (a
missing or undecodable file, an unknown group: named on stderr), 2 bad usage (labels file missing, a folder, or
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

from soundmond.analysis import is_quiet, rms_dbfs
from soundmond.capture.audio import AudioError, load_audio, resample
from soundmond.config import ConfigError, TaggerConfig
from soundmond.data import GROUPS
from soundmond.errors import ExitCode
from soundmond.head.loader import load_head
from soundmond.head.meta import HEAD_CLASSES, HeadError, head_features
from soundmond.logs import setup_logging
from soundmond.models.birds import birdnet_week
from soundmond.models.sidecar import ModelFolderError
from soundmond.models.taggers import load_tagger
from soundmond.progress import show_progress
from soundmond.workbench.corpus import training_data_sha256
from soundmond.workbench.crossval import evaluate
from soundmond.workbench.dataset import HOP_S, WINDOW_S, cut_windows
from soundmond.workbench.evaluate_models import (
    DEFAULT_QUIET_BELOW_DBFS,
    EvalModels,
    SpeciesModel,
    load_species_model,
    models_from_args,
    tagger_family,
)
from soundmond.workbench.evaluate_report import write_report
from soundmond.workbench.evaluate_seen import in_sample_figures, training_hashes
from soundmond.workbench.labels import LabelsError, read_label_rows
from soundmond.workbench.report import output_folder_problem

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


def file_species_scores(birds: SpeciesModel, path: Path) -> npt.NDArray[np.float32]:
    """Per class, the highest confidence over every chunk (BirdNET) or clip (hf) of every 5-s window of the file."""
    samples, rate = load_audio(path, birds.sample_rate_hz)
    best: npt.NDArray[np.float32] | None = None
    for window in cut_windows(samples, rate):
        conf = birds.window_scores(window)
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


def left_out_line(left_out: Sequence[dict[str, Any]], model: str, shown: int = 8) -> str:
    """One line for the labelled species `model` cannot name (`evaluate_species`' `left_out`): how many files, and
    the first `shown` species with their file counts and why."""
    files = sum(e["files"] for e in left_out)
    parts = [f"{e['species']!r} ({e['files']} file{'s' * (e['files'] != 1)}: {e['reason']})" for e in left_out[:shown]]
    more = f"; and {len(left_out) - shown} more" if len(left_out) > shown else ""
    return (f"{files} file{'s' * (files != 1)} of {len(left_out)} labelled species {model} cannot name left out of the "
            f"species figures: {'; '.join(parts)}{more} (all of them: report.json species.left_out)")


def evaluate_species(
    rows: Sequence[Row], birds: SpeciesModel, threshold: float, progress: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, str]]]:
    names = birds.names
    meta = birds.meta
    species_mask = birds.species_mask
    known = {n for n, species in zip(names, species_mask, strict=True) if species}
    results: list[dict[str, Any]] = []
    problems: list[dict[str, str]] = []
    unknown: list[str] = []
    truth, tops, truth_geo, tops_geo, tops_geo_filtered = [], [], [], [], []
    for row in tqdm([r for r in rows if r.species], desc=f"{birds.name} species", unit="file", file=sys.stderr,
                    disable=not show_progress(progress)):
        if row.species not in known:  # counted, said once (`left_out_line`): not a file that failed
            unknown.append(row.species)
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
    with_coordinates = sum(1 for r in rows if r.species and r.latitude is not None and r.longitude is not None)
    report: dict[str, Any] = {
        "model": birds.name,
        "method": birds.method,
        "unfiltered": species_metrics(truth, tops),
        "unknown_to_model": sorted(set(unknown)),
        "left_out": [{"species": name, "files": n, "reason": birds.unknown_reason(name)}
                     for name, n in sorted(Counter(unknown).items())],
        "in_sample": None,
        "in_sample_basis": f"unknown: {birds.name}'s folder records no training files, so whether it was trained on "
                           "these recordings cannot be checked (xeno-canto recordings may well be in its training set)",
        "location_filter": {
            "applies": birds.family == "birdnet",
            "reason": birds.no_filter_reason,
            "threshold": threshold,
            "files_with_coordinates": len(truth_geo) if meta is not None else with_coordinates,
            "available": meta is not None,
            "without_filter": species_metrics(truth_geo, tops_geo) if truth_geo else None,
            "with_filter": species_metrics(truth_geo, tops_geo_filtered) if truth_geo else None,
        },
    }
    report["_confusion"] = most_confused(truth, [t[0] for t in tops], 25)
    report["_frequency"] = (Counter(truth), Counter(t[0] for t in tops))
    return report, results, problems


# ---------------------------------------------------------------- groups


def load_tagger_and_head(models: EvalModels, threads: int) -> tuple[Any, Any]:
    """The tagger (YAMNet, AST or hf) and its head, as the daemon loads them: with an hf bird model (no BirdNET
    embedding) the shipped tagger-only head is chosen, and a head that needs BirdNET's embedding is refused."""
    family = tagger_family(models.tagger)
    tagger = load_tagger(models.tagger, TaggerConfig(family=family, path=models.tagger, threads=threads))  # type: ignore[arg-type]
    birdnet = models.bird_config.family == "birdnet"
    if not birdnet:
        logger.info("the bird model is hf: it gives no BirdNET embedding, so heads that need one do not apply")
    return tagger, load_head(models.head, family, len(tagger.labels), birds_enabled=birdnet)


def evaluate_groups(
    rows: Sequence[Row], tagger: Any, head: Any, birds: Any, progress: bool,
    quiet_below_dbfs: float | None = DEFAULT_QUIET_BELOW_DBFS,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, str]]]:
    y: list[str] = []
    probas: list[npt.NDArray[np.float64]] = []
    where: list[tuple[str, float]] = []
    problems: list[dict[str, str]] = []
    per_file: dict[str, dict[str, Any]] = {}
    quiet_per_group: Counter[str] = Counter()
    for row in tqdm([r for r in rows if r.group], desc="tagger + head", unit="file", file=sys.stderr,
                    disable=not show_progress(progress)):
        try:
            samples, rate = load_audio(row.path)
        except AudioError as exc:
            problems.append({"file": row.file, "line": str(row.line), "problem": str(exc)})
            continue
        counts = per_file.setdefault(row.file, {"file": row.file, "group": row.group, "windows": 0,
                                                "quiet_windows": 0})
        win, hop = int(round(WINDOW_S * rate)), int(round(HOP_S * rate))
        for k, window in enumerate(cut_windows(samples, rate)):
            counts["windows"] += 1
            real = samples[k * hop: k * hop + win]  # the daemon decides on the real samples, not the zero padding
            if is_quiet(real, rms_dbfs(real), quiet_below_dbfs):  # the daemon stores it as "quiet", runs no model
                counts["quiet_windows"] += 1
                quiet_per_group[row.group] += 1
                continue
            out = tagger.tag(resample(window, rate, tagger.sample_rate_hz))
            bird_out = None
            if head.needs_birds:
                bird_out = birds.detect(resample(window, rate, birds.sample_rate_hz), start_unix_s=0.0)
            probas.append(head.predict_proba(head_features(out, head.meta.features, bird_out))[0])
            y.append(row.group)
            where.append((row.file, k * HOP_S))
    for counts in per_file.values():
        counts["scored_windows"] = counts["windows"] - counts["quiet_windows"]
    all_quiet = sorted(f for f, c in per_file.items() if c["windows"] and c["quiet_windows"] == c["windows"])
    quiet = {"windows": sum(quiet_per_group.values()), "per_group": dict(sorted(quiet_per_group.items())),
             "below_dbfs": quiet_below_dbfs, "files_entirely_quiet": all_quiet,
             "rule": "the daemon's (`soundmond.analysis.is_quiet`): digital silence (peak under one 16-bit step)"
                     + ("" if quiet_below_dbfs is None else f" or an RMS level under {quiet_below_dbfs:g} dBFS "
                        "(windows.quiet_below_dbfs)") + "; the daemon stores such windows as group 'quiet' and runs "
                     "no model on them, so they are not scored here"}
    floor = "" if quiet_below_dbfs is None else f" or an RMS level under {quiet_below_dbfs:g} dBFS"
    warnings = [f"{f}: all {per_file[f]['windows']} windows are quiet (digital silence{floor}): the daemon stores "
                f"them as group 'quiet' and runs no model, so its group {per_file[f]['group']!r} cannot be evaluated"
                for f in all_quiet]
    if not y:
        return {"windows": 0, "quiet": quiet, "warnings": warnings, "per_file": list(per_file.values())}, [], problems
    proba = np.stack(probas)
    y_true = np.array(y)
    metrics = evaluate(y_true, proba)
    predicted = np.array(HEAD_CLASSES)[proba.argmax(axis=1)]
    seen = training_hashes(head)
    scored = sorted({f for f, _ in where})
    paths = {r.file: r.path for r in rows if r.group}
    file_by = {f: seen.match(paths[f]) if seen is not None else None for f in scored}
    for f, counts in per_file.items():
        # None: not scored (quiet throughout), or the head records no files (the labels-file checksum decides)
        counts |= {"in_sample": file_by[f] is not None if f in file_by and seen is not None else None,
                   "in_sample_by": file_by.get(f)}
    errors = [
        {"file": f, "start_s": s, "end_s": s + WINDOW_S, "true": t, "predicted": p,
         **{f"p_{c}": round(float(proba[i, j]), 4) for j, c in enumerate(HEAD_CLASSES)},
         "in_sample": file_by.get(f) is not None, "in_sample_by": file_by.get(f) or ""}
        for i, ((f, s), t, p) in enumerate(zip(where, y_true, predicted, strict=True)) if t != p
    ]
    metrics["files"] = len(scored)
    metrics["quiet"] = quiet
    metrics["warnings"] = warnings
    metrics["per_file"] = list(per_file.values())
    metrics["head"] = {"path": str(head.path), "tagger_family": head.meta.tagger_family,
                       "features": head.meta.features, "trained_on": head.meta.trained_on,
                       "training_data_sha256": head.meta.training_data_sha256}
    if seen is not None:
        metrics |= in_sample_figures(seen, file_by, [f for f, _ in where], y_true, predicted)
    return metrics, errors, problems


def _in_sample(head_sha: str, labels: Path, rows: Sequence[Row]) -> bool:
    """Whether the head was trained on exactly this labels file and these files (its training-data checksum)."""
    if labels.name != "labels.csv":
        return False
    clips = [SimpleNamespace(file=r.file, path=r.path) for r in rows if r.group]
    return bool(head_sha) and training_data_sha256(labels.parent, clips) == head_sha  # type: ignore[arg-type]


# ---------------------------------------------------------------- CLI


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", type=Path, required=True, metavar="CSV",
                   help="labels CSV: file, species and/or group, optional latitude/longitude/date")
    p.add_argument("--audio-root", type=Path, default=None, metavar="DIR",
                   help="folder the 'file' column is relative to (default: the CSV's folder)")
    p.add_argument("--out", type=Path, default=Path("soundmond-evaluate"), metavar="REPORT_DIR",
                   help="report folder, replaced atomically (default ./soundmond-evaluate)")
    p.add_argument("--config", type=Path, default=None, metavar="CONFIG",
                   help="take the models from this daemon config (models.birds: family, path, species_map, "
                        "sensitivity; models.tagger; models.head); the flags below override it")
    p.add_argument("--birds", "--birdnet", dest="birds", type=Path, default=None, metavar="DIR",
                   help="bird model folder: BirdNET or an hf folder from `python -m export hf` (family from its "
                        "model.json; default: --config's, else models/birdnet)")
    p.add_argument("--species-map", type=Path, default=None, metavar="YAML",
                   help="an hf bird model's species map (label -> scientific name), as models.birds.species_map")
    p.add_argument("--tagger", type=Path, default=None,
                   help="tagger folder: yamnet, ast or hf --role tagger (default: --config's, else models/yamnet)")
    p.add_argument("--head", type=Path, default=None,
                   help="head file (default: --config's, else the one shipped for the tagger; an hf tagger needs one)")
    p.add_argument("--no-species", action="store_true", help="skip the species evaluation")
    p.add_argument("--no-groups", action="store_true", help="skip the natural / industrial / other evaluation")
    p.add_argument("--filter-threshold", type=float, default=DEFAULT_FILTER_THRESHOLD,
                   help="location filter: minimum meta-model occurrence (default 0.03, as the daemon; BirdNET "
                        "only: an hf bird model has no meta model)")
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
        models = models_from_args(args)
        report["models"] = {"from": models.source, "birds": str(models.birds), "bird_family": models.bird_config.family,
                            "tagger": str(models.tagger), "head": str(models.head) if models.head else None}
        birds: SpeciesModel | None = None
        tagger = head = None
        if want_groups:
            tagger, head = load_tagger_and_head(models, args.threads)
        if want_species or (head is not None and head.needs_birds):
            birds = load_species_model(models)
        if want_species:
            assert birds is not None
            if birds.family != "birdnet" and any(r.latitude is not None for r in rows if r.species):
                logger.warning("the labels have coordinates, but %s", birds.no_filter_reason)
            sp, species_rows, sp_problems = evaluate_species(rows, birds, args.filter_threshold, progress)
            problems += sp_problems
            report["species"] = sp
            report["bird_model"] = birds.info
            if birds.family == "birdnet":
                report["birdnet"] = {k: birds.info[k] for k in ("folder", "model_sha256", "source")}
        if want_groups:
            gr, group_errors, gr_problems = evaluate_groups(rows, tagger, head, birds.model if birds else None,
                                                             progress, models.quiet_below_dbfs)
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
            summary["groups"]["in_sample_files"] = {k: g["in_sample_files"][k] for k in ("in", "out", "by_audio")}
    if "quiet" in report.get("groups", {}):
        summary.setdefault("groups", {})["quiet_windows"] = report["groups"]["quiet"]["windows"]
    summary["problems"] = len(problems)
    if left_out := report.get("species", {}).get("left_out"):
        summary["species_left_out_files"] = sum(e["files"] for e in left_out)
    print(json.dumps(summary, indent=2))
    for p in problems:
        print(f"soundmond evaluate: {p['problem']}", file=sys.stderr)
    for warning in report.get("groups", {}).get("warnings", []):
        print(f"soundmond evaluate: warning: {warning}", file=sys.stderr)
    if left_out:
        print(f"soundmond evaluate: {left_out_line(left_out, report['species']['model'])}", file=sys.stderr)
    return ExitCode.PARTIAL if problems else ExitCode.OK


__all__ = ["add_evaluate_arguments", "evaluate_groups", "evaluate_species", "most_confused",
           "read_rows", "run_evaluate", "species_metrics"]
