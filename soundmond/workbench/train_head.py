"""`soundmond train-head`: train the natural / industrial / other head on labelled audio, with the daemon's models.

Input, either:
- a labels CSV (`--labels FILE`): `file` (relative to `--audio-root`, default the CSV's folder) and `group`
  (natural / industrial / other) or `category` (mapped to a group by `--mapping`); optional `source` (clips with one
  source stay in one CV fold; default: the rules of `soundmond.workbench.corpus.source_group`, i.e. the XC number, the
  freesound clip of an ESC-50 take, else the file itself); optional `dataset` (the unit the source-held-out CV holds
  out whole; default `soundmond.workbench.corpus.source_dataset`: esc50, dcase2020t2, xeno-canto, the source
  repository); or
- an ESC-50 checkout (`--labels DIR` holding `meta/esc50.csv` and `audio/`): categories mapped by `--mapping`
  (default `soundmond/workbench/data/esc50_groups.yaml`, all 50 classes), clips grouped by their freesound source
  clip, and cross-validated on ESC-50's own folds.

Features are those of the daemon, and the training path the one of `scripts/train_default_head.py`
(`soundmond.workbench.training.train`): every clip is cut into 5-s windows (hop 5 s), each window goes through the
tagger (`--tagger` folder: YAMNet, AST or an hf `--role tagger` export) and, with `--birdnet`, BirdNET; the per-window
blocks are cached per (file sha256, model sha256) in `--cache`.
`--features` picks the head's input: `probs` (tagger probabilities), `embedding`, `both`, any '+'-joined set of
`probabilities`, `embedding`, `birdnet_embedding`, or `compare` (default: every feature set available, and the best is
shipped). Every model of `--models` (default: logistic regression at four C, an RBF SVM with Platt scaling, a random
forest) is scored with grouped stratified k-fold CV (or ESC-50's folds) on out-of-fold probabilities; the shipped head
is the best logistic regression (the only model the head loader's allow-list accepts; the others are compared) by
natural-vs-industrial balanced accuracy, then 3-class balanced accuracy, then log loss. Logistic regression gives
probabilities directly; their calibration (log loss, Brier, expected calibration error) is in the report.

Output: the head (`--out`, `.onnx` or `.skops`; both are written, see `soundmond.head.save.save_head`: `<name>.onnx`,
what the daemon loads, with an embedded checksum and checked against scikit-learn on the training features, and
`<name>.skops`, the training artefact, loadable only through the allow-list; metadata in both: tagger family and label
count, feature kind, the group labels, training-data checksum, CV metrics), and a report folder (`--report`, default
`<out>-report/`, written atomically): `report.json`, `report.md`, `confusion.png`, `wrong_windows.csv`. A JSON summary
on stdout, progress and logs on stderr.

Exit codes: 0 trained; 1 trained, but some rows were skipped (each named on stderr); 2 bad usage (labels unreadable,
a group with too few source recordings, unknown feature set or model); 3 a model folder is missing or damaged.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from soundmond.data import GROUPS
from soundmond.errors import ExitCode
from soundmond.head.meta import HEAD_CLASSES, HEAD_SUFFIXES, HeadError, feature_parts, utc_now_iso
from soundmond.identity import file_sha256
from soundmond.logs import setup_logging
from soundmond.models.sidecar import ModelFolderError
from soundmond.workbench.corpus import ESC50, Clip, source_dataset, source_group
from soundmond.workbench.crossval import FEATURE_SETS, TrainError, per_category_recall, shippable
from soundmond.workbench.dataset import WINDOW_S, window_starts
from soundmond.workbench.labels import LabelsError, read_label_rows
from soundmond.workbench.report import (
    atomic_dir,
    markdown_table,
    output_folder_problem,
    plot_confusion,
    write_csv,
    write_json,
)
from soundmond.workbench.training import TrainedHead, load_training_models, train

logger = logging.getLogger(__name__)

DEFAULT_MAPPING = Path(__file__).resolve().parent / "data" / "esc50_groups.yaml"
FEATURE_SHORTHANDS = {"probs": "probabilities", "embedding": "embedding", "both": "probabilities+embedding",
                      "all": "probabilities+embedding+birdnet_embedding"}


@dataclass(frozen=True)
class Labelled:
    clips: list[Clip]
    folds: list[int] | None  # ESC-50 fold per clip, when the data set has its own folds
    problems: list[str]
    checksum_inputs: list[Path]  # labels and mapping files, hashed into the training-data checksum
    kind: str  # "csv" or "esc50"


def load_mapping(path: Path) -> dict[str, str]:
    """category -> group from a mapping YAML (`groups: {group: [categories]}`); errors name the file and the key."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TrainError(f"{path}: cannot read the mapping ({exc})") from exc
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, dict):
        raise TrainError(f"{path}: needs a 'groups' mapping of group -> list of categories")
    mapping: dict[str, str] = {}
    for group, categories in groups.items():
        if group not in GROUPS:
            raise TrainError(f"{path}: groups.{group}: not one of {list(GROUPS)}")
        if not isinstance(categories, list):
            raise TrainError(f"{path}: groups.{group}: needs a list of categories")
        for category in categories:
            if str(category) in mapping:
                raise TrainError(f"{path}: category {category!r} is listed under both {mapping[str(category)]} and "
                                 f"{group}")
            mapping[str(category)] = str(group)
    return mapping


def read_labels_csv(labels: Path, audio_root: Path, mapping: dict[str, str] | None) -> Labelled:
    """The clips of a labels CSV (`file` + `group`, or `category` mapped by `mapping`); bad rows are named and
    skipped."""
    clips, problems = [], []
    for row in read_label_rows(labels, audio_root, one_of=("group", "category")):
        group = row.group
        if not group and mapping is not None and row.category:
            group = mapping.get(row.category, "")
            if not group:
                problems.append(f"{row.where}: category {row.category!r} is not in the mapping (skipped)")
                continue
        if group not in GROUPS:
            problems.append(f"{row.where}: group {group!r} is not one of {list(GROUPS)} (skipped)")
            continue
        if not row.audio_exists:
            problems.append(f"{row.where}: audio file {row.path} not found (skipped)")
            continue
        source = (row.columns.get("source") or "").strip() or source_group(row.columns)
        dataset = (row.columns.get("dataset") or "").strip() or source_dataset(row.columns)
        clips.append(Clip(row.path, row.file, group, row.category, source, source, dataset))
    return Labelled(clips, None, problems, [labels], "csv")


def read_esc50(root: Path, audio_root: Path | None, mapping: dict[str, str]) -> Labelled:
    meta = root / "meta" / "esc50.csv"
    audio = audio_root or root / "audio"
    try:
        with open(meta, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = set(reader.fieldnames or [])
            raw = list(reader)
    except OSError as exc:
        raise TrainError(f"{meta}: cannot read ({exc})") from exc
    needed = {"filename", "fold", "category", "src_file"}
    if not needed <= fields:
        raise TrainError(f"{meta}: not an ESC-50 meta file (missing columns {sorted(needed - fields)})")
    clips, folds, problems = [], [], []
    for n, row in enumerate(raw, start=2):
        where = f"{meta}:{n}: {row.get('filename')}"
        group = mapping.get(row["category"])
        if group is None:
            problems.append(f"{where}: category {row['category']!r} is not in the mapping (skipped)")
            continue
        path = audio / row["filename"]
        if not path.is_file():
            problems.append(f"{where}: audio file {path} not found (skipped)")
            continue
        try:
            fold = int(row["fold"])
        except ValueError:
            problems.append(f"{where}: fold {row['fold']!r} is not a number (skipped)")
            continue
        source = f"freesound:{row['src_file']}"
        clips.append(Clip(path, row["filename"], group, row["category"], source, source, ESC50))
        folds.append(fold)
    return Labelled(clips, folds, problems, [meta], "esc50")


def feature_sets_for(choice: str, with_birds: bool) -> list[str]:
    if choice == "compare":
        sets = [k for k in FEATURE_SETS if shippable(k, "logreg")]
        return [k for k in sets if with_birds or "birdnet_embedding" not in k.split("+")]
    kind = FEATURE_SHORTHANDS.get(choice, choice)
    try:
        parts = feature_parts(kind)
    except ValueError as exc:
        raise TrainError(f"--features {choice}: {exc}; or one of {[*FEATURE_SHORTHANDS, 'compare']}") from exc
    if "birdnet_embedding" in parts and not with_birds:
        raise TrainError(f"--features {choice} needs BirdNET's embedding: pass --birdnet DIR")
    return [kind]


def training_checksum(inputs: Sequence[Path], mapping: Path | None, clips: Sequence[Clip]) -> str:
    digest = hashlib.sha256()
    for path in [*inputs, *([mapping] if mapping else [])]:
        digest.update(path.read_bytes())
    for clip in clips:
        digest.update(f"{clip.file}:{clip.group}:{file_sha256(clip.path)}\n".encode())
    return digest.hexdigest()


def cli_report(result: TrainedHead, labelled: Labelled, out: Path, mapping_path: Path | None, tagger: Any,
               birds: Any, command: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`report.json` of `soundmond train-head` and the windows the chosen candidate got wrong (out of fold)."""
    data, cv, oof = result.data, result.cv, result.oof[result.best]
    predicted = np.array(HEAD_CLASSES)[oof.argmax(axis=1)]
    wrong = [
        {"file": data.clips[c].file, "category": data.clips[c].category, "start_s": float(s), "end_s": float(s)
         + WINDOW_S, "true": t, "predicted": p,
         **{f"p_{g}": round(float(oof[i, j]), 4) for j, g in enumerate(HEAD_CLASSES)}}
        for i, (c, s, t, p) in enumerate(zip(data.clip, window_starts(data.clip), data.y, predicted, strict=True))
        if t != p
    ]
    report: dict[str, Any] = {
        "head": str(out),
        "chosen": {"features": result.kind, "model": result.name},
        "cv_scheme": result.scheme,
        "cv": cv,
        "cv_per_category": per_category_recall(data, oof),
        "source_held_out_cv": result.source_cv,
        "comparison": {
            k: {"shippable": shippable(*k.split("/", 1)),
                "natural_vs_industrial_balanced_accuracy": v["natural_vs_industrial"]["balanced_accuracy"],
                "balanced_accuracy_3class": v["balanced_accuracy_3class"], "accuracy_3class": v["accuracy_3class"],
                "log_loss": v["calibration"]["log_loss"],
                "ece_top_probability": v["calibration"]["ece_top_probability"]}
            for k, v in result.comparison.items()
        },
        "selection_rule": "best shippable (StandardScaler + LogisticRegression) candidate by natural-vs-industrial "
                          "balanced accuracy, then 3-class balanced accuracy, then lower log loss, on the same CV "
                          "(so `cv` is optimistic by that choice when several candidates are compared)",
        "data": {"kind": labelled.kind, "labels": str(labelled.checksum_inputs[0]), "clips": len(labelled.clips),
                 "windows": int(data.y.size), "windows_per_group": {g: int((data.y == g).sum()) for g in HEAD_CLASSES},
                 "source_recordings": len(set(data.groups)),
                 "training_data_sha256": result.meta.training_data_sha256,
                 "training_files_sha256": result.meta.training_files_sha256,
                 "training_audio_sha256": result.meta.training_audio_sha256,
                 "mapping": str(mapping_path) if mapping_path else None, "skipped_rows": labelled.problems},
        "tagger": {"family": tagger.sidecar.family, "folder": str(tagger.folder), "model_sha256": tagger.model_sha256},
        "birdnet": None if birds is None else {"folder": str(birds.folder), "model_sha256": birds.model_sha256},
        "wrong_windows": len(wrong),
        "sklearn_version": result.meta.sklearn_version,
        "created_utc": result.meta.created_utc,
        "command": command,
        "files": result.files.report(),
    }
    return report, wrong


def _source_markdown(source: dict[str, Any]) -> list[str]:
    """The source-held-out CV (what a new site would see): pooled, then per source data set."""
    head = source.get("head")
    if head is None:
        return ["", f"Source-held-out CV: not computed ({source.get('problem', '')})."]
    figures = [("chosen head", head)] + ([("ontology rule", source["ontology_rule"])] if "ontology_rule" in source
                                        else [])
    lines = ["", f"## Source-held-out CV ({source['scheme']})", "",
             *(f"- {name}: natural vs industrial balanced accuracy "
               f"**{m['natural_vs_industrial']['balanced_accuracy']:.3f}**" for name, m in figures), ""]
    rows = [[name, s["windows"], s.get("natural_recall", ""), s.get("industrial_recall", ""),
             s["natural_vs_industrial_balanced_accuracy"] if s["natural_vs_industrial_balanced_accuracy"] is not None
             else ""] for name, s in head["per_source"].items()]
    return [*lines, markdown_table(["source (chosen head)", "windows", "natural recall", "industrial recall",
                                    "natural vs industrial"], rows)]


def _write_report(report_dir: Path, report: dict[str, Any], wrong: list[dict[str, Any]]) -> None:
    cv = report["cv"]
    with atomic_dir(report_dir) as tmp:
        plot_confusion(cv["confusion_matrix"]["rows_true_columns_predicted"], HEAD_CLASSES, HEAD_CLASSES,
                       tmp / "confusion.png", unit="windows", xlabel="predicted group", ylabel="true group",
                       title=f"Head CV, out-of-fold ({cv['windows']} windows): "
                             f"{report['chosen']['features']} / {report['chosen']['model']}")
        write_csv(tmp / "wrong_windows.csv", wrong, ["file", "category", "start_s", "end_s", "true", "predicted",
                                                     "p_industrial", "p_natural", "p_other"])
        write_json(tmp / "report.json", report)
        ni = cv["natural_vs_industrial"]
        md = [
            f"# soundmond train-head: {report['head']}", "",
            f"Data: {report['data']['clips']} clips ({report['data']['kind']} {report['data']['labels']}), "
            f"{report['data']['windows']} windows, {report['data']['source_recordings']} source recordings. "
            f"CV: {report['cv_scheme']}.", "",
            f"Chosen: `{report['chosen']['features']}` / `{report['chosen']['model']}`.", "",
            f"- accuracy (3 classes): {cv['accuracy_3class']:.3f}",
            f"- balanced accuracy (3 classes): {cv['balanced_accuracy_3class']:.3f}",
            f"- natural vs industrial balanced accuracy: **{ni['balanced_accuracy']:.3f}**",
            f"- calibration: log loss {cv['calibration']['log_loss']:.3f}, Brier {cv['calibration']['brier']:.3f}, "
            f"ECE {cv['calibration']['ece_top_probability']:.3f}", "",
            markdown_table(["class", "precision", "recall", "F1", "windows"],
                           [[c, v["precision"], v["recall"], v["f1"], v["support"]]
                            for c, v in cv["per_class"].items()]),
            *_source_markdown(report["source_held_out_cv"]),
            "", "![Confusion matrix](confusion.png)", "", "## Comparison (same CV)", "",
            markdown_table(["features / model", "shippable", "natural vs industrial", "balanced 3-class", "log loss"],
                           [[k, v["shippable"], v["natural_vs_industrial_balanced_accuracy"],
                             v["balanced_accuracy_3class"], v["log_loss"]] for k, v in report["comparison"].items()]),
            "", f"## Windows it got wrong: {report['wrong_windows']} ([wrong_windows.csv](wrong_windows.csv))", "",
        ]
        if report["data"]["skipped_rows"]:
            md += ["## Rows skipped", ""] + [f"- {p}" for p in report["data"]["skipped_rows"]] + [""]
        (tmp / "report.md").write_text("\n".join(md))


# ---------------------------------------------------------------- CLI


def add_train_head_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", type=Path, required=True, metavar="CSV|ESC50_DIR",
                   help="labels CSV (file + group or category), or an ESC-50 checkout (meta/esc50.csv, audio/)")
    p.add_argument("--audio-root", type=Path, default=None, metavar="DIR",
                   help="folder the files are relative to (default: the CSV's folder, or ESC50_DIR/audio)")
    p.add_argument("--out", type=Path, required=True, metavar="HEAD",
                   help="head file to write: NAME.onnx (what the daemon loads; NAME.skops, the training artefact, is "
                   "written beside it) or NAME.skops (NAME.onnx beside it)")
    p.add_argument("--report", type=Path, default=None, metavar="DIR", help="report folder (default HEAD-report/)")
    p.add_argument("--features", default="compare",
                   help="probs | embedding | both | all | a '+'-joined set | compare (default: compare all available)")
    p.add_argument("--tagger", type=Path, default=Path("models/yamnet"),
                   help="tagger model folder: yamnet, ast or hf (`python -m export hf --role tagger`)")
    p.add_argument("--birdnet", type=Path, default=None, help="BirdNET folder: adds its embedding as a feature")
    p.add_argument("--mapping", type=Path, default=None,
                   help="category -> group YAML (default: the shipped ESC-50 mapping, used for 'category' columns)")
    p.add_argument("--models", default="logreg_C1,logreg_C0.1,logreg_C0.01,logreg_C0.001,svm_rbf,random_forest",
                   help="comma-separated models to compare (logistic regressions are shippable)")
    p.add_argument("--folds", type=int, default=5, help="grouped CV folds when the data has no folds of its own")
    p.add_argument("--cache", type=Path, default=Path(".cache/head-features"), help="feature cache folder")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--ontology", type=Path, default=None, help="AudioSet ontology.json: adds the ontology rule "
                   "(no training) beside the head under the source-held-out CV")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads per model (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run_train_head(args: argparse.Namespace) -> int:
    setup_logging("DEBUG" if args.verbose else "INFO")
    command = "soundmond train-head " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    try:
        utc_now_iso()  # a bad SOURCE_DATE_EPOCH is refused before any work, not after the training
    except ValueError as exc:
        print(f"soundmond train-head: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        if args.out.suffix.lower() not in HEAD_SUFFIXES:
            raise TrainError(f"--out {args.out}: a head file ends in .onnx or .skops (both are written)")
        mapping_path = args.mapping or DEFAULT_MAPPING
        report_folder = args.report or args.out.with_name(args.out.stem + "-report")
        if (folder_problem := output_folder_problem(report_folder)) is not None:  # before any work
            raise TrainError(f"the report folder: {folder_problem}")
        if args.labels.is_dir():
            if not (args.labels / "meta" / "esc50.csv").is_file():
                raise TrainError(f"{args.labels}: a folder must be an ESC-50 checkout (meta/esc50.csv not found)")
            labelled = read_esc50(args.labels, args.audio_root, load_mapping(mapping_path))
        elif args.labels.is_file():
            labelled = read_labels_csv(args.labels, args.audio_root or args.labels.parent, load_mapping(mapping_path))
        else:
            raise TrainError(f"{args.labels}: no such labels file or ESC-50 folder")
        for problem in labelled.problems:
            print(f"soundmond train-head: {problem}", file=sys.stderr)
        if not labelled.clips:
            raise TrainError(f"{args.labels}: no usable clip")
        tagger, birds = load_training_models(args.tagger, args.birdnet, args.threads)
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        if not any(m.startswith("logreg") for m in models):
            raise TrainError("--models must include a logistic regression (logreg_C*): the only shippable head model")
        report_dir = args.report or args.out.with_name(args.out.stem + "-report")
        result = train(
            labelled.clips, tagger, birds, args.out,
            data_name=f"{labelled.kind} {labelled.checksum_inputs[0]}",
            training_data_sha256=training_checksum(labelled.checksum_inputs, mapping_path, labelled.clips),
            feature_sets=feature_sets_for(args.features, birds is not None), models=models, folds=args.folds,
            clip_folds=labelled.folds, cache_dir=None if args.no_cache else args.cache,
            progress=not args.no_progress, ontology=args.ontology,
        )
        report, wrong = cli_report(result, labelled, args.out, mapping_path, tagger, birds, command)
        _write_report(report_dir, report, wrong)
    except (TrainError, LabelsError) as exc:
        print(f"soundmond train-head: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except (ModelFolderError, HeadError) as exc:
        print(f"soundmond train-head: {exc}", file=sys.stderr)
        return ExitCode.MODELS
    cv = report["cv"]
    summary = {
        "head": str(args.out), "report": str(report_dir), "chosen": report["chosen"], "cv_scheme": report["cv_scheme"],
        "accuracy_3class": cv["accuracy_3class"], "balanced_accuracy_3class": cv["balanced_accuracy_3class"],
        "natural_vs_industrial_balanced_accuracy": cv["natural_vs_industrial"]["balanced_accuracy"],
        "comparison": {k: v["natural_vs_industrial_balanced_accuracy"] for k, v in report["comparison"].items()},
        "clips": report["data"]["clips"], "windows": report["data"]["windows"],
        "skipped_rows": len(labelled.problems),
    }
    print(json.dumps(summary, indent=2))
    return ExitCode.PARTIAL if labelled.problems else ExitCode.OK


__all__ = ["DEFAULT_MAPPING", "add_train_head_arguments", "cli_report", "load_mapping", "read_esc50",
           "read_labels_csv", "run_train_head"]
