"""The natural / industrial / other head: a small scikit-learn model on the tagger's output, loaded safely.

File format: a skops file (`skops.io.dump`, a zip of JSON + .npy; never pickle / joblib, whose loading runs arbitrary
code) holding a dict `{"model": <fitted sklearn estimator>, "meta": {...}}` (see `HeadMeta`). The shipped heads live
in `soundmond/heads/<tagger family>.skops`, each with a `.json` beside it (metrics and the command that trained it,
for people; the daemon does not read it). A family whose shipped head needs BirdNET's embedding also ships a
tagger-only head, `soundmond/heads/<tagger family>-tagger.skops`; `load_head` picks it when `models.head.path` is
empty and `models.birds.enabled` is false, and refuses (`HeadError`) a configured head that needs BirdNET when birds
are disabled.

Loading is two-fold strict:
1. Every object type recorded in the file's `schema.json` must be in `ALLOWED_TYPES`, the exact set of types the
   shipped head contains (listed from its schema.json when it was trained; `tests/test_head.py` checks the list is
   exactly that): dict / list / str / tuple, numpy ndarray and float64, and the head's Pipeline, StandardScaler and
   LogisticRegression.
   Anything else - even a type skops would trust by default - is refused: "untrusted type X in head file".
2. `skops.io.load(path, trusted=TRUSTED_TYPES)` then only builds those objects. `TRUSTED_TYPES` (the types to
   trust beyond skops' defaults) is empty for the shipped heads: `get_untrusted_types` reports nothing for them.

A damaged file (truncated, bytes changed: the zip's CRC-32 catches it) is a `HeadError` naming the file. A head
trained on one tagger refuses another tagger (family and label count in `meta`).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import skops.io as sio

from soundmond.data import GROUPS, BirdOutput, GroupPrediction, TaggerOutput

logger = logging.getLogger(__name__)

HEADS_DIR = Path(__file__).resolve().parent / "heads"
HEAD_FORMAT_VERSION = 1

# A head's input (`HeadMeta.features`): "+"-joined parts, in this order, each a vector the daemon supplies per window:
# the tagger's pooled probabilities, the tagger's embedding (mean over frames), and BirdNET's embedding (mean over its
# 3-s chunks; needs `models.birds` enabled). "both" is the older name of "probabilities+embedding".
FEATURE_PARTS: tuple[str, ...] = ("probabilities", "embedding", "birdnet_embedding")
FEATURE_ALIASES: dict[str, str] = {"both": "probabilities+embedding"}
HEAD_CLASSES: list[str] = sorted(GROUPS)  # ["industrial", "natural", "other"], sklearn's sorted classes_ order

# Types passed to skops as trusted beyond its defaults. The shipped heads need none (checked at training time with
# `skops.io.get_untrusted_types`; `scripts/train_default_head.py` fails if that ever changes).
TRUSTED_TYPES: list[str] = []

# Every type a head file may contain, module-qualified as in skops' schema.json (see module docstring).
ALLOWED_TYPES: frozenset[str] = frozenset(
    {
        "builtins.dict",
        "builtins.list",
        "builtins.str",  # skops records JSON scalars (str, int, float, bool, None) under this type
        "builtins.tuple",
        "numpy.float64",
        "numpy.ndarray",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
    }
)


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
    """The head shipped for a tagger family: `soundmond/heads/<family>.skops`."""
    return HEADS_DIR / f"{tagger_family}.skops"


def tagger_only_head_path(tagger_family: str) -> Path:
    """The tagger-only head shipped for a family (no BirdNET features): `soundmond/heads/<family>-tagger.skops`."""
    return HEADS_DIR / f"{tagger_family}{TAGGER_ONLY_SUFFIX}.skops"


def schema_types(schema: object) -> set[str]:
    """Every `module.Class` recorded in a skops schema (objects, types, functions), recursively."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            cls, module = node.get("__class__"), node.get("__module__")
            if isinstance(cls, str) and isinstance(module, str):
                found.add(f"{module}.{cls}")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return found


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise HeadError(path, f"cannot read the head file ({exc.strerror or exc})", "check models.head.path") from exc


def _file_types(path: Path, data: bytes) -> set[str]:
    """The types in a skops file, reading every member (so a damaged member fails its CRC-32 check here)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise HeadError(path, f"member {bad} of the head file is damaged (CRC mismatch)", _DAMAGED_HINT)
            schema = json.loads(archive.read("schema.json"))
    except HeadError:
        raise
    except (zipfile.BadZipFile, zlib.error, KeyError, EOFError, ValueError, OSError) as exc:
        raise HeadError(path, f"not a readable skops head file ({exc})", _DAMAGED_HINT) from exc
    return schema_types(schema)


_DAMAGED_HINT = (
    "the file is damaged or was changed; reinstall soundmond, or retrain it with scripts/train_default_head.py"
)


class Head:
    """A loaded head: `predict(tagger_output, bird_output=None) -> GroupPrediction` (implements `GroupHead`)."""

    def __init__(self, model: Any, meta: HeadMeta, path: Path | None = None) -> None:
        self.model = model
        self.meta = meta
        self.path = path
        self.tagger_family: str = meta.tagger_family
        self._class_index = [list(model.classes_).index(c) for c in HEAD_CLASSES]

    @classmethod
    def load(
        cls,
        path: Path | str,
        *,
        tagger_family: str | None = None,
        tagger_label_count: int | None = None,
    ) -> Head:
        """Load a head file; refuse untrusted content, damage, and a head made for another tagger."""
        path = Path(path)
        if not path.is_file():
            raise HeadError(path, "no such head file", "set models.head.path, or leave it empty for the shipped head")
        data = _read_bytes(path)
        types = _file_types(path, data)
        untrusted = sorted(types - ALLOWED_TYPES)
        if untrusted:
            raise HeadError(
                path,
                f"untrusted type {untrusted[0]} in head file" + (f" (and {untrusted[1:]})" if untrusted[1:] else ""),
                "a head may only hold a StandardScaler + LogisticRegression pipeline; refusing to load it",
            )
        try:
            obj = sio.load(io.BytesIO(data), trusted=TRUSTED_TYPES)
        except sio.exceptions.UntrustedTypesFoundException as exc:
            raise HeadError(path, f"untrusted type in head file ({exc})", "refusing to load it") from exc
        except (zipfile.BadZipFile, zlib.error, KeyError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise HeadError(path, f"cannot load the head ({type(exc).__name__}: {exc})", _DAMAGED_HINT) from exc
        if not isinstance(obj, dict) or "model" not in obj or "meta" not in obj:
            raise HeadError(path, "not a soundmond head (expected {'model': ..., 'meta': ...})", _DAMAGED_HINT)
        meta = HeadMeta.from_dict(path, obj["meta"])
        model = obj["model"]
        if not hasattr(model, "predict_proba") or list(getattr(model, "classes_", [])) != HEAD_CLASSES:
            raise HeadError(path, f"the model's classes are not {HEAD_CLASSES}", "retrain the head")
        n_in = getattr(model, "n_features_in_", meta.feature_dim)
        if n_in != meta.feature_dim:
            raise HeadError(path, f"model takes {n_in} features, meta says {meta.feature_dim}", _DAMAGED_HINT)
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
        import sklearn

        if meta.sklearn_version and meta.sklearn_version != sklearn.__version__:
            logger.warning(
                "%s: head saved with scikit-learn %s, running %s; retrain it if predictions look wrong",
                path,
                meta.sklearn_version,
                sklearn.__version__,
            )
        logger.info("head loaded from %s (%s tagger, %s features)", path, meta.tagger_family, meta.features)
        return cls(model, meta, path)

    def predict_proba(self, features: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        """[n, 3] probabilities in `HEAD_CLASSES` order for [n, feature_dim] features."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.shape[1] != self.meta.feature_dim:
            raise ValueError(f"head expects {self.meta.feature_dim} features, got {x.shape[1]}")
        proba = np.asarray(self.model.predict_proba(x), dtype=np.float64)
        return proba[:, self._class_index]

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


def save_head(path: Path | str, model: Any, meta: HeadMeta) -> Path:
    """Write a head file (skops) and check that it loads with the strict loader."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta_dict = asdict(meta)
    tmp = path.with_name(path.name + ".tmp")
    sio.dump({"model": model, "meta": meta_dict}, tmp)
    untrusted = sio.get_untrusted_types(file=tmp)
    if untrusted:
        tmp.unlink()
        raise HeadError(path, f"the head holds types skops does not trust: {untrusted}", "use a simpler model")
    tmp.replace(path)
    Head.load(path)  # refuses anything outside ALLOWED_TYPES
    return path


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
    "ALLOWED_TYPES",
    "FEATURE_PARTS",
    "BirdFeaturesMissing",
    "HEAD_CLASSES",
    "TRUSTED_TYPES",
    "Head",
    "HeadError",
    "HeadMeta",
    "default_head_path",
    "feature_parts",
    "head_features",
    "load_head",
    "needs_birds",
    "save_head",
    "schema_types",
    "tagger_only_head_path",
]
