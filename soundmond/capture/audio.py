"""Decoding and resampling: any file soundmond reads becomes mono float32 at the rate a model needs.

Decoding uses libsndfile (through `soundfile`: wav, flac, ogg/vorbis, opus, mp3), resampling uses soxr (high quality,
no torch). Every failure is an `AudioError` naming the file and the problem.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from soundmond.errors import HintedError

logger = logging.getLogger(__name__)

Float32Array = npt.NDArray[np.float32]

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus")


class AudioError(HintedError):
    """A recording that cannot be used, with the file and the reason."""

    def __init__(self, path: Path | str, problem: str, hint: str = "") -> None:
        self.path = str(path)
        super().__init__(problem, hint, where=path)


def to_mono(samples: npt.NDArray[np.floating], channel: int | None = None) -> Float32Array:
    """[frames, channels] or [frames] -> [frames] float32: one chosen channel, or the mean of all."""
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    if channel is not None:
        if not 0 <= channel < samples.shape[1]:
            raise ValueError(f"channel {channel} does not exist (the audio has {samples.shape[1]} channels)")
        return np.ascontiguousarray(samples[:, channel], dtype=np.float32)
    return samples.mean(axis=1, dtype=np.float32)


def resample(samples: Float32Array, rate_in_hz: int, rate_out_hz: int) -> Float32Array:
    """Resample mono float32 audio (soxr, high quality). Identity when the rates agree."""
    if rate_in_hz == rate_out_hz:
        return samples
    if samples.size == 0:
        return samples.astype(np.float32)
    out = soxr.resample(samples, rate_in_hz, rate_out_hz, quality="HQ")
    return np.asarray(out, dtype=np.float32)


def check_finite(samples: Float32Array, path: Path | str) -> Float32Array:
    """Replace NaN/inf samples by 0 (logged once per file). Raises if nothing finite is left."""
    finite = np.isfinite(samples)
    if finite.all():
        return samples
    bad = int((~finite).sum())
    if bad == samples.size:
        raise AudioError(path, "every sample is NaN or infinite")
    logger.warning("%s: %d NaN/inf samples replaced by silence", path, bad)
    return np.where(finite, samples, 0.0).astype(np.float32)


def read_info(path: Path) -> sf._SoundFileInfo:
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(path, f"cannot open as audio ({exc})") from exc


def load_audio(path: Path | str, rate_hz: int | None = None, channel: int | None = None) -> tuple[Float32Array, int]:
    """Decode a whole file to mono float32, optionally resampled to `rate_hz`. Returns (samples, rate_hz)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "the file is empty (0 bytes)")
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioError(path, f"cannot decode ({exc})") from exc
    if data.shape[0] == 0:
        raise AudioError(path, "the file holds no audio frames")
    try:
        mono = to_mono(data, channel)
    except ValueError as exc:
        raise AudioError(path, str(exc)) from exc
    mono = check_finite(mono, path)
    if rate_hz is not None and rate_hz != file_rate:
        mono = resample(mono, int(file_rate), rate_hz)
        return mono, rate_hz
    return mono, int(file_rate)


def find_audio_files(root: Path | str) -> list[Path]:
    """Audio files in a folder (recursively, sorted), or the file itself."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
