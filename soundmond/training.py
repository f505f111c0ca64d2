"""Training the natural / industrial / other head on the real corpus, reproducibly.

Pipeline (`train_head`):
1. `read_corpus`: `labels.csv` of the corpus -> clips with their group (natural / industrial / other) and the
   *source recording* each clip came from (`source_group`), so clips of one recording never straddle CV folds.
2. `clip_features`: each clip -> 16-kHz mono (`audio.load_audio`, as the daemon reads files) -> 5-s windows every
   5 s (a clip shorter than one window is zero-padded to it; a tail shorter than a window is dropped) -> the tagger's
   output per window through the daemon's own adapter (`YamnetTagger.tag`) -> probabilities and embedding. Cached
   per (file sha256, model sha256, windowing) as .npz, so re-runs take seconds.
3. `cross_validate`: grouped, stratified 5-fold CV (`StratifiedGroupKFold`, fixed seed) of every candidate
   (features x model); metrics per window (`evaluate`).
4. The best candidate (highest natural-vs-industrial balanced accuracy, then 3-class balanced accuracy, then the
   simpler model) is fitted on all windows and written with `head.save_head`.

Metric definitions (`evaluate`):
- `balanced_accuracy_3class`: sklearn's balanced accuracy over natural / industrial / other.
- `natural_vs_industrial.balanced_accuracy` (the target, >= 0.95): the 3-class head's own predictions on the
  windows whose true group is natural or industrial; the mean of the natural and the industrial recall, where a
  window predicted as "other" counts as wrong. This is how the daemon's head is used, and stricter than a binary
  re-decision.
- `natural_vs_industrial.binary_balanced_accuracy`: the same windows, deciding only between natural and industrial
  (argmax of those two probabilities): what a natural / industrial ratio computed from the two probabilities sees.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from soundmond.audio import load_audio
from soundmond.data import GROUPS
from soundmond.head import HEAD_CLASSES, HeadMeta, save_head, utc_now_iso
from soundmond.models import YamnetTagger
from soundmond.sidecar import sha256_file

logger = logging.getLogger(__name__)

WINDOW_S = 5.0
HOP_S = 5.0
CV_FOLDS = 5
SEED = 0
FEATURE_CACHE_VERSION = 1  # bump when the windowing or the stored features change
FEATURE_SETS: tuple[str, ...] = ("probabilities", "embedding", "both")


class CorpusError(Exception):
    """The corpus is missing or its labels file is unusable."""


@dataclass(frozen=True)
class Clip:
    path: Path
    file: str  # as in labels.csv
    group: str
    category: str
    source: str  # source recording: clips with the same source stay in one CV fold


_FREESOUND = re.compile(r"freesound:(\d+)")
_DCASE_ID = re.compile(r"(id_\d+)")


def source_group(row: dict[str, str]) -> str:
    """The recording a clip came from, for grouped CV.

    ESC-50: the freesound clip id of `original_id` ("freesound:11687 take A" -> "freesound:11687": takes A/B of one
    freesound clip are one recording). DCASE2020 machines: the machine id ("dcase:id_00": one machine, one group).
    Xeno-canto: the XC number. Anything else: the source repository's file (a long recording cut into excerpts
    stays together), else the corpus file.
    """
    original = (row.get("original_id") or "").strip()
    if match := _FREESOUND.search(original):
        return f"freesound:{match.group(1)}"
    name = row.get("file", "")
    if "dcase" in name.lower():
        if match := _DCASE_ID.search(name):
            return f"dcase:{match.group(1)}"
    if original:
        return original
    if row.get("source_repo") and row.get("source_path"):
        return f"{row['source_repo']}:{row['source_path']}"
    return name


def read_corpus(corpus: Path) -> list[Clip]:
    labels = corpus / "labels.csv"
    if not labels.is_file():
        raise CorpusError(
            f"{labels} not found: the corpus is expected beside the project checkout (../shared/data/corpus); "
            "pass --corpus DIR"
        )
    with open(labels, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    clips = []
    for row in rows:
        if row.get("group") not in GROUPS:
            raise CorpusError(f"{labels}: {row.get('file')}: group {row.get('group')!r} is not one of {GROUPS}")
        path = corpus / row["file"]
        if not path.is_file():
            raise CorpusError(f"{path} is listed in labels.csv but missing")
        clips.append(Clip(path, row["file"], row["group"], row.get("category", ""), source_group(row)))
    if not clips:
        raise CorpusError(f"{labels} lists no clips")
    return clips


def cut_windows(
    samples: npt.NDArray[np.float32], rate_hz: int, window_s: float = WINDOW_S, hop_s: float = HOP_S
) -> list[npt.NDArray[np.float32]]:
    """Windows of `window_s` every `hop_s` (full windows only; a clip shorter than one window is zero-padded)."""
    win = int(round(window_s * rate_hz))
    hop = int(round(hop_s * rate_hz))
    if samples.size < win:
        return [np.pad(samples, (0, win - samples.size)).astype(np.float32)]
    return [samples[s : s + win] for s in range(0, samples.size - win + 1, hop)]


@dataclass(frozen=True)
class ClipFeatures:
    probabilities: npt.NDArray[np.float32]  # [windows, labels]
    embedding: npt.NDArray[np.float32]  # [windows, dim]


def clip_features(tagger: YamnetTagger, path: Path, cache_dir: Path | None) -> ClipFeatures:
    """The tagger's output for every window of one clip, cached by (file sha256, model sha256, windowing)."""
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256(
            f"{sha256_file(path)}|{tagger.model_sha256}|{tagger.config.pooling}|{WINDOW_S}|{HOP_S}|"
            f"{FEATURE_CACHE_VERSION}".encode()
        ).hexdigest()[:32]
        cache_file = cache_dir / f"{key}.npz"
        if cache_file.is_file():
            with np.load(cache_file) as cached:
                return ClipFeatures(cached["probabilities"], cached["embedding"])
    samples, rate = load_audio(path, tagger.sample_rate_hz)
    outputs = [tagger.tag(window) for window in cut_windows(samples, rate)]
    features = ClipFeatures(
        np.stack([o.probabilities for o in outputs]).astype(np.float32),
        np.stack([o.embedding for o in outputs]).astype(np.float32),
    )
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(cache_file.stem + ".tmp.npz")
        np.savez(tmp, probabilities=features.probabilities, embedding=features.embedding)
        tmp.replace(cache_file)
    return features


@dataclass(frozen=True)
class Dataset:
    probabilities: npt.NDArray[np.float32]
    embedding: npt.NDArray[np.float32]
    y: npt.NDArray[np.str_]
    groups: npt.NDArray[np.str_]
    clip: npt.NDArray[np.int64]  # index into `clips` per window
    clips: list[Clip]

    def features(self, kind: str) -> npt.NDArray[np.float32]:
        if kind == "probabilities":
            return self.probabilities
        if kind == "embedding":
            return self.embedding
        return np.concatenate([self.probabilities, self.embedding], axis=1)


def build_dataset(
    clips: Sequence[Clip], tagger: YamnetTagger, cache_dir: Path | None, progress: bool = True
) -> Dataset:
    from tqdm import tqdm

    probs, embs, ys, groups, clip_idx = [], [], [], [], []
    for i, clip in enumerate(tqdm(clips, desc="tagger features", unit="clip", file=sys.stderr, disable=not progress)):
        feats = clip_features(tagger, clip.path, cache_dir)
        n = feats.probabilities.shape[0]
        probs.append(feats.probabilities)
        embs.append(feats.embedding)
        ys += [clip.group] * n
        groups += [clip.source] * n
        clip_idx += [i] * n
    return Dataset(
        np.concatenate(probs),
        np.concatenate(embs),
        np.array(ys),
        np.array(groups),
        np.array(clip_idx, dtype=np.int64),
        list(clips),
    )


def candidate_models(seed: int = SEED) -> dict[str, Callable[[], Any]]:
    """Model name -> factory of an unfitted estimator. Logistic regression first (the preferred, simplest head)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def logreg(c: float) -> Callable[[], Any]:
        return lambda: make_pipeline(
            StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=5000, random_state=seed)
        )

    return {
        "logreg_C1": logreg(1.0),
        "logreg_C0.1": logreg(0.1),
        "logreg_C0.01": logreg(0.01),
        "random_forest": lambda: RandomForestClassifier(
            n_estimators=300, class_weight="balanced", min_samples_leaf=2, random_state=seed, n_jobs=1
        ),
    }


def evaluate(y_true: npt.NDArray[np.str_], proba: npt.NDArray[np.float64]) -> dict[str, Any]:
    """Metrics of [n, 3] probabilities (HEAD_CLASSES order) against true groups; see the module docstring."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    classes = np.array(HEAD_CLASSES)
    y_pred = classes[np.argmax(proba, axis=1)]
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=HEAD_CLASSES, zero_division=0)
    ni = np.isin(y_true, ["natural", "industrial"])
    recalls = [float(np.mean(y_pred[ni & (y_true == g)] == g)) for g in ("natural", "industrial")]
    i_nat, i_ind = HEAD_CLASSES.index("natural"), HEAD_CLASSES.index("industrial")
    binary_pred = np.where(proba[ni, i_nat] >= proba[ni, i_ind], "natural", "industrial")
    return {
        "windows": int(y_true.size),
        "balanced_accuracy_3class": float(balanced_accuracy_score(y_true, y_pred)),
        "accuracy_3class": float(np.mean(y_true == y_pred)),
        "natural_vs_industrial": {
            "balanced_accuracy": float(np.mean(recalls)),
            "natural_recall": recalls[0],
            "industrial_recall": recalls[1],
            "binary_balanced_accuracy": float(balanced_accuracy_score(y_true[ni], binary_pred)),
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
    }


def cross_validate(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.str_],
    groups: npt.NDArray[np.str_],
    factory: Callable[[], Any],
    folds: int = CV_FOLDS,
    seed: int = SEED,
) -> tuple[dict[str, Any], npt.NDArray[np.float64]]:
    """Grouped stratified k-fold CV; returns (metrics, out-of-fold probabilities [n, 3])."""
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    oof = np.zeros((y.size, len(HEAD_CLASSES)), dtype=np.float64)
    for train, test in splitter.split(x, y, groups):
        if set(groups[train]) & set(groups[test]):  # pragma: no cover - guaranteed by StratifiedGroupKFold
            raise RuntimeError("a source recording is in both the training and the test fold")
        model = factory().fit(x[train], y[train])
        order = [list(model.classes_).index(c) for c in HEAD_CLASSES]
        oof[test] = model.predict_proba(x[test])[:, order]
    return evaluate(y, oof), oof


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


def _selection_key(name: str, metrics: dict[str, Any]) -> tuple[float, float, int]:
    ni = round(metrics["natural_vs_industrial"]["balanced_accuracy"], 4)
    return (ni, round(metrics["balanced_accuracy_3class"], 4), 1 if name.startswith("logreg") else 0)


def training_data_sha256(corpus: Path, clips: Sequence[Clip]) -> str:
    digest = hashlib.sha256((corpus / "labels.csv").read_bytes())
    for clip in clips:
        digest.update(f"{clip.file}:{sha256_file(clip.path)}\n".encode())
    return digest.hexdigest()


def train_head(
    corpus: Path,
    model_dir: Path,
    out: Path,
    cache_dir: Path | None,
    *,
    command: str = "",
    progress: bool = True,
    models: Sequence[str] | None = None,
    feature_sets: Sequence[str] = FEATURE_SETS,
) -> dict[str, Any]:
    """Train, cross-validate, pick and write the YAMNet head; returns the report (also written beside it as .json)."""
    import sklearn

    from soundmond.config import TaggerConfig

    clips = read_corpus(corpus)
    config = TaggerConfig(family="yamnet", path=model_dir, threads=2, pooling="mean")
    tagger = YamnetTagger(model_dir, config)
    data = build_dataset(clips, tagger, cache_dir, progress=progress)
    logger.info("%d clips -> %d windows, %d source recordings", len(clips), data.y.size, len(set(data.groups)))

    factories = candidate_models()
    names = list(models) if models else list(factories)
    comparison: dict[str, dict[str, Any]] = {}
    out_of_fold: dict[str, npt.NDArray[np.float64]] = {}
    for kind in feature_sets:
        x = data.features(kind)
        for name in names:
            metrics, oof = cross_validate(x, data.y, data.groups, factories[name])
            comparison[f"{kind}/{name}"] = metrics
            out_of_fold[f"{kind}/{name}"] = oof
            logger.info(
                "%s/%s: natural vs industrial %.3f, 3-class %.3f",
                kind,
                name,
                metrics["natural_vs_industrial"]["balanced_accuracy"],
                metrics["balanced_accuracy_3class"],
            )
    best = max(comparison, key=lambda k: _selection_key(k.split("/", 1)[1], comparison[k]))
    kind, name = best.split("/", 1)
    x = data.features(kind)
    model = factories[name]().fit(x, data.y)
    per_class_counts = {g: int((data.y == g).sum()) for g in HEAD_CLASSES}
    cv = comparison[best]
    meta = HeadMeta(
        tagger_family="yamnet",
        tagger_label_count=len(tagger.labels),
        features=kind,
        feature_dim=int(x.shape[1]),
        classes=list(HEAD_CLASSES),
        trained_on=(
            f"{corpus.name}: {len(clips)} clips, {data.y.size} windows of {WINDOW_S:g} s "
            f"(hop {HOP_S:g} s), {len(set(data.groups))} source recordings; model {name}; "
            f"tagger {tagger.sidecar.source.id} sha256 {tagger.model_sha256[:12]}"
        ),
        training_data_sha256=training_data_sha256(corpus, clips),
        cv_metrics={
            "scheme": f"StratifiedGroupKFold({CV_FOLDS}, shuffle, seed {SEED}), groups = source recording",
            "balanced_accuracy_3class": cv["balanced_accuracy_3class"],
            "natural_vs_industrial_balanced_accuracy": cv["natural_vs_industrial"]["balanced_accuracy"],
        },
        sklearn_version=sklearn.__version__,
        created_utc=utc_now_iso(),
    )
    save_head(out, model, meta)
    report: dict[str, Any] = {
        "head": str(out.name),
        "chosen": {"features": kind, "model": name},
        "selection_rule": "max natural-vs-industrial balanced accuracy, then 3-class balanced accuracy, then "
        "logistic regression over the forest",
        "cv": cv,
        "cv_per_category": per_category_recall(data, out_of_fold[best]),
        "comparison": {
            k: {
                "natural_vs_industrial_balanced_accuracy": v["natural_vs_industrial"]["balanced_accuracy"],
                "natural_vs_industrial_binary_balanced_accuracy": v["natural_vs_industrial"][
                    "binary_balanced_accuracy"
                ],
                "balanced_accuracy_3class": v["balanced_accuracy_3class"],
            }
            for k, v in comparison.items()
        },
        "data": {
            "corpus": str(corpus),
            "clips": len(clips),
            "windows": int(data.y.size),
            "windows_per_group": per_class_counts,
            "source_recordings": len(set(data.groups)),
            "window_s": WINDOW_S,
            "hop_s": HOP_S,
            "training_data_sha256": meta.training_data_sha256,
        },
        "tagger": {
            "family": "yamnet",
            "model_sha256": tagger.model_sha256,
            "source": tagger.sidecar.source.id,
            "pooling": config.pooling,
        },
        "sklearn_version": sklearn.__version__,
        "created_utc": meta.created_utc,
        "command": command,
        "cv_target": {"natural_vs_industrial_balanced_accuracy": 0.95},
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return report


__all__ = [
    "Clip",
    "ClipFeatures",
    "CorpusError",
    "Dataset",
    "build_dataset",
    "candidate_models",
    "clip_features",
    "cross_validate",
    "cut_windows",
    "evaluate",
    "read_corpus",
    "source_group",
    "train_head",
]
