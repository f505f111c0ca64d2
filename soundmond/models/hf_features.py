"""Input features of Hugging Face audio classifiers in numpy (the daemon runs without torch or transformers).

Three front-ends, named by `kind` in a `hf` model's sidecar (`extra.features`):

- `waveform` (`WaveformFeatures`): Wav2Vec2 / HuBERT / WavLM / data2vec-audio / SEW / UniSpeech take the raw
  16-kHz waveform; `Wav2Vec2FeatureExtractor` with `do_normalize` scales it to zero mean and unit variance,
  `(x - mean) / sqrt(var + 1e-7)`, in float32 (transformers' `zero_mean_unit_var_norm`, computed the same way here
  so the values are bit-identical).
- `ast_fbank`: AST's kaldi log-mel fbank, `soundmond.models.features.ASTFeatures` (reused as it is).
- `whisper_log_mel` (`WhisperFeatures`): Whisper's log-mel spectrogram: the audio is padded with zeros (or cut) to
  `chunk_length` seconds, centred STFT (reflect padding of n_fft / 2, periodic Hann window, n_fft 400, hop 160),
  power spectrum, the last frame dropped, `feature_size` Slaney-normalised mel filters on the Slaney mel scale from 0
  to 8000 Hz (`slaney_mel_filters`, as `transformers.audio_utils.mel_filter_bank`), log10 with a floor of 1e-10,
  clamped to 8 below the clip's maximum, then `(x + 4) / 4`.

`tests/test_hf_features.py` checks each one against transformers' own extractor on real recordings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from soundmond.models.features import ASTFeatures

FeatureKind = Literal["waveform", "ast_fbank", "whisper_log_mel"]
FEATURE_KINDS: tuple[FeatureKind, ...] = ("waveform", "ast_fbank", "whisper_log_mel")

WAV2VEC2_EPSILON = 1e-7  # transformers' Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
WHISPER_MAX_FREQUENCY_HZ = 8000.0  # hard-coded in transformers' WhisperFeatureExtractor
WHISPER_LOG_FLOOR = 1e-10
WHISPER_DYNAMIC_RANGE = 8.0


class Features(Protocol):
    """One clip of mono audio at `sampling_rate` -> one model input (without the batch axis)."""

    @property
    def sampling_rate(self) -> int: ...

    def __call__(self, samples: npt.NDArray[np.floating], /) -> npt.NDArray[np.float32]: ...

    def as_dict(self) -> dict[str, Any]: ...


def _mono(samples: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    wave = np.asarray(samples)
    if wave.ndim != 1:
        wave = np.squeeze(wave)
        if wave.ndim != 1:
            raise ValueError(f"expected mono audio, got shape {np.shape(samples)}")
    return wave.astype(np.float32, copy=False)


@dataclass(frozen=True)
class WaveformFeatures:
    """The raw waveform, optionally zero-mean / unit-variance (`Wav2Vec2FeatureExtractor`). Any length."""

    do_normalize: bool = True
    """Scale each clip to zero mean and unit variance (the extractor's `do_normalize`)."""
    sampling_rate: int = 16000
    kind: FeatureKind = field(default="waveform", init=False)

    def __call__(self, samples: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        x = _mono(samples)
        if not self.do_normalize:
            return x
        # float32 throughout, as transformers (numpy's float32 mean / var, then a float32 quotient)
        out: npt.NDArray[np.float32] = (x - x.mean()) / np.sqrt(x.var() + WAV2VEC2_EPSILON)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "do_normalize": self.do_normalize, "sampling_rate": self.sampling_rate}


# --- Whisper ----------------------------------------------------------------------------------------------------------

_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = 15.0
_SLANEY_LOGSTEP = 27.0 / np.log(6.4)


def slaney_hz_to_mel(freq_hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    freq = np.asarray(freq_hz, dtype=np.float64)
    mels = 3.0 * freq / 200.0
    log_region = freq >= _SLANEY_MIN_LOG_HZ
    safe = np.where(log_region, freq, _SLANEY_MIN_LOG_HZ)
    out: npt.NDArray[np.float64] = np.where(
        log_region, _SLANEY_MIN_LOG_MEL + np.log(safe / _SLANEY_MIN_LOG_HZ) * _SLANEY_LOGSTEP, mels
    )
    return out


def slaney_mel_to_hz(mels: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    mel = np.asarray(mels, dtype=np.float64)
    freq = 200.0 * mel / 3.0
    log_region = mel >= _SLANEY_MIN_LOG_MEL
    out: npt.NDArray[np.float64] = np.where(
        log_region, _SLANEY_MIN_LOG_HZ * np.exp((mel - _SLANEY_MIN_LOG_MEL) / _SLANEY_LOGSTEP), freq
    )
    return out


def slaney_mel_filters(
    num_frequency_bins: int, num_mel_filters: int, min_frequency: float, max_frequency: float, sampling_rate: int
) -> npt.NDArray[np.float64]:
    """[num_frequency_bins, num_mel_filters] triangular filters on the Slaney mel scale, Slaney area normalisation.

    The construction of `transformers.audio_utils.mel_filter_bank(..., norm="slaney", mel_scale="slaney")`.
    """
    mel_edges = np.linspace(
        slaney_hz_to_mel(np.asarray(min_frequency)), slaney_hz_to_mel(np.asarray(max_frequency)), num_mel_filters + 2
    )
    filter_freqs = slaney_mel_to_hz(mel_edges)
    fft_freqs = np.linspace(0, sampling_rate // 2, num_frequency_bins)
    filter_diff = np.diff(filter_freqs)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / filter_diff[:-1]
    up = slopes[:, 2:] / filter_diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    enorm = 2.0 / (filter_freqs[2 : num_mel_filters + 2] - filter_freqs[:num_mel_filters])
    out: npt.NDArray[np.float64] = filters * enorm[None, :]
    return out


@dataclass(frozen=True)
class WhisperFeatures:
    """Whisper's log-mel input `[feature_size, chunk_length * sampling_rate / hop_length]` of one clip."""

    feature_size: int = 80
    """Mel bands."""
    sampling_rate: int = 16000
    hop_length: int = 160
    chunk_length: int = 30
    """Seconds of every model input: shorter clips are padded with `padding_value`, longer ones cut."""
    n_fft: int = 400
    padding_value: float = 0.0
    kind: FeatureKind = field(default="whisper_log_mel", init=False)
    _mel_filters: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)
    _window: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if min(self.feature_size, self.hop_length, self.chunk_length, self.n_fft) <= 0:
            raise ValueError("feature_size, hop_length, chunk_length and n_fft must be positive")
        filters = slaney_mel_filters(
            1 + self.n_fft // 2, self.feature_size, 0.0, WHISPER_MAX_FREQUENCY_HZ, self.sampling_rate
        )
        object.__setattr__(self, "_mel_filters", filters)
        n = np.arange(self.n_fft, dtype=np.float64)
        object.__setattr__(self, "_window", 0.5 - 0.5 * np.cos(2.0 * np.pi * n / self.n_fft))  # periodic Hann

    @property
    def n_samples(self) -> int:
        return self.chunk_length * self.sampling_rate

    @property
    def frames(self) -> int:
        return self.n_samples // self.hop_length

    def __call__(self, samples: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        wave = _mono(samples)[: self.n_samples]
        if wave.size < self.n_samples:
            wave = np.pad(wave, (0, self.n_samples - wave.size), constant_values=np.float32(self.padding_value))
        half = self.n_fft // 2
        padded = np.pad(wave.astype(np.float64), (half, half), mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft)[:: self.hop_length][: self.frames]
        spectrum = np.fft.rfft(frames * self._window, axis=1)
        power = spectrum.real**2 + spectrum.imag**2  # [frames, bins]
        mel = self._mel_filters.T @ power.T  # [mel, frames]
        log_spec = np.log10(np.maximum(mel, WHISPER_LOG_FLOOR))
        log_spec = np.maximum(log_spec, log_spec.max() - WHISPER_DYNAMIC_RANGE)
        return ((log_spec + 4.0) / 4.0).astype(np.float32)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "feature_size": self.feature_size,
            "sampling_rate": self.sampling_rate,
            "hop_length": self.hop_length,
            "chunk_length": self.chunk_length,
            "n_fft": self.n_fft,
            "padding_value": self.padding_value,
            "mel_scale": "slaney",
            "mel_norm": "slaney",
            "min_frequency_hz": 0.0,
            "max_frequency_hz": WHISPER_MAX_FREQUENCY_HZ,
        }


def ast_features_dict(features: ASTFeatures) -> dict[str, Any]:
    return {"kind": "ast_fbank", **features.as_dict()}


def features_from_settings(settings: Mapping[str, Any]) -> Features:
    """The front-end a `hf` sidecar's `extra.features` names (KeyError / ValueError / TypeError when unusable)."""
    kind = settings["kind"]
    if kind == "waveform":
        return WaveformFeatures(
            do_normalize=bool(settings["do_normalize"]), sampling_rate=int(settings["sampling_rate"])
        )
    if kind == "ast_fbank":
        return ASTFeatures.from_sidecar_extra(dict(settings))
    if kind == "whisper_log_mel":
        return WhisperFeatures(
            feature_size=int(settings["feature_size"]),
            sampling_rate=int(settings["sampling_rate"]),
            hop_length=int(settings["hop_length"]),
            chunk_length=int(settings["chunk_length"]),
            n_fft=int(settings["n_fft"]),
            padding_value=float(settings["padding_value"]),
        )
    raise ValueError(f"unknown feature kind {kind!r} (this soundmond knows {', '.join(FEATURE_KINDS)})")


__all__ = [
    "FEATURE_KINDS",
    "FeatureKind",
    "Features",
    "WaveformFeatures",
    "WhisperFeatures",
    "ast_features_dict",
    "features_from_settings",
    "slaney_mel_filters",
]
