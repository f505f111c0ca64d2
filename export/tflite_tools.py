"""TFLite -> ONNX helpers shared by the TFLite exporters (BirdNET, YAMNet).

- `describe_tflite` / `litert_interpreter` / `run_litert`: read a TFLite file's signature and run it with LiteRT
  (`ai-edge-litert`, the runtime birdnetlib uses), one row at a time, optionally reading intermediate tensors.
- `convert_tflite`: tf2onnx's TFLite converter with custom rewriters, errors translated to `ExportError`.
- `real_dft_rewriter`: replaces TFLite's `RFFT2D -> Squeeze -> Cast(complex -> float)` (the cast keeps the real
  part), which stock tf2onnx refuses, by the real part of the DFT computed in float64 as a factored ("four-step")
  DFT of the bins the mel matrix downstream uses: MatMuls (`factored_real_dft_matrices`, with `factored_real_dft` as
  its numpy reference).
- `rename_io` / `set_batch_dim`: give the ONNX graph the input/output names and the dynamic batch name the sidecar
  promises.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from export.common import ExportError

logger = logging.getLogger(__name__)

# onnx dtype codes (onnx.TensorProto.FLOAT / DOUBLE), kept here so importing this module does not import onnx.
_ONNX_FLOAT = 1
_ONNX_DOUBLE = 11

DFT_DTYPES = {"float32": _ONNX_FLOAT, "float64": _ONNX_DOUBLE}


@dataclass(frozen=True)
class TfliteTensor:
    """One input or output of a TFLite model; -1 in `shape` is a dynamic dimension."""

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class TfliteSignature:
    inputs: tuple[TfliteTensor, ...]
    outputs: tuple[TfliteTensor, ...]
    tensor_names: frozenset[str]


def litert_interpreter(path: Path, *, preserve_all_tensors: bool = False, num_threads: int = 2) -> Any:
    """A LiteRT interpreter with tensors allocated. `preserve_all_tensors` keeps intermediates readable.

    LiteRT warns that preserving all tensors is meant for debugging; that is exactly our use (reading an embedding
    for a parity check), so the warning is silenced here.
    """
    from ai_edge_litert.interpreter import Interpreter

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
            interpreter = Interpreter(
                model_path=str(path),
                num_threads=num_threads,
                experimental_preserve_all_tensors=preserve_all_tensors,
            )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{path}: not a TFLite model LiteRT can load ({first_line})") from exc
    return interpreter


def describe_tflite(path: Path) -> TfliteSignature:
    """Inputs, outputs (with dynamic dimensions as -1) and all tensor names of a TFLite file."""
    interpreter = litert_interpreter(path)

    def tensors(details: list[dict[str, Any]]) -> tuple[TfliteTensor, ...]:
        return tuple(
            TfliteTensor(
                name=d["name"],
                index=int(d["index"]),
                shape=tuple(int(s) for s in d.get("shape_signature", d["shape"])),
                dtype=np.dtype(d["dtype"]).name,
            )
            for d in details
        )

    return TfliteSignature(
        inputs=tensors(interpreter.get_input_details()),
        outputs=tensors(interpreter.get_output_details()),
        tensor_names=frozenset(d["name"] for d in interpreter.get_tensor_details()),
    )


def tensor_index(interpreter: Any, name: str) -> int:
    for detail in interpreter.get_tensor_details():
        if detail["name"] == name:
            return int(detail["index"])
    raise ExportError(f"the TFLite model has no tensor named {name!r}")


def run_litert(
    interpreter: Any, rows: npt.NDArray[np.float32], tensor_names: Sequence[str]
) -> dict[str, npt.NDArray[np.float32]]:
    """Run a single-input TFLite model on each row of `rows` (batch 1), returning the named tensors stacked.

    Intermediate tensors are only readable when the interpreter preserves all tensors.
    """
    input_index = int(interpreter.get_input_details()[0]["index"])
    indices = {name: tensor_index(interpreter, name) for name in tensor_names}
    out: dict[str, list[npt.NDArray[np.float32]]] = {name: [] for name in tensor_names}
    for row in rows:
        interpreter.set_tensor(input_index, np.ascontiguousarray(row[None, ...], dtype=np.float32))
        interpreter.invoke()
        for name, index in indices.items():
            out[name].append(np.array(interpreter.get_tensor(index)[0], dtype=np.float32, copy=True))
    return {name: np.stack(values) for name, values in out.items()}


def dft_factors(length: int, bins: int | None = None) -> tuple[int, int]:
    """`length = n1 * n2` for the factored DFT of the first `bins` one-sided bins (default all, length // 2 + 1).

    n1 is the power of two that minimises the multiply-adds per sample, 2 (n1 + ceil(bins / n1)) (stage one: an
    n1-point DFT, real and imaginary; stage two: ceil(bins / n1) output bins per k1), the smaller one on a tie; for
    all bins of a 2048-sample frame that is 32 x 64. `length` must be a power of two >= 4.
    """
    if length < 4 or length & (length - 1):
        raise ValueError(f"the factored DFT needs a power-of-two length >= 4, not {length}")
    full = length // 2 + 1
    bins = full if bins is None else bins
    if not 1 <= bins <= full:
        raise ValueError(f"bins must be 1..{full} for a {length}-sample frame, not {bins}")
    candidates = [1 << e for e in range(1, length.bit_length() - 1)]  # n1 = 2 .. length / 2
    n1 = min(candidates, key=lambda n: (n + -(-bins // n), n))
    return n1, length // n1


def factored_real_dft_matrices(
    length: int, bins: int | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The two constant matrices of the factored real-part DFT of a real frame of `length = n1 * n2` samples, for
    its first `bins` one-sided bins (default all; `dft_factors` picks n1).

    Cooley-Tukey with n = n2 * i1 + i2 and k = k1 + n1 * k2 (a "four-step" FFT written as matrix products):
    1. the frame as an [n1, n2] matrix; `first` ([2 n1, n1]: cos rows, then -sin rows) times it gives the real and
       imaginary parts of the n1-point DFTs down its columns: A[k1, i2];
    2. `second[k1]` ([n1, 2 n2, k2]) holds the twiddle factor exp(-2 pi i i2 k1 / length) times the n2-point DFT
       basis, real part over imaginary part, so Re X[k1 + n1 k2] = [Re A[k1, :], Im A[k1, :]] @ second[k1].
    Only k2 < ceil(bins / n1) is kept: with k = k1 + n1 k2 that covers bins 0..bins-1 (and up to n1 - 1 more,
    sliced off). About 2 (n1 + bins / n1) multiply-adds per sample instead of bins for a plain DFT matrix.
    """
    n1, n2 = dft_factors(length, bins)
    k2_count = -(-(length // 2 + 1 if bins is None else bins) // n1)
    idx1 = np.arange(n1)
    angle1 = -2.0 * np.pi * np.outer(idx1, idx1) / n1
    first = np.concatenate([np.cos(angle1), np.sin(angle1)], axis=0)
    k1 = np.arange(n1)[:, None, None]
    i2 = np.arange(n2)[None, :, None]
    k2 = np.arange(k2_count)[None, None, :]
    basis = np.exp(-2j * np.pi * (i2 * k1 / length + i2 * k2 / n2))  # [n1, n2, k2_count]
    second = np.concatenate([basis.real, -basis.imag], axis=1)  # Re((a + ib)(c + id)) = ac - bd
    return first, second


def factored_real_dft(frames: npt.NDArray[np.floating], bins: int | None = None) -> npt.NDArray[np.float64]:
    """numpy reference of the ONNX graph `RealDftRewriter` builds: Re(rfft(frames))[..., :bins] over the last axis,
    in float64 (bins default: all, length // 2 + 1)."""
    length = frames.shape[-1]
    bins = length // 2 + 1 if bins is None else bins
    n1, n2 = dft_factors(length, bins)
    first, second = factored_real_dft_matrices(length, bins)
    x = np.asarray(frames).reshape(-1, n1, n2)
    m = x.shape[0]
    cols = x.transpose(1, 0, 2).astype(np.float64).reshape(n1, -1)  # [n1, m n2]: one column per (frame, i2)
    re = (first[:n1] @ cols).reshape(n1, m, n2)  # stage one, real and imaginary parts as two products
    im = (first[n1:] @ cols).reshape(n1, m, n2)
    y = re @ second[:, :n2] + im @ second[:, n2:]  # [n1, m, k2]: stage two, no transpose of stage one's output
    y = y.transpose(1, 2, 0).reshape(m, -1)  # [m, k2 * n1], bin k = k1 + n1 k2
    return y[:, :bins].reshape(*frames.shape[:-1], bins)


class RealDftRewriter:
    """A tf2onnx rewriter for TFLite spectrograms that keep the real part of an FFT.

    TFLite graphs converted from `tf.signal.stft` + `tf.cast(..., tf.float32)` hold `RFFT2D` (over a size-1 axis and
    the frame axis) -> `Squeeze` -> `Cast(complex64 -> float32)`; TFLite's cast keeps the real part. tf2onnx only
    accepts `ComplexAbs` after an FFT. This rewriter replaces the three ops by the real part of the DFT computed as
    `factored_real_dft` does: `Reshape -> Transpose -> Cast(to dft_dtype) -> Reshape -> 2 x MatMul (stage one, real
    and imaginary part) -> 2 x Reshape -> 2 x MatMul (stage two) -> Add -> Cast(float32) -> Transpose -> Reshape ->
    Slice [-> Pad] -> Reshape` -> the original `Squeeze`.

    Only the bins the spectrogram uses are computed. When the real part feeds (through a Reshape that keeps the bin
    axis last) a MatMul by a constant mel matrix, as BirdNET's `Tensordot` does, bins whose mel rows are all zero
    contribute exactly nothing: they are not computed, and zeros are padded in their place, so the graph after the
    rewrite is unchanged. BirdNET V2.4 uses bins 0-127 of 1025 (MEL_SPEC1, 0-3 kHz) and 0-319 of 513 (MEL_SPEC2);
    `used_bins` records what each rewrite found. Any other consumer: all bins are computed.

    Layout: stage one is two [n1, n1] x [n1, m n2] products for all m frames at once (as a batch of m small products,
    the first version, it took 9 of BirdNET's 41 ms per chunk on an AVX-512 Xeon); computing the real and imaginary
    parts separately lets stage two read them in place, with no transpose of stage one's float64 output (the largest
    tensor of the graph: a transpose that moved it took 20 ms by itself there). The only transposes left move the
    float32 frames and the small float32 result.

    float64 matters: TFLite's RFFT2D kernel computes in double, and the models compress the spectrum with a power law
    that amplifies the rounding error of near-empty bins (silence, pure tones), so a float32 DFT drifts by ~0.4
    logits there. The factored form is used instead of ONNX's `DFT` op because ONNX Runtime's float64 DFT took
    about 22 ms of BirdNET's 34 ms per chunk, the two MatMuls about 3 ms (2 threads, the project's AMD EPYC machine
    of 2026-11).

    Pass the instance to `convert_tflite(rewriters=[...])`; afterwards `rewritten` names the RFFT2D ops it replaced
    and `used_bins` maps each to (bins computed, bins of the full spectrum).
    """

    def __init__(self, dft_dtype: str = "float64") -> None:
        if dft_dtype not in DFT_DTYPES:
            raise ValueError(f"dft_dtype must be one of {sorted(DFT_DTYPES)}, not {dft_dtype!r}")
        self.dft_dtype = dft_dtype
        self.rewritten: list[str] = []
        self.used_bins: dict[str, tuple[int, int]] = {}

    @staticmethod
    def _const_value(node: Any) -> npt.NDArray[Any] | None:
        """The value of a constant node, or of a Transpose of one (how tf2onnx hands over TFLite's mel matrix)."""
        if node.is_const():
            return np.asarray(node.get_tensor_value(as_list=False))
        if node.type == "Transpose" and node.inputs and node.inputs[0].is_const():
            value = np.asarray(node.inputs[0].get_tensor_value(as_list=False))
            return np.transpose(value, node.get_attr_value("perm"))
        return None

    def used_bin_count(self, g: Any, real_part: str, bins: int) -> int:
        """How many leading bins of the real part `real_part` ([..., bins]) its consumers can see: `bins` unless
        it only feeds, directly or through one Reshape, a MatMul by a constant [bins, F] matrix whose rows from
        some k on are all zero (then k). The MatMul contracts the last axis, so with `bins` rows it sees the bin
        axis as it is (a Reshape between two shapes that both end in `bins` keeps every element's bin). Shape
        consumers read only the shape: ignored."""

        def only_consumer(name: str) -> Any:
            nodes = [n for n in g.find_output_consumers(name) if n.type != "Shape"]
            return nodes[0] if len(nodes) == 1 and nodes[0].input[0] == name else None

        node = only_consumer(real_part)
        if node is not None and node.type == "Reshape":
            node = only_consumer(node.output[0])
        if node is None or node.type != "MatMul":
            return bins
        weight = self._const_value(node.inputs[1])
        if weight is None or weight.ndim != 2 or weight.shape[0] != bins:
            return bins
        used = np.flatnonzero(np.any(weight != 0, axis=1))
        return int(used[-1]) + 1 if used.size else 1

    def __call__(self, g: Any, ops: list[Any]) -> list[Any]:
        from tf2onnx import utils

        onnx_dtype = DFT_DTYPES[self.dft_dtype]
        np_dtype = np.float64 if self.dft_dtype == "float64" else np.float32

        for rfft in [op for op in ops if op.type == "RFFT2D"]:
            squeezes = g.find_output_consumers(rfft.output[0])
            if len(squeezes) != 1 or squeezes[0].type not in ("Squeeze", "Reshape"):  # drops the size-1 axis
                continue
            squeeze = squeezes[0]
            casts = g.find_output_consumers(squeeze.output[0])
            if len(casts) != 1 or casts[0].type != "Cast":
                continue
            cast = casts[0]
            frames = rfft.input[0]
            shape = g.get_shape(frames)
            fft_length = rfft.inputs[1].get_tensor_value(as_list=True)
            if shape is None or len(fft_length) != 2 or fft_length[0] != 1 or shape[-2] != 1:
                continue  # only the 1-D case (a size-1 axis before the frame axis) is handled
            length = int(fft_length[1])
            if shape[-1] not in (-1, length):
                continue  # padding / cropping to fft_length is not implemented
            bins = length // 2 + 1
            used = self.used_bin_count(g, cast.output[0], bins)
            n1, n2 = dft_factors(length, used)
            first, second = factored_real_dft_matrices(length, used)
            k2_count = second.shape[2]
            logger.debug(
                "rewriting %s (frames %s, length %d = %d x %d, bins used %d of %d) as a factored %s DFT",
                *(rfft.name, shape, length, n1, n2, used, bins, self.dft_dtype),
            )

            def const(suffix: str, value: npt.NDArray[Any], rfft_name: str = rfft.name) -> str:
                return str(g.make_const(utils.make_name(f"{rfft_name}_{suffix}"), value).output[0])

            def node(op: str, inputs: list[str], **attr: Any) -> str:
                return str(g.make_node(op, inputs, attr=attr).output[0])

            def shape_const(suffix: str, dims: list[int]) -> str:
                return const(suffix, np.array(dims, dtype=np.int64))

            x = node("Reshape", [frames, shape_const("frames_shape", [-1, n1, n2])])
            x = node("Transpose", [x], perm=[1, 0, 2])  # [n1, m, n2], still float32 (half the bytes to move)
            wide = node("Cast", [x], to=onnx_dtype)
            cols = node("Reshape", [wide, shape_const("cols_shape", [n1, -1])])  # [n1, m n2]
            stage_shape = shape_const("stage_shape", [n1, -1, n2])
            parts = []
            for part, rows, basis in (("re", first[:n1], second[:, :n2]), ("im", first[n1:], second[:, n2:])):
                a = node("MatMul", [const(f"first_{part}", rows.astype(np_dtype)), cols])  # [n1, m n2]
                a = node("Reshape", [a, stage_shape])  # [n1, m, n2]: a view, no copy
                parts.append(node("MatMul", [a, const(f"second_{part}", basis.astype(np_dtype))]))  # [n1, m, k2]
            y = node("Add", parts)
            y = node("Cast", [y], to=_ONNX_FLOAT)
            y = node("Transpose", [y], perm=[1, 2, 0])  # [m, k2, n1]: bin k = k1 + n1 k2
            y = node("Reshape", [y, shape_const("bins_shape", [-1, k2_count * n1])])
            y = node("Slice", [y, shape_const("start", [0]), shape_const("end", [used]), shape_const("axis", [1])])
            if used < bins:  # the bins no consumer sees: exact zeros, so the graph downstream keeps its shapes
                y = node("Pad", [y, shape_const("pads", [0, 0, 0, bins - used])], mode="constant")
            leading = node("Shape", [frames], start=0, end=-1)
            out_shape = node("Concat", [leading, shape_const("bins", [bins])], axis=0)
            real32 = node("Reshape", [y, out_shape])  # [..., 1, bins]
            g.replace_input(squeeze, squeeze.input[0], real32, 0)
            g.set_dtype(squeeze.output[0], _ONNX_FLOAT)
            g.replace_all_inputs(cast.output[0], squeeze.output[0])
            g.remove_node(cast.name)
            g.remove_node(rfft.name)
            self.rewritten.append(rfft.name)
            self.used_bins[rfft.name] = (used, bins)
        return list(g.get_nodes())


def convert_tflite(
    path: Path,
    *,
    opset: int = 17,
    output_names: Sequence[str] | None = None,
    rewriters: Sequence[Callable[[Any, list[Any]], list[Any]]] = (),
) -> Any:
    """tf2onnx's TFLite converter -> onnx.ModelProto, checked with the ONNX checker.

    tf2onnx converts TFLite with `continue_on_error`: an op it cannot map stays in the graph under its TF name, so
    the result is checked here and a leftover op is reported instead of producing a model that fails to load.
    """
    import onnx
    import tf2onnx

    try:
        with warnings.catch_warnings():
            # tf2onnx reads the flatbuffer through tf.lite.Interpreter, which warns that it is deprecated
            warnings.filterwarnings(
                "ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated", category=UserWarning
            )
            model, _ = tf2onnx.convert.from_tflite(
                str(path),
                opset=opset,
                output_names=list(output_names) if output_names else None,
                custom_rewriter=list(rewriters) or None,
            )
    except Exception as exc:  # tf2onnx raises bare Exceptions, ValueErrors, AssertionErrors...
        raise ExportError(f"tf2onnx could not convert {path.name}: {type(exc).__name__}: {exc}") from exc
    known = {schema.name for schema in onnx.defs.get_all_schemas()}
    leftovers = sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx") and n.op_type not in known})
    if leftovers:
        raise ExportError(f"tf2onnx left unconverted ops in {path.name}: {', '.join(leftovers)}")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the ONNX model converted from {path.name} is invalid: {exc}") from exc
    return model


def rename_io(model: Any, names: Mapping[str, str]) -> None:
    """Rename graph inputs/outputs (and every reference to them) in place: {old name: new name}."""
    graph = model.graph
    present = {v.name for v in graph.input} | {v.name for v in graph.output}
    missing = sorted(set(names) - present)
    if missing:
        raise ExportError(f"the converted graph has no input/output named {', '.join(missing)}")
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name in names:
            value.name = names[value.name]
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in names:
                node.input[i] = names[name]
        for i, name in enumerate(node.output):
            if name in names:
                node.output[i] = names[name]


def set_batch_dim(model: Any, name: str = "batch") -> None:
    """Name the first (dynamic) dimension of every graph input and output `name`."""
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = name
        elif dims:
            raise ExportError(f"{value.name}: the batch dimension is fixed to {dims[0].dim_value}, not dynamic")


def ort_session(path: Path, num_threads: int = 2) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


__all__ = [
    "DFT_DTYPES",
    "TfliteSignature",
    "TfliteTensor",
    "convert_tflite",
    "dft_factors",
    "factored_real_dft",
    "factored_real_dft_matrices",
    "describe_tflite",
    "litert_interpreter",
    "ort_session",
    "RealDftRewriter",
    "rename_io",
    "run_litert",
    "set_batch_dim",
    "tensor_index",
]
