"""AST (Audio Spectrogram Transformer, AudioSet 527 classes): hub id or local checkout -> ONNX through optimum.

One ONNX file with input `input_values` [N, frames, 128] (the log-mel features of `soundmond.models.features`) and two
outputs: `logits` [N, labels] (AudioSet is multi-label: apply a sigmoid) and `embedding` [N, hidden] (the input of
the classifier's dense layer). `--frames 512` sizes the model for 5-s windows by cutting the time axis of the
position-embedding grid; `--optimize fused` fuses the graph with ONNX Runtime's transformer optimizer (attention,
residual LayerNorm, GELU and bias fusions: `export.ast_fusion`), checked against PyTorch like the unfused graph (not
the default: no faster here, see `export.ast_fusion`); `--quantize int8` applies per-channel dynamic int8
quantization to the exported graph (reported, not enforced, against the fp32 PyTorch model); with it, `--attention
int8` runs the attention's Q.K^T and softmax.V products as integer products too (`export.ast_int8_attention`; needs
onnxruntime >= 1.19; its drift from the fp32 graph is checked).

examples:
  python -m export ast --out models/ast
  python -m export ast --model MIT/ast-finetuned-audioset-10-10-0.4593 --revision main --frames 512 \\
      --quantize int8 --out models/ast-512-int8
  python -m export ast --model ./ast-checkout --out models/ast     (a local directory works offline)
  python -m export ast --frames 512 --quantize int8 --attention int8 --out models/ast-512-int8att
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from export.ast_fusion import OPTIMIZE_CHOICES, fuse_ast
from export.ast_int8_attention import (
    ATTENTION_CHOICES,
    ATTENTION_GRANULARITY,
    check_attention_drift,
    int8_attention,
)
from export.common import (
    CheckClip,
    ExportError,
    atomic_output_dir,
    chunk_clip,
    file_checksums,
    load_check_audio,
    parity_figures,
    require_parity,
    tool_versions,
    utc_now_iso,
)
from soundmond.models.features import samples_for_frames
from soundmond.models.sidecar import LICENCES, Sidecar, SourceInfo, TensorSpec, write_sidecar
from soundmond.progress import show_progress

if TYPE_CHECKING:
    import torch
    from transformers import ASTFeatureExtractor, ASTForAudioClassification

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "MIT/ast-finetuned-audioset-10-10-0.4593"
SAMPLE_RATE_HZ = 16000
FRAME_CHOICES = (1024, 512)
FP32_TARGET_MAX_ABS_LOGIT_DIFF = 1e-4
PARITY_WINDOW_S = 5.0  # parity windows: the daemon's 5-s windows, every 2.5 s
PARITY_HOP_S = 2.5
HUB_TIMEOUT_S = "10"
LABELS_FILE = "labels.txt"
MODEL_FILE = "model.onnx"
YAMNET_CLASS_MAP = Path(__file__).resolve().parents[2] / "shared" / "models" / "yamnet" / "yamnet_class_map.csv"
EMBEDDING_WHAT = (
    "input of classifier.dense: classifier.layernorm((cls + distillation token) / 2) of the final layer-normed sequence"
)


# what the int8 export quantizes: the products with a constant weight (and the fused graph's Attention, as QAttention).
# The patch embedding's Conv stays fp32: ONNX Runtime's ConvInteger took 7.4 ms of a 406-ms int8-512 window at 1
# thread where the float Conv takes 1-2 ms (the window 1.03x faster on 2 threads; bench/RESULTS.md, 2026-12-07)
INT8_OP_TYPES = ("MatMul", "Attention")


def _torch_only() -> None:
    """transformers would also import TensorFlow when it is installed (slow, noisy): this exporter is PyTorch only."""
    os.environ.setdefault("USE_TF", "0")
    os.environ.setdefault("USE_TORCH", "1")


@contextlib.contextmanager
def _root_logging_at(level: int) -> Iterator[None]:
    """onnxruntime.quantization logs every tensor on the root logger at INFO: keep that out of the export log."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(max(level, previous))
    try:
        yield
    finally:
        root.setLevel(previous)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"hub id or local directory (a save_pretrained / hub checkout; works offline); default {DEFAULT_MODEL}",
    )
    parser.add_argument("--revision", default=None, help="hub revision to pin (branch, tag or commit); hub ids only")
    parser.add_argument(
        "--frames",
        type=int,
        choices=FRAME_CHOICES,
        default=1024,
        help="input frames: 1024 (10.24 s, as trained) or 512 (5.12 s: position embeddings cut down, about 2x faster)",
    )
    parser.add_argument(
        "--quantize",
        choices=("int8",),
        default=None,
        help="per-channel dynamic int8 quantization (smaller, faster; agreement with fp32 is measured and recorded)",
    )
    parser.add_argument(
        "--optimize",
        choices=OPTIMIZE_CHOICES,
        default=OPTIMIZE_CHOICES[0],
        help="none (default): the graph as optimum exports it (ONNX Runtime fuses MatMul + Add, LayerNorm and GELU "
        "itself at load); fused: one Attention op per layer, SkipLayerNormalization and BiasGelu (ONNX Runtime's "
        "transformer optimizer; same fp32 parity target; measured no faster on ONNX Runtime 1.32)",
    )
    parser.add_argument(
        "--attention",
        choices=ATTENTION_CHOICES,
        default=ATTENTION_CHOICES[0],
        help="with --quantize int8: fp32 (default) keeps the attention's Q.K^T and softmax.V products in fp32 as "
        "quantize_dynamic leaves them; int8 runs them as integer products too (dynamic int8 Q, K, V; softmax in "
        "fp32, its probabilities as uint8 with one scale per row; about 1.13-1.19x faster on a VNNI CPU; needs "
        "onnxruntime >= 1.19: export.ast_int8_attention)",
    )


def run(args: argparse.Namespace) -> Path:
    started = time.perf_counter()
    model_dir, source = resolve_model(args.model, args.revision)
    clips = load_check_audio(args.check_audio, SAMPLE_RATE_HZ)
    with atomic_output_dir(args.out, force=args.force) as folder:
        export_ast(
            model_dir,
            source,
            folder,
            frames=args.frames,
            quantize=args.quantize,
            clips=clips,
            optimize=getattr(args, "optimize", OPTIMIZE_CHOICES[0]),
            attention=getattr(args, "attention", ATTENTION_CHOICES[0]),
            progress=show_progress(not args.no_progress),
        )
    logger.info("AST exported to %s in %.1f s", args.out, time.perf_counter() - started)
    return Path(args.out)


# --- where the checkpoint comes from -------------------------------------------------------------------------------

_LOCAL_HINT = "a local directory (save_pretrained / hub checkout) passed with --model works offline"


def resolve_model(model: str, revision: str | None) -> tuple[Path, SourceInfo]:
    """A local checkout as is, or a hub id downloaded to the hub cache; hub errors become one-line `ExportError`s."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ExportError(f"--model {model}: no config.json there; expected a save_pretrained / hub checkout")
        if revision is not None:
            logger.warning("--revision %s ignored: %s is a local directory", revision, model)
        return path, SourceInfo(id=str(path.resolve()), revision=None)
    if model.startswith((".", "/", "~")) or os.sep + os.sep in model:
        raise ExportError(f"--model {model}: no such directory")
    return _download(model, revision)


def _download(repo_id: str, revision: str | None) -> tuple[Path, SourceInfo]:
    # Fail fast without network instead of hanging on retries (read once, when huggingface_hub is imported).
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", HUB_TIMEOUT_S)
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", HUB_TIMEOUT_S)
    from huggingface_hub import snapshot_download

    logger.debug("fetching %s%s from the Hugging Face hub", repo_id, f" @ {revision}" if revision else "")
    try:
        snapshot = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=["*.json", "*.safetensors"],
                etag_timeout=float(HUB_TIMEOUT_S),
            )
        )
        if not any(snapshot.glob("*.safetensors")):
            snapshot = Path(
                snapshot_download(
                    repo_id, revision=revision, allow_patterns=["*.bin"], etag_timeout=float(HUB_TIMEOUT_S)
                )
            )
    except Exception as exc:  # translated at the boundary: only hub/network errors, the rest re-raised
        raise _hub_error(exc, repo_id, revision) from exc
    commit = snapshot.name if re.fullmatch(r"[0-9a-f]{40}", snapshot.name) else None
    logger.info("%s resolved to commit %s (%s)", repo_id, commit, snapshot)
    return snapshot, SourceInfo(id=repo_id, revision=commit)


def _hub_error(exc: Exception, repo_id: str, revision: str | None) -> Exception:
    """Translate a huggingface_hub / network error into a one-line `ExportError` (others are returned unchanged)."""
    import requests
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, OfflineModeIsEnabled) or (isinstance(exc, LocalEntryNotFoundError) and constants.HF_HUB_OFFLINE):
        return ExportError(
            f"--model {repo_id}: hub offline mode is on (HF_HUB_OFFLINE=1) and it is not in the local cache; "
            + _LOCAL_HINT
        )
    if isinstance(exc, (LocalEntryNotFoundError, requests.ConnectionError, requests.Timeout)):
        return ExportError(f"--model {repo_id}: the Hugging Face hub is unreachable (no network?); {_LOCAL_HINT}")
    if isinstance(exc, GatedRepoError):
        return ExportError(f"--model {repo_id}: gated on the hub; accept its terms and `huggingface-cli login` first")
    if isinstance(exc, RevisionNotFoundError):
        return ExportError(f"--model {repo_id}: revision {revision!r} not found on the hub")
    if isinstance(exc, RepositoryNotFoundError):
        return ExportError(f"--model {repo_id}: unknown model id on the hub (or private); also no such local directory")
    if isinstance(exc, HFValidationError):
        return ExportError(f"--model {repo_id}: neither a local directory nor a valid hub id")
    return exc


# --- the export -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchGrid:
    """AST's patch grid: `frequency` x `time` patches (patch 16, stride 10 in both axes for AudioSet AST)."""

    frequency: int
    time: int

    @classmethod
    def of(cls, num_mel_bins: int, frames: int, patch: int, frequency_stride: int, time_stride: int) -> PatchGrid:
        return cls((num_mel_bins - patch) // frequency_stride + 1, (frames - patch) // time_stride + 1)


def cut_position_embeddings(model: ASTForAudioClassification, frames: int) -> dict[str, Any]:
    """Size a checkpoint for `frames` input frames by keeping the first time columns of its position-embedding grid.

    The patch sequence is frequency-major (conv output [hidden, f, t] flattened), so the grid is [f, t]; the cls
    and distillation tokens (positions 0 and 1) are kept. The first columns are the positions a shorter input
    occupied in the full-length model (the rest was padding), so no interpolation is needed.
    """
    import torch

    config = model.config
    embeddings = model.audio_spectrogram_transformer.embeddings
    old = PatchGrid.of(
        config.num_mel_bins, config.max_length, config.patch_size, config.frequency_stride, config.time_stride
    )
    new = PatchGrid.of(config.num_mel_bins, frames, config.patch_size, config.frequency_stride, config.time_stride)
    pos = embeddings.position_embeddings.data
    hidden = pos.shape[-1]
    if pos.shape[1] != 2 + old.frequency * old.time:
        raise ExportError(
            f"position embeddings hold {pos.shape[1]} positions, expected 2 + {old.frequency} x {old.time} "
            f"for max_length {config.max_length}; not an AST checkpoint this exporter understands"
        )
    grid = pos[:, 2:].reshape(1, old.frequency, old.time, hidden)
    cut = grid[:, :, : new.time].reshape(1, new.frequency * new.time, hidden)
    embeddings.position_embeddings = torch.nn.Parameter(torch.cat([pos[:, :2], cut], dim=1).contiguous())
    resize = {
        "from_frames": int(config.max_length),
        "to_frames": int(frames),
        "from_grid": [old.frequency, old.time],
        "to_grid": [new.frequency, new.time],
        "method": "keep the first time columns of the [frequency, time] grid; cls and distillation tokens kept",
    }
    config.max_length = frames
    logger.info(
        "position embeddings cut from grid %s to %s (%d -> %d frames)",
        resize["from_grid"],
        resize["to_grid"],
        resize["from_frames"],
        frames,
    )
    return resize


def _patch_forward(model: ASTForAudioClassification) -> Callable[..., dict[str, torch.Tensor]]:
    """Make `model.forward` return {"logits", "embedding"} (patched on the instance: optimum refuses subclasses)."""

    def forward(input_values: torch.Tensor, **kwargs: Any) -> dict[str, torch.Tensor]:
        pooled = model.audio_spectrogram_transformer(input_values).pooler_output
        embedding = model.classifier.layernorm(pooled)
        return {"logits": model.classifier.dense(embedding), "embedding": embedding}

    model.forward = forward
    return forward


def _onnx_config(model: ASTForAudioClassification) -> Any:
    from optimum.exporters.onnx.model_configs import ASTOnnxConfig

    class ASTWithEmbeddingOnnxConfig(ASTOnnxConfig):
        @property
        def outputs(self) -> dict[str, dict[int, str]]:
            return {"logits": {0: "batch_size"}, "embedding": {0: "batch_size"}}

    return ASTWithEmbeddingOnnxConfig(model.config, task="audio-classification")


def _load(model_dir: Path) -> tuple[ASTForAudioClassification, ASTFeatureExtractor]:
    _torch_only()
    from transformers import ASTFeatureExtractor, ASTForAudioClassification

    try:
        model = ASTForAudioClassification.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise ExportError(
            f"{model_dir}: cannot load an AST audio-classification model ({exc})".splitlines()[0]
        ) from exc
    if model.config.model_type != "audio-spectrogram-transformer":
        raise ExportError(f"{model_dir}: model type {model.config.model_type!r}, not an AST")
    model.eval()
    if (model_dir / "preprocessor_config.json").is_file():
        extractor = ASTFeatureExtractor.from_pretrained(model_dir)
    else:
        logger.warning("%s has no preprocessor_config.json: using ASTFeatureExtractor defaults", model_dir)
        extractor = ASTFeatureExtractor()
    if extractor.num_mel_bins != model.config.num_mel_bins or extractor.sampling_rate != SAMPLE_RATE_HZ:
        raise ExportError(
            f"{model_dir}: feature extractor ({extractor.num_mel_bins} mel bins, {extractor.sampling_rate} Hz) does "
            f"not match the model ({model.config.num_mel_bins} mel bins) or soundmond's {SAMPLE_RATE_HZ} Hz"
        )
    return model, extractor


def _onnx_export(model: ASTForAudioClassification, scratch: Path) -> Path:
    """optimum export of the patched model to one self-contained `model.onnx` (external data folded in)."""
    import onnx
    from optimum.exporters.onnx import onnx_export_from_model

    out = scratch / "optimum"
    onnx_export_from_model(
        model,
        out,
        task="audio-classification",
        custom_onnx_configs={"model": _onnx_config(model)},
        do_validation=False,  # our own parity check on real audio follows
    )
    exported = out / MODEL_FILE
    if not exported.is_file():
        raise ExportError(f"optimum wrote no {MODEL_FILE} (got {sorted(p.name for p in out.iterdir())})")
    if any(p.name != MODEL_FILE and p.suffix not in (".json",) for p in out.iterdir()):
        # External weight files (large models): fold them into one file, as the sidecar lists one model file.
        single = scratch / MODEL_FILE
        onnx.save_model(onnx.load(str(exported)), str(single), save_as_external_data=False)
        return single
    return exported


def _windows(clips: Sequence[CheckClip]) -> tuple[npt.NDArray[np.float32], list[str]]:
    window = int(PARITY_WINDOW_S * SAMPLE_RATE_HZ)
    hop = int(PARITY_HOP_S * SAMPLE_RATE_HZ)
    chunks = [chunk_clip(clip.samples, window, hop) for clip in clips]
    return np.concatenate(chunks), [clip.name for clip in clips]


def _features(extractor: ASTFeatureExtractor, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    values = extractor(list(windows), sampling_rate=SAMPLE_RATE_HZ, return_tensors="np")["input_values"]
    return np.asarray(values, dtype=np.float32)


def _bar(desc: str, total: int, progress: bool) -> tqdm[None]:
    """The parity check's bar over its windows (drawn only when `progress`: a terminal and no --no-progress)."""
    return tqdm(total=total, desc=desc, unit="window", file=sys.stderr, disable=not progress)


def _torch_outputs(
    forward: Callable[..., dict[str, torch.Tensor]], features: npt.NDArray[np.float32], batch: int = 4,
    progress: bool = False,
) -> dict[str, npt.NDArray[np.float32]]:
    import torch

    logits, embeddings = [], []
    with torch.no_grad(), _bar("parity: PyTorch", len(features), progress) as bar:
        for start in range(0, len(features), batch):
            out = forward(torch.from_numpy(features[start : start + batch]))
            logits.append(out["logits"].numpy())
            embeddings.append(out["embedding"].numpy())
            bar.update(len(out["logits"]))
    return {"logits": np.concatenate(logits), "embedding": np.concatenate(embeddings)}


def onnx_outputs(
    model_path: Path, features: npt.NDArray[np.float32], batch: int = 4, progress: bool = False
) -> dict[str, npt.NDArray[np.float32]]:
    """Run an exported model on [N, frames, mel] features; {"logits", "embedding"}."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    results: dict[str, list[npt.NDArray[np.float32]]] = {"logits": [], "embedding": []}
    with _bar(f"parity: {model_path.name}", len(features), progress) as bar:
        for start in range(0, len(features), batch):
            logits, embedding = session.run(["logits", "embedding"],
                                            {"input_values": features[start : start + batch]})
            results["logits"].append(logits)
            results["embedding"].append(embedding)
            bar.update(len(logits))
    return {name: np.concatenate(parts) for name, parts in results.items()}


def _quantize_int8(fp32_path: Path, out_path: Path) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings: dict[str, Any] = {"method": "onnxruntime.quantization.quantize_dynamic", "per_channel": True}
    settings["weight_type"] = "QInt8"
    settings["op_types"] = list(INT8_OP_TYPES)
    import onnx

    with _root_logging_at(logging.WARNING):
        # DefaultTensorType: shape inference cannot type the outputs of the fused graph's com.microsoft ops
        quantize_dynamic(
            fp32_path,
            out_path,
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(INT8_OP_TYPES),
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return settings


def _int8_attention(int8_path: Path, fp32: dict[str, npt.NDArray[np.float32]], features: npt.NDArray[np.float32],
                    num_heads: int, progress: bool) -> dict[str, Any]:
    """Rewrite the int8 graph's attention products as integer products in place; what was done and its agreement
    with the fp32 ONNX graph on the parity windows, against that of the int8 graph before (ExportError when the
    rewrite drifts beyond `ATTENTION_MAX_EXTRA_PROB_DIFF` more than the weights' quantization alone)."""
    import onnx

    before = onnx_outputs(int8_path, features, progress=progress)
    model = onnx.load(str(int8_path))
    settings = int8_attention(model, num_heads=num_heads, granularity=ATTENTION_GRANULARITY)
    onnx.save_model(model, str(int8_path))
    after = onnx_outputs(int8_path, features, progress=progress)
    settings["agreement_vs_onnx_fp32"] = check_attention_drift(fp32["logits"], before["logits"], after["logits"])
    logger.info("int8 attention: %s", settings["agreement_vs_onnx_fp32"])
    return settings


def _specs(model_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])

    def spec(arg: Any) -> TensorSpec:
        shape = [d if isinstance(d, int) else "batch" for d in arg.shape]
        return TensorSpec(
            name=arg.name,
            shape=shape,
            dtype=arg.type.removeprefix("tensor(").removesuffix(")").replace("float", "float32"),
        )

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


def export_ast(
    model_dir: Path,
    source: SourceInfo,
    folder: Path,
    *,
    frames: int,
    quantize: Literal["int8"] | None,
    clips: Sequence[CheckClip],
    progress: bool = False,
    optimize: str = OPTIMIZE_CHOICES[0],
    attention: str = ATTENTION_CHOICES[0],
) -> Sidecar:
    """Export, check on real audio and write `model.onnx`, `labels.txt` and `model.json` into `folder`."""
    import torch

    t0 = time.perf_counter()
    model, extractor = _load(model_dir)
    logger.info(
        "loaded %s: hidden %d, %d layers, max_length %d, %d labels (%.1f s)",
        source.id,
        model.config.hidden_size,
        model.config.num_hidden_layers,
        model.config.max_length,
        model.config.num_labels,
        time.perf_counter() - t0,
    )
    extra: dict[str, Any] = {}
    if frames > model.config.max_length:
        raise ExportError(f"--frames {frames}: the checkpoint is trained for {model.config.max_length} frames at most")
    if frames < model.config.max_length:
        extra["position_embedding_resize"] = cut_position_embeddings(model, frames)
    extractor.max_length = frames
    if optimize not in OPTIMIZE_CHOICES:
        raise ExportError(f"optimize must be one of {', '.join(OPTIMIZE_CHOICES)}, not {optimize!r}")
    if attention not in ATTENTION_CHOICES:
        raise ExportError(f"attention must be one of {', '.join(ATTENTION_CHOICES)}, not {attention!r}")
    if attention == "int8" and (quantize != "int8" or optimize != "none"):
        raise ExportError("--attention int8 needs --quantize int8 and the unfused graph (--optimize none)")
    if optimize == "fused":
        # the classic attention pattern the transformer optimizer fuses (the SDPA trace is not one); same math
        model.config._attn_implementation = "eager"
    forward = _patch_forward(model)

    with tempfile.TemporaryDirectory(prefix="ast-export-", dir=folder.parent) as tmp:
        scratch = Path(tmp)
        t1 = time.perf_counter()
        fp32_path = _onnx_export(model, scratch)
        export_s = time.perf_counter() - t1
        logger.info("ONNX export done in %.1f s (%.1f MB)", export_s, fp32_path.stat().st_size / 1e6)
        if optimize == "fused":
            fused_path = scratch / "model.fused.onnx"
            extra["graph"] = fuse_ast(
                fp32_path,
                fused_path,
                num_heads=int(model.config.num_attention_heads),
                hidden_size=int(model.config.hidden_size),
                layers=int(model.config.num_hidden_layers),
            )
            fp32_path = fused_path
        else:
            extra["graph"] = {"optimizer": "none (the graph as optimum exports it)"}

        windows, names = _windows(clips)
        features = _features(extractor, windows)
        logger.info("parity check on %d real 5-s windows from %d files", len(windows), len(names))
        reference = _torch_outputs(forward, features, progress=progress)
        fp32 = onnx_outputs(fp32_path, features, progress=progress)
        ref_name = f"pytorch {torch.__version__}"
        parity = parity_figures(
            reference["logits"],
            fp32["logits"],
            reference_name=ref_name,
            audio_files=names,
            target_max_abs_logit_diff=FP32_TARGET_MAX_ABS_LOGIT_DIFF,
        )
        embedding_diff = float(np.max(np.abs(reference["embedding"] - fp32["embedding"])))
        logger.info(
            "fp32 vs PyTorch: max abs logit diff %.3g, top-5 agreement %.3f, max abs embedding diff %.3g",
            parity.max_abs_logit_diff,
            parity.top5_agreement,
            embedding_diff,
        )
        require_parity(parity, "AST fp32 ONNX")
        extra["fp32_max_abs_embedding_diff"] = embedding_diff

        final_path = fp32_path
        if quantize == "int8":
            int8_path = scratch / "model.int8.onnx"
            t2 = time.perf_counter()
            settings = _quantize_int8(fp32_path, int8_path)
            if attention == "int8":
                heads = int(model.config.num_attention_heads)
                settings["attention"] = _int8_attention(int8_path, fp32, features, heads, progress)
            int8 = onnx_outputs(int8_path, features, progress=progress)
            fp32_parity = parity
            parity = parity_figures(reference["logits"], int8["logits"], reference_name=ref_name, audio_files=names)
            settings.update(
                fp32_bytes=fp32_path.stat().st_size,
                int8_bytes=int8_path.stat().st_size,
                seconds=round(time.perf_counter() - t2, 2),
                max_abs_embedding_diff=float(np.max(np.abs(reference["embedding"] - int8["embedding"]))),
                fp32_parity=fp32_parity.model_dump(mode="json", exclude={"audio_files"}),
            )
            extra["int8"] = settings
            logger.info(
                "int8 vs PyTorch fp32 (reported, not enforced): top-1 %.3f, top-5 %.3f, max sigmoid diff %.3g, "
                "max abs logit diff %.3g",
                parity.top1_agreement,
                parity.top5_agreement,
                parity.max_sigmoid_diff,
                parity.max_abs_logit_diff,
            )
            final_path = int8_path
        shutil.copyfile(final_path, folder / MODEL_FILE)

    id2label = model.config.id2label or {}
    if sorted(id2label) != list(range(model.config.num_labels)):
        raise ExportError(f"{model_dir}: config id2label does not name all {model.config.num_labels} labels")
    labels = [str(id2label[i]) for i in range(model.config.num_labels)]
    (folder / LABELS_FILE).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    inputs, outputs = _specs(folder / MODEL_FILE)
    extra["features"] = {
        "num_mel_bins": int(extractor.num_mel_bins),
        "max_length": int(frames),
        "mean": float(extractor.mean),
        "std": float(extractor.std),
        "do_normalize": bool(extractor.do_normalize),
        "sampling_rate": int(extractor.sampling_rate),
    }
    extra["embedding"] = {"output": "embedding", "size": int(model.config.hidden_size), "what": EMBEDDING_WHAT}
    extra["parity_windows"] = {"seconds": PARITY_WINDOW_S, "hop_seconds": PARITY_HOP_S}
    extra["export_seconds"] = round(export_s, 2)
    sidecar = Sidecar(
        family="ast",
        source=source,
        licence=LICENCES["ast"],
        sample_rate_hz=SAMPLE_RATE_HZ,
        chunk_samples=samples_for_frames(frames),
        frames=frames,
        inputs=inputs,
        outputs=outputs,
        labels_file=LABELS_FILE,
        label_count=len(labels),
        output_kind="logits",
        quantization="int8" if quantize == "int8" else "none",
        files=file_checksums(folder),
        tool_versions=tool_versions("torch", "transformers", "optimum", "optimum-onnx", "huggingface-hub"),
        parity=parity,
        created_utc=utc_now_iso(),
        extra=extra,
    )
    write_sidecar(folder, sidecar)
    folder.chmod(0o755)  # the temporary folder is created 0700; the daemon may run as another user
    return sidecar


# --- random checkpoints for tests and benchmarks --------------------------------------------------------------------


def _audioset_like_labels(count: int) -> list[str]:
    """YAMNet's 521 AudioSet display names when ../shared is there, then honest `label_<i>` names."""
    names: list[str] = []
    if YAMNET_CLASS_MAP.is_file():
        import csv

        with open(YAMNET_CLASS_MAP, newline="", encoding="utf-8") as fh:
            names = [row["display_name"] for row in csv.DictReader(fh)]
    names = names[:count]
    return names + [f"label_{i}" for i in range(len(names), count)]


def make_random_checkpoint(
    out_dir: Path | str, size: Literal["tiny", "full"], max_length: int = 1024, seed: int = 0
) -> Path:
    """Save an `ASTForAudioClassification` with random weights (+ its `ASTFeatureExtractor`) to `out_dir`.

    tiny: hidden 32, 2 layers, 2 heads, intermediate 64; full: the AudioSet AST's shape (hidden 768, 12 layers,
    12 heads, intermediate 3072). Both: patch 16, strides 10, 128 mel bins, 527 labels. Same compute as the real
    model for "full" (timings do not depend on weight values), no meaningful predictions.
    """
    _torch_only()
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    dims = {"tiny": (32, 2, 2, 64), "full": (768, 12, 12, 3072)}[size]
    labels = _audioset_like_labels(527)
    config = ASTConfig(
        hidden_size=dims[0],
        num_hidden_layers=dims[1],
        num_attention_heads=dims[2],
        intermediate_size=dims[3],
        patch_size=16,
        frequency_stride=10,
        time_stride=10,
        num_mel_bins=128,
        max_length=max_length,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    model = ASTForAudioClassification(config).eval()
    with torch.no_grad():  # the default init leaves these at zero; random values exercise the resize honestly
        emb = model.audio_spectrogram_transformer.embeddings
        for param in (emb.position_embeddings, emb.cls_token, emb.distillation_token):
            param.normal_(0.0, 0.02)
    out = Path(out_dir)
    model.save_pretrained(out)
    ASTFeatureExtractor(max_length=max_length).save_pretrained(out)
    logger.info("random %s AST checkpoint (max_length %d, seed %d) saved to %s", size, max_length, seed, out)
    return out
