"""The full benchmark's pipeline files: files spread over the corpus plus some of its quiet recordings (for the RMS
gate lever). Windows, corpus folders and `--source` folders: `soundmond.speed.audio`."""

from __future__ import annotations

import csv
from pathlib import Path

from soundmond.speed.audio import audio_folder, corpus_files, pick_files


def pipeline_files(corpus: Path | None, count: int, quiet: int = 2) -> list[Path]:
    """`count` files spread over the corpus plus up to `quiet` of its quiet background recordings (for the gate)."""
    folder, _ = audio_folder(corpus)
    files = pick_files(corpus_files(folder), count)
    if folder is None:
        return files
    labels = folder / "labels.csv"
    if labels.is_file() and quiet:
        with open(labels, newline="", encoding="utf-8") as fh:
            quiet_files = [folder / r["file"] for r in csv.DictReader(fh) if r.get("category") == "quiet_background"]
        files += [f for f in quiet_files[:quiet] if f not in files and f.is_file()]
    return files
