"""Recordings for replay tests: copies of the fixtures with content of their own.

A replay recognises recordings by their bytes, so a plain copy of a file is the same recording (skipped). Load tests
that need more audio than the fixtures hold re-encode them with the copy number in the FLAC comment: the same sound,
other bytes, so each copy is a recording of its own.
"""

from __future__ import annotations

from pathlib import Path

import soundfile as sf


def distinct_copy(src: Path, dst: Path, tag: str) -> Path:
    data, rate = sf.read(str(src), dtype="float32", always_2d=True)
    with sf.SoundFile(str(dst), "w", samplerate=rate, channels=data.shape[1], format="FLAC", subtype="PCM_16") as f:
        f.comment = f"soundmond test copy {tag}"
        f.write(data)
    return dst


def distinct_copies(fixture_audio: Path, folder: Path, copies: int, first: int = 0) -> Path:
    """`copies` copies of every fixture recording in `folder`, numbered from `first` (each a recording of its own)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(first, first + copies):
        for f in sorted(fixture_audio.glob("*.flac")):
            distinct_copy(f, folder / f"{i:02d}_{f.name}", str(i))
    return folder
