"""Writing a head (training only): `save_head` writes `<name>.onnx` (what the daemon loads) and `<name>.skops` (the
training artefact) from a fitted scikit-learn pipeline, refusing a conversion that differs from scikit-learn;
`convert_head` writes the ONNX head beside an existing skops head."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from soundmond.head.meta import HEAD_SUFFIXES, ONNX_SUFFIX, SKOPS_SUFFIX, HeadError, HeadMeta, read_head_bytes
from soundmond.head.onnx import PARITY_TOLERANCE, load_onnx, parity, to_onnx
from soundmond.head.skops import load_skops, write_skops

logger = logging.getLogger(__name__)


class HeadFiles(NamedTuple):
    """What `save_head` / `convert_head` wrote: both files and how closely the ONNX head matches scikit-learn."""

    onnx: Path
    skops: Path
    parity_max_abs_diff: float  # max |ONNX - scikit-learn predict_proba| over the rows checked
    parity_random_rows: int  # random rows around the scaler's mean
    parity_feature_rows: int  # rows of the features given (the training features), 0 when none

    def report(self) -> dict[str, Any]:
        """For a head's .json report: which files hold the head, and the conversion's parity."""
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
    onnx_path, skops_path = head_file_pair(skops_path)
    model, meta = load_skops(skops_path, read_head_bytes(skops_path))
    data, diff, random_rows, feature_rows = _onnx_checked(onnx_path, model, meta, features)
    _write_onnx(onnx_path, data)
    logger.info("%s converted to %s (max |diff| %.2g from scikit-learn on %d rows)", skops_path, onnx_path, diff,
                random_rows + feature_rows)
    return HeadFiles(onnx_path, skops_path, diff, random_rows, feature_rows)
