"""YAMNet (AudioSet 521 classes): TFLite -> ONNX with batch, scores and the 1024-d embedding, checked on real audio.

Why not plain `tf2onnx --tflite`: the published yamnet.tflite is dynamic-range quantized. Its weights are int8,
including the DFT and mel matrices of the in-graph spectrogram, and the TFLite runtime quantizes the float
activations to int8 at run time before every such op (the "hybrid" kernels). tf2onnx instead dequantizes the
weights and multiplies float activations, a different model: the first op that diverges is the DFT matmul (0.4 % off),
the log of the mel spectrogram amplifies it (log-mel off by up to 6 on quiet bins) and scores end up off by
up to 0.78. This exporter converts with tf2onnx, then rewrites the graph so each int8-weight op quantizes its
input the way ai-edge-litert's default (XNNPACK) kernels do (per-row asymmetric int8, XNNPACK's rounding), and
rebuilds the framing front end for a dynamic batch.

`--arithmetic int8` (the default) runs those ops as integer products in ONNX Runtime (uint8 x int8
MatMulIntegerToFloat, ONNX Runtime's contrib op, with the per-row and per-column scales in the same op: the VNNI
product on CPUs that have it), as XNNPACK does; `--arithmetic float` multiplies the same integer values in float (the
earlier export; about 2-3x slower). Neither reaches TFLite's speed: bench/RESULTS.md (2026-12-06 and 2026-12-07) has
the figures and the per-op profiles that say why.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import GraphProto, ModelProto, NodeProto, TensorProto, helper, numpy_helper

from export.canonical import canonicalise
from export.common import (
    REPO_ROOT,
    ExportError,
    ParityError,
    atomic_output_dir,
    chunk_clip,
    file_checksums,
    load_check_audio,
    parity_figures,
    tool_versions,
    utc_now_iso,
)
from soundmond.identity import file_sha256
from soundmond.models.sidecar import LICENCES, Parity, Sidecar, SourceInfo, TensorSpec, write_sidecar

logger = logging.getLogger(__name__)

DEFAULT_TFLITE = REPO_ROOT.parent / "shared" / "models" / "yamnet" / "yamnet.tflite"
SAMPLE_RATE_HZ = 16000
CHUNK_SAMPLES = 15600  # 0.975 s
HOP_SAMPLES = 7680  # 0.48 s: YAMNet's own frame hop
LABEL_COUNT = 521
EMBEDDING_SIZE = 1024
OPSET = 17
MS_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib ops (MatMulIntegerToFloat)
# Parity target on probabilities. The issue asked for 1e-4; this model cannot meet it against any other
# runtime (see module docstring and `extra.parity_note` of the sidecar): the same ONNX graph run by ONNX
# Runtime with graph optimizations on vs off differs by up to 0.030 on the check audio, because a 1-ulp change
# upstream flips an int8 rounding in one of the 17 dynamic quantizations. The target sits above that floor and
# far below the stock conversion's error (0.78).
TARGET_MAX_ABS_DIFF = 0.05
# The tensor feeding the classifier layer (global average pool over the last feature map).
TFLITE_EMBEDDING = "yamnet_frames/global_average_pooling2d/Mean"
TFLITE_SCORES = "Identity"

INPUT_NAME = "audio"
OUTPUT_SCORES = "probabilities"
OUTPUT_EMBEDDING = "embedding"

# XNNPACK's dynamic int8 quantization of an activation row: (q - zero_point) / scale reproduces the input.
_QMIN, _QMAX = -128.0, 127.0
_CONV_QUANT_AXES = [1]
# How the int8-weight ops multiply (see `rewrite`); the first is the default.
ARITHMETIC = ("int8", "float")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tflite",
        type=Path,
        default=DEFAULT_TFLITE,
        help="the YAMNet TFLite file (default: ../shared/models/yamnet/yamnet.tflite beside the repository)",
    )
    parser.add_argument(
        "--class-map",
        type=Path,
        default=None,
        help="yamnet_class_map.csv (index, mid, display_name); default: beside the TFLite file",
    )
    parser.add_argument(
        "--arithmetic",
        choices=ARITHMETIC,
        default=ARITHMETIC[0],
        help="int8 (default): the int8-weight ops run as integer products in ONNX Runtime, as TFLite's XNNPACK "
        "runs them (several times faster); float: the same values multiplied in float (the earlier export)",
    )
    parser.add_argument(
        "--sha256",
        default=None,
        help="expected sha256 of the TFLite file; a SHA256SUMS file beside it is checked too",
    )


# --------------------------------------------------------------------------------------------- input checks


def _verify_checksum(tflite: Path, expected: str | None) -> str:
    digest = file_sha256(tflite)
    if expected is not None and digest != expected.strip().lower():
        raise ExportError(f"{tflite}: sha256 is {digest}, not the expected {expected.strip().lower()}")
    sums = tflite.parent / "SHA256SUMS"
    if sums.is_file():
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("*") == tflite.name:
                if parts[0].lower() != digest:
                    raise ExportError(f"{tflite}: sha256 {digest} does not match {sums} ({parts[0]})")
                logger.info("%s matches %s", tflite.name, sums)
                break
    return digest


def _read_class_map(path: Path) -> list[tuple[int, str, str]]:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        labels = [(int(r["index"]), r["mid"], r["display_name"]) for r in rows]
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ExportError(f"--class-map {path}: not a YAMNet class map with index,mid,display_name ({exc})") from exc
    if [i for i, _, _ in labels] != list(range(LABEL_COUNT)):
        raise ExportError(f"--class-map {path}: expected {LABEL_COUNT} rows indexed 0..{LABEL_COUNT - 1}")
    return labels


@dataclass
class _TfliteRunner:
    """The reference: ai-edge-litert's default interpreter (XNNPACK), as a user of the TFLite file runs it."""

    interpreter: Any
    input_index: int
    scores_index: int
    embedding_index: int

    def run(self, frames: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        it = self.interpreter
        scores, embeddings = [], []
        for frame in frames:
            it.set_tensor(self.input_index, frame[None, :])
            it.invoke()
            scores.append(it.get_tensor(self.scores_index)[0].copy())
            embeddings.append(it.get_tensor(self.embedding_index)[0].copy())
        return np.stack(scores), np.stack(embeddings)


def _open_tflite(tflite: Path) -> _TfliteRunner:
    """Load the TFLite file and refuse anything that is not YAMNet's [1, 15600] -> [1, 521] signature."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        with warnings.catch_warnings():
            # preserve_all_tensors keeps the embedding readable; it warns that it is meant for debugging.
            warnings.simplefilter("ignore", UserWarning)
            it = Interpreter(model_path=str(tflite), experimental_preserve_all_tensors=True)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"{tflite}: not a loadable TFLite model ({exc})") from exc
    inputs = it.get_input_details()
    outputs = {d["name"]: d for d in it.get_output_details()}
    shapes = f"inputs {[list(d['shape']) for d in inputs]}, outputs {[list(d['shape']) for d in outputs.values()]}"
    if (
        len(inputs) != 1
        or list(inputs[0]["shape"]) != [1, CHUNK_SAMPLES]
        or inputs[0]["dtype"] != np.float32
        or TFLITE_SCORES not in outputs
        or list(outputs[TFLITE_SCORES]["shape"]) != [1, LABEL_COUNT]
    ):
        raise ExportError(
            f"{tflite}: not YAMNet (expected input [1, {CHUNK_SAMPLES}] float32 and output "
            f"'{TFLITE_SCORES}' [1, {LABEL_COUNT}]; found {shapes})"
        )
    tensors = {d["name"]: d for d in it.get_tensor_details()}
    if TFLITE_EMBEDDING not in tensors or list(tensors[TFLITE_EMBEDDING]["shape"]) != [1, EMBEDDING_SIZE]:
        raise ExportError(f"{tflite}: no [1, {EMBEDDING_SIZE}] tensor '{TFLITE_EMBEDDING}'; not the YAMNet graph")
    return _TfliteRunner(it, inputs[0]["index"], outputs[TFLITE_SCORES]["index"], tensors[TFLITE_EMBEDDING]["index"])


# ------------------------------------------------------------------------------------------------ conversion


def convert_stock(tflite: Path) -> ModelProto:
    """Plain tf2onnx conversion (batch 1, hybrid ops computed in float): the starting point of the rewrite."""
    import tf2onnx

    logger.info("converting %s with tf2onnx %s (opset %d)", tflite, tf2onnx.__version__, OPSET)
    try:
        with warnings.catch_warnings():
            # tf2onnx reads the flatbuffer through tf.lite.Interpreter, which warns that it is deprecated.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated", category=UserWarning)
            model, _ = tf2onnx.convert.from_tflite(str(tflite), opset=OPSET)
    except Exception as exc:  # tf2onnx raises bare Exceptions of many kinds; translate at the boundary
        raise ExportError(f"{tflite}: tf2onnx could not convert it ({type(exc).__name__}: {exc})") from exc
    if not isinstance(model, ModelProto):
        raise ExportError(f"{tflite}: tf2onnx returned no ONNX model")
    return model


class _Graph:
    """Small helper over an onnx GraphProto: named constants and nodes with unique names."""

    def __init__(self, graph: GraphProto, integer: bool = False) -> None:
        self.graph = graph
        self.integer = integer
        self.inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.new_nodes: list[NodeProto] = []
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"soundmond/{stem}_{self._count}"

    def const(self, value: npt.ArrayLike, stem: str = "c", dtype: type = np.float32) -> str:
        name = self.name(stem)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def int8_const(self, w: npt.NDArray[np.float32]) -> str:
        """int8 weights stored as int8 (a quarter of the size) and cast to float in the graph (exact)."""
        return self.op("Cast", [self.const(w, "w_int8", np.int8)], to=TensorProto.FLOAT)

    def op(
        self, op_type: str, inputs: list[str], output: str | None = None, domain: str | None = None, **attrs: Any
    ) -> str:
        out = output or self.name(op_type.lower())
        node = helper.make_node(op_type, inputs, [out], name=self.name(op_type), domain=domain, **attrs)
        self.new_nodes.append(node)
        return out

    def int8_weight(self, tensor: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], int] | None:
        """(int8 weights as float, scale, axis) when `tensor` is a DequantizeLinear of an int8 constant."""
        node = self.producer.get(tensor)
        if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in self.inits:
            return None
        w = self.inits[node.input[0]]
        if w.dtype != np.int8 or np.any(self.inits[node.input[2]] != 0):
            return None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        return w.astype(np.float32), self.inits[node.input[1]].astype(np.float32), axis

    def qd8(self, x: str, axes: list[int]) -> tuple[str, str, str]:
        """XNNPACK's qd8 quantization of `x` per slice over `axes`: (q, zero_point, scale), q and zero_point integer
        values in [-128, 127] held in float; (q - zero_point) / scale reproduces the input.

        Mirrors xnn_f32_qd8_asymmetric_quantization_params: range widened to include 0, scale = 255 / range,
        zero point chosen from the smaller rounding error, nudged with rint; values rounded half to even.
        """
        f32 = np.float32
        mn = self.op("Min", [self.op("ReduceMin", [x], keepdims=1, axes=axes), self.const(0.0)])
        mx = self.op("Max", [self.op("ReduceMax", [x], keepdims=1, axes=axes), self.const(0.0)])
        rng = self.op("Sub", [mx, mn])
        flat = self.op("Equal", [rng, self.const(0.0)])
        safe_rng = self.op("Where", [flat, self.const(1.0), rng])
        scale = self.op("Where", [flat, self.const(1.0), self.op("Div", [self.const(f32(_QMAX - _QMIN)), safe_rng])])
        a = self.op("Mul", [mn, scale])
        b = self.op("Mul", [mx, scale])
        from_min = self.op("Add", [self.const(_QMIN), a])
        from_max = self.op("Add", [self.const(_QMAX), b])
        use_min = self.op("Greater", [self.op("Add", [from_min, from_max]), self.const(0.0)])
        zp = self.op("Where", [use_min, self.op("Sub", [self.const(_QMIN), a]), self.op("Sub", [self.const(_QMAX), b])])
        zp = self.op("Round", [self.op("Clip", [zp, self.const(_QMIN), self.const(_QMAX)])])
        q = self.op("Round", [self.op("Mul", [x, scale])])
        q = self.op("Clip", [self.op("Add", [q, zp]), self.const(_QMIN), self.const(_QMAX)])
        return q, zp, scale

    def dynamic_quant(self, x: str, axes: list[int]) -> tuple[str, str]:
        """qd8 for float arithmetic: (q - zero_point, 1 / scale), both float."""
        q, zp, scale = self.qd8(x, axes)
        return self.op("Sub", [q, zp]), self.op("Div", [self.const(1.0), scale])

    def integer_matmul(
        self,
        x: str,
        w: npt.NDArray[np.float32],
        w_scale: npt.NDArray[np.float32],
        bias: str | None,
        output: str | None = None,
        nonnegative: bool = False,
        lead_shape: list[int] | None = None,
    ) -> str:
        """x [..., K] @ w [K, M] (+ bias) as XNNPACK's qd8 x int8 kernels compute it, in integers: each row of x
        quantized to uint8 with its own scale and zero point (`qd8`'s parameters; QuantizeLinear per row), the
        product by the int8 weights (uint8 x int8: what VNNI runs), then one float rescale per row and column.
        `w_scale`: one scale, or one per column.

        `nonnegative` (every such op of YAMNet): zero point 0, so product and both rescales are one
        MatMulIntegerToFloat. Otherwise (kept for a graph where a product's input can be negative): MatMulInteger,
        minus zero point x column sums (exact in int32), then the rescale in float ops.

        Differs from `qd8` + a float product only in rounding ties: QuantizeLinear divides by 1 / scale where
        XNNPACK multiplies by scale, and a zero range gets a tiny one instead of scale 1 (same result: all zero).

        `nonnegative`: x is >= 0 by construction (a ReLU's or a square root's output). Then qd8's range is [0, max],
        its zero point -128, i.e. 0 after the shift, so the zero-point chain and correction drop out (an all-zero
        row gets zero point 0 instead of qd8's 127: both quantize it to values whose product is 0).

        `lead_shape`: x's leading dimensions when they are known (-1 for the batch); the output is reshaped to them
        without reading x's shape at run time (a Shape of a transposed tensor makes ONNX Runtime compute it)."""
        w8 = w.astype(np.int8)
        k, m = w8.shape
        i64 = np.int64
        rows = self.op("Reshape", [x, self.const([-1, k], "shape", i64)])
        if nonnegative:
            mx = self.op("Max", [self.op("ReduceMax", [rows], keepdims=0, axes=[1]), self.const(1e-30)])
            inv_scale = self.op("Div", [mx, self.const(np.float32(_QMAX - _QMIN))])
            q = self.op("QuantizeLinear", [rows, inv_scale], axis=0)  # no zero point: uint8, zero point 0
            # One op for the product and the row and column scales (ONNX Runtime's CPU kernel takes a per-row A
            # scale and per-column B scales, 1.17 to 1.32 at least; only its zero points must be scalars). The bias
            # is a separate Add: with a per-row A scale the kernel multiplies its bias input by that scale too.
            row_scale = self.op("Unsqueeze", [inv_scale, self.const([1], "axes", i64)])
            inputs = [q, self.const(w8, "w_int8", np.int8), row_scale, self.const(w_scale.reshape(-1))]
            y = self.op("MatMulIntegerToFloat", inputs, domain=MS_DOMAIN)
            if bias is not None:
                y = self.op("Add", [y, bias])
            if lead_shape is not None:
                return self.op("Reshape", [y, self.const([*lead_shape, m], "shape", i64)], output)
            lead = self.op("Shape", [x], start=0, end=-1)
            out_shape = self.op("Concat", [lead, self.const([m], "m", i64)], axis=0)
            return self.op("Reshape", [y, out_shape], output)
        q, zp_u8, inv_scale = self.qd8_rows(rows)
        acc = self.op("MatMulInteger", [q, self.const(w8, "w_int8", np.int8)])
        zp_col = self.op("Unsqueeze", [self.op("Cast", [zp_u8], to=TensorProto.INT32), self.const([1], "axes", i64)])
        column_sums = self.const(w8.astype(np.int32).sum(axis=0), "colsum", np.int32)
        acc_f = self.op("Cast", [self.op("Sub", [acc, self.op("Mul", [zp_col, column_sums])])], to=TensorProto.FLOAT)
        return self._rescale(x, acc_f, inv_scale, w_scale, bias, m, output)

    def qd8_rows(self, rows: str) -> tuple[str, str, str]:
        """`qd8` of each row of a [rows, K] tensor, as uint8 for the integer products: (q, zero point, 1 / scale);
        q = x * scale rounded, plus the zero point (QuantizeLinear per row)."""
        mn = self.op("Min", [self.op("ReduceMin", [rows], keepdims=0, axes=[1]), self.const(0.0)])
        mx = self.op("Max", [self.op("ReduceMax", [rows], keepdims=0, axes=[1]), self.const(0.0)])
        rng = self.op("Max", [self.op("Sub", [mx, mn]), self.const(1e-30)])
        scale = self.op("Div", [self.const(np.float32(_QMAX - _QMIN)), rng])
        a = self.op("Mul", [mn, scale])
        b = self.op("Mul", [mx, scale])
        use_min = self.op("Greater", [self.op("Add", [a, b]), self.const(1.0)])
        zp = self.op("Where", [use_min, self.op("Sub", [self.const(_QMIN), a]), self.op("Sub", [self.const(_QMAX), b])])
        zp = self.op("Round", [self.op("Clip", [zp, self.const(_QMIN), self.const(_QMAX)])])
        zp_u8 = self.op("Cast", [self.op("Add", [zp, self.const(128.0)])], to=TensorProto.UINT8)
        inv_scale = self.op("Div", [self.const(1.0), scale])
        return self.op("QuantizeLinear", [rows, inv_scale, zp_u8], axis=0), zp_u8, inv_scale

    def _rescale(
        self,
        x: str,
        acc_f: str,
        inv_scale: str,
        w_scale: npt.NDArray[np.float32],
        bias: str | None,
        m: int,
        output: str | None,
    ) -> str:
        """[rows, M] integer sums (as float) -> x's leading shape + [M]: times the row's and the column's scales,
        plus the bias."""
        i64 = np.int64
        if w_scale.size == 1:
            row_scale = self.op("Mul", [inv_scale, self.const(w_scale.reshape(()))])
            y = self.op("Mul", [acc_f, self.op("Unsqueeze", [row_scale, self.const([1], "axes", i64)])])
        else:
            y = self.op("Mul", [acc_f, self.op("Unsqueeze", [inv_scale, self.const([1], "axes", i64)])])
            y = self.op("Mul", [y, self.const(w_scale.reshape(-1))])
        if bias is not None:
            y = self.op("Add", [y, bias])
        lead = self.op("Shape", [x], start=0, end=-1)
        out_shape = self.op("Concat", [lead, self.const([m], "m", i64)], axis=0)
        return self.op("Reshape", [y, out_shape], output)

    def hybrid_matmul(
        self, x: str, weight: str, bias: str | None, output: str | None = None, nonnegative: bool = False
    ) -> str:
        """x @ W (+ bias) as TFLite's XNNPACK computes it for int8 W: int8 rows x int8 weights, then rescale."""
        found = self.int8_weight(weight)
        if found is None:
            raise ExportError(f"expected int8 weights behind {weight}; not the published YAMNet TFLite")
        w, w_scale, _ = found
        if w_scale.size != 1:
            raise ExportError(f"{weight}: per-channel weight scales are not handled for matmuls")
        if self.integer:
            return self.integer_matmul(x, w, w_scale, bias, output, nonnegative)
        centred, inv_scale = self.dynamic_quant(x, axes=[-1])
        acc = self.op("MatMul", [centred, self.int8_const(w)])
        y = self.op("Mul", [self.op("Mul", [acc, inv_scale]), self.const(w_scale.reshape(()))])
        if bias is None:
            return self.op("Identity", [y], output) if output else y
        return self.op("Add", [y, bias], output)


def _node_by_output(graph: _Graph, output: str) -> NodeProto:
    node = graph.producer.get(output)
    if node is None:
        raise ExportError(f"tf2onnx graph has no tensor {output!r}; not the published YAMNet TFLite")
    return node


def rewrite(stock: ModelProto, arithmetic: str = "int8") -> ModelProto:
    """Turn tf2onnx's batch-1 float graph into YAMNet as TFLite computes it, for a batch of N frames.

    - front end rebuilt for [N, 15600]: framing (Gather of 96 x 400-sample frames), Hann window, pad to 512,
      the int8 DFT (real and imaginary matmuls), magnitude, int8 mel matmul, log;
    - every op with int8 weights (DFT, mel, 13 pointwise convolutions, classifier) gets XNNPACK's dynamic
      int8 quantization of its input. `arithmetic` "int8": the products run as integers (MatMulInteger of uint8
      activations and int8 weights; the 1x1 convolutions as products over channels, channels last), as XNNPACK
      runs them; "float": integer-valued float inputs and weights multiplied in float (the same values; slower);
    - the float weights TFLite stores as int8 (depthwise convolutions) become float constants, so ONNX Runtime's
      optimizer sees constant weights (it does not fold DequantizeLinear and skipped its fast convolution layout);
    - outputs: probabilities [N, 521], embedding [N, 1024]; the log-mel patch output is dropped.
    """
    if arithmetic not in ARITHMETIC:
        raise ExportError(f"arithmetic must be one of {', '.join(ARITHMETIC)}, not {arithmetic!r}")
    model = ModelProto()
    model.CopyFrom(stock)
    g = _Graph(model.graph, integer=arithmetic == "int8")
    shapes = _static_shapes(stock)
    nodes = list(model.graph.node)
    by_type: dict[str, list[NodeProto]] = {}
    for n in nodes:
        by_type.setdefault(n.op_type, []).append(n)

    # --- constants of the front end, found by shape rather than by name
    gathers = [n for n in by_type.get("Gather", []) if g.inits.get(n.input[1], np.empty(0)).shape == (96, 5)]
    windows = [n for n in by_type.get("Mul", []) if g.inits.get(n.input[1], np.empty(0)).shape == (1, 400)]
    pads = by_type.get("Pad", [])
    logs = by_type.get("Log", [])
    convs = by_type.get("Conv", [])
    if len(gathers) != 1 or len(windows) != 1 or len(pads) != 1 or len(logs) != 1 or not convs:
        raise ExportError("the tf2onnx graph does not have YAMNet's spectrogram front end")
    frame_idx = g.inits[gathers[0].input[1]].astype(np.int64)
    window = g.inits[windows[0].input[1]]
    pad = g.inits[pads[0].input[1]].astype(np.int64)  # [0, left, 0, right]
    dft = [n for n in by_type.get("MatMul", []) if n.input[0] == pads[0].output[0]]
    mel = _node_by_output(g, logs[0].input[0])
    if len(dft) != 2 or mel.op_type != "Gemm" or len(pad) != 4:
        raise ExportError("the tf2onnx graph does not have YAMNet's DFT / mel matmuls")
    # Which matmul is the real part does not matter: both are squared and summed.
    first_conv = convs[0]

    # --- new front end on a batch of frames
    audio = INPUT_NAME
    x = g.op("Reshape", [audio, g.const([-1, 195, 80], "shape", np.int64)])
    x = g.op("Gather", [x, g.const(frame_idx, "frames", np.int64)], axis=1)  # [N, 96, 5, 80]
    x = g.op("Reshape", [x, g.const([-1, 96, 400], "shape", np.int64)])
    x = g.op("Mul", [x, g.const(window)])
    power = _power_spectrum(g, x, (int(pad[1]), int(pad[3])), dft[0].input[1], dft[1].input[1])
    magnitude = g.op("Sqrt", [power])
    mel_out = g.hybrid_matmul(magnitude, mel.input[1], mel.input[2], nonnegative=True)
    log_mel = g.op("Log", [mel_out])  # [N, 96, 64]
    g.op("Reshape", [log_mel, g.const([-1, 1, 96, 64], "shape", np.int64)], first_conv.input[0])

    # --- the convolution stack: keep the float ops, requantize the int8-weight 1x1 convolutions
    dead: set[int] = set()
    frontend_end = nodes.index(first_conv)
    for n in nodes[:frontend_end]:
        if n.op_type != "DequantizeLinear":
            dead.add(id(n))
    for conv in convs:
        found = g.int8_weight(conv.input[1])
        group = next((a.i for a in conv.attribute if a.name == "group"), 1)
        if found is None or group != 1:
            continue  # float convolutions and depthwise ones (TFLite dequantizes those weights to float)
        w, w_scale, axis = found
        if g.integer:
            users = [n for n in nodes if conv.output[0] in n.input]
            relu = users[0] if len(users) == 1 and users[0].op_type == "Relu" else None
            _integer_pointwise_conv(g, conv, w, w_scale, axis, relu, shapes.get(conv.input[0]))
            dead.update({id(conv), id(relu)} if relu is not None else {id(conv)})
            continue
        centred, inv_scale = g.dynamic_quant(conv.input[0], axes=_CONV_QUANT_AXES)
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        acc = g.op("Conv", [centred, g.int8_const(w)], **attrs)
        scale_shape = (1, -1, 1, 1) if w_scale.size > 1 else ()
        y = g.op("Mul", [g.op("Mul", [acc, inv_scale]), g.const(w_scale.reshape(scale_shape))])
        bias = g.op("Reshape", [conv.input[2], g.const([1, -1, 1, 1], "shape", np.int64)])
        g.op("Add", [y, bias], conv.output[0])
        dead.add(id(conv))

    # --- the classifier: int8 dense layer on the pooled embedding
    sigmoids = by_type.get("Sigmoid", [])
    if len(sigmoids) != 1:
        raise ExportError("the tf2onnx graph does not end in one sigmoid classifier")
    dense = _node_by_output(g, sigmoids[0].input[0])
    if dense.op_type != "Gemm":
        raise ExportError("the tf2onnx graph's classifier is not a dense layer")
    embedding = dense.input[0]
    # The embedding is a global average of ReLU outputs: never negative, so qd8's zero point is 0 after the shift.
    g.hybrid_matmul(embedding, dense.input[1], dense.input[2], dense.output[0], nonnegative=True)
    dead.add(id(dense))
    # ORT's Sigmoid flushes tiny scores to 0 (TFLite keeps 1e-20): spell it out so near-silence ranks the same.
    logits = sigmoids[0].input[0]
    g.op("Reciprocal", [g.op("Add", [g.const(1.0), g.op("Exp", [g.op("Neg", [logits])])])], OUTPUT_SCORES)
    dead.add(id(sigmoids[0]))
    g.op("Identity", [embedding], OUTPUT_EMBEDDING)

    kept = [n for n in nodes if id(n) not in dead]
    initializers = {i.name for i in model.graph.initializer}
    all_nodes = _toposort(kept + g.new_nodes, inputs={INPUT_NAME, *initializers})
    del model.graph.node[:]
    model.graph.node.extend(all_nodes)
    del model.graph.input[:]
    model.graph.input.append(helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", CHUNK_SAMPLES]))
    del model.graph.output[:]
    model.graph.output.extend(
        [
            helper.make_tensor_value_info(OUTPUT_SCORES, TensorProto.FLOAT, ["batch", LABEL_COUNT]),
            helper.make_tensor_value_info(OUTPUT_EMBEDDING, TensorProto.FLOAT, ["batch", EMBEDDING_SIZE]),
        ]
    )
    del model.graph.value_info[:]
    _drop_unused(model.graph)
    _fold_constant_dequantize(model.graph)
    if g.integer and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    model.graph.name = "yamnet"
    model.producer_name = "soundmond.export.yamnet"
    onnx.checker.check_model(model, full_check=True)
    return model


def _power_spectrum(g: _Graph, frames: str, pad: tuple[int, int], weight_re: str, weight_im: str) -> str:
    """|DFT|^2 of the windowed frames [N, 96, 400] zero-padded by `pad` (left, right) to the DFT's length, through
    the int8 DFT's two products (TFLite quantizes the frames per row for each; both see the same quantization)."""
    i64 = np.int64
    if not g.integer:
        x = g.op("Pad", [frames, g.const([0, 0, pad[0], 0, 0, pad[1]], "pads", i64)])
        re, im = g.hybrid_matmul(x, weight_re, None), g.hybrid_matmul(x, weight_im, None)
        return g.op("Add", [g.op("Mul", [re, re]), g.op("Mul", [im, im])])
    found = [g.int8_weight(w) for w in (weight_re, weight_im)]
    if found[0] is None or found[1] is None or found[0][1].size != 1 or found[1][1].size != 1:
        raise ExportError("expected the DFT's two int8 weight matrices with one scale each; not the published YAMNet")
    (w_re, s_re, _), (w_im, s_im, _) = found
    if w_re.shape != w_im.shape:
        raise ExportError(f"the DFT's weight matrices differ in shape ({w_re.shape} vs {w_im.shape})")
    k, bins = w_re.shape
    w = np.concatenate([w_re, w_im], axis=1)
    scales = np.concatenate([np.full(bins, s_re.item()), np.full(bins, s_im.item())]).astype(np.float32)
    w, scales, extra = _fold_zero_point(w, scales)
    # `extra` more zeros after the frame quantize to each row's zero point and carry the zero-point correction
    x = g.op("Pad", [frames, g.const([0, 0, pad[0], 0, 0, pad[1] + extra], "pads", i64)])
    rows = g.op("Reshape", [x, g.const([-1, k + extra], "shape", i64)])
    q, _, inv_scale = g.qd8_rows(rows)
    row_scale = g.op("Unsqueeze", [inv_scale, g.const([1], "axes", i64)])
    both = g.op(
        "MatMulIntegerToFloat",
        [q, g.const(w, "w_int8", np.int8), row_scale, g.const(scales)],
        domain=MS_DOMAIN,
    )
    # [rows, 2 x bins] -> re^2 + im^2 [rows, bins] (ReduceSumSquare over a [rows, 2, bins] view: 3x slower)
    axis = g.const([-1], "axis", i64)
    re = g.op("Slice", [both, g.const([0], "start", i64), g.const([bins], "end", i64), axis])
    im = g.op("Slice", [both, g.const([bins], "start", i64), g.const([2 * bins], "end", i64), axis])
    power = g.op("Add", [g.op("Mul", [re, re]), g.op("Mul", [im, im])])
    lead = g.op("Shape", [frames], start=0, end=-1)
    return g.op("Reshape", [power, g.op("Concat", [lead, g.const([bins], "bins", i64)], axis=0)])


def _fold_zero_point(
    w: npt.NDArray[np.float32], scales: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], int]:
    """Make x (quantized with a per-row zero point zp) @ w need no zero-point correction (zp x column sums).

    The DFT's columns sum to 0 except constant ones (the cosine of bin 0: all 127). A constant column c becomes
    ones with scale c x its scale (the same values), and `extra` rows of -128 in those columns (0 elsewhere) meet
    `extra` inputs that quantize to zp (zeros appended to the frame): ones x q + (-128 x extra) x zp =
    sum(q - zp) when 128 x extra = K. Returns (weights [K + extra, M], scales, extra)."""
    k, m = w.shape
    sums = w.sum(axis=0)
    constant = np.all(w == w[:1], axis=0) & (sums != 0)
    if np.any((sums != 0) & ~constant) or k % 128:
        raise ExportError("the DFT weights are not those of YAMNet (columns with a nonzero sum that are not constant)")
    extra = k // 128
    scales = np.where(constant, scales * w[0], scales).astype(np.float32)
    folded = np.where(constant[None, :], 1.0, w)
    tail = np.where(constant[None, :], -128.0, 0.0).repeat(extra, axis=0)
    return np.concatenate([folded, tail], axis=0).astype(np.float32), scales, extra


def _integer_pointwise_conv(
    g: _Graph,
    conv: NodeProto,
    w: npt.NDArray[np.float32],
    w_scale: npt.NDArray[np.float32],
    axis: int,
    relu: NodeProto | None = None,
    input_shape: list[int] | None = None,
) -> None:
    """A 1x1 int8-weight convolution [N, C, H, W] as an integer product over channels, channels last (ONNX
    Runtime's ConvInteger is about 3x slower than its float Conv at these shapes; MatMulInteger about 4x faster).

    `relu`: the convolution's only consumer, a Relu; it then runs channels last before the transpose back, so the
    transpose meets the next (depthwise) convolution directly and ONNX Runtime folds it into that convolution's
    NCHWc reorder."""
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    if (
        w.ndim != 4
        or w.shape[2:] != (1, 1)
        or list(attrs.get("strides", [1, 1])) != [1, 1]
        or any(attrs.get("pads", [0, 0, 0, 0]))
        or (w_scale.size > 1 and (axis != 0 or w_scale.size != w.shape[0]))
    ):
        raise ExportError(f"{conv.name}: an int8-weight convolution that is not 1x1 per output channel")
    nhwc = g.op("Transpose", [conv.input[0]], perm=[0, 2, 3, 1])
    bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
    source = g.producer.get(conv.input[0])
    nonnegative = source is not None and source.op_type == "Relu"
    # [N, C, H, W] of the batch-1 graph -> the product's leading dimensions [-1, H, W] (static: see integer_matmul)
    lead = [-1, *input_shape[2:]] if input_shape is not None and len(input_shape) == 4 else None
    y = g.integer_matmul(
        nhwc, np.ascontiguousarray(w[:, :, 0, 0].T), w_scale, bias, nonnegative=nonnegative, lead_shape=lead
    )
    if relu is not None:
        g.op("Transpose", [g.op("Relu", [y])], relu.output[0], perm=[0, 3, 1, 2])
    else:
        g.op("Transpose", [y], conv.output[0], perm=[0, 3, 1, 2])


def _fold_constant_dequantize(graph: GraphProto) -> None:
    """DequantizeLinear of constants -> float constants (the same float32 products ONNX Runtime computes)."""
    inits = {i.name: i for i in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or not all(i in inits for i in node.input if i):
            kept.append(node)
            continue
        x = numpy_helper.to_array(inits[node.input[0]]).astype(np.int32)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zp = numpy_helper.to_array(inits[node.input[2]]).astype(np.int32) if len(node.input) > 2 else np.int32(0)
        if scale.ndim == 1 and scale.size > 1:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % x.ndim
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), np.reshape(zp, shape) if np.ndim(zp) else zp
        value = ((x - zp).astype(np.float32) * scale).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unused(graph)


def _static_shapes(model: ModelProto) -> dict[str, list[int]]:
    """Tensor shapes of the batch-1 tf2onnx graph where shape inference knows every dimension."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = [d.dim_value for d in dims]
    return shapes


def _toposort(nodes: list[NodeProto], inputs: set[str]) -> list[NodeProto]:
    available = set(inputs)
    pending = list(nodes)
    ordered: list[NodeProto] = []
    while pending:
        ready = [n for n in pending if all(i == "" or i in available for i in n.input)]
        if not ready:
            missing = {i for n in pending for i in n.input if i and i not in available}
            raise ExportError(f"rewritten YAMNet graph is not connected (missing {sorted(missing)[:3]})")
        for n in ready:
            ordered.append(n)
            available.update(n.output)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    return ordered


def _drop_unused(graph: GraphProto) -> None:
    """Remove nodes and initializers nothing reaches from the outputs."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


# ---------------------------------------------------------------------------------------------------- parity


def _extra_frames() -> dict[str, npt.NDArray[np.float32]]:
    """Synthetic traps beside the real recordings: a pure tone and digital silence."""
    t = np.arange(CHUNK_SAMPLES, dtype=np.float64) / SAMPLE_RATE_HZ
    return {
        "tone_1khz": (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)[None, :],
        "silence": np.zeros((1, CHUNK_SAMPLES), dtype=np.float32),
    }


def _top5_disagreements(reference: npt.NDArray[np.floating], candidate: npt.NDArray[np.floating], tol: float) -> int:
    """Frames whose top-5 sets differ by more than a near-tie: a class ranked in one top-5 but not the other
    must score within `tol` of the 5th score in the reference (ranks among near-equal scores are noise)."""
    bad = 0
    for ref, cand in zip(reference, candidate, strict=True):
        top_ref = set(np.argsort(-ref)[:5].tolist())
        top_cand = set(np.argsort(-cand)[:5].tolist())
        fifth = np.sort(ref)[::-1][4]
        if any(abs(ref[i] - fifth) > tol for i in top_ref ^ top_cand):
            bad += 1
    return bad


def _top1_disagreements(reference: npt.NDArray[np.floating], candidate: npt.NDArray[np.floating], tol: float) -> int:
    """Frames whose top-1 differs by more than a near-tie: the candidate's top class must score within `tol` of the
    reference's top score in the reference (which of two near-equal classes comes first is rounding noise)."""
    ref_top = np.argmax(reference, axis=1)
    cand_top = np.argmax(candidate, axis=1)
    rows = np.arange(len(reference))
    return int(np.sum(reference[rows, ref_top] - reference[rows, cand_top] > tol))


@dataclass(frozen=True)
class ParityResult:
    parity: Parity
    embedding_max_abs_diff: float
    strict_top5_disagreements: int
    top5_disagreements_beyond_near_ties: int  # the export fails on any
    top1_disagreements_beyond_near_ties: int  # the export fails on any
    max_abs_diff_by_source: dict[str, float]


def check_parity(
    tflite: _TfliteRunner, session: Any, check_audio: Path | None, target: float | None = None
) -> ParityResult:
    """Run TFLite (frame by frame, batch 1) and ONNX (all frames of a clip in one batch) on real audio + traps."""
    target = TARGET_MAX_ABS_DIFF if target is None else target
    clips = load_check_audio(check_audio, SAMPLE_RATE_HZ)
    sources = {c.name: chunk_clip(c.samples, CHUNK_SAMPLES, HOP_SAMPLES) for c in clips}
    sources.update(_extra_frames())
    ref_scores, ref_emb, onnx_scores, onnx_emb, by_source = [], [], [], [], {}
    for name, frames in sources.items():
        scores, emb = tflite.run(frames)
        o_scores, o_emb = session.run([OUTPUT_SCORES, OUTPUT_EMBEDDING], {INPUT_NAME: frames})
        by_source[name] = float(np.max(np.abs(scores - o_scores)))
        logger.debug("%s: %d frames, max abs score diff %.3g", name, len(frames), by_source[name])
        ref_scores.append(scores)
        ref_emb.append(emb)
        onnx_scores.append(o_scores)
        onnx_emb.append(o_emb)
    ref, cand = np.concatenate(ref_scores), np.concatenate(onnx_scores)
    import ai_edge_litert

    parity = parity_figures(
        ref,
        cand,
        reference_name=f"ai-edge-litert {ai_edge_litert.__version__} (default XNNPACK interpreter)",
        audio_files=[c.name for c in clips] + list(_extra_frames()),
        outputs_are_probabilities=True,
        target_max_abs_logit_diff=target,
    )
    strict = round((1.0 - parity.top5_agreement) * parity.chunks)
    top5_beyond = _top5_disagreements(ref, cand, target)
    result = ParityResult(
        parity=parity,
        embedding_max_abs_diff=float(np.max(np.abs(np.concatenate(ref_emb) - np.concatenate(onnx_emb)))),
        strict_top5_disagreements=strict,
        top5_disagreements_beyond_near_ties=top5_beyond,
        top1_disagreements_beyond_near_ties=_top1_disagreements(ref, cand, target),
        max_abs_diff_by_source=by_source,
    )
    logger.info(
        "parity on %d frames: max abs score diff %.3g (target %g), embedding %.3g, top-1 %.3f, "
        "top-5 identical on %d/%d (%d differ beyond near-ties)",
        parity.chunks,
        parity.max_abs_logit_diff,
        target,
        result.embedding_max_abs_diff,
        parity.top1_agreement,
        parity.chunks - strict,
        parity.chunks,
        top5_beyond,
    )
    return result


def require_yamnet_parity(result: ParityResult) -> None:
    """The target on the scores, and top-5 sets identical up to near-ties (within the target) on every frame."""
    parity = result.parity
    target = parity.target_max_abs_logit_diff
    if target is not None and parity.max_abs_logit_diff > target:
        worst = max(result.max_abs_diff_by_source, key=lambda k: result.max_abs_diff_by_source[k])
        raise ParityError(
            f"YAMNet ONNX: max abs score difference {parity.max_abs_logit_diff:.3g} vs {parity.reference} exceeds "
            f"the target {target:g} on {parity.chunks} frames (worst: {worst}); nothing written"
        )
    if result.top5_disagreements_beyond_near_ties:
        raise ParityError(
            f"YAMNet ONNX: top-5 differs from {parity.reference} beyond near-ties on "
            f"{result.top5_disagreements_beyond_near_ties} of {parity.chunks} frames; nothing written"
        )
    if result.top1_disagreements_beyond_near_ties:
        raise ParityError(
            f"YAMNet ONNX: top-1 differs from {parity.reference} beyond near-ties on "
            f"{result.top1_disagreements_beyond_near_ties} of {parity.chunks} frames; nothing written"
        )


# ------------------------------------------------------------------------------------------------------ run


def _ort_session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def run(args: argparse.Namespace) -> Path:
    started = time.monotonic()
    tflite = Path(args.tflite)
    if not tflite.is_file():
        raise ExportError(f"--tflite {tflite}: no such file")
    class_map = Path(args.class_map) if args.class_map else tflite.parent / "yamnet_class_map.csv"
    if not class_map.is_file():
        raise ExportError(f"--class-map {class_map}: no such file (pass --class-map)")
    digest = _verify_checksum(tflite, args.sha256)
    labels = _read_class_map(class_map)
    runner = _open_tflite(tflite)

    arithmetic = getattr(args, "arithmetic", ARITHMETIC[0])
    model = canonicalise(rewrite(convert_stock(tflite), arithmetic))  # the same bytes from every conversion
    model_bytes = model.SerializeToString()
    session = _ort_session(model_bytes)
    result = check_parity(runner, session, args.check_audio)
    require_yamnet_parity(result)

    with atomic_output_dir(Path(args.out), force=args.force) as folder:
        (folder / "model.onnx").write_bytes(model_bytes)
        with open(folder / "labels.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["index", "mid", "display_name"])
            writer.writerows(labels)
        sidecar = Sidecar(
            family="yamnet",
            source=SourceInfo(id=tflite.name, sha256=digest),
            licence=LICENCES["yamnet"],
            sample_rate_hz=SAMPLE_RATE_HZ,
            chunk_samples=CHUNK_SAMPLES,
            hop_samples=HOP_SAMPLES,
            inputs=[TensorSpec(name=INPUT_NAME, shape=["batch", CHUNK_SAMPLES])],
            outputs=[
                TensorSpec(name=OUTPUT_SCORES, shape=["batch", LABEL_COUNT]),
                TensorSpec(name=OUTPUT_EMBEDDING, shape=["batch", EMBEDDING_SIZE]),
            ],
            labels_file="labels.csv",
            label_count=LABEL_COUNT,
            output_kind="probabilities",
            quantization="int8",  # the TFLite file's int8 weights, in both arithmetics (extra.arithmetic says how)
            files=file_checksums(folder),
            tool_versions=_tool_versions(),
            parity=result.parity,
            created_utc=utc_now_iso(),
            extra=_sidecar_extra(result, class_map, arithmetic),
        )
        write_sidecar(folder, sidecar)
    logger.info("wrote %s in %.1f s", args.out, time.monotonic() - started)
    return Path(args.out)


def _tool_versions() -> dict[str, str]:
    versions = tool_versions("tensorflow", "tensorflow-cpu", "tf2onnx", "ai-edge-litert")
    if "tensorflow" not in versions:  # installed as tensorflow-cpu: name the importable module's version
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    return versions


def _sidecar_extra(result: ParityResult, class_map: Path, arithmetic: str) -> dict[str, object]:
    return {
        "class_map": class_map.name,
        "arithmetic": arithmetic,
        "input": "mono float32 in [-1, 1] at 16 kHz; one row = one 0.975-s frame; frames every 7680 samples",
        "outputs": {
            OUTPUT_SCORES: "per-class scores, sigmoid already applied (AudioSet is multi-label: no softmax)",
            OUTPUT_EMBEDDING: "1024-d global average pool of the last feature map, the classifier's input "
            f"(TFLite tensor {TFLITE_EMBEDDING})",
        },
        "dropped_outputs": "the TFLite log-mel patch (Identity_1, [96, 64]) is not exported",
        "pooling": "a window longer than 0.975 s: frames of 15600 samples every 7680 (a 5-s window = 9 frames), "
        "run as one batch; average scores over frames for a steady soundscape, max for short events; average "
        "embeddings for a window embedding",
        "stock_conversion_error": "yamnet.tflite is dynamic-range quantized: int8 weights for the DFT and mel "
        "matrices, the 13 pointwise convolutions and the classifier. TFLite's XNNPACK kernels quantize each of "
        "those ops' float inputs to int8 at run time (per row / per pixel, asymmetric); tf2onnx dequantizes the "
        "weights and multiplies float inputs, a different model. The first op that diverges is the DFT matmul "
        "(0.4 %), the log of the mel spectrogram amplifies it (log-mel off by up to 6) and scores differ by "
        "up to 0.78 (top-5 identical on 69 % of frames). Framing, padding and convolution layout are correct.",
        "fix": "tf2onnx conversion, then graph surgery: each int8-weight op gets XNNPACK's dynamic int8 "
        "quantization of its input (xnn_f32_qd8_asymmetric_quantization_params, round half to even) and "
        "integer-valued weights, rescaled after the integer sum (arithmetic int8: uint8 x int8 "
        "MatMulIntegerToFloat of ONNX Runtime's com.microsoft domain, per-row and per-column scales in the op; "
        "float: the same integers multiplied in float); the front end is rebuilt for [N, 15600]",
        "reference_runtime_note": "ai-edge-litert without XNNPACK (builtin hybrid kernels, symmetric int8) "
        "differs from the default XNNPACK interpreter by up to 0.93 on the same frames: the reference is the "
        "default interpreter",
        "parity_note": "residual differences are int8 rounding flips set off by 1-ulp float differences "
        "upstream; the same ONNX graph under two ORT optimization levels differs by 0.030, so 1e-4 is not "
        "reachable for this quantized model; near-tie top-5 swaps (scores within the target) are tolerated",
        "parity_embedding_max_abs_diff": result.embedding_max_abs_diff,
        "parity_top5_strict_disagreements": result.strict_top5_disagreements,
        "parity_top1_disagreements_beyond_near_ties": result.top1_disagreements_beyond_near_ties,
        "parity_max_abs_diff_by_source": result.max_abs_diff_by_source,
        "onnx_runtime_threads": "2 (set intra_op_num_threads)",
    }
