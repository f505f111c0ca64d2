"""Any Hugging Face audio classifier (Wav2Vec2, HuBERT, WavLM, AST, Whisper, ...): hub id or local dir -> ONNX.

Exports a transformers audio-classification checkpoint whose architecture optimum can export for the
`audio-classification` task to one ONNX file with input `input_values` (waveform models, AST) or `input_features`
(Whisper) and two outputs: `logits` [N, labels] and `embedding` [N, d] (the input of the model's `classifier`).
The folder also holds `labels.txt` (from `config.id2label`) and `model.json` (the feature extractor's settings, which
soundmond reproduces in numpy: `soundmond.models.hf_features`; the activation: softmax for single-label models as the
transformers pipeline applies it, sigmoid for `problem_type: multi_label_classification`; the clip length; the
licence from the model card's `license:` or `--licence`).

Parity (fp32): the transformers feature extractor + PyTorch model against soundmond's numpy features + the ONNX
model on real audio cut into the model's clips: max abs logit difference <= 1e-4 and identical top-5 on every
clip, or nothing is written. `--int8` adds per-channel dynamic int8 quantization (agreement reported, not enforced).

examples:
  python -m export hf --model dima806/bird_sounds_classification --out models/dima806
  python -m export hf --model ./my-finetune --role tagger --licence apache-2.0 --out models/my-tagger
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import yaml

from export.ast_model import resolve_model
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
from soundmond.models.features import ASTFeatures, samples_for_frames
from soundmond.models.hf_features import (
    FeatureKind,
    Features,
    WaveformFeatures,
    WhisperFeatures,
    ast_features_dict,
)
from soundmond.models.sidecar import Sidecar, SourceInfo, TensorSpec, write_sidecar

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

TASK = "audio-classification"
FP32_TARGET_MAX_ABS_LOGIT_DIFF = 1e-4
DEFAULT_WAVEFORM_CLIP_S = 5.0
LABELS_FILE = "labels.txt"
MODEL_FILE = "model.onnx"
ROLES = ("birds", "tagger")

# model_type -> the numpy front-end soundmond has for its feature extractor (only types optimum also exports)
FEATURE_KIND: dict[str, FeatureKind] = {
    "wav2vec2": "waveform",
    "wav2vec2-conformer": "waveform",
    "hubert": "waveform",
    "wavlm": "waveform",
    "data2vec-audio": "waveform",
    "sew": "waveform",
    "sew-d": "waveform",
    "unispeech": "waveform",
    "unispeech-sat": "waveform",
    "audio-spectrogram-transformer": "ast_fbank",
    "whisper": "whisper_log_mel",
}
EXTRACTOR_CLASS: dict[FeatureKind, str] = {
    "waveform": "Wav2Vec2FeatureExtractor",
    "ast_fbank": "ASTFeatureExtractor",
    "whisper_log_mel": "WhisperFeatureExtractor",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="hub id or local directory (save_pretrained / hub checkout; works offline)"
    )
    parser.add_argument("--revision", default=None, help="hub revision to pin (branch, tag or commit); hub ids only")
    parser.add_argument(
        "--role",
        choices=ROLES,
        default="birds",
        help="what soundmond uses it as: models.birds (family hf) or models.tagger (family hf); default birds",
    )
    parser.add_argument(
        "--int8", action="store_true", help="per-channel dynamic int8 quantization (agreement measured and recorded)"
    )
    parser.add_argument(
        "--licence",
        default=None,
        help="the model's licence when its card (README.md `license:`) does not give one, or to override it",
    )
    parser.add_argument(
        "--clip-s",
        type=float,
        default=None,
        help=f"clip length of waveform models (Wav2Vec2, HuBERT, ...): longer windows are split into clips of this "
        f"length (default {DEFAULT_WAVEFORM_CLIP_S}); AST and Whisper clips are fixed by their feature extractor",
    )


def run(args: argparse.Namespace) -> Path:
    started = time.perf_counter()
    if args.clip_s is not None and not 0.5 <= args.clip_s <= 60.0:
        raise ExportError(f"--clip-s {args.clip_s}: use 0.5 to 60 seconds")
    model_dir, source = resolve_model(args.model, args.revision)
    checkpoint = inspect_checkpoint(model_dir)
    licence = args.licence or card_licence(model_dir, source)
    if not licence:
        raise ExportError(
            f"--model {args.model}: its model card (README.md) states no `license:`; pass --licence with the "
            "licence the model is published under"
        )
    with atomic_output_dir(args.out, force=args.force) as folder:
        export_hf(
            model_dir,
            source,
            folder,
            checkpoint=checkpoint,
            role=args.role,
            licence=licence,
            int8=args.int8,
            clip_s=args.clip_s,
            check_audio=args.check_audio,
        )
    logger.info("%s exported to %s in %.1f s", checkpoint.architecture, args.out, time.perf_counter() - started)
    return Path(args.out)


# --- what the checkpoint is -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    model_type: str
    architecture: str
    kind: FeatureKind


def optimum_audio_classification_types() -> set[str]:
    """Model types optimum's ONNX exporter supports for the audio-classification task."""
    import optimum.exporters.onnx.model_configs  # noqa: F401  (registers the ONNX configs with the TasksManager)
    from optimum.exporters.tasks import TasksManager

    supported = TasksManager._SUPPORTED_MODEL_TYPE  # optimum's registry; no public accessor per task
    return {name for name, exporters in supported.items() if TASK in exporters.get("onnx", {})}


def audio_classification_class(model_type: str) -> str:
    """The transformers class of `model_type`'s audio classifier, from transformers' own auto mapping
    (`AutoModelForAudioClassification`): wav2vec2 -> Wav2Vec2ForSequenceClassification, whisper ->
    WhisperForAudioClassification."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES

    name = MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES.get(model_type)
    return str(name) if name else f"a {model_type} audio-classification class"


def inspect_checkpoint(model_dir: Path) -> Checkpoint:
    """Refuse, naming the architecture, anything that is not an audio classifier optimum and soundmond can run."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{model_dir}: cannot read config.json ({exc})") from exc
    model_type = str(config.get("model_type", "?"))
    architectures = [str(a) for a in config.get("architectures") or []]
    architecture = architectures[0] if architectures else f"(model_type {model_type})"
    heads = [a for a in architectures if a.endswith(("ForAudioClassification", "ForSequenceClassification"))]
    optimum_types = optimum_audio_classification_types()
    if model_type not in optimum_types:
        audio = any("Audio" in a or "Speech" in a or "Wav" in a for a in architectures)
        what = "an audio architecture optimum cannot export for audio-classification" if audio else (
            "not an audio-classification model"
        )
        raise ExportError(
            f"{architecture} (model_type {model_type!r}) is {what}; exportable: {', '.join(sorted(optimum_types))}"
        )
    if model_type not in FEATURE_KIND:
        raise ExportError(
            f"{architecture} (model_type {model_type!r}): optimum exports it but soundmond has no numpy feature "
            f"extractor for it; supported: {', '.join(sorted(FEATURE_KIND))}"
        )
    if not heads:
        raise ExportError(
            f"{architecture} has no audio-classification head (architectures {architectures}); export a "
            f"checkpoint fine-tuned for classification ({audio_classification_class(model_type)})"
        )
    return Checkpoint(model_type=model_type, architecture=heads[0], kind=FEATURE_KIND[model_type])


def card_licence(model_dir: Path, source: SourceInfo) -> str | None:
    """`license:` (or `licence:`) of the model card's YAML front matter; for hub ids the card is fetched."""
    card = model_dir / "README.md"
    if not card.is_file() and source.revision is not None:
        from huggingface_hub import hf_hub_download

        try:
            card = Path(hf_hub_download(source.id, "README.md", revision=source.revision))
        except Exception as exc:  # a missing card is not fatal: --licence can give it
            logger.warning("%s: no model card on the hub (%s)", source.id, type(exc).__name__)
            return None
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    front = text.split("---", 2)
    try:
        meta = yaml.safe_load(front[1]) if len(front) == 3 else None
    except yaml.YAMLError:
        return None
    if not isinstance(meta, dict):
        return None
    value = meta.get("license") or meta.get("licence")
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return str(value) if value else None


# --- the export -------------------------------------------------------------------------------------------------------


def _torch_only() -> None:
    os.environ.setdefault("USE_TF", "0")
    os.environ.setdefault("USE_TORCH", "1")


def _load(model_dir: Path, checkpoint: Checkpoint) -> tuple[PreTrainedModel, Any]:
    _torch_only()
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    try:
        model = AutoModelForAudioClassification.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise ExportError(f"{model_dir}: cannot load {checkpoint.architecture} ({exc})".splitlines()[0]) from exc
    model.eval()
    if not (model_dir / "preprocessor_config.json").is_file():
        raise ExportError(
            f"{model_dir}: no preprocessor_config.json; the feature extractor's settings are part of the model "
            "(save it with feature_extractor.save_pretrained beside the model)"
        )
    extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    expected = EXTRACTOR_CLASS[checkpoint.kind]
    if type(extractor).__name__ != expected:
        raise ExportError(
            f"{model_dir}: {checkpoint.architecture} comes with a {type(extractor).__name__}; soundmond reproduces "
            f"only {expected} for this architecture"
        )
    if getattr(model, "classifier", None) is None:
        raise ExportError(f"{checkpoint.architecture}: no `classifier` layer; not a head soundmond can export")
    return model, extractor


def numpy_features(
    kind: FeatureKind, extractor: Any, model: PreTrainedModel, clip_s: float | None
) -> tuple[Features, int, int | None]:
    """soundmond's numpy front-end with the extractor's settings; the clip length in samples; the input frames."""
    config = model.config
    rate = int(extractor.sampling_rate)
    if kind == "waveform":
        if int(extractor.feature_size) != 1:
            raise ExportError(f"feature_size {extractor.feature_size}: soundmond takes mono raw audio (1)")
        clip = int(round((clip_s or DEFAULT_WAVEFORM_CLIP_S) * rate))
        return WaveformFeatures(do_normalize=bool(extractor.do_normalize), sampling_rate=rate), clip, None
    if clip_s is not None:
        logger.warning("--clip-s ignored: %s clips are fixed by the feature extractor", config.model_type)
    if kind == "ast_fbank":
        if int(extractor.max_length) != int(config.max_length) or int(extractor.num_mel_bins) != int(
            config.num_mel_bins
        ):
            raise ExportError(
                f"feature extractor ({extractor.max_length} frames, {extractor.num_mel_bins} mel bins) does not "
                f"match the model ({config.max_length} frames, {config.num_mel_bins} mel bins)"
            )
        features = ASTFeatures(
            num_mel_bins=int(extractor.num_mel_bins),
            max_length=int(extractor.max_length),
            mean=float(extractor.mean),
            std=float(extractor.std),
            do_normalize=bool(extractor.do_normalize),
            sampling_rate=rate,
        )
        return features, samples_for_frames(features.max_length), features.max_length
    if float(getattr(extractor, "dither", 0.0)) != 0.0:
        raise ExportError(f"WhisperFeatureExtractor dither {extractor.dither}: soundmond's features do not dither")
    whisper = WhisperFeatures(
        feature_size=int(extractor.feature_size),
        sampling_rate=rate,
        hop_length=int(extractor.hop_length),
        chunk_length=int(extractor.chunk_length),
        n_fft=int(extractor.n_fft),
        padding_value=float(extractor.padding_value),
    )
    expected_frames = 2 * int(config.max_source_positions)
    if whisper.frames != expected_frames:
        raise ExportError(
            f"feature extractor gives {whisper.frames} frames, the encoder takes {expected_frames} "
            "(max_source_positions x 2)"
        )
    return whisper, whisper.n_samples, whisper.frames


def activation_of(config: Any) -> str:
    """What turns logits into scores: the pipeline's softmax, or a sigmoid for multi-label checkpoints."""
    return "sigmoid" if getattr(config, "problem_type", None) == "multi_label_classification" else "softmax"


def _patch_forward(model: PreTrainedModel, input_name: str) -> Callable[..., dict[str, torch.Tensor]]:
    """`model.forward` returning {"logits", "embedding" (the classifier's input)}, patched on the instance (optimum
    refuses subclasses; it matches inputs by the forward's parameter names, hence one function per input name)."""
    original = model.forward
    classifier = model.classifier

    def run(x: torch.Tensor) -> dict[str, torch.Tensor]:
        captured: list[torch.Tensor] = []
        handle = classifier.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
        try:
            logits = original(**{input_name: x}).logits
        finally:
            handle.remove()
        return {"logits": logits, "embedding": captured[-1]}

    def forward_values(input_values: torch.Tensor, **kwargs: Any) -> dict[str, torch.Tensor]:
        return run(input_values)

    def forward_features(input_features: torch.Tensor, **kwargs: Any) -> dict[str, torch.Tensor]:
        return run(input_features)

    forward = forward_features if input_name == "input_features" else forward_values
    model.forward = forward
    return forward


def _onnx_config(model: PreTrainedModel) -> Any:
    from optimum.exporters.tasks import TasksManager

    constructor = TasksManager.get_exporter_config_constructor(
        exporter="onnx", model=model, task=TASK, library_name="transformers"
    )
    base_class = type(constructor(model.config))

    class WithEmbedding(base_class):  # type: ignore[valid-type, misc]
        @property
        def outputs(self) -> dict[str, dict[int, str]]:
            return {"logits": {0: "batch_size"}, "embedding": {0: "batch_size"}}

    return WithEmbedding(model.config, task=TASK)


def _onnx_export(model: PreTrainedModel, onnx_config: Any, scratch: Path, shapes: dict[str, int]) -> Path:
    import onnx
    import torch
    from optimum.exporters.onnx import onnx_export_from_model

    out = scratch / "optimum"
    with warnings.catch_warnings():
        # The tracer warns about shape checks it freezes (group norm's batch-size check, SDPA's causal flag): they
        # hold for every input the exported graph takes; the parity check on real audio follows.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        onnx_export_from_model(
            model, out, task=TASK, custom_onnx_configs={"model": onnx_config}, do_validation=False, **shapes
        )
    exported = out / MODEL_FILE
    if not exported.is_file():
        raise ExportError(f"optimum wrote no {MODEL_FILE} (got {sorted(p.name for p in out.iterdir())})")
    if any(p.name != MODEL_FILE and p.suffix != ".json" for p in out.iterdir()):
        single = scratch / MODEL_FILE  # external weight files folded in: the sidecar lists one model file
        onnx.save_model(onnx.load(str(exported)), str(single), save_as_external_data=False)
        return single
    return exported


def fold_parametrizations(model: PreTrainedModel) -> list[str]:
    """Replace parametrized weights (the weight norm of Wav2Vec2-style positional convolutions) by their value, so the
    ONNX graph holds a constant weight (an initializer: int8 quantization needs one) instead of recomputing it."""
    from torch.nn.utils import parametrize

    folded = []
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for tensor_name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=True)
                folded.append(f"{name}.{tensor_name}")
    if folded:
        logger.info("folded parametrized weights: %s", ", ".join(folded))
    return folded


def _clips(clips: Sequence[CheckClip], chunk: int) -> tuple[list[npt.NDArray[np.float32]], list[str]]:
    windows = [w for clip in clips for w in chunk_clip(clip.samples, chunk, chunk)]
    return windows, [clip.name for clip in clips]


def reference_logits(
    model: PreTrainedModel, extractor: Any, windows: Sequence[npt.NDArray[np.float32]], input_name: str
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """transformers' own extractor + the PyTorch model, one clip per call as the audio-classification pipeline."""
    import torch

    logits, embeddings = [], []
    with torch.no_grad():
        for window in windows:
            inputs = extractor(window, sampling_rate=extractor.sampling_rate, return_tensors="pt")
            out = model.forward(inputs[input_name])
            logits.append(out["logits"].numpy())
            embeddings.append(out["embedding"].numpy())
    return np.concatenate(logits), np.concatenate(embeddings)


def onnx_logits(
    path: Path, features: Features, windows: Sequence[npt.NDArray[np.float32]], input_name: str
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """soundmond's numpy features + the ONNX model, one clip per call."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, embeddings = [], []
    for window in windows:
        lg, emb = session.run(["logits", "embedding"], {input_name: features(window)[None]})
        logits.append(lg)
        embeddings.append(emb)
    return np.concatenate(logits), np.concatenate(embeddings)


def _specs(model_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])

    def spec(arg: Any) -> TensorSpec:
        shape: list[int | str] = [
            d if isinstance(d, int) else ("batch" if i == 0 else str(d or "dynamic")) for i, d in enumerate(arg.shape)
        ]
        return TensorSpec(
            name=arg.name,
            shape=shape,
            dtype=arg.type.removeprefix("tensor(").removesuffix(")").replace("float", "float32"),
        )

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


def _labels(model: PreTrainedModel) -> list[str]:
    config = model.config
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    if sorted(id2label) != list(range(config.num_labels)):
        raise ExportError(f"config id2label does not name all {config.num_labels} labels")
    labels = [id2label[i] for i in range(config.num_labels)]
    if all(label == f"LABEL_{i}" for i, label in enumerate(labels)):
        raise ExportError("config id2label holds only placeholder names (LABEL_0, ...): the checkpoint has no labels")
    return labels


def export_hf(
    model_dir: Path,
    source: SourceInfo,
    folder: Path,
    *,
    checkpoint: Checkpoint,
    role: str,
    licence: str,
    int8: bool,
    clip_s: float | None,
    check_audio: Path | None,
) -> Sidecar:
    """Export, check on real audio and write `model.onnx`, `labels.txt` and `model.json` into `folder`."""
    import torch

    t0 = time.perf_counter()
    model, extractor = _load(model_dir, checkpoint)
    labels = _labels(model)
    features, chunk_samples, frames = numpy_features(checkpoint.kind, extractor, model, clip_s)
    rate = features.sampling_rate
    logger.info(
        "loaded %s (%s, %d labels, %s features, clip %.2f s) in %.1f s",
        source.id,
        checkpoint.architecture,
        len(labels),
        checkpoint.kind,
        chunk_samples / rate,
        time.perf_counter() - t0,
    )
    onnx_config = _onnx_config(model)
    input_name = next(iter(onnx_config.inputs))
    _patch_forward(model, input_name)
    shapes: dict[str, int] = {}
    if checkpoint.kind == "whisper_log_mel" and frames is not None:
        shapes["nb_max_frames"] = frames
    clips = load_check_audio(check_audio, rate)
    windows, names = _clips(clips, chunk_samples)
    extra: dict[str, Any] = {}

    with tempfile.TemporaryDirectory(prefix="hf-export-", dir=folder.parent) as tmp:
        scratch = Path(tmp)
        logger.info(
            "parity check on %d real %.2f-s clips from %d files", len(windows), chunk_samples / rate, len(names)
        )
        ref_logits, ref_embedding = reference_logits(model, extractor, windows, input_name)  # the untouched model
        folded = fold_parametrizations(model)
        if folded:
            extra["folded_parametrizations"] = folded
        t1 = time.perf_counter()
        fp32_path = _onnx_export(model, onnx_config, scratch, shapes)
        export_s = time.perf_counter() - t1
        logger.info("ONNX export done in %.1f s (%.1f MB)", export_s, fp32_path.stat().st_size / 1e6)
        fp32_logits, fp32_embedding = onnx_logits(fp32_path, features, windows, input_name)
        ref_name = f"transformers {_version('transformers')} feature extractor + pytorch {torch.__version__}"
        parity = parity_figures(
            ref_logits,
            fp32_logits,
            reference_name=ref_name,
            audio_files=names,
            target_max_abs_logit_diff=FP32_TARGET_MAX_ABS_LOGIT_DIFF,
        )
        embedding_diff = float(np.max(np.abs(ref_embedding - fp32_embedding)))
        logger.info(
            "fp32 ONNX + numpy features vs transformers: max abs logit diff %.3g, top-5 agreement %.3f, "
            "max abs embedding diff %.3g",
            parity.max_abs_logit_diff,
            parity.top5_agreement,
            embedding_diff,
        )
        require_parity(parity, f"{checkpoint.architecture} fp32 ONNX")
        extra["fp32_max_abs_embedding_diff"] = embedding_diff
        final_path = fp32_path
        if int8:
            final_path = scratch / "model.int8.onnx"
            extra["int8"], parity = _quantize(fp32_path, final_path, features, windows, input_name, ref_logits, parity)
        shutil.copyfile(final_path, folder / MODEL_FILE)

    (folder / LABELS_FILE).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    inputs, outputs = _specs(folder / MODEL_FILE)
    feature_settings = (
        ast_features_dict(features) if isinstance(features, ASTFeatures) else features.as_dict()
    )
    extra.update(
        hf={
            "role": role,
            "model_type": checkpoint.model_type,
            "architecture": checkpoint.architecture,
            "feature_extractor": type(extractor).__name__,
            "problem_type": getattr(model.config, "problem_type", None),
            "activation": activation_of(model.config),
            "input": input_name,
        },
        features=feature_settings,
        embedding={"output": "embedding", "size": int(fp32_embedding.shape[1]), "what": "input of the classifier"},
        export_seconds=round(export_s, 2),
    )
    sidecar = Sidecar(
        family="hf",
        source=source,
        licence=licence,
        sample_rate_hz=rate,
        chunk_samples=chunk_samples,
        frames=frames,
        inputs=inputs,
        outputs=outputs,
        labels_file=LABELS_FILE,
        label_count=len(labels),
        output_kind="logits",
        quantization="int8" if int8 else "none",
        files=file_checksums(folder),
        tool_versions=tool_versions("torch", "transformers", "optimum", "optimum-onnx", "huggingface-hub"),
        parity=parity,
        created_utc=utc_now_iso(),
        extra=extra,
    )
    write_sidecar(folder, sidecar)
    folder.chmod(0o755)
    return sidecar


def _quantize(
    fp32_path: Path,
    int8_path: Path,
    features: Features,
    windows: Sequence[npt.NDArray[np.float32]],
    input_name: str,
    ref_logits: npt.NDArray[np.float32],
    fp32_parity: Any,
) -> tuple[dict[str, Any], Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    previous = root.level
    root.setLevel(max(previous, logging.WARNING))  # onnxruntime.quantization logs every tensor at INFO
    try:
        # the transformer's matrix products only: the convolutional front-end stays fp32
        quantize_dynamic(
            fp32_path, int8_path, per_channel=True, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
        )
    finally:
        root.setLevel(previous)
    int8_logits, _ = onnx_logits(int8_path, features, windows, input_name)
    parity = parity_figures(
        ref_logits, int8_logits, reference_name=fp32_parity.reference, audio_files=fp32_parity.audio_files
    )
    logger.info(
        "int8 vs PyTorch fp32 (reported, not enforced): top-1 %.3f, top-5 %.3f, max abs logit diff %.3g",
        parity.top1_agreement,
        parity.top5_agreement,
        parity.max_abs_logit_diff,
    )
    settings = {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "per_channel": True,
        "weight_type": "QInt8",
        "op_types": ["MatMul", "Gemm"],
        "fp32_bytes": fp32_path.stat().st_size,
        "int8_bytes": int8_path.stat().st_size,
        "fp32_parity": fp32_parity.model_dump(mode="json", exclude={"audio_files"}),
    }
    return settings, parity


def _version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


# --- random checkpoints for tests and benchmarks --------------------------------------------------------------------

BIRD_LABELS = (
    "Turdus merula_Eurasian Blackbird",
    "Erithacus rubecula_European Robin",
    "Fringilla coelebs_Common Chaffinch",
    "Parus major_Great Tit",
    "Sylvia atricapilla_Eurasian Blackcap",
    "Troglodytes troglodytes_Eurasian Wren",
    "Phylloscopus collybita_Common Chiffchaff",
    "Cyanistes caeruleus_Eurasian Blue Tit",
)


def make_random_checkpoint(
    out_dir: Path | str,
    model_type: str,
    *,
    size: str = "tiny",
    labels: Sequence[str] = BIRD_LABELS,
    multi_label: bool = False,
    seed: int = 0,
    licence: str | None = "cc-by-4.0",
) -> Path:
    """Save a random-weight audio classifier of `model_type` (wav2vec2, hubert, wavlm, audio-spectrogram-transformer,
    whisper) with its feature extractor and a model card to `out_dir`.

    tiny: hidden 32, 2 layers, 2 heads (Whisper: 5-s clips, 40 mel bands; AST: 128 mel bins, 100 frames);
    base: Wav2Vec2-base's shape (hidden 768, 12 layers, 12 heads, intermediate 3072), for memory measurements.
    """
    _torch_only()
    import torch
    import transformers as tf

    id2label = dict(enumerate(labels))
    common: dict[str, Any] = {
        "id2label": id2label,
        "label2id": {label: i for i, label in id2label.items()},
        "problem_type": "multi_label_classification" if multi_label else "single_label_classification",
    }
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    waveform_small = {
        **small,
        "conv_dim": (32, 32, 32),
        "conv_stride": (5, 4, 4),
        "conv_kernel": (10, 4, 4),
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        "classifier_proj_size": 16,
    }
    base: dict[str, Any] = {}
    out = Path(out_dir)
    torch.manual_seed(seed)
    extractor: Any
    if model_type in ("wav2vec2", "hubert", "wavlm"):
        config_class, model_class = {
            "wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2ForSequenceClassification),
            "hubert": (tf.HubertConfig, tf.HubertForSequenceClassification),
            "wavlm": (tf.WavLMConfig, tf.WavLMForSequenceClassification),
        }[model_type]
        config = config_class(**(waveform_small if size == "tiny" else base), **common)
        extractor = tf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
    elif model_type == "audio-spectrogram-transformer":
        config = tf.ASTConfig(**small, max_length=100, num_mel_bins=128, **common)
        extractor = tf.ASTFeatureExtractor(max_length=100)
    elif model_type == "whisper":
        config = tf.WhisperConfig(
            d_model=32,
            encoder_layers=2,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            num_mel_bins=40,
            max_source_positions=250,
            classifier_proj_size=16,
            **common,
        )
        extractor = tf.WhisperFeatureExtractor(feature_size=40, chunk_length=5)
    else:
        raise ValueError(f"no random checkpoint recipe for {model_type!r}")
    model = tf.AutoModelForAudioClassification.from_config(config).eval()
    with torch.no_grad():  # the default init (std 0.02) gives near-equal logits: spread them so top-k is meaningful
        heads = [m for m in (getattr(model, "projector", None), model.classifier) if m is not None]
        for linear in (m for head in heads for m in head.modules() if isinstance(m, torch.nn.Linear)):
            linear.weight.normal_(0.0, 3.0 / linear.in_features**0.5)  # logits of a few units, whatever the width
    model.save_pretrained(out)
    extractor.save_pretrained(out)
    if licence:
        (out / "README.md").write_text(f"---\nlicense: {licence}\n---\n# random {model_type} test checkpoint\n")
    logger.info("random %s %s checkpoint (seed %d) saved to %s", size, model_type, seed, out)
    return out
