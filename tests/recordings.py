"""Recordings for replay tests: copies of the fixtures with content of their own.

A replay recognises recordings by their bytes, so a plain copy of a file is the same recording (skipped). Load tests
that need more audio than the fixtures hold re-encode them with the copy number in the FLAC comment: the same sound,
other bytes, so each copy is a recording of its own.
"""

from __future__ import annotations

from pathlib import Path

from soundmond.speed.audio import distinct_copy


def distinct_copies(fixture_audio: Path, folder: Path, copies: int, first: int = 0) -> Path:
    """`copies` copies of every fixture recording in `folder`, numbered from `first` (each a recording of its own)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(first, first + copies):
        for f in sorted(fixture_audio.glob("*.flac")):
            distinct_copy(f, folder / f"{i:02d}_{f.name}", f"test {i}")
    return folder
