"""The AudioSet taggers: YAMNet and AST (16-kHz mono window -> probabilities, top labels, embedding)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from soundmond.config import TaggerConfig
from soundmond.data import TaggerOutput
from soundmond.models.features import ASTFeatures
from soundmond.models.hf import HfTagger
from soundmond.models.sessions import (
    AST_SAMPLE_RATE_HZ,
    MODEL_FILE,
    YAMNET_SAMPLE_RATE_HZ,
    check_output_finite,
    check_session_io,
    check_sidecar,
    check_window,
    frame_array,
    frame_starts,
    has_dynamic_batch,
    make_session,
    pool_frames,
    read_labels,
    run_session,
    sigmoid,
    top_labels,
)
from soundmond.models.sidecar import ModelFolderError, model_digest
from soundmond.protocols import Float32Array, Tagger

logger = logging.getLogger(__name__)

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
        check_session_io(self.folder, self._session, self.sidecar, "audio", ("probabilities", "embedding"))
        self._dynamic = has_dynamic_batch(self._session, "audio")
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
        wave = check_window("YAMNet", samples)
        frames = frame_array(wave, self.frame_samples, self.hop_samples)
        scores, embedding = run_session(self._session, "audio", frames, ("probabilities", "embedding"), self._dynamic)
        check_output_finite("YAMNet", scores, embedding)
        if self._apply_sigmoid:
            scores = sigmoid(scores)
        return scores, embedding

    def tag(self, samples: Float32Array) -> TaggerOutput:
        scores, embedding = self.frame_outputs(samples)
        probabilities = pool_frames(scores, self.config.pooling)
        return TaggerOutput(
            probabilities=probabilities,
            embedding=embedding.mean(axis=0).astype(np.float32),
            top=top_labels(probabilities, self.labels, self.config.top_k),
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
        check_session_io(self.folder, self._session, self.sidecar, "input_values", ("logits", "embedding"))
        self._dynamic = has_dynamic_batch(self._session, "input_values")
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
        wave = check_window("AST", samples)
        if wave.size <= self.chunk_samples:
            chunks = [wave]
        else:
            chunks = [wave[s : s + self.chunk_samples] for s in frame_starts(wave.size, *(self.chunk_samples,) * 2)]
        batch = np.stack([self.features(chunk) for chunk in chunks])
        logits, embedding = run_session(self._session, "input_values", batch, ("logits", "embedding"), self._dynamic)
        check_output_finite("AST", logits, embedding)
        scores = sigmoid(logits) if self._apply_sigmoid else logits
        probabilities = pool_frames(scores, self.config.pooling)
        return TaggerOutput(
            probabilities=probabilities,
            embedding=embedding.mean(axis=0).astype(np.float32),
            top=top_labels(probabilities, self.labels, self.config.top_k),
        )


def load_tagger(folder: Path | str, config: TaggerConfig) -> Tagger:
    """The tagger of `config.family` (`models.tagger.family`) from `folder`; the folder must hold that family."""
    if config.family == "ast":
        return AstTagger(folder, config)
    if config.family == "hf":
        return HfTagger(folder, config)
    return YamnetTagger(folder, config)


