"""The audio hash: what a recording *sounds like*, independent of how it is stored.

`audio_sha256(path)` is the SHA-256 of
    b"soundmond-audio-sha256-v2\n" + f"{sample rate}:{channels}\n" (ASCII) + every frame's samples,
decoded by soundfile as float64 (channels interleaved, little-endian, in file order). soundfile scales an integer
format to [-1, 1) by a power of two (a 16-bit sample s becomes s / 32768), which float64 holds exactly, and reads a
float file as it is stored; so a 16-bit FLAC, a 16-bit WAV and a 32-bit float WAV of the same samples hash the same
(and the 24-bit ones), while the file's byte sha256 (`soundmond.identity.file_sha256`) differs. Other audio (another
sample rate, a gain change, a resampled copy, another channel count, a cut) hashes differently. A lossy file (MP3,
Ogg) hashes its decoder's output: a re-encoding is other audio. (v1 decoded as int32, which libsndfile does not scale
for float files: every float WAV of near-full-scale audio read as zeros and hashed alike.)

Heads record it for every training file (`HeadMeta.training_audio_sha256`, written by `training_audio_sha256` in
`soundmond.workbench.corpus`), so that `soundmond evaluate` recognises a head's own training audio stored in another
container (the corpus's FLAC copies of ESC-50's WAVs). The file is read in blocks: a long recording never sits whole
in memory. Raises `soundfile.LibsndfileError` (or `RuntimeError` / `OSError`) when the file cannot be decoded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import soundfile as sf

AUDIO_HASH_VERSION = b"soundmond-audio-sha256-v2\n"
BLOCK_FRAMES = 1 << 16


def audio_sha256(path: Path | str) -> str:
    """SHA-256 of the decoded audio: sample rate, channel count and float64 samples (see the module docstring)."""
    digest = hashlib.sha256(AUDIO_HASH_VERSION)
    with sf.SoundFile(str(path)) as f:
        digest.update(f"{f.samplerate}:{f.channels}\n".encode("ascii"))
        for block in f.blocks(blocksize=BLOCK_FRAMES, dtype="float64", always_2d=True):
            digest.update(np.ascontiguousarray(block, dtype="<f8").tobytes())
    return digest.hexdigest()


__all__ = ["AUDIO_HASH_VERSION", "audio_sha256"]
