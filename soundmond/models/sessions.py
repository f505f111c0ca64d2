"""ONNX Runtime adapters: model folders -> checked sessions -> the `Tagger` and `BirdModel` Protocols.

Every model lives in a folder written by `python -m export` (`model.onnx`, labels, `model.json`). Loading one:

1. `check_sidecar` reads `model.json`, checks it against the configuration (family, key named in the error),
   verifies every file's sha256 (`sidecar.verify_folder`) and checks the inputs / outputs / sample rate / label
   count this code relies on.
2. `make_session` opens the ONNX file with explicit `SessionOptions` (threads from the config, one inter-op
   thread, sequential execution, all graph optimisations, CPU only, no memory-pattern pre-planning, no spinning
   of idle pool threads: see `session_options`) and runs it once on zeros (warm-up), so the first real window is
   not slow and a broken file fails at start-up, not at the first window.
3. The adapters (`YamnetTagger`, `AstTagger`, `BirdnetModel`) turn one analysis window into the project's
   dataclasses. Windows are framed inside the adapters (documented per class); all frames / chunks of a window go
   through ONNX Runtime in one batched call when the model's batch axis is dynamic, one call per frame otherwise;
   BirdNET's chunks go one call each (`BirdnetModel`: peak memory).

Errors: folder / file / config problems raise `ModelFolderError` (with a hint) at load; a model output holding NaN or
inf raises `ModelOutputError` for that window (the pipeline logs it and marks the window as failed).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from soundmond.config import BirdConfig, TaggerConfig
from soundmond.data import LabelScore
from soundmond.models.sidecar import ModelFolderError, Sidecar, TensorSpec, read_sidecar, verify_folder
from soundmond.protocols import Float32Array

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"

YAMNET_SAMPLE_RATE_HZ = 16000
AST_SAMPLE_RATE_HZ = 16000
BIRDNET_SAMPLE_RATE_HZ = 48000
BIRDNET_CHUNK_SAMPLES = 144000  # 3 s at 48 kHz

# Inputs and outputs each family's adapter needs (name -> the shape it must have; None = any, "batch" = any name).
_REQUIRED_IO: dict[str, tuple[str, tuple[str, ...]]] = {
    "yamnet": ("audio", ("probabilities", "embedding")),
    "ast": ("input_values", ("logits", "embedding")),
    "birdnet": ("audio", ("logits", "embedding")),
}
_SAMPLE_RATES = {"yamnet": YAMNET_SAMPLE_RATE_HZ, "ast": AST_SAMPLE_RATE_HZ, "birdnet": BIRDNET_SAMPLE_RATE_HZ}

ORT_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, ValueError, OSError)
try:  # ORT's own exception classes (Fail, InvalidProtobuf, NoSuchFile, InvalidArgument, ...) are not RuntimeErrors
    from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

    ORT_ERRORS = ORT_ERRORS + tuple(
        obj
        for name in dir(_ort_state)
        if isinstance(obj := getattr(_ort_state, name), type) and issubclass(obj, Exception)
    )
except ImportError:  # pragma: no cover - layout of the ORT wheel
    pass


class ModelOutputError(Exception):
    """A model returned NaN or infinite values for one window (the window is marked as failed, the daemon goes on)."""


# --- sessions -----------------------------------------------------------------------------------------------------


def session_options(threads: int, *, spinning: bool = False) -> ort.SessionOptions:
    """Options for every soundmond session (the daemon's and the benchmark's).

    - `enable_mem_pattern` off: ORT otherwise pre-plans one block for all intermediates of the shapes it has seen;
      with BirdNET's float64 spectrogram that block kept the daemon's peak RSS about 100 MB higher (`soundmond
      bench`, session levers), for no measurable speed.
    - `session.intra_op.allow_spinning` off (unless `spinning`): idle pool threads otherwise busy-wait after each
      run. The daemon runs two or three sessions one after the other, so one session's spinning threads steal the
      cores the next one needs (and a sensor's power budget). `soundmond bench` measures this lever.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3  # errors only; ORT's warnings about unused initialisers are noise here
    return options


def _dummy_input(node: Any) -> npt.NDArray[Any]:
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in node.shape]
    dtype = np.float64 if "double" in node.type else np.float32
    return np.zeros(shape, dtype=dtype)


def make_session(
    path: Path | str, threads: int, *, spinning: bool = False, warmup: Mapping[str, npt.NDArray[Any]] | None = None
) -> ort.InferenceSession:
    """Open an ONNX model on the CPU with explicit options (`session_options`) and run it once on zeros (warm-up;
    `warmup` gives the feeds when zeros with dynamic dimensions of 1 are no valid input, e.g. raw-waveform models).

    ONNX Runtime errors (missing / corrupt file, unsupported op, failing warm-up) become `ModelFolderError`.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(path.parent, f"{path.name} is missing", "re-export the model folder")
    try:
        session = ort.InferenceSession(
            str(path), sess_options=session_options(threads, spinning=spinning), providers=["CPUExecutionProvider"]
        )
    except ORT_ERRORS as exc:
        raise ModelFolderError(
            path.parent,
            f"ONNX Runtime cannot load {path.name} ({str(exc).strip().splitlines()[0][:300]})",
            f"re-export the model folder with this soundmond version (onnxruntime {ort.__version__})",
        ) from exc
    feeds = dict(warmup) if warmup is not None else {node.name: _dummy_input(node) for node in session.get_inputs()}
    try:
        session.run(None, feeds)
    except ORT_ERRORS as exc:
        raise ModelFolderError(
            path.parent,
            f"{path.name} fails on a warm-up run ({str(exc).strip().splitlines()[0][:300]})",
            "re-export the model folder",
        ) from exc
    logger.debug("loaded %s (%d threads)", path, threads)
    return session


def has_dynamic_batch(session: ort.InferenceSession, input_name: str) -> bool:
    for node in session.get_inputs():
        if node.name == input_name:
            return not (isinstance(node.shape[0], int) and node.shape[0] > 0)
    raise KeyError(input_name)


def run_session(
    session: ort.InferenceSession,
    input_name: str,
    batch: npt.NDArray[np.float32],
    outputs: Sequence[str],
    dynamic: bool,
) -> list[npt.NDArray[np.float32]]:
    """Run a batch of model inputs in one call (dynamic batch) or row by row (fixed batch 1)."""
    if dynamic or batch.shape[0] == 1:
        result = session.run(list(outputs), {input_name: batch})
        return [np.asarray(r, dtype=np.float32) for r in result]
    rows = [session.run(list(outputs), {input_name: batch[i : i + 1]}) for i in range(batch.shape[0])]
    return [np.concatenate([np.asarray(r[k], dtype=np.float32) for r in rows]) for k in range(len(outputs))]


def check_output_finite(what: str, *arrays: npt.NDArray[np.floating]) -> None:
    for arr in arrays:
        if not np.isfinite(arr).all():
            raise ModelOutputError(
                f"{what} returned NaN or infinite values for this window (input audio finite: checked upstream); "
                "the window is skipped"
            )


def sigmoid(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    clipped = np.clip(np.asarray(x, dtype=np.float64), -60.0, 60.0)
    return (1.0 / (1.0 + np.exp(-clipped))).astype(np.float32)


# --- sidecar checks -------------------------------------------------------------------------------------------------


def _config_key(config: TaggerConfig | BirdConfig) -> str:
    return "models.tagger" if isinstance(config, TaggerConfig) else "models.birds"


def read_labels(folder: Path, sidecar: Sidecar) -> list[str]:
    """The label names, in output order: `labels.csv` (index,mid,display_name) or `labels.txt` (one per line)."""
    path = folder / sidecar.labels_file
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFolderError(folder, f"cannot read {sidecar.labels_file} ({exc})", "re-export the model") from exc
    if path.suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if rows and "display_name" not in rows[0]:
            raise ModelFolderError(folder, f"{sidecar.labels_file} has no display_name column", "re-export the model")
        return [row["display_name"] for row in rows]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _check_tensor(folder: Path, kind: str, spec: TensorSpec, expected: Sequence[int | None]) -> None:
    if len(spec.shape) != len(expected):
        raise ModelFolderError(
            folder,
            f"{kind} '{spec.name}' has shape {spec.shape}, expected {len(expected)} dimensions",
            "re-export the model with this soundmond version",
        )
    for i, (have, want) in enumerate(zip(spec.shape, expected, strict=True)):
        if want is not None and have != want:
            raise ModelFolderError(
                folder,
                f"{kind} '{spec.name}' dimension {i} is {have}, this soundmond expects {want}",
                "re-export the model with this soundmond version",
            )
    if spec.dtype != "float32":
        raise ModelFolderError(folder, f"{kind} '{spec.name}' is {spec.dtype}, expected float32", "re-export the model")


def _batch_ok(folder: Path, spec: TensorSpec) -> None:
    first = spec.shape[0]
    if isinstance(first, int) and first != 1:
        raise ModelFolderError(
            folder, f"'{spec.name}' has a fixed batch of {first} (expected 1 or dynamic)", "re-export the model"
        )


def check_sidecar(folder: Path | str, expected_family: str, config: TaggerConfig | BirdConfig) -> Sidecar:
    """Check a model folder against the configuration and against what the adapters need; return its sidecar.

    Raises `ModelFolderError` naming the configuration key to change when the folder holds another family, and
    naming the file / tensor when the folder is damaged or was exported for another soundmond version.
    """
    folder = Path(folder)
    key = _config_key(config)
    if not folder.is_dir():
        raise ModelFolderError(
            folder,
            "no such model folder",
            f"set {key}.path to a folder written by `python -m export {expected_family}`",
        )
    sidecar = read_sidecar(folder)
    if sidecar.family != expected_family:
        if isinstance(config, TaggerConfig) and sidecar.family in ("yamnet", "ast", "hf"):
            hint = (
                f"set {key}.family: {sidecar.family} to use this folder, or point {key}.path at a "
                f"'{expected_family}' folder (`python -m export {expected_family} --out ...`)"
            )
        elif isinstance(config, BirdConfig) and sidecar.family == "hf":
            hint = f"set {key}.family: hf to use this folder, or point {key}.path at a BirdNET folder"
        else:
            hint = f"point {key}.path at a folder written by `python -m export {expected_family} --out ...`"
        raise ModelFolderError(
            folder,
            f"holds a '{sidecar.family}' model but {key}"
            + (f".family is '{expected_family}'" if isinstance(config, TaggerConfig) else " expects 'birdnet'"),
            hint,
        )
    verify_folder(folder, expected_family)

    rate = _SAMPLE_RATES[expected_family]
    if sidecar.sample_rate_hz != rate:
        raise ModelFolderError(
            folder, f"sample_rate_hz is {sidecar.sample_rate_hz}, a {expected_family} model takes {rate}", "re-export"
        )
    input_name, output_names = _REQUIRED_IO[expected_family]
    inputs = {spec.name: spec for spec in sidecar.inputs}
    if input_name not in inputs:
        raise ModelFolderError(
            folder, f"model.json lists no input '{input_name}' (has {sorted(inputs)})", "re-export the model"
        )
    outputs = {spec.name: spec for spec in sidecar.outputs}
    missing = [name for name in output_names if name not in outputs]
    if missing:
        raise ModelFolderError(
            folder, f"model.json lists no output {missing} (has {sorted(outputs)})", "re-export the model"
        )
    in_spec = inputs[input_name]
    _batch_ok(folder, in_spec)
    if expected_family == "ast":
        if sidecar.frames is None or "features" not in sidecar.extra:
            raise ModelFolderError(folder, "an AST sidecar needs `frames` and `extra.features`", "re-export")
        _check_tensor(folder, "input", in_spec, [None, sidecar.frames, 128])
    else:
        _check_tensor(folder, "input", in_spec, [None, sidecar.chunk_samples])
        if expected_family == "birdnet" and sidecar.chunk_samples != BIRDNET_CHUNK_SAMPLES:
            raise ModelFolderError(
                folder, f"chunk_samples is {sidecar.chunk_samples}, BirdNET takes 144000", "re-export"
            )
        if expected_family == "yamnet" and not sidecar.hop_samples:
            raise ModelFolderError(folder, "a YAMNet sidecar needs hop_samples", "re-export the model")
    scores = outputs[output_names[0]]
    _check_tensor(folder, "output", scores, [None, sidecar.label_count])
    _check_tensor(folder, "output", outputs["embedding"], [None, None])

    labels = read_labels(folder, sidecar)
    if len(labels) != sidecar.label_count:
        raise ModelFolderError(
            folder,
            f"{sidecar.labels_file} has {len(labels)} labels but model.json says label_count {sidecar.label_count}",
            "re-export the model folder",
        )
    if expected_family == "birdnet" and isinstance(config, BirdConfig):
        meta = sidecar.extra.get("meta_model")
        if config.location_filter.enabled and not isinstance(meta, dict):
            raise ModelFolderError(
                folder,
                "models.birds.location_filter.enabled is true but this folder has no meta model (extra.meta_model)",
                "re-export with `python -m export birdnet`, or set models.birds.location_filter.enabled: false",
            )
    return sidecar


def check_session_io(
    folder: Path, session: ort.InferenceSession, sidecar: Sidecar, input_name: str, outputs: Sequence[str]
) -> None:
    """The ONNX graph must have the inputs / outputs, and the fixed dimensions, that the sidecar promised."""
    graph = {node.name: node.shape for node in (*session.get_inputs(), *session.get_outputs())}
    promised = {spec.name: spec.shape for spec in (*sidecar.inputs, *sidecar.outputs)}
    for name in (input_name, *outputs):
        if name not in graph:
            raise ModelFolderError(
                folder,
                f"model.onnx has no tensor '{name}' (it has {sorted(graph)}), but model.json promises it",
                "re-export the model folder",
            )
        have, want = graph[name], promised[name]
        fixed_differs = len(have) != len(want) or any(
            isinstance(h, int) and isinstance(w, int) and h != w for h, w in zip(have, want, strict=False)
        )
        if fixed_differs:
            raise ModelFolderError(
                folder,
                f"model.onnx's '{name}' has shape {list(have)}, model.json says {want}",
                "re-export the model folder; never edit model.json by hand",
            )


def top_labels(scores: npt.NDArray[np.float32], labels: Sequence[str], k: int) -> tuple[LabelScore, ...]:
    k = min(k, scores.shape[0])
    idx = np.argpartition(-scores, k - 1)[:k]
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return tuple(LabelScore(labels[i], float(scores[i])) for i in idx)


def frame_starts(n_samples: int, frame: int, hop: int) -> list[int]:
    """Start offsets of frames of `frame` samples every `hop` that cover `n_samples`.

    Frames start at 0, hop, 2*hop, ... while they fit; if the last one stops short of the end, one more frame aligned
    to the end is added (so the tail is analysed without zero padding). Input shorter than one frame: [0] (the
    caller zero-pads).
    """
    if n_samples <= frame:
        return [0]
    starts = list(range(0, n_samples - frame + 1, hop))
    if starts[-1] + frame < n_samples:
        starts.append(n_samples - frame)
    return starts


def frame_array(samples: Float32Array, frame: int, hop: int) -> npt.NDArray[np.float32]:
    wave = np.asarray(samples, dtype=np.float32).reshape(-1)
    if wave.size < frame:
        wave = np.pad(wave, (0, frame - wave.size))
    starts = frame_starts(wave.size, frame, hop)
    return np.stack([wave[s : s + frame] for s in starts])


def check_window(what: str, samples: Float32Array) -> Float32Array:
    wave = np.asarray(samples, dtype=np.float32)
    if wave.ndim != 1:
        wave = np.squeeze(wave)
        if wave.ndim != 1:
            raise ValueError(f"{what}: expected mono audio [samples], got shape {np.shape(samples)}")
    if wave.size == 0:
        raise ValueError(f"{what}: empty window")
    return wave


def pool_frames(x: npt.NDArray[np.float32], how: str) -> npt.NDArray[np.float32]:
    return (x.max(axis=0) if how == "max" else x.mean(axis=0)).astype(np.float32)


