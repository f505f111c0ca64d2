"""The audio behind a species row of `soundmond report`: where the spectrogram thumbnail and the audio player come from.

Two sources, kept apart on purpose:

- `SourceAudio` reads the best detection's window back from its recording, when the window's `source` is an audio
  file that is still readable on this machine (a file replay or `analyze --store`). A live station's windows have
  `source = mic:<device>`: nothing to read back, so no thumbnail (the page says so).
- `EvidenceClips` is the hook for saved evidence clips. soundmond does not save clips yet (no clip table or folder in
  the store schema), so the only implementation, `NoEvidenceClips`, finds none and the page shows no audio player
  (and says why). When clips are saved, implement `clip_for(window_id)` to return the clip's file (WAV / FLAC / Ogg);
  the page copies it beside itself and adds an `<audio controls>` player. The audio player is never made from
  the source recording: a report should link only what the station chose to keep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import soundfile as sf

from soundmond.capture.audio import resample, to_mono
from soundmond.models.features import kaldi_mel_filters

THUMB_RATE_HZ = 32000  # BirdNET's rate: the spectrogram shows up to 16 kHz
THUMB_FFT = 1024
THUMB_HOP = 256
THUMB_MELS = 96


class EvidenceClips(Protocol):
    def clip_for(self, window_id: str) -> Path | None:
        """The saved evidence clip of `window_id`, or None when the station kept none."""
        ...


class NoEvidenceClips:
    """The store keeps no evidence clips (schema version 4 has no place for them): no audio player."""

    reason = "this store keeps no evidence clips (soundmond does not save them yet)"

    def clip_for(self, window_id: str) -> Path | None:
        return None


class SourceAudio:
    """Reads a window back from its source recording; remembers which sources could not be read."""

    def __init__(self) -> None:
        self.unreadable: dict[str, str] = {}  # source -> why

    def segment(self, source: str, start_s: float, end_s: float) -> tuple[npt.NDArray[np.float32], int] | None:
        """[start_s, end_s) of `source` as mono float32 at THUMB_RATE_HZ, or None (why in `unreadable`)."""
        if source in self.unreadable:
            return None
        path = Path(source)
        if source.startswith("mic:") or not path.is_file():
            self.unreadable[source] = "live capture (no recording kept)" if source.startswith("mic:") else \
                "the recording is not on this machine"
            return None
        try:
            info = sf.info(str(path))
            rate = int(info.samplerate)
            start, stop = int(start_s * rate), int(end_s * rate)
            data, _ = sf.read(str(path), start=start, stop=min(stop, int(info.frames)), dtype="float32",
                              always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            self.unreadable[source] = f"cannot read it ({exc})"
            return None
        if data.shape[0] == 0:
            self.unreadable[source] = "the window lies beyond the end of the recording (file changed?)"
            return None
        mono = to_mono(data)
        if rate != THUMB_RATE_HZ:
            mono = resample(mono, rate, THUMB_RATE_HZ)
        return mono, THUMB_RATE_HZ


def mel_spectrogram(samples: npt.NDArray[np.float32], rate_hz: int) -> npt.NDArray[np.float64]:
    """[THUMB_MELS, frames] log-mel power (dB, 80 dB range) of a short clip, for a thumbnail."""
    if samples.size < THUMB_FFT:
        samples = np.pad(samples, (0, THUMB_FFT - samples.size))
    frames = 1 + (samples.size - THUMB_FFT) // THUMB_HOP
    idx = np.arange(THUMB_FFT)[None, :] + THUMB_HOP * np.arange(frames)[:, None]
    spectrum = np.abs(np.fft.rfft(samples[idx] * np.hanning(THUMB_FFT), axis=1)) ** 2
    mel = spectrum @ kaldi_mel_filters(THUMB_MELS, rate_hz, THUMB_FFT)
    db = 10.0 * np.log10(np.maximum(mel, 1e-12))
    db = np.maximum(db, db.max() - 80.0)
    result: npt.NDArray[np.float64] = db.T
    return result
