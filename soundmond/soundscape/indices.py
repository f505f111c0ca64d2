"""Acoustic indices of one window, in numpy: what a soundscape ecologist computes with scikit-maad, on the sensor.

Each index follows scikit-maad 1.5's code (`maad.features.alpha_indices`, `maad.sound.spectrogram`, `maad.spl`)
with the parameters below, so a value here equals maad's on the same samples (tests/test_indices.py checks every
index on corpus recordings; the tolerances are stated there). scikit-maad itself is a test-only dependency: it pulls
scipy, scikit-image and pandas, which a sensor does not need.

The spectrogram (maad's `spectrogram(x, fs, window="hann", nperseg=1024, noverlap=512)`): periodic Hann frames of
`FFT_SIZE` samples every `FFT_SIZE // 2`, each frame's mean removed, magnitude scaled to an amplitude spectral density
(`|rfft| * sqrt(2 / (nperseg * sum(w**2)))`), the Nyquist row dropped, `len(x) // hop - 1` frames. Computed at the
window's own sample rate: bands above the Nyquist frequency are cut at it (a 16-kHz recording has no 8-11 kHz).

Each field, the maad call it equals, and what it measures:

- `ndsi`: `soundscape_index(Sxx_power, fn, flim_bioPh=(2000, 8000), flim_antroPh=(1000, 2000),
  R_compatible="soundecology")[0]`. (B - A) / (B + A), -1 (anthrophony) .. 1 (biophony), of the power in 1-kHz bins:
  biophony B = the bins starting at 2..8 kHz (2-9 kHz, Nyquist permitting), anthrophony A = the bins starting at 1 and
  2 kHz (1-3 kHz: maad's band selection keeps both ends, so the 2-3 kHz bin counts in both).
- `aci`: `acoustic_complexity_index(Sxx_amplitude)[2]`. Pieretti's ACI with the window as one step: the sum over
  frequency rows of sum(|difference between frames|) / sum(row).
- `adi`: `acoustic_diversity_index(Sxx_amplitude, fn, fmin=0, fmax=10000, bin_step=1000, dB_threshold=-50)`. Shannon
  diversity (nats) of the share of cells above -50 dB (re the window's loudest cell) in each 1-kHz band to 10 kHz.
- `aei`: `acoustic_eveness_index(...)` with the same arguments: the Gini coefficient of those shares, 0..1.
- `bi`: `bioacoustics_index(Sxx_amplitude, fn, flim=(2000, 8000), R_compatible="soundecology")`. The mean spectrum in
  dB (re its max) over 2-8 kHz, minus its minimum there, summed and divided by the row width (Boelman's BI).
- `hf`: `frequency_entropy(Sxx_power, compatibility="QUT")[0]`, which is 1 - `spectral_entropy(Sxx_power, fn)[0]`
  (Towsey's EAS): the spectral entropy of the mean power spectrum, 0..1.
- `ht`: `temporal_entropy(s, compatibility="QUT", mode="fast", Nt=512)`: the entropy of the squared envelope (the max
  of |s| over every 512 samples), 0..1.
- `h`: `hf * ht`, Sueur's acoustic entropy index H, 0..1.
- `leq_dbfs`: the equivalent continuous level of the window without its DC offset, 10 log10(mean((s - mean(s))^2)),
  dB re full scale (an RMS of 1); the same number as `rms_dbfs`.
- `leq_db_spl`: leq_dbfs + `source.calibration_db`, dB SPL re 20 uPa (None without a calibration); equals
  `maad.spl.wav2leq(s, fs, gain=0, Vadc=2, sensitivity=94 - calibration_db, dBref=94)` energy-averaged over the window.

ADI and AEI bands stop at the highest whole band under the Nyquist frequency (`fmax` 8000 at 16 kHz, 10000 at
22.05 kHz and above); maad is called with the same `fmax` in the tests (above the Nyquist frequency maad would count
the top row again for every missing band). One deliberate difference: a frequency row that is zero in every frame
adds 0 to ACI where maad divides 0 by 0 (NaN). Another: the levels are taken without the window's DC offset (an
ADC offset is not sound: it put a quiet night clip of the corpus at -30.7 dBFS instead of -53.3), so `leq_db_spl`
equals maad's `wav2leq` of the window minus its mean.

On the corpus (first 5 s of each of its 347 recordings), NDSI has a median of 0.42 on natural recordings (p10 -0.60,
p90 0.98; 248 files), -0.30 on industrial ones (p10 -0.73, p90 0.23; 61) and 0.03 on the others (38): it leans the
right way but does not separate the groups on its own: of the 40 natural recordings lowest in NDSI, 21 are focal
birds with low calls (ducks, geese, eiders, doves, cormorants, a turkey, owls), the rest crows, thunder, wind, waves,
frogs and insects.

A window with fewer than `MIN_FRAMES` spectrogram frames (a file's short tail) or digital silence (peak under one
16-bit step: entropies and ratios of zeros mean nothing) has no indices (None). Cost: `soundmond.config.IndicesConfig`.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import numpy.typing as npt

from soundmond.data import AcousticIndices

FFT_SIZE = 1024
HOP = FFT_SIZE // 2
MIN_FRAMES = 3  # ACI needs two frames to take a difference; one more so that a 1-frame tail never counts
ENVELOPE_FRAME = 512  # temporal entropy: max |s| per 512 samples (maad's "fast" envelope, Nt=512)

NDSI_BIOPHONY_HZ = (2000.0, 8000.0)
NDSI_ANTHROPHONY_HZ = (1000.0, 2000.0)
ADI_FMAX_HZ = 10000.0
ADI_BIN_HZ = 1000.0
ADI_DB_THRESHOLD = -50.0
BI_BAND_HZ = (2000.0, 8000.0)

DIGITAL_SILENCE_PEAK = 1.0 / 32768.0
_MIN = sys.float_info.min  # maad's _MIN_: what a zero becomes before a log


def spectrogram(samples: npt.NDArray[np.floating], rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude spectrogram [frequency rows, frames] and the row frequencies, as `maad.sound.spectrogram` makes it
    with mode="amplitude", window="hann", nperseg=FFT_SIZE, noverlap=FFT_SIZE // 2 (see the module docstring)."""
    x = np.asarray(samples, dtype=np.float64)
    n_frames = len(x) // HOP - 1
    if n_frames < 1:
        return np.zeros((FFT_SIZE // 2, 0)), np.fft.rfftfreq(FFT_SIZE, 1.0 / rate_hz)[:-1]
    frames = np.lib.stride_tricks.sliding_window_view(x, FFT_SIZE)[::HOP][:n_frames]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(FFT_SIZE) / FFT_SIZE)  # periodic Hann (scipy's "hann")
    frames = (frames - frames.mean(axis=1, keepdims=True)) * window
    scale = math.sqrt(2.0 / (FFT_SIZE * float(np.sum(window**2))))
    amplitude = np.abs(np.fft.rfft(frames, axis=1)).T * scale
    return amplitude[:-1], np.fft.rfftfreq(FFT_SIZE, 1.0 / rate_hz)[:-1]


def entropy(x: np.ndarray) -> float:
    """`maad.util.entropy` of a non-negative vector: Shannon entropy of x / sum(x), divided by log(len(x))."""
    n = x.shape[0]
    if n <= 1:
        return 0.0
    if not x.any():
        return 1.0
    pmf = x / np.sum(x)
    pmf = np.where(pmf == 0, _MIN, pmf)
    return float(-np.sum(pmf * np.log(pmf)) / math.log(n))


def band(fn: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """`maad.util.index_bw`: the rows from the one nearest `lo` to the one nearest `hi`, both included."""
    lo_f = fn[np.abs(fn - lo).argmin()]
    hi_f = fn[np.abs(fn - hi).argmin()]
    return (fn >= lo_f) & (fn <= hi_f)


def amplitude_db(x: np.ndarray) -> np.ndarray:
    """`maad.util.amplitude2dB`: 20 log10 |x|, zeros as the smallest float."""
    x = np.abs(x)
    return 20.0 * np.log10(np.where(x == 0, _MIN, x))


def band_scores(amplitude: np.ndarray, fn: np.ndarray, fmax_hz: float) -> np.ndarray:
    """Share of frames above ADI_DB_THRESHOLD (dB re the loudest cell) per ADI_BIN_HZ band from 0 to `fmax_hz`."""
    db = amplitude_db(amplitude / np.max(amplitude))
    n = int(math.floor(fmax_hz / ADI_BIN_HZ))
    scores = np.empty(n)
    for i in range(n):
        f0 = int(ADI_BIN_HZ * i)
        rows = band(fn, f0, int(f0 + ADI_BIN_HZ))
        scores[i] = np.mean(np.sum(db[rows] >= ADI_DB_THRESHOLD, axis=0) / rows.sum())
    return scores


def gini(x: np.ndarray) -> float:
    """`maad.features.alpha_indices._gini` (uncorrected)."""
    if np.sum(x) == 0:
        return 0.0
    n = len(x)
    s = np.sort(x)
    g = np.sum(s * np.arange(1, n + 1))
    return float((2.0 * g / np.sum(s) - (n + 1)) / n)


def ndsi(power: np.ndarray, fn: np.ndarray) -> float:
    """`maad.features.soundscape_index(..., R_compatible="soundecology")` with the NDSI bands: 1-kHz bins (the width
    of the anthrophony band) of the power spectrogram, each the mean of its rows times the mean row count."""
    step = NDSI_ANTHROPHONY_HZ[1] - NDSI_ANTHROPHONY_HZ[0]
    edges = np.arange(fn[0], fn[-1] + step, step)
    means, counts = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        rows = (fn >= lo) & (fn < hi)
        counts.append(int(rows.sum()))
        means.append(power[rows].mean(axis=0) if rows.any() else np.full(power.shape[1], np.nan))
    binned = np.asarray(means) * float(np.mean(counts))
    starts = edges[:-1]
    bio = float(np.sum(binned[band(starts, *NDSI_BIOPHONY_HZ)]))
    anthro = float(np.sum(binned[band(starts, *NDSI_ANTHROPHONY_HZ)]))
    total = bio + anthro
    return (bio - anthro) / total if total > 0 else math.nan


def bioacoustic_index(amplitude: np.ndarray, fn: np.ndarray) -> float:
    """`maad.features.bioacoustics_index(..., R_compatible="soundecology")` over BI_BAND_HZ (its top row is the one
    nearest 8 kHz: the last row under a lower Nyquist frequency)."""
    rows = band(fn, *BI_BAND_HZ)
    mean_db = amplitude_db(np.mean(amplitude / np.max(amplitude), axis=1))
    inside = mean_db[rows] - np.min(mean_db[rows])
    return float(np.sum(inside) / (fn[1] - fn[0]))


def top_band_hz(rate_hz: float, wanted_hz: float, step_hz: float) -> float:
    """`wanted_hz`, or the highest multiple of `step_hz` under the Nyquist frequency if that is lower."""
    return min(wanted_hz, math.floor(rate_hz / 2.0 / step_hz) * step_hz)


def compute(samples: npt.NDArray[np.floating], rate_hz: int, calibration_db: float | None = None
            ) -> AcousticIndices | None:
    """Every index of one window of mono samples in [-1, 1] (see the module docstring); None when the window is too
    short for MIN_FRAMES spectrogram frames or is digital silence (once any DC offset is removed: a constant is no
    sound, and its indices would be junk, e.g. leq_dbfs -3076 and entropies of 1)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return None
    sound = x - x.mean()  # without DC: an offset is no sound
    if float(np.max(np.abs(sound))) < DIGITAL_SILENCE_PEAK:
        return None
    amplitude, fn = spectrogram(x, rate_hz)
    if amplitude.shape[1] < MIN_FRAMES or len(x) < ENVELOPE_FRAME:
        return None
    power = amplitude**2
    row_sums = np.sum(amplitude, axis=1)
    changes = np.sum(np.abs(np.diff(amplitude, axis=1)), axis=1)
    # a row of zeros (nothing at that frequency in the whole window) adds 0, where maad's division gives NaN
    aci = float(np.sum(np.divide(changes, row_sums, out=np.zeros_like(changes), where=row_sums > 0)))
    scores = band_scores(amplitude, fn, top_band_hz(rate_hz, ADI_FMAX_HZ, ADI_BIN_HZ))
    adi = float(entropy(scores) * math.log(len(scores))) if len(scores) > 1 else 0.0
    n_env = len(x) // ENVELOPE_FRAME
    envelope = np.max(np.abs(x[: n_env * ENVELOPE_FRAME].reshape(n_env, ENVELOPE_FRAME)), axis=1)
    hf = entropy(np.mean(power, axis=1))
    ht = entropy(envelope**2)
    leq = 10.0 * math.log10(max(float(np.mean(np.square(sound))), _MIN))
    return AcousticIndices(
        ndsi=ndsi(power, fn),
        aci=aci,
        adi=adi,
        aei=gini(scores),
        bi=bioacoustic_index(amplitude, fn),
        hf=hf,
        ht=ht,
        h=hf * ht,
        leq_dbfs=leq,
        leq_db_spl=leq + calibration_db if calibration_db is not None else None,
    )
