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
`Head.load` picks the format by the file's suffix (`.onnx` or `.skops`; anything else is refused); the two formats
share everything else here (meta, features, the tagger checks, `predict`).

The shipped heads live in `soundmond/heads/<tagger family>.onnx` (with the `.skops` they were converted from and a
`.json` beside it: metrics, the command that trained it and the conversion's parity, for people; the daemon does not
read it). A family whose shipped head needs BirdNET's embedding also ships a tagger-only head,
`soundmond/heads/<tagger family>-tagger.onnx`; `load_head` picks it when `models.head.path` is empty and
`models.birds.enabled` is false, and refuses (`HeadError`) a configured head that needs BirdNET when birds are
disabled. A head trained on one tagger refuses another tagger (family and label count in `meta`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from soundmond.data import GROUPS, BirdOutput, GroupPrediction, TaggerOutput

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


class HeadError(Exception):
    """A head file that cannot be used: damaged, untrusted content, made for another tagger, or needing BirdNET's
    output with `models.birds.enabled` false. `config_keys`: the configuration keys the problem is about."""

    def __init__(
        self, path: Path | str, problem: str, hint: str = "", config_keys: tuple[str, ...] = ("models.head.path",)
    ) -> None:
        self.path = Path(path)
        self.problem = problem
        self.hint = hint
        self.config_keys = config_keys
        msg = f"{path}: {problem}"
        if hint:
            msg += f" - {hint}"
        super().__init__(msg)


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


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise HeadError(path, f"cannot read the head file ({exc.strerror or exc})", "check models.head.path") from exc


_DAMAGED_HINT = (
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
        data = _read_bytes(path)
        predictor: Predictor
        if suffix == ONNX_SUFFIX:
            from soundmond.head.onnx import load_onnx

            predictor, meta = load_onnx(path, data)
        else:
            from soundmond.head.skops import SkopsPredictor, load_skops

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


class HeadFiles(NamedTuple):
    """What `save_head` / `convert_head` wrote: both files and how closely the ONNX head matches scikit-learn."""

    onnx: Path
    skops: Path
    parity_max_abs_diff: float  # max |ONNX - scikit-learn predict_proba| over the rows checked
    parity_random_rows: int  # random rows around the scaler's mean
    parity_feature_rows: int  # rows of the features given (the training features), 0 when none

    def report(self) -> dict[str, Any]:
        """For a head's .json report: which files hold the head, and the conversion's parity."""
        from soundmond.head.onnx import PARITY_TOLERANCE

        return {
            "onnx": self.onnx.name,
            "skops": self.skops.name,
            "loaded_by_the_daemon": self.onnx.name,
            "onnx_parity": {
                "max_abs_diff": self.parity_max_abs_diff,
                "tolerance": PARITY_TOLERANCE,
                "random_rows": self.parity_random_rows,
                "training_feature_rows": self.parity_feature_rows,
                "method": "ONNX Runtime against scikit-learn's predict_proba on float32 rows: random ones around the "
                "scaler's mean (up to 4 standard deviations) and the training features when given",
            },
        }


def head_file_pair(path: Path | str) -> tuple[Path, Path]:
    """(onnx, skops) paths for a head named by either of them."""
    path = Path(path)
    if path.suffix.lower() not in HEAD_SUFFIXES:
        raise HeadError(path, f"a head file must end in {ONNX_SUFFIX} or {SKOPS_SUFFIX}",
                        f"e.g. --out heads/mine{ONNX_SUFFIX} (the {SKOPS_SUFFIX} is written beside it)")
    return path.with_suffix(ONNX_SUFFIX), path.with_suffix(SKOPS_SUFFIX)


def _onnx_checked(
    onnx_path: Path, model: Any, meta: HeadMeta, features: npt.NDArray[np.floating] | None
) -> tuple[bytes, float, int, int]:
    """The sealed ONNX head, checked: parity with scikit-learn, and the daemon's own loader accepts it."""
    from soundmond.head.onnx import PARITY_TOLERANCE, load_onnx, parity, to_onnx

    data = to_onnx(onnx_path, model, meta)
    diff, random_rows, feature_rows = parity(onnx_path, model, data, features)
    if not diff <= PARITY_TOLERANCE:
        raise HeadError(onnx_path, f"the ONNX head differs from scikit-learn by {diff:.3g} (> {PARITY_TOLERANCE:g})",
                        "nothing was written; report this bug")
    load_onnx(onnx_path, data)
    return data, diff, random_rows, feature_rows


def _write_onnx(onnx_path: Path, data: bytes) -> None:
    tmp = onnx_path.with_name(onnx_path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(onnx_path)


def save_head(
    path: Path | str, model: Any, meta: HeadMeta, features: npt.NDArray[np.floating] | None = None
) -> HeadFiles:
    """Write a head as `<name>.onnx` (what the daemon loads) and `<name>.skops` (the training artefact) from a
    fitted `Pipeline(StandardScaler, LogisticRegression)`; `path` names either. Refuses (`HeadError`, nothing
    written) a model that does not convert or whose ONNX probabilities differ from scikit-learn's by more than
    1e-9 (random rows plus `features`, e.g. the training features); both files are checked with the strict loaders.
    """
    from soundmond.head.skops import load_skops, write_skops

    onnx_path, skops_path = head_file_pair(path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    data, diff, random_rows, feature_rows = _onnx_checked(onnx_path, model, meta, features)
    tmp = skops_path.with_name(skops_path.name + ".tmp")
    write_skops(skops_path, tmp, model, meta)
    try:
        load_skops(skops_path, tmp.read_bytes())  # refuses anything outside ALLOWED_TYPES
        _write_onnx(onnx_path, data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(skops_path)
    logger.info("head written: %s (ONNX, max |diff| %.2g from scikit-learn on %d rows) and %s", onnx_path, diff,
                random_rows + feature_rows, skops_path)
    return HeadFiles(onnx_path, skops_path, diff, random_rows, feature_rows)


def convert_head(skops_path: Path | str, features: npt.NDArray[np.floating] | None = None) -> HeadFiles:
    """Write the ONNX head beside an existing skops head (same model and meta; the skops file is not touched)."""
    from soundmond.head.skops import load_skops

    onnx_path, skops_path = head_file_pair(skops_path)
    model, meta = load_skops(skops_path, _read_bytes(skops_path))
    data, diff, random_rows, feature_rows = _onnx_checked(onnx_path, model, meta, features)
    _write_onnx(onnx_path, data)
    logger.info("%s converted to %s (max |diff| %.2g from scikit-learn on %d rows)", skops_path, onnx_path, diff,
                random_rows + feature_rows)
    return HeadFiles(onnx_path, skops_path, diff, random_rows, feature_rows)


def utc_now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


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
            "models.birds.enabled is false and models.head.path is empty: using the shipped tagger-only head %s "
            "(the default %s needs BirdNET's embedding)",
            chosen,
            default.name,
        )
    else:
        chosen = default
        if not chosen.is_file():
            raise HeadError(
                chosen,
                f"no head is shipped for the '{tagger_family}' tagger",
                "set models.head.path to a head trained on this tagger's outputs (see scripts/train_default_head.py)",
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


__all__ = [
    "FEATURE_PARTS",
    "BirdFeaturesMissing",
    "HEAD_CLASSES",
    "HEAD_SUFFIXES",
    "Head",
    "HeadError",
    "HeadFiles",
    "HeadMeta",
    "check_tagger",
    "convert_head",
    "default_head_path",
    "feature_parts",
    "head_features",
    "head_file_pair",
    "load_head",
    "needs_birds",
    "save_head",
    "tagger_only_head_path",
]
