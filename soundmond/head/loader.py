"""Loading a head for the daemon: `load_head` (the configured one, or the one shipped for the tagger family) and
`Head`, what the pipeline calls (implements `GroupHead`). An ONNX head is run by ONNX Runtime; a `.skops` head (the
training artefact) imports scikit-learn when it is loaded."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt

from soundmond.data import BirdOutput, GroupPrediction, TaggerOutput
from soundmond.head.meta import (
    HEAD_CLASSES,
    HEAD_SUFFIXES,
    ONNX_SUFFIX,
    SKOPS_SUFFIX,
    HeadError,
    HeadMeta,
    Predictor,
    check_tagger,
    default_head_path,
    head_features,
    needs_birds,
    read_head_bytes,
    tagger_only_head_path,
)
from soundmond.head.onnx import load_onnx
from soundmond.head.skops import SkopsPredictor, load_skops

logger = logging.getLogger(__name__)


class Head:
    """A loaded head: `predict(tagger_output, bird_output=None) -> GroupPrediction` (implements `GroupHead`)."""

    def __init__(self, predictor: Predictor, meta: HeadMeta, path: Path | None = None) -> None:
        self.predictor = predictor
        self.meta = meta
        self.path = path
        self.tagger_family: str = meta.tagger_family

    @classmethod
    def load(
        cls,
        path: Path | str,
        *,
        tagger_family: str | None = None,
        tagger_label_count: int | None = None,
    ) -> Head:
        """Load a head file (`.onnx`, or the `.skops` training artefact); refuse damage, untrusted content, and a head
        made for another tagger."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in HEAD_SUFFIXES:
            raise HeadError(
                path,
                f"unknown head file type {suffix or '(no suffix)'!r}: expected {ONNX_SUFFIX} (or {SKOPS_SUFFIX})",
                "set models.head.path to a .onnx head written by soundmond train-head, or leave it empty",
            )
        if not path.is_file():
            raise HeadError(path, "no such head file", "set models.head.path, or leave it empty for the shipped head")
        data = read_head_bytes(path)
        predictor: Predictor
        if suffix == ONNX_SUFFIX:
            predictor, meta = load_onnx(path, data)
        else:
            model, meta = load_skops(path, data)
            predictor = SkopsPredictor(model)
            if path.with_suffix(ONNX_SUFFIX).is_file():
                logger.info(
                    "%s is a skops head (imports scikit-learn, ~100 MB of memory); the ONNX head beside it, %s, loads "
                    "without importing scikit-learn",
                    path,
                    path.with_suffix(ONNX_SUFFIX).name,
                )
        check_tagger(path, meta, tagger_family, tagger_label_count)
        logger.info("head loaded from %s (%s tagger, %s features)", path, meta.tagger_family, meta.features)
        return cls(predictor, meta, path)

    def predict_proba(self, features: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        """[n, 3] probabilities in `HEAD_CLASSES` order for [n, feature_dim] features (an ONNX head takes them as
        float32, what the daemon supplies; a skops head as float64)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.shape[1] != self.meta.feature_dim:
            raise ValueError(f"head expects {self.meta.feature_dim} features, got {x.shape[1]}")
        return self.predictor(x)

    @property
    def needs_birds(self) -> bool:
        """True when the head's features include BirdNET's embedding (`predict` then needs `bird_output`)."""
        return needs_birds(self.meta.features)

    def predict(self, tagger_output: TaggerOutput, bird_output: BirdOutput | None = None) -> GroupPrediction:
        """natural / industrial / other for one window; `bird_output` is required when `needs_birds`."""
        proba = self.predict_proba(head_features(tagger_output, self.meta.features, bird_output))[0]
        best = int(np.argmax(proba))
        group = HEAD_CLASSES[best]
        return GroupPrediction(
            group=group,  # type: ignore[arg-type]  # one of GROUPS by construction
            probabilities={c: float(p) for c, p in zip(HEAD_CLASSES, proba, strict=True)},
        )


def load_head(
    path: Path | None, tagger_family: str, tagger_label_count: int | None = None, birds_enabled: bool = True
) -> Head:
    """The configured head (`models.head.path`), or the one shipped for the tagger family when it is None.

    With `birds_enabled` false (`models.birds.enabled: false`) and no configured head, the shipped tagger-only head
    (`tagger_only_head_path`) is used when the family has one (the reason is logged); a head that needs BirdNET's
    embedding - configured, or the only one shipped - is refused with a `HeadError` naming `models.head.path` and
    `models.birds.enabled`.
    """
    default = default_head_path(tagger_family)
    if path is not None:
        chosen = path
    elif not birds_enabled and tagger_only_head_path(tagger_family).is_file():
        chosen = tagger_only_head_path(tagger_family)
        logger.info(
            "no BirdNET embedding (models.birds.enabled is false, or the bird model is not BirdNET) and "
            "models.head.path is empty: using the shipped tagger-only head %s "
            "(the default %s needs BirdNET's embedding)",
            chosen,
            default.name,
        )
    else:
        chosen = default
        if not chosen.is_file():  # no path: the user never wrote the shipped one (the callers name the key)
            raise HeadError(
                "",
                f"no head is shipped for the '{tagger_family}' tagger (the head turns its outputs into natural / "
                "industrial / other)",
                "train one with `soundmond train-head --labels CSV --tagger TAGGER_FOLDER --out HEAD.onnx` and set "
                "models.head.path to HEAD.onnx (evaluate: --head HEAD.onnx)",
            )
    head = Head.load(chosen, tagger_family=tagger_family, tagger_label_count=tagger_label_count)
    if head.needs_birds and not birds_enabled:
        fallback = tagger_only_head_path(tagger_family)
        if path is not None:
            alternative = (
                f"leave models.head.path empty to use the shipped tagger-only head ({fallback.name})"
                if fallback.is_file()
                else "set models.head.path to a head trained on tagger features only "
                "(scripts/train_default_head.py --tagger-only)"
            )
            problem = (
                f"models.head.path names a head that needs BirdNET's embedding (features '{head.meta.features}'), "
                "but models.birds.enabled is false"
            )
        else:
            alternative = (
                "set models.head.path to a head trained on tagger features only "
                "(scripts/train_default_head.py --tagger-only)"
            )
            problem = (
                f"the head shipped for the '{tagger_family}' tagger needs BirdNET's embedding (features "
                f"'{head.meta.features}') and no tagger-only head is shipped for it, but models.birds.enabled is false"
            )
        raise HeadError(
            chosen,
            problem,
            f"set models.birds.enabled: true, or {alternative}",
            config_keys=("models.head.path", "models.birds.enabled"),
        )
    return head
