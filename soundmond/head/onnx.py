"""The head as an ONNX file run by ONNX Runtime: what the daemon loads (no scikit-learn, skops, scipy or onnx import).

Graph (written by hand with `onnx.helper` in `to_onnx`, opset 13, IR 7 so that older ONNX Runtimes on sensors load it):

    features float32 [N, D] -> Cast(double) -> Sub(mean_) -> Div(scale_) -> Gemm(coef_.T, intercept_)
        -> Softmax(axis=1) -> probabilities double [N, 3] in `HEAD_CLASSES` order

which is exactly what scikit-learn's `Pipeline(StandardScaler, LogisticRegression)` computes in `predict_proba`
for a multinomial logistic regression; in double precision it matches scikit-learn to ~1e-15 (`save_head` refuses a
conversion that differs by more than `PARITY_TOLERANCE` on a few hundred rows). Only that exact model is converted:
anything else (another estimator, a one-vs-rest model, classes other than `HEAD_CLASSES`) is a `HeadError`.

Metadata (the model's `metadata_props`):
- `soundmond.head_format`: `FORMAT` ("onnx-1");
- `soundmond.head_meta`: `HeadMeta` as JSON (what the head was trained on, checked at load);
- `soundmond.sha256`: the SHA-256 of the whole file, as 64 hex digits. A checksum cannot cover itself, so the file is
  serialised with 64 zeros in its place, hashed, and the zeros are replaced by the digest (same length: the protobuf
  stays valid). `verify_checksum` undoes that: it finds the value after the `soundmond.sha256` key, puts the zeros
  back, hashes and compares. A field sensor's SD card that flips one byte of a weight is caught there, before ONNX
  Runtime sees the file ("checksum mismatch: the head file was changed or damaged"); ONNX's protobuf has no checksum
  of its own, so without this a damaged weight would silently change the predictions.

An ONNX file holds no code: ONNX Runtime only runs its built-in operators, so loading an untrusted head cannot run
anything (unlike pickle). The session runs on one thread without a memory arena (the head is tiny).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from soundmond.head.meta import DAMAGED_HINT, HEAD_CLASSES, HeadError, HeadMeta, meta_dict
from soundmond.models.sessions import ORT_ERRORS

logger = logging.getLogger(__name__)

FORMAT = "onnx-1"
FORMAT_KEY = "soundmond.head_format"
META_KEY = "soundmond.head_meta"
CHECKSUM_KEY = "soundmond.sha256"
CHECKSUM_PLACEHOLDER = "0" * 64
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
OPSET = 13
IR_VERSION = 7
PARITY_TOLERANCE = 1e-9  # max |ONNX - scikit-learn| probability accepted when saving
PARITY_RANDOM_ROWS = 512

# The serialised StringStringEntryProto {key: "soundmond.sha256", value: <64 bytes>}: field 1 (tag 0x0a) with the
# 16-byte key, then field 2 (tag 0x12) with length 64 (0x40). The 64 bytes after this prefix are the checksum.
_CHECKSUM_PREFIX = b"\x0a" + bytes([len(CHECKSUM_KEY)]) + CHECKSUM_KEY.encode() + b"\x12\x40"


# --- integrity --------------------------------------------------------------------------------------------------------


def _checksum_offset(data: bytes) -> int | None:
    """Where the 64-hex-digit checksum value starts in a serialised head, or None when there is not exactly one."""
    first = data.find(_CHECKSUM_PREFIX)
    if first < 0 or data.find(_CHECKSUM_PREFIX, first + 1) >= 0:
        return None
    offset = first + len(_CHECKSUM_PREFIX)
    return offset if offset + 64 <= len(data) else None


def seal(data: bytes) -> bytes:
    """Replace the checksum placeholder of a serialised head by the SHA-256 of the file (with the placeholder)."""
    offset = _checksum_offset(data)
    if offset is None or data[offset : offset + 64] != CHECKSUM_PLACEHOLDER.encode():
        raise ValueError("the serialised head has no single checksum placeholder")
    digest = hashlib.sha256(data).hexdigest().encode()
    return data[:offset] + digest + data[offset + 64 :]


def verify_checksum(path: Path, data: bytes) -> None:
    """`HeadError` unless the file's embedded `soundmond.sha256` matches its content (see the module docstring)."""
    offset = _checksum_offset(data)
    if offset is None:
        raise HeadError(
            path, f"checksum missing: no single {CHECKSUM_KEY} entry (the head file was changed or damaged, or it "
            "is not a soundmond ONNX head)", DAMAGED_HINT,
        )
    stored = data[offset : offset + 64]
    unsealed = data[:offset] + CHECKSUM_PLACEHOLDER.encode() + data[offset + 64 :]
    if hashlib.sha256(unsealed).hexdigest().encode() != stored:
        raise HeadError(path, "checksum mismatch: the head file was changed or damaged", DAMAGED_HINT)


# --- loading ----------------------------------------------------------------------------------------------------------


def _session(data: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


class OnnxPredictor:
    """[n, D] features -> [n, 3] probabilities in `HEAD_CLASSES` order, through ONNX Runtime (float32 input)."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session

    def __call__(self, x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        feeds = {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)}
        return np.asarray(self.session.run([OUTPUT_NAME], feeds)[0], dtype=np.float64)


def load_onnx(path: Path, data: bytes) -> tuple[OnnxPredictor, HeadMeta]:
    """Check the checksum, open the head with ONNX Runtime and check its metadata and signature."""
    verify_checksum(path, data)
    try:
        session = _session(data)
    except ORT_ERRORS as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise HeadError(path, f"ONNX Runtime cannot load the head ({first})", DAMAGED_HINT) from exc
    props = session.get_modelmeta().custom_metadata_map
    if props.get(FORMAT_KEY) != FORMAT:
        raise HeadError(
            path, f"not a soundmond ONNX head ({FORMAT_KEY} is {props.get(FORMAT_KEY)!r}, expected {FORMAT!r})",
            "use a head written by soundmond train-head or scripts/train_default_head.py",
        )
    try:
        meta_data = json.loads(props.get(META_KEY, ""))
    except ValueError as exc:
        raise HeadError(path, f"{META_KEY} is not JSON ({exc})", DAMAGED_HINT) from exc
    meta = HeadMeta.from_dict(path, meta_data)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME] or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 2:
        raise HeadError(path, f"the head's input is not {INPUT_NAME} float32 [N, D]", DAMAGED_HINT)
    n_in = inputs[0].shape[1]
    if n_in != meta.feature_dim:
        raise HeadError(path, f"model takes {n_in} features, meta says {meta.feature_dim}", DAMAGED_HINT)
    if (
        [o.name for o in outputs] != [OUTPUT_NAME]
        or outputs[0].type != "tensor(double)"
        or len(outputs[0].shape) != 2
        or outputs[0].shape[1] != len(HEAD_CLASSES)
    ):
        raise HeadError(path, f"the head's output is not {OUTPUT_NAME} double [N, {len(HEAD_CLASSES)}]", DAMAGED_HINT)
    return OnnxPredictor(session), meta


# --- conversion (training side: imports scikit-learn and onnx) --------------------------------------------------------


def _softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def linear_parts(path: Path, model: Any) -> dict[str, npt.NDArray[np.float64]]:
    """mean, scale, coef [3, D], intercept [3] of a `Pipeline(StandardScaler, LogisticRegression)` with multinomial
    probabilities over `HEAD_CLASSES`; `HeadError` for any other model."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    hint = "a head must be make_pipeline(StandardScaler(), LogisticRegression()) (multinomial) on the three groups"
    steps = model.steps if type(model) is Pipeline else []
    if len(steps) != 2 or type(steps[0][1]) is not StandardScaler or type(steps[1][1]) is not LogisticRegression:
        kinds = [type(s[1]).__name__ for s in steps] if steps else [type(model).__name__]
        raise HeadError(path, f"cannot convert {' + '.join(kinds)} to an ONNX head", hint)
    scaler, logreg = steps[0][1], steps[1][1]
    if list(getattr(logreg, "classes_", [])) != HEAD_CLASSES:
        classes = [str(c) for c in getattr(logreg, "classes_", [])]
        raise HeadError(path, f"the model's classes are {classes}, not {HEAD_CLASSES}",
                        hint)
    coef = np.asarray(logreg.coef_, dtype=np.float64)
    intercept = np.asarray(logreg.intercept_, dtype=np.float64)
    dim = int(scaler.n_features_in_)
    if coef.shape != (len(HEAD_CLASSES), dim) or intercept.shape != (len(HEAD_CLASSES),):
        raise HeadError(path, f"unexpected coefficient shapes {coef.shape} / {intercept.shape}", hint)
    mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else np.zeros(dim)
    scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else np.ones(dim)
    # multinomial, not one-vs-rest: predict_proba must be the softmax of the decision function
    probe = mean + scale * np.random.default_rng(1).standard_normal((16, dim))
    if not np.allclose(model.predict_proba(probe), _softmax(model.decision_function(probe)), rtol=0, atol=1e-12):
        raise HeadError(path, "the logistic regression is one-vs-rest (predict_proba is not the softmax of its "
                        "decision function); only a multinomial one converts", hint)
    return {"mean": mean, "scale": scale, "coef": coef, "intercept": intercept}


def to_onnx(path: Path, model: Any, meta: HeadMeta) -> bytes:
    """The sealed ONNX head (bytes) of a StandardScaler + multinomial LogisticRegression pipeline."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    parts = linear_parts(path, model)
    dim = parts["coef"].shape[1]
    if dim != meta.feature_dim:
        raise HeadError(path, f"model takes {dim} features, meta says {meta.feature_dim}", "fix the head's meta")
    initializers = [
        numpy_helper.from_array(parts["mean"], "mean"),
        numpy_helper.from_array(parts["scale"], "scale"),
        numpy_helper.from_array(np.ascontiguousarray(parts["coef"].T), "coef_t"),
        numpy_helper.from_array(parts["intercept"], "intercept"),
    ]
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["x64"], to=TensorProto.DOUBLE),
        helper.make_node("Sub", ["x64", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["scaled"]),
        helper.make_node("Gemm", ["scaled", "coef_t", "intercept"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "soundmond_head",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.DOUBLE, ["N", len(HEAD_CLASSES)])],
        initializers,
    )
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="soundmond",
        doc_string=f"natural / industrial / other head; classes {HEAD_CLASSES}",
    )
    onnx_model.ir_version = IR_VERSION
    helper.set_model_props(
        onnx_model,
        {FORMAT_KEY: FORMAT, META_KEY: json.dumps(meta_dict(meta), sort_keys=True), CHECKSUM_KEY: CHECKSUM_PLACEHOLDER},
    )
    onnx.checker.check_model(onnx_model)
    return seal(onnx_model.SerializeToString())


def parity(
    path: Path, model: Any, data: bytes, features: npt.NDArray[np.floating] | None = None
) -> tuple[float, int, int]:
    """Max |ONNX - scikit-learn predict_proba| over `PARITY_RANDOM_ROWS` random rows around the scaler's mean (within
    +-4 standard deviations) plus `features`, all as the float32 the daemon feeds; and the numbers of random and of
    feature rows."""
    parts = linear_parts(path, model)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((PARITY_RANDOM_ROWS, parts["mean"].size)) * rng.uniform(0.1, 4.0, (PARITY_RANDOM_ROWS, 1))
    rows = [(parts["mean"] + parts["scale"] * z).astype(np.float32)]
    if features is not None and len(features):
        rows.append(np.asarray(features, dtype=np.float32).reshape(len(features), -1))
    x = np.concatenate(rows)
    try:
        got = OnnxPredictor(_session(data))(x)
    except ORT_ERRORS as exc:
        raise HeadError(path, f"ONNX Runtime cannot run the converted head ({exc})", "report this bug") from exc
    want = np.asarray(model.predict_proba(x.astype(np.float64)), dtype=np.float64)
    return float(np.max(np.abs(got - want))), PARITY_RANDOM_ROWS, int(x.shape[0]) - PARITY_RANDOM_ROWS


__all__ = [
    "CHECKSUM_KEY",
    "FORMAT",
    "FORMAT_KEY",
    "META_KEY",
    "PARITY_TOLERANCE",
    "OnnxPredictor",
    "linear_parts",
    "load_onnx",
    "parity",
    "seal",
    "to_onnx",
    "verify_checksum",
]
