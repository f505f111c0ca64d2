"""AST input features in numpy: the kaldi-style log-mel fbank of `transformers.ASTFeatureExtractor`.

The daemon is torch-free, and `ASTFeatureExtractor` calls torch even on its numpy path, so this module
reproduces that numpy path (`transformers.audio_utils.spectrogram` with kaldi settings, padding/truncation to
`max_length` frames, normalisation `(x - mean) / (2 * std)`), vectorised over frames.
`tests/test_features.py` checks it against the transformers implementation on real recordings.

Framing (kaldi, `snip_edges`): 25 ms frames (400 samples at 16 kHz) every 10 ms (160 samples), no centring,
so `n` samples give `1 + (n - 400) // 160` frames. Per frame: remove the DC offset, pre-emphasis 0.97,
symmetric Hann window, 512-point FFT, power spectrum, 128 triangular filters on the kaldi mel scale (20 Hz to
Nyquist), natural log with a floor of float32 epsilon.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FRAME_LENGTH = 400  # 25 ms at 16 kHz
HOP_LENGTH = 160  # 10 ms at 16 kHz
FFT_LENGTH = 512
PREEMPHASIS = 0.97
MEL_FLOOR = 1.192092955078125e-07  # float32 epsilon, as kaldi / transformers
MIN_FREQUENCY_HZ = 20.0

AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974


def samples_for_frames(frames: int) -> int:
    """Samples that `frames` fbank frames cover exactly (no padding frames): (frames - 1) * 160 + 400."""
    return (frames - 1) * HOP_LENGTH + FRAME_LENGTH


def frames_for_samples(samples: int) -> int:
    """fbank frames computed from `samples` samples (0 when shorter than one 25-ms frame)."""
    if samples < FRAME_LENGTH:
        return 0
    return 1 + (samples - FRAME_LENGTH) // HOP_LENGTH


def _kaldi_mel(freq_hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1127.0 * np.log(1.0 + freq_hz / 700.0)


def kaldi_mel_filters(num_mel_bins: int, sampling_rate: int, fft_length: int = FFT_LENGTH) -> npt.NDArray[np.float64]:
    """[fft_length // 2 + 1, num_mel_bins] triangular filters, triangularised in kaldi mel space (no norm).

    Same construction as `transformers.audio_utils.mel_filter_bank(..., mel_scale="kaldi",
    triangularize_in_mel_space=True, min_frequency=20, max_frequency=sampling_rate // 2, norm=None)`.
    """
    num_bins = fft_length // 2 + 1
    mel_min = _kaldi_mel(np.asarray(MIN_FREQUENCY_HZ, dtype=np.float64))
    mel_max = _kaldi_mel(np.asarray(sampling_rate // 2, dtype=np.float64))
    mel_edges = np.linspace(mel_min, mel_max, num_mel_bins + 2)
    bin_width_hz = sampling_rate / ((num_bins - 1) * 2)
    fft_mels = _kaldi_mel(bin_width_hz * np.arange(num_bins, dtype=np.float64))
    edge_diff = np.diff(mel_edges)
    slopes = mel_edges[None, :] - fft_mels[:, None]
    down = -slopes[:, :-2] / edge_diff[:-1]
    up = slopes[:, 2:] / edge_diff[1:]
    filters: npt.NDArray[np.float64] = np.maximum(0.0, np.minimum(down, up))
    return filters


@dataclass(frozen=True)
class ASTFeatures:
    """AST input features of one window of mono 16-kHz audio: `features(samples) -> [max_length, mel bins]`.

    The settings are the `extra.features` of an AST model's `model.json` (`from_sidecar_extra`); the defaults
    are those of `MIT/ast-finetuned-audioset-10-10-0.4593`.
    """

    num_mel_bins: int = 128
    """Mel bands (the model's frequency axis)."""
    max_length: int = 1024
    """Frames of the model input: shorter audio is padded with zero log-mel frames (before normalisation),
    longer audio is truncated (the model's time axis: 1024 = 10.24 s, 512 = 5.12 s)."""
    mean: float = AUDIOSET_MEAN
    """Normalisation mean (AudioSet)."""
    std: float = AUDIOSET_STD
    """Normalisation standard deviation (AudioSet); the extractor divides by 2 * std."""
    do_normalize: bool = True
    """Apply (x - mean) / (2 * std)."""
    sampling_rate: int = 16000
    """Sample rate the audio must have (Hz)."""
    _mel_filters: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)
    _window: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_length <= 0 or self.num_mel_bins <= 0:
            raise ValueError("max_length and num_mel_bins must be positive")
        # Precomputed once: the filterbank and the symmetric Hann window (np.hanning is symmetric).
        object.__setattr__(self, "_mel_filters", kaldi_mel_filters(self.num_mel_bins, self.sampling_rate))
        object.__setattr__(self, "_window", np.hanning(FRAME_LENGTH))

    @classmethod
    def from_sidecar_extra(cls, extra: dict[str, Any]) -> ASTFeatures:
        """Settings from a sidecar's `extra` (its "features" entry) or from that entry itself."""
        settings = extra.get("features", extra)
        if not isinstance(settings, dict):
            raise ValueError("sidecar extra.features must be an object")
        return cls(
            num_mel_bins=int(settings["num_mel_bins"]),
            max_length=int(settings["max_length"]),
            mean=float(settings["mean"]),
            std=float(settings["std"]),
            do_normalize=bool(settings["do_normalize"]),
            sampling_rate=int(settings["sampling_rate"]),
        )

    def as_dict(self) -> dict[str, Any]:
        """The settings as stored in a sidecar's `extra.features`."""
        return {
            "num_mel_bins": self.num_mel_bins,
            "max_length": self.max_length,
            "mean": self.mean,
            "std": self.std,
            "do_normalize": self.do_normalize,
            "sampling_rate": self.sampling_rate,
        }

    @property
    def chunk_samples(self) -> int:
        """Samples that fill `max_length` frames exactly."""
        return samples_for_frames(self.max_length)

    def log_mel(self, samples: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """[frames, num_mel_bins] log-mel fbank of the whole input (no padding, truncation or normalisation).

        Only the first `max_length` frames are computed (the rest would be truncated anyway).
        """
        wave = np.asarray(samples)
        if wave.ndim != 1:
            wave = np.squeeze(wave)
            if wave.ndim != 1:
                raise ValueError(f"expected mono audio, got shape {np.shape(samples)}")
        # transformers casts the input to float32 first, then promotes to float64 for the STFT.
        wave = wave.astype(np.float32, copy=False).astype(np.float64)
        n_frames = min(frames_for_samples(wave.size), self.max_length)
        if n_frames == 0:
            return np.zeros((0, self.num_mel_bins), dtype=np.float32)
        used = wave[: samples_for_frames(n_frames)]
        frames = np.lib.stride_tricks.sliding_window_view(used, FRAME_LENGTH)[::HOP_LENGTH]
        frames = frames - frames.mean(axis=1, keepdims=True)
        emphasised = np.empty_like(frames)
        emphasised[:, 1:] = frames[:, 1:] - PREEMPHASIS * frames[:, :-1]
        emphasised[:, 0] = frames[:, 0] * (1.0 - PREEMPHASIS)
        emphasised *= self._window
        spectrum = np.fft.rfft(emphasised, n=FFT_LENGTH, axis=1)
        # transformers stores the STFT as complex64 before taking the power: same here, for identical output.
        spectrum64 = spectrum.astype(np.complex64)
        power = np.abs(spectrum64, dtype=np.float64) ** 2
        mel = np.maximum(MEL_FLOOR, power @ self._mel_filters)
        return np.log(mel).astype(np.float32)

    def __call__(self, samples_16k: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """[max_length, num_mel_bins] float32 model input for one window of mono audio at `sampling_rate`."""
        fbank = self.log_mel(samples_16k)
        out = np.zeros((self.max_length, self.num_mel_bins), dtype=np.float32)
        out[: fbank.shape[0]] = fbank
        if self.do_normalize:
            out -= np.float32(self.mean)
            out /= np.float32(self.std * 2)
        return out


__all__ = ["ASTFeatures", "kaldi_mel_filters", "samples_for_frames", "frames_for_samples"]
