"""The audio behind a species row of `soundmond report`: where the spectrogram thumbnail and the audio player come from.

Two sources, kept apart on purpose:

- `SourceAudio` reads the best detection's window back from its recording, when the window's `source` is an audio
  file that is still readable on this machine (a file replay or `analyze --store`). A live station's windows have
  `source = mic:<device>`: nothing to read back, so no thumbnail (the page says so).
- `EvidenceClips` finds the saved evidence clip of a species' best detection. `StoredEvidenceClips` reads the store's
  `evidence` table (written clips of detections) and finds the file under the station's `evidence.path` (`report
  --evidence DIR`), checked against the SHA-256 the store holds; `NoEvidenceClips` is used without `--evidence` and
  says why there is no player. The page copies a found clip beside itself and adds an `<audio controls>` player. The
  audio player is never made from the source recording: a report links only what the station chose to keep.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import soundfile as sf

from soundmond.capture.audio import resample, to_mono
from soundmond.identity import file_sha256
from soundmond.models.features import kaldi_mel_filters

THUMB_RATE_HZ = 32000  # BirdNET's rate: the spectrogram shows up to 16 kHz
THUMB_FFT = 1024
THUMB_HOP = 256
THUMB_MELS = 96


class EvidenceClips(Protocol):
    def clip_for(self, window_id: str, scientific_name: str) -> Path | None:
        """The saved evidence clip of the species' detection in `window_id`, or None when the station kept none."""
        ...


class NoEvidenceClips:
    """No audio player (`report` without `--evidence`); `reason` is what the page says."""

    def __init__(self, reason: str = "give --evidence DIR (the station's evidence.path) for an audio player") -> None:
        self.reason = reason

    def clip_for(self, window_id: str, scientific_name: str) -> Path | None:
        return None


class StoredEvidenceClips:
    """The written clips of a store's `evidence` table, found under `root` (the station's `evidence.path`) and checked
    against their SHA-256: a clip deleted or changed since is not played (counted in `missing`)."""

    def __init__(self, conn: sqlite3.Connection, root: Path) -> None:
        self._conn = conn
        self.root = root
        self.missing = 0
        self.reason = f"the evidence clip of the best detection, from {root}"

    def clip_for(self, window_id: str, scientific_name: str) -> Path | None:
        try:
            row = self._conn.execute(
                "SELECT path, sha256 FROM evidence WHERE kind = 'detection' AND status = 'written' AND window_id = ? "
                "AND label = ?", (window_id, scientific_name)).fetchone()
        except sqlite3.OperationalError:  # a store from before evidence clips (schema < 7)
            return None
        if row is None:
            return None
        path = self.root / row[0]
        if not path.is_file() or file_sha256(path) != row[1]:
            self.missing += 1
            return None
        return path


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
