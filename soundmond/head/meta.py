"""The natural / industrial / other head: a small linear model on the tagger's output, shipped as ONNX.

A head is a scikit-learn `Pipeline(StandardScaler, LogisticRegression)` (multinomial, classes `HEAD_CLASSES`),
trained by `soundmond train-head` / `scripts/train_default_head.py`. `save_head` writes it twice:
- `<name>.onnx` (`soundmond.head.onnx`): what the daemon loads, run by ONNX Runtime (already loaded for the models),
  so the daemon never imports scikit-learn, skops or scipy (~100 MB of RSS less, and no torch pulled in through
  scikit-learn where torch is installed). It embeds its `HeadMeta` and a SHA-256 of itself, checked at every load: a
  changed or damaged byte (SD-card bit rot on a field sensor) is a `HeadError`, never silently different predictions.
  The conversion is refused unless the ONNX head gives scikit-learn's probabilities to 1e-9.
- `<name>.skops` (`soundmond.head.skops`): the training artefact, scikit-learn's own object with the same metadata,
  loadable (strictly, never pickle) when `models.head.path` names it; that imports scikit-learn.
`soundmond.head.loader` loads a head for the daemon (`Head.load` picks the format by the file's suffix: `.onnx` or
`.skops`, anything else is refused); `soundmond.head.save` writes one (training only). Both formats share what this
module holds: the meta, the features, the tagger checks.

The shipped heads live in `soundmond/heads/<tagger family>.onnx` (with the `.skops` training artefact written with it
and a `.json` beside it: metrics, the command that trained it and the conversion's parity, for people; the daemon does
not read it). A family whose shipped head needs BirdNET's embedding also ships a tagger-only head (YAMNet ships one
either way; its current heads use the tagger's probabilities only),
`soundmond/heads/<tagger family>-tagger.onnx`; `load_head` picks it when `models.head.path` is empty and
`models.birds.enabled` is false, and refuses (`HeadError`) a configured head that needs BirdNET when birds are
disabled. A head trained on one tagger refuses another tagger (family and label count in `meta`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from soundmond.data import GROUPS, BirdOutput, TaggerOutput
from soundmond.errors import HintedError

logger = logging.getLogger(__name__)

HEADS_DIR = Path(__file__).resolve().parent.parent / "heads"
HEAD_FORMAT_VERSION = 1

# A head's input (`HeadMeta.features`): "+"-joined parts, in this order, each a vector the daemon supplies per window:
# the tagger's pooled probabilities, the tagger's embedding (mean over frames), and BirdNET's embedding (mean over its
# 3-s chunks; needs `models.birds` enabled). "both" is the older name of "probabilities+embedding".
FEATURE_PARTS: tuple[str, ...] = ("probabilities", "embedding", "birdnet_embedding")
FEATURE_ALIASES: dict[str, str] = {"both": "probabilities+embedding"}
HEAD_CLASSES: list[str] = sorted(GROUPS)  # ["industrial", "natural", "other"], sklearn's sorted classes_ order

# File suffixes `Head.load` accepts: the ONNX head the daemon loads, and the skops training artefact.
ONNX_SUFFIX, SKOPS_SUFFIX = ".onnx", ".skops"
HEAD_SUFFIXES: tuple[str, ...] = (ONNX_SUFFIX, SKOPS_SUFFIX)


class HeadError(HintedError):
    """A head file that cannot be used: damaged, untrusted content, made for another tagger, or needing BirdNET's
    output with `models.birds.enabled` false. `config_keys`: the configuration keys the problem is about."""

    def __init__(
        self, path: Path | str, problem: str, hint: str = "", config_keys: tuple[str, ...] = ("models.head.path",)
    ) -> None:
        self.path = Path(path)
        self.config_keys = config_keys
        super().__init__(problem, hint, where=path)


@dataclass(frozen=True)
class HeadMeta:
    """What a head was trained on (stored in the file, checked at load)."""

    tagger_family: str
    tagger_label_count: int
    features: str  # "+"-joined FEATURE_PARTS, e.g. "embedding+birdnet_embedding" (or "both")
    feature_dim: int
    classes: list[str]
    trained_on: str
    training_data_sha256: str
    cv_metrics: dict[str, Any] = field(default_factory=dict)
    sklearn_version: str = ""
    created_utc: str = ""
    format_version: int = HEAD_FORMAT_VERSION
    # every training file's content hash (sha256 of its bytes) by its name in the labels; heads trained before this
    # field hold it in the .json report beside them (`training_files_sha256` there), if anywhere
    training_files_sha256: dict[str, str] = field(default_factory=dict)
    # every training file's audio hash (`soundmond.workbench.audio_hash.audio_sha256`: sample rate, channels and the
    # decoded samples) by its name in the labels, so that a re-encoded copy (a WAV of a FLAC clip) is known too;
    # empty in heads trained before this field (then only the bytes' sha256 identifies a training file)
    training_audio_sha256: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, path: Path, data: object) -> HeadMeta:
        if not isinstance(data, dict):
            raise HeadError(path, "meta is not a mapping", "retrain the head with scripts/train_default_head.py")
        known = set(cls.__dataclass_fields__)
        try:
            meta = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise HeadError(path, f"meta is incomplete ({exc})", "retrain the head") from exc
        try:
            feature_parts(meta.features)
        except ValueError as exc:
            raise HeadError(path, f"meta.features: {exc}", "retrain the head") from exc
        if list(meta.classes) != HEAD_CLASSES:
            raise HeadError(path, f"meta.classes is {meta.classes}, expected {HEAD_CLASSES}", "retrain the head")
        return meta


def meta_dict(meta: HeadMeta) -> dict[str, Any]:
    """The meta as stored in a head file: an empty `training_files_sha256` or `training_audio_sha256` is left out, so
    that a head trained before those fields converts to the same bytes as before."""
    data = asdict(meta)
    for key in ("training_files_sha256", "training_audio_sha256"):
        if not data[key]:
            del data[key]
    return data


class BirdFeaturesMissing(ValueError):
    """The head needs BirdNET's embedding and the window has no bird output (birds disabled, or no embedding)."""


def feature_parts(kind: str) -> tuple[str, ...]:
    """The parts of a feature kind ("embedding+birdnet_embedding" -> ("embedding", "birdnet_embedding"))."""
    parts = tuple(FEATURE_ALIASES.get(kind, kind).split("+"))
    unknown = [p for p in parts if p not in FEATURE_PARTS]
    if unknown or not parts or len(set(parts)) != len(parts) or list(parts) != sorted(parts, key=FEATURE_PARTS.index):
        raise ValueError(
            f"feature kind {kind!r} is not '+'-joined distinct parts of {FEATURE_PARTS} in that order (or 'both')"
        )
    return parts


def needs_birds(kind: str) -> bool:
    """Whether a head with these features needs the bird model's output."""
    return "birdnet_embedding" in feature_parts(kind)


def head_features(
    output: TaggerOutput, kind: str, bird_output: BirdOutput | None = None
) -> npt.NDArray[np.float32]:
    """The head's input vector for one window: the parts of `kind` concatenated in order (see `FEATURE_PARTS`)."""
    vectors = []
    for part in feature_parts(kind):
        if part == "probabilities":
            vectors.append(np.asarray(output.probabilities, dtype=np.float32))
        elif part == "embedding":
            vectors.append(np.asarray(output.embedding, dtype=np.float32))
        else:
            if bird_output is None or bird_output.embedding is None:
                raise BirdFeaturesMissing(
                    "this head needs BirdNET's embedding (features "
                    f"{kind!r}) but the window has no bird output: enable models.birds, or use a head trained "
                    "on tagger features only"
                )
            vectors.append(np.asarray(bird_output.embedding, dtype=np.float32))
    return np.concatenate(vectors).astype(np.float32)


TAGGER_ONLY_SUFFIX = "-tagger"


def default_head_path(tagger_family: str) -> Path:
    """The head shipped for a tagger family: `soundmond/heads/<family>.onnx`."""
    return HEADS_DIR / f"{tagger_family}{ONNX_SUFFIX}"


def tagger_only_head_path(tagger_family: str) -> Path:
    """The tagger-only head shipped for a family (no BirdNET features): `soundmond/heads/<family>-tagger.onnx`."""
    return HEADS_DIR / f"{tagger_family}{TAGGER_ONLY_SUFFIX}{ONNX_SUFFIX}"


def read_head_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise HeadError(path, f"cannot read the head file ({exc.strerror or exc})", "check models.head.path") from exc


DAMAGED_HINT = (
    "the file is damaged or was changed; reinstall soundmond, or retrain it with scripts/train_default_head.py"
)

# [n, feature_dim] features -> [n, 3] probabilities in `HEAD_CLASSES` order (`head_onnx.OnnxPredictor`,
# `head_skops.SkopsPredictor`).
Predictor = Callable[[npt.NDArray[np.floating]], npt.NDArray[np.float64]]


def check_tagger(
    path: Path, meta: HeadMeta, tagger_family: str | None = None, tagger_label_count: int | None = None
) -> None:
    """`HeadError` when the head was trained on another tagger family or a tagger with another label count."""
    if tagger_family is not None and meta.tagger_family != tagger_family:
        raise HeadError(
            path,
            f"this head was trained on '{meta.tagger_family}' tagger outputs, but models.tagger.family is "
            f"'{tagger_family}'",
            f"leave models.head.path empty to use the head shipped for '{tagger_family}', or train one for it",
        )
    if tagger_label_count is not None and meta.tagger_label_count != tagger_label_count:
        raise HeadError(
            path,
            f"this head expects a tagger with {meta.tagger_label_count} labels, the loaded tagger has "
            f"{tagger_label_count}",
            "use the head trained for this tagger model",
        )


def utc_now_iso() -> str:
    """Now (UTC, to the second), or `SOURCE_DATE_EPOCH` when set (the reproducible-builds convention: two trainings
    of the same head then write byte-identical files, `created_utc` being the only field that differs otherwise)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not epoch:
        return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    problem = ValueError(f"SOURCE_DATE_EPOCH={epoch!r} is not a Unix time in whole seconds (0 up to year 9999) - "
                         "unset it or fix it")
    if not epoch.isdigit():
        raise problem
    try:
        return dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError) as exc:
        raise problem from exc
