"""ONNX Runtime adapters: model folders -> checked sessions -> the `Tagger` and `BirdModel` Protocols.

Every model lives in a folder written by `python -m export` (`model.onnx`, labels, `model.json`). Loading one:

1. `check_sidecar` reads `model.json`, checks it against the configuration (family, key named in the error),
   verifies every file's sha256 (`sidecar.verify_folder`) and checks the inputs / outputs / sample rate / label
   count this code relies on.
2. `make_session` opens the ONNX file with explicit `SessionOptions` (threads from the config, one inter-op
   thread, sequential execution, all graph optimisations, CPU only, no memory-pattern pre-planning, no spinning
   of idle pool threads: see `_session_options`) and runs it once on zeros (warm-up), so the first real window is
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
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from soundmond.config import BirdConfig, ConfigError, ConfigProblem, TaggerConfig
from soundmond.data import BirdOutput, LabelScore, SpeciesScore, TaggerOutput
from soundmond.features import ASTFeatures
from soundmond.protocols import Float32Array, Tagger
from soundmond.sidecar import ModelFolderError, Sidecar, TensorSpec, model_digest, read_sidecar, verify_folder

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

# BirdNET V2.4 classes that are not species at all but sound classes (scientific part == common part). They are
# never reported as bird species; `BirdnetModel.detect_full` returns them separately as `sound_classes`. Rule used at
# load: a label whose scientific and common parts are equal, or whose scientific part is not "Genus species", is a
# sound class. The list below is what that rule finds in V2.4 (checked at load: a model whose rule result differs is
# logged). Note: two crickets (Gryllus assimilis, Miogryllus saussurei) are real species labelled this way; they are
# insects, not birds, so treating them as non-bird sound classes is correct for the bird list.
# BirdNET also holds real non-bird species (frogs, insects, a few mammals) with proper names: those stay species
# (they are natural sounds with a species name); exclude them with `models.birds.exclude` if unwanted.
BIRDNET_SOUND_CLASSES_V24: frozenset[str] = frozenset(
    {
        "Dog",
        "Engine",
        "Environmental",
        "Fireworks",
        "Gryllus assimilis",
        "Gun",
        "Human non-vocal",
        "Human vocal",
        "Human whistle",
        "Miogryllus saussurei",
        "Noise",
        "Power tools",
        "Siren",
    }
)

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


def _session_options(threads: int, *, spinning: bool = False) -> ort.SessionOptions:
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


def make_session(path: Path | str, threads: int, *, spinning: bool = False) -> ort.InferenceSession:
    """Open an ONNX model on the CPU with explicit options (`_session_options`) and run it once on zeros (warm-up).

    ONNX Runtime errors (missing / corrupt file, unsupported op, failing warm-up) become `ModelFolderError`.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(path.parent, f"{path.name} is missing", "re-export the model folder")
    try:
        session = ort.InferenceSession(
            str(path), sess_options=_session_options(threads, spinning=spinning), providers=["CPUExecutionProvider"]
        )
    except ORT_ERRORS as exc:
        raise ModelFolderError(
            path.parent,
            f"ONNX Runtime cannot load {path.name} ({str(exc).strip().splitlines()[0][:300]})",
            f"re-export the model folder with this soundmond version (onnxruntime {ort.__version__})",
        ) from exc
    feeds = {node.name: _dummy_input(node) for node in session.get_inputs()}
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


def _has_dynamic_batch(session: ort.InferenceSession, input_name: str) -> bool:
    for node in session.get_inputs():
        if node.name == input_name:
            return not (isinstance(node.shape[0], int) and node.shape[0] > 0)
    raise KeyError(input_name)


def _run(
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


def _check_finite(what: str, *arrays: npt.NDArray[np.floating]) -> None:
    for arr in arrays:
        if not np.isfinite(arr).all():
            raise ModelOutputError(
                f"{what} returned NaN or infinite values for this window (input audio finite: checked upstream); "
                "the window is skipped"
            )


def _sigmoid(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
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
        if isinstance(config, TaggerConfig) and sidecar.family in ("yamnet", "ast"):
            hint = (
                f"set {key}.family: {sidecar.family} to use this folder, or point {key}.path at a "
                f"'{expected_family}' folder (`python -m export {expected_family} --out ...`)"
            )
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


def _check_session_io(
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


def _top_labels(scores: npt.NDArray[np.float32], labels: Sequence[str], k: int) -> tuple[LabelScore, ...]:
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


def _frames(samples: Float32Array, frame: int, hop: int) -> npt.NDArray[np.float32]:
    wave = np.asarray(samples, dtype=np.float32).reshape(-1)
    if wave.size < frame:
        wave = np.pad(wave, (0, frame - wave.size))
    starts = frame_starts(wave.size, frame, hop)
    return np.stack([wave[s : s + frame] for s in starts])


def _check_window(what: str, samples: Float32Array) -> Float32Array:
    wave = np.asarray(samples, dtype=np.float32)
    if wave.ndim != 1:
        wave = np.squeeze(wave)
        if wave.ndim != 1:
            raise ValueError(f"{what}: expected mono audio [samples], got shape {np.shape(samples)}")
    if wave.size == 0:
        raise ValueError(f"{what}: empty window")
    return wave


def _pool(x: npt.NDArray[np.float32], how: str) -> npt.NDArray[np.float32]:
    return (x.max(axis=0) if how == "max" else x.mean(axis=0)).astype(np.float32)


# --- taggers --------------------------------------------------------------------------------------------------------


class YamnetTagger:
    """YAMNet (AudioSet, 521 classes) on a 16-kHz mono window of any length.

    Framing: frames of `chunk_samples` (15600 = 0.975 s) every `hop_samples` (7680 = 0.48 s), plus one frame aligned
    to the window's end when the regular frames stop short of it (a 5-s window gives 10 frames); a window shorter than
    one frame is zero-padded. Probabilities are pooled over frames with `config.pooling` (mean or max), the 1024-d
    embedding with the mean.
    """

    family = "yamnet"
    sample_rate_hz = YAMNET_SAMPLE_RATE_HZ

    def __init__(self, folder: Path | str, config: TaggerConfig) -> None:
        self.folder = Path(folder)
        self.config = config
        self.sidecar = check_sidecar(self.folder, "yamnet", config)
        self.labels: Sequence[str] = read_labels(self.folder, self.sidecar)
        self.frame_samples = self.sidecar.chunk_samples
        self.hop_samples = int(self.sidecar.hop_samples or self.sidecar.chunk_samples)
        self._session = make_session(self.folder / MODEL_FILE, config.threads)
        _check_session_io(self.folder, self._session, self.sidecar, "audio", ("probabilities", "embedding"))
        self._dynamic = _has_dynamic_batch(self._session, "audio")
        self._apply_sigmoid = self.sidecar.output_kind == "logits"
        self.model_sha256 = model_digest(self.sidecar, MODEL_FILE)
        logger.info(
            "YAMNet tagger loaded from %s (%d labels, batch %s, pooling %s)",
            self.folder,
            len(self.labels),
            "dynamic" if self._dynamic else "1",
            config.pooling,
        )

    def frame_outputs(self, samples: Float32Array) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Per-frame ([frames, 521] probabilities, [frames, 1024] embeddings) of one window."""
        wave = _check_window("YAMNet", samples)
        frames = _frames(wave, self.frame_samples, self.hop_samples)
        scores, embedding = _run(self._session, "audio", frames, ("probabilities", "embedding"), self._dynamic)
        _check_finite("YAMNet", scores, embedding)
        if self._apply_sigmoid:
            scores = _sigmoid(scores)
        return scores, embedding

    def tag(self, samples: Float32Array) -> TaggerOutput:
        scores, embedding = self.frame_outputs(samples)
        probabilities = _pool(scores, self.config.pooling)
        return TaggerOutput(
            probabilities=probabilities,
            embedding=embedding.mean(axis=0).astype(np.float32),
            top=_top_labels(probabilities, self.labels, self.config.top_k),
        )


class AstTagger:
    """AST (AudioSet, 527 classes) on a 16-kHz mono window.

    The window becomes `ASTFeatures` (numpy kaldi fbank, as the Hugging Face feature extractor) of `frames` frames
    (1024 = 10.24 s, or 512 = 5.12 s). A window that fits is one model input (the extractor pads it with zero
    frames, as in training); a longer window is split into consecutive chunks of the model's length, the last one
    aligned to the window's end, and the chunks' sigmoid probabilities are pooled with `config.pooling`, the
    embeddings with the mean. Logits -> sigmoid: AudioSet is multi-label (not a softmax).
    """

    family = "ast"
    sample_rate_hz = AST_SAMPLE_RATE_HZ

    def __init__(self, folder: Path | str, config: TaggerConfig) -> None:
        self.folder = Path(folder)
        self.config = config
        self.sidecar = check_sidecar(self.folder, "ast", config)
        self.labels: Sequence[str] = read_labels(self.folder, self.sidecar)
        try:
            self.features = ASTFeatures.from_sidecar_extra(dict(self.sidecar.extra))
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFolderError(self.folder, f"extra.features is unusable ({exc})", "re-export the model") from exc
        if self.features.max_length != self.sidecar.frames:
            raise ModelFolderError(
                self.folder,
                f"extra.features.max_length {self.features.max_length} != frames {self.sidecar.frames}",
                "re-export the model",
            )
        self.chunk_samples = self.features.chunk_samples
        self._session = make_session(self.folder / MODEL_FILE, config.threads)
        _check_session_io(self.folder, self._session, self.sidecar, "input_values", ("logits", "embedding"))
        self._dynamic = _has_dynamic_batch(self._session, "input_values")
        self._apply_sigmoid = self.sidecar.output_kind == "logits"
        self.model_sha256 = model_digest(self.sidecar, MODEL_FILE)
        logger.info(
            "AST tagger loaded from %s (%d labels, %d frames, quantization %s)",
            self.folder,
            len(self.labels),
            self.features.max_length,
            self.sidecar.quantization,
        )

    def tag(self, samples: Float32Array) -> TaggerOutput:
        wave = _check_window("AST", samples)
        if wave.size <= self.chunk_samples:
            chunks = [wave]
        else:
            chunks = [wave[s : s + self.chunk_samples] for s in frame_starts(wave.size, *(self.chunk_samples,) * 2)]
        batch = np.stack([self.features(chunk) for chunk in chunks])
        logits, embedding = _run(self._session, "input_values", batch, ("logits", "embedding"), self._dynamic)
        _check_finite("AST", logits, embedding)
        scores = _sigmoid(logits) if self._apply_sigmoid else logits
        probabilities = _pool(scores, self.config.pooling)
        return TaggerOutput(
            probabilities=probabilities,
            embedding=embedding.mean(axis=0).astype(np.float32),
            top=_top_labels(probabilities, self.labels, self.config.top_k),
        )


def load_tagger(folder: Path | str, config: TaggerConfig) -> Tagger:
    """The tagger of `config.family` (`models.tagger.family`) from `folder`; the folder must hold that family."""
    if config.family == "ast":
        return AstTagger(folder, config)
    return YamnetTagger(folder, config)


# --- BirdNET --------------------------------------------------------------------------------------------------------


def birdnet_week(when_unix_s: float) -> int:
    """BirdNET's week (1-48) of a UTC time: 4 weeks per month, week = (month - 1) * 4 + min(4, (day - 1) // 7 + 1)."""
    date = dt.datetime.fromtimestamp(when_unix_s, tz=dt.timezone.utc)
    return (date.month - 1) * 4 + min(4, (date.day - 1) // 7 + 1)


def split_birdnet_label(label: str) -> tuple[str, str]:
    """'Turdus merula_Eurasian Blackbird' -> ('Turdus merula', 'Eurasian Blackbird')."""
    scientific, sep, common = label.partition("_")
    return scientific.strip(), (common.strip() if sep else scientific.strip())


def is_sound_class(scientific: str, common: str) -> bool:
    """True for BirdNET classes that are not bird species (Engine, Siren, Dog, Human vocal, ...): see
    `BIRDNET_SOUND_CLASSES_V24`."""
    parts = scientific.split()
    binomial = len(parts) == 2 and parts[0][:1].isupper() and parts[0][1:].islower() and parts[1].islower()
    return scientific == common or not binomial


@dataclass(frozen=True, eq=False)
class BirdDetection:
    """`BirdOutput` plus what BirdNET says about its non-species sound classes (Engine, Siren, Dog, ...)."""

    output: BirdOutput
    sound_classes: tuple[LabelScore, ...]  # sound classes above min_confidence, best first
    week: int | None  # the week used for occurrence (None when the station's location is unknown)


class BirdnetMetaModel:
    """BirdNET's location / season model (the `meta.onnx` of a BirdNET folder): occurrence per class at
    (latitude, longitude, week), week 1-48 or -1 for the whole year. Used by `BirdnetModel` (which tabulates every
    week of its station once and releases the session) and by `soundmond evaluate` (any place, any week)."""

    def __init__(self, folder: Path, sidecar: Sidecar, threads: int = 1) -> None:
        meta = sidecar.extra.get("meta_model")
        if not isinstance(meta, dict):
            raise ModelFolderError(folder, "no meta model in model.json", "re-export the BirdNET folder")
        file = str(meta.get("file", "meta.onnx"))
        if file not in sidecar.files:
            raise ModelFolderError(folder, f"meta model {file} is not in model.json's checksums", "re-export")
        self.label_count = sidecar.label_count
        self.session = make_session(folder / file, threads)
        self.input = str(meta.get("input") or self.session.get_inputs()[0].name)
        self.output = str(meta.get("output") or self.session.get_outputs()[0].name)

    def occurrence(self, latitude: float, longitude: float, week: int) -> npt.NDArray[np.float32]:
        x = np.array([[latitude, longitude, week]], dtype=np.float32)
        (out,) = self.session.run([self.output], {self.input: x})
        occurrence = np.asarray(out, dtype=np.float32).reshape(-1)
        _check_finite("BirdNET meta model", occurrence)
        if occurrence.shape[0] != self.label_count:
            raise ModelOutputError(f"meta model returned {occurrence.shape[0]} values for {self.label_count} classes")
        return occurrence


class BirdnetModel:
    """BirdNET V2.4 on a 48-kHz mono window.

    Chunks: 3-s chunks every `3 - chunk_overlap_s` seconds from the window's start; when they stop short of the end,
    one more chunk aligned to the window's end is added (a 5-s window with no overlap gives chunks at 0 s and 2 s), so
    no chunk is zero-padded unless the whole window is shorter than 3 s. Each chunk is its own ONNX Runtime call:
    batching a window's chunks gained about 2 % on 2 cores (`soundmond bench`, levers) but doubles the float64
    spectrogram intermediates (about 45 MB of peak RSS).
    Confidence = sigmoid(sensitivity * logit), per species the max over chunks. The kept species are those above
    `min_confidence`, in `include` (when given), not in `exclude`, and - when the location filter is on and the
    station's latitude / longitude are set - with meta-model occurrence >= `location_filter.threshold` at that week.
    `SpeciesScore.occurrence` is filled whenever latitude / longitude are known, even with the filter off.
    Non-species classes (`BIRDNET_SOUND_CLASSES_V24`) are never species; `detect_full` reports them separately.
    """

    sample_rate_hz = BIRDNET_SAMPLE_RATE_HZ

    def __init__(
        self,
        folder: Path | str,
        config: BirdConfig,
        latitude: float | None = None,
        longitude: float | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.config = config
        self.sidecar = check_sidecar(self.folder, "birdnet", config)
        labels = read_labels(self.folder, self.sidecar)
        self.labels = labels
        names = [split_birdnet_label(label) for label in labels]
        self.scientific_names = [s for s, _ in names]
        self.common_names = [c for _, c in names]
        sound = np.array([is_sound_class(s, c) for s, c in names])
        found = {s for (s, _), flag in zip(names, sound, strict=True) if flag}
        if found != BIRDNET_SOUND_CLASSES_V24:
            logger.warning(
                "%s: non-species classes differ from BirdNET V2.4's (%s)",
                self.folder,
                sorted(found ^ BIRDNET_SOUND_CLASSES_V24),
            )
        self.sound_class_mask = sound
        self.chunk_samples = self.sidecar.chunk_samples
        overlap = int(round(config.chunk_overlap_s * self.sample_rate_hz))
        self.hop_samples = self.chunk_samples - overlap

        self._keep = self._name_mask(config)

        self.latitude = latitude
        self.longitude = longitude
        self.location_known = latitude is not None and longitude is not None
        self.filter_on = config.location_filter.enabled and self.location_known
        if config.location_filter.enabled and not self.location_known:
            logger.warning(
                "models.birds.location_filter.enabled is true but station.latitude / station.longitude are not set: "
                "species are not filtered by location"
            )
        # Before the species session, so the meta session's memory is gone again when the bigger one loads.
        self._occurrence_table = self._tabulate_occurrence() if self.location_known else {}

        self._session = make_session(self.folder / MODEL_FILE, config.threads)
        _check_session_io(self.folder, self._session, self.sidecar, "audio", ("logits", "embedding"))
        self.model_sha256 = model_digest(self.sidecar, MODEL_FILE)
        logger.info(
            "BirdNET loaded from %s (%d classes, %d non-species, overlap %.2f s, location filter %s)",
            self.folder,
            len(labels),
            int(sound.sum()),
            config.chunk_overlap_s,
            "on" if self.filter_on else "off",
        )

    def _name_mask(self, config: BirdConfig) -> npt.NDArray[np.bool_]:
        """Species allowed by include / exclude; unknown names are a configuration error listing them all."""
        index: dict[str, list[int]] = {}
        for i, (s, c) in enumerate(zip(self.scientific_names, self.common_names, strict=True)):
            index.setdefault(s.casefold(), []).append(i)
            index.setdefault(c.casefold(), []).append(i)
            index.setdefault(self.labels[i].casefold(), []).append(i)
        problems = []
        masks = {}
        for key, names in (("include", config.include), ("exclude", config.exclude)):
            unknown = [n for n in names if n.strip().casefold() not in index]
            if unknown:
                problems.append(
                    ConfigProblem(
                        f"models.birds.{key}",
                        "unknown species: " + ", ".join(repr(n) for n in unknown),
                        None,
                        f"use scientific or common names as in {self.folder / self.sidecar.labels_file} "
                        "(case does not matter)",
                    )
                )
            mask = np.zeros(len(self.labels), dtype=bool)
            for n in names:
                mask[index.get(n.strip().casefold(), [])] = True
            masks[key] = mask
        if problems:
            raise ConfigError("configuration", problems)
        keep = ~self.sound_class_mask & ~masks["exclude"]
        if config.include:
            keep &= masks["include"]
        return keep

    def _tabulate_occurrence(self) -> dict[int, npt.NDArray[np.float32]]:
        """The meta model's occurrence at the station for every week the config allows (-1..48: 50 x classes
        float32, about 1.3 MB), computed once; the meta session (about 75 MB resident) is released afterwards."""
        try:
            meta = BirdnetMetaModel(self.folder, self.sidecar)
        except ModelFolderError:
            if self.config.location_filter.enabled:
                raise
            logger.warning("%s: no meta model; occurrence unknown", self.folder)
            return {}
        assert self.latitude is not None and self.longitude is not None
        return {week: meta.occurrence(self.latitude, self.longitude, week) for week in range(-1, 49)}

    def week_for(self, start_unix_s: float) -> int:
        week = self.config.location_filter.week
        return birdnet_week(start_unix_s) if week == "auto" else int(week)

    def occurrence(self, week: int) -> npt.NDArray[np.float32] | None:
        """Meta-model occurrence [classes] at the station for `week` (1-48, -1 = all year), tabulated at load."""
        return self._occurrence_table.get(week)

    def chunk_outputs(self, samples: Float32Array) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Per-chunk ([chunks, classes] logits, [chunks, 1024] embeddings) of one window."""
        wave = _check_window("BirdNET", samples)
        chunks = _frames(wave, self.chunk_samples, self.hop_samples)
        logits, embedding = _run(self._session, "audio", chunks, ("logits", "embedding"), dynamic=False)
        _check_finite("BirdNET", logits, embedding)
        return logits, embedding

    def detect_full(self, samples: Float32Array, *, start_unix_s: float) -> BirdDetection:
        logits, embedding = self.chunk_outputs(samples)
        confidence = _sigmoid(self.config.sensitivity * logits).max(axis=0)
        species_conf = np.where(self.sound_class_mask, 0.0, confidence)
        top_score = float(species_conf.max())
        week = self.week_for(start_unix_s) if self.location_known else None
        occurrence = self.occurrence(week) if week is not None else None
        keep = self._keep & (confidence >= self.config.min_confidence)
        if self.filter_on and occurrence is not None:
            keep &= occurrence >= self.config.location_filter.threshold
        idx = np.flatnonzero(keep)
        idx = idx[np.argsort(-confidence[idx], kind="stable")]
        species = tuple(
            SpeciesScore(
                scientific_name=self.scientific_names[i],
                common_name=self.common_names[i],
                confidence=float(confidence[i]),
                occurrence=None if occurrence is None else float(occurrence[i]),
            )
            for i in idx
        )
        sound_idx = np.flatnonzero(self.sound_class_mask & (confidence >= self.config.min_confidence))
        sound_idx = sound_idx[np.argsort(-confidence[sound_idx], kind="stable")]
        sounds = tuple(LabelScore(self.scientific_names[i], float(confidence[i])) for i in sound_idx)
        output = BirdOutput(species=species, top_score=top_score, embedding=embedding.mean(axis=0).astype(np.float32))
        return BirdDetection(output=output, sound_classes=sounds, week=week)

    def detect(self, samples: Float32Array, *, start_unix_s: float) -> BirdOutput:
        return self.detect_full(samples, start_unix_s=start_unix_s).output


__all__ = [
    "BIRDNET_SOUND_CLASSES_V24",
    "AstTagger",
    "BirdDetection",
    "BirdnetMetaModel",
    "BirdnetModel",
    "ModelFolderError",
    "ModelOutputError",
    "ORT_ERRORS",
    "YamnetTagger",
    "birdnet_week",
    "check_sidecar",
    "frame_starts",
    "is_sound_class",
    "load_tagger",
    "make_session",
    "read_labels",
    "split_birdnet_label",
]
