"""The head as a skops file: the training artefact (scikit-learn's own object), loaded strictly, never pickle.

The daemon loads the ONNX head (`soundmond.head.onnx`); this format is what training writes beside it (`save_head`)
and what `--convert` turns into ONNX. Loading it imports scikit-learn, skops and scipy (~100 MB of RSS, and torch
where it is installed): both imports happen inside the functions below, never when this module is imported.

File format: `skops.io.dump` (a zip of JSON + .npy; never pickle / joblib, whose loading runs arbitrary code) of a dict
`{"model": <fitted sklearn estimator>, "meta": {...}}` (see `HeadMeta`).

Loading is two-fold strict:
1. Every object type recorded in the file's `schema.json` must be in `ALLOWED_TYPES`, the exact set of types the
   shipped head contains (listed from its schema.json when it was trained; `tests/test_head.py` checks the list is
   exactly that): dict / list / str / tuple, numpy ndarray and float64, and the head's Pipeline, StandardScaler and
   LogisticRegression.
   Anything else - even a type skops would trust by default - is refused: "untrusted type X in head file".
2. `skops.io.load(path, trusted=TRUSTED_TYPES)` then only builds those objects. `TRUSTED_TYPES` (the types to
   trust beyond skops' defaults) is empty for the shipped heads: `get_untrusted_types` reports nothing for them.

A damaged file (truncated, bytes changed: the zip's CRC-32 catches it) is a `HeadError` naming the file.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from soundmond.head.meta import DAMAGED_HINT, HEAD_CLASSES, HeadError, HeadMeta, meta_dict

logger = logging.getLogger(__name__)

# Types passed to skops as trusted beyond its defaults. The shipped heads need none (checked at training time with
# `skops.io.get_untrusted_types`; `save_head` fails if that ever changes).
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


def _file_types(path: Path, data: bytes) -> set[str]:
    """The types in a skops file, reading every member (so a damaged member fails its CRC-32 check here)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise HeadError(path, f"member {bad} of the head file is damaged (CRC mismatch)", DAMAGED_HINT)
            schema = json.loads(archive.read("schema.json"))
    except HeadError:
        raise
    except (zipfile.BadZipFile, zlib.error, KeyError, EOFError, ValueError, OSError) as exc:
        raise HeadError(path, f"not a readable skops head file ({exc})", DAMAGED_HINT) from exc
    return schema_types(schema)


class SkopsPredictor:
    """[n, D] features -> [n, 3] probabilities in `HEAD_CLASSES` order, through the scikit-learn model (float64)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._class_index = [list(model.classes_).index(c) for c in HEAD_CLASSES]

    def __call__(self, x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        proba = np.asarray(self.model.predict_proba(np.asarray(x, dtype=np.float64)), dtype=np.float64)
        return proba[:, self._class_index]


def load_skops(path: Path, data: bytes) -> tuple[Any, HeadMeta]:
    """The fitted model and its meta from a skops head; refuses untrusted content and damage."""
    import sklearn
    import skops.io as sio

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
        raise HeadError(path, f"cannot load the head ({type(exc).__name__}: {exc})", DAMAGED_HINT) from exc
    if not isinstance(obj, dict) or "model" not in obj or "meta" not in obj:
        raise HeadError(path, "not a soundmond head (expected {'model': ..., 'meta': ...})", DAMAGED_HINT)
    meta = HeadMeta.from_dict(path, obj["meta"])
    model = obj["model"]
    if not hasattr(model, "predict_proba") or list(getattr(model, "classes_", [])) != HEAD_CLASSES:
        raise HeadError(path, f"the model's classes are not {HEAD_CLASSES}", "retrain the head")
    n_in = getattr(model, "n_features_in_", meta.feature_dim)
    if n_in != meta.feature_dim:
        raise HeadError(path, f"model takes {n_in} features, meta says {meta.feature_dim}", DAMAGED_HINT)
    if meta.sklearn_version and meta.sklearn_version != sklearn.__version__:
        logger.warning(
            "%s: head saved with scikit-learn %s, running %s; retrain it if predictions look wrong",
            path,
            meta.sklearn_version,
            sklearn.__version__,
        )
    return model, meta


def write_skops(path: Path, tmp: Path, model: Any, meta: HeadMeta) -> None:
    """Dump the head to `tmp`; `HeadError` (and `tmp` removed) when it holds types skops does not trust."""
    import skops.io as sio

    sio.dump({"model": model, "meta": meta_dict(meta)}, tmp)
    untrusted = sio.get_untrusted_types(file=tmp)
    if untrusted:
        tmp.unlink()
        raise HeadError(path, f"the head holds types skops does not trust: {untrusted}", "use a simpler model")


__all__ = ["ALLOWED_TYPES", "TRUSTED_TYPES", "SkopsPredictor", "load_skops", "schema_types", "write_skops"]
