"""Speech privacy: which windows hold human speech, and what their audio becomes in an evidence clip.

A window's speech score is the largest probability the tagger gives any AudioSet class in `SPEECH_LABELS` ("Speech"
and its descendants in the AudioSet ontology; YAMNet knows six of them, AST all eight), as pooled by the tagger
(`models.tagger.pooling`). A window scoring above `privacy.speech_threshold` is a speech window:

    drop   no sample of it is ever written: a clip whose own audio (the chunk or window) touches a speech window is
           not written at all; a pad that would reach into one is cut short at the speech window's first (or after
           its last) sample.
    mute   the clip is written, and every sample that belongs to a speech window is replaced by the same audio with
           the band `privacy.mute_band_hz` (default 300-3400 Hz, the telephone band that carries intelligibility)
           attenuated by `privacy.mute_db`: one real FFT over each contiguous speech stretch of the clip, the bins
           whose centre frequency lies within the band (edges included) multiplied by 10^(-mute_db/20), inverse FFT.

A window the tagger did not score (the models failed or were gated off) cannot be shown free of speech: it is treated
as a speech window ("unscored" in the counters). A quiet window (below `windows.quiet_below_dbfs`, or digital
silence) holds nothing audible and is not a speech window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

SPEECH_LABELS: frozenset[str] = frozenset({
    "Speech",
    "Male speech, man speaking",
    "Female speech, woman speaking",
    "Child speech, kid speaking",
    "Conversation",
    "Narration, monologue",
    "Babbling",
    "Speech synthesizer",
})


def speech_indices(labels: Sequence[str]) -> tuple[int, ...]:
    """Where the speech classes are in a tagger's label list."""
    return tuple(i for i, name in enumerate(labels) if name in SPEECH_LABELS)


def speech_score(probabilities: npt.NDArray[np.float32], indices: Sequence[int]) -> float:
    """The largest speech-class probability of one window (0.0 when the tagger knows no speech class)."""
    if not indices:
        return 0.0
    return float(np.max(probabilities[list(indices)]))


def mute_band(samples: npt.NDArray[np.float32], rate_hz: int, band_hz: tuple[float, float],
              attenuation_db: float) -> npt.NDArray[np.float32]:
    """`samples` with the bins of `band_hz` (inclusive) attenuated by `attenuation_db` (one FFT over all of them)."""
    if samples.size == 0:
        return samples.astype(np.float32)
    spectrum = np.fft.rfft(samples.astype(np.float64))
    freqs = np.fft.rfftfreq(samples.size, 1.0 / rate_hz)
    low, high = band_hz
    spectrum[(freqs >= low) & (freqs <= high)] *= 10.0 ** (-attenuation_db / 20.0)
    out = np.fft.irfft(spectrum, n=samples.size)
    return np.clip(out, -1.0, 1.0).astype(np.float32)
