"""What a head saw, for `soundmond evaluate` (`soundmond.workbench.evaluate`): which evaluated files it was trained on.

A head records its training files twice (`HeadMeta`, or the `data` block of the .json report beside it when that
report is this head's, same training-data checksum): `training_files_sha256` (sha256 of each file's bytes) and
`training_audio_sha256` (`soundmond.workbench.audio_hash.audio_sha256`: sample rate, channels and the decoded
samples). An evaluated file is in-sample when its bytes' sha256 is among the first (`"bytes"`), else when its audio
hash is among the second (`"audio"`: the same audio in another container, e.g. the WAV of a corpus FLAC clip). A head
trained before audio hashes has none: then only the bytes decide, and a re-encoded copy counts as unseen (the report
says so). A resampled, gain-changed or cut copy is other audio under both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

from soundmond.head.meta import HEAD_CLASSES
from soundmond.identity import file_sha256
from soundmond.workbench.audio_hash import audio_sha256

BYTES, AUDIO = "bytes", "audio"


@dataclass(frozen=True)
class TrainingHashes:
    """The hashes of a head's training files: of their bytes and (heads trained since it exists) of their audio."""

    files: frozenset[str]
    audio: frozenset[str]

    def match(self, path: Path) -> str | None:
        """How `path` is known to be a training file: "bytes", "audio" (its bytes differ, its audio does not) or
        None (not trained on). An undecodable file has no audio hash (its bytes may still match)."""
        if file_sha256(path) in self.files:
            return BYTES
        if self.audio:
            try:
                if audio_sha256(path) in self.audio:
                    return AUDIO
            except (sf.LibsndfileError, RuntimeError, OSError):
                return None
        return None

    def basis(self) -> str:
        """`in_sample_basis`: what decided."""
        if self.audio:
            return (f"sha256 of each file's bytes, else of its decoded audio (sample rate, channels, float64 "
                    f"samples: a re-encoded copy of a training file counts as seen), against the head's training files "
                    f"({len(self.files)} byte hashes, {len(self.audio)} audio hashes recorded)")
        return (f"sha256 of each file's bytes against the head's training files ({len(self.files)} recorded); the "
                "head records no audio hashes (trained before them), so a re-encoded copy of a training file counts "
                "as unseen")


def _hashes(recorded: object) -> frozenset[str]:
    return frozenset(str(v) for v in recorded.values()) if isinstance(recorded, Mapping) else frozenset()


def training_hashes(head: Any) -> TrainingHashes | None:
    """The hashes of the files `head` was trained on: its meta's `training_files_sha256` / `training_audio_sha256`,
    each missing one taken from the report beside it (`<head>.json`, `data`) when that report is this head's (same
    training-data checksum); None when it records no training files (then the labels-file checksum decides)."""
    files = _hashes(getattr(head.meta, "training_files_sha256", None))
    audio = _hashes(getattr(head.meta, "training_audio_sha256", None))
    if not files or not audio:
        try:
            data = json.loads(Path(head.path).with_suffix(".json").read_text()).get("data", {})
        except (OSError, ValueError, AttributeError):
            data = None
        if isinstance(data, dict) and data.get("training_data_sha256") == head.meta.training_data_sha256:
            files = files or _hashes(data.get("training_files_sha256"))
            audio = audio or _hashes(data.get("training_audio_sha256"))
    return TrainingHashes(files, audio) if files or audio else None


def part_metrics(y_true: npt.NDArray[np.str_], predicted: npt.NDArray[np.str_], files: int) -> dict[str, Any]:
    """Accuracy figures of one part (in-sample or out-of-sample windows): None where the part has no such windows."""
    recalls = {g: float(np.mean(predicted[y_true == g] == g)) for g in HEAD_CLASSES if (y_true == g).any()}
    return {
        "files": files,
        "windows": int(y_true.size),
        "accuracy_3class": float(np.mean(predicted == y_true)) if y_true.size else None,
        "recall": recalls,
        "balanced_accuracy_3class": float(np.mean(list(recalls.values()))) if recalls else None,
        "natural_vs_industrial_balanced_accuracy": (
            (recalls["natural"] + recalls["industrial"]) / 2 if {"natural", "industrial"} <= set(recalls) else None),
    }


def in_sample_figures(
    seen: TrainingHashes, file_by: Mapping[str, str | None], window_files: list[str],
    y_true: npt.NDArray[np.str_], predicted: npt.NDArray[np.str_],
) -> dict[str, Any]:
    """`in_sample` (true / false / "partial"), its basis, the counts (`in_sample_files`, with the files known by
    their audio only) and the figures of each part, for the scored windows (`window_files`: each window's file)."""
    in_rows = np.array([file_by[f] is not None for f in window_files], dtype=bool)
    n_in = sum(v is not None for v in file_by.values())
    by_audio = sorted(f for f, v in file_by.items() if v == AUDIO)
    return {
        "in_sample": True if n_in == len(file_by) else False if n_in == 0 else "partial",
        "in_sample_basis": seen.basis(),
        "in_sample_files": {"in": n_in, "out": len(file_by) - n_in,
                            "files_in": sorted(f for f, v in file_by.items() if v is not None),
                            "by_audio": len(by_audio), "files_by_audio": by_audio},
        "in_sample_part": part_metrics(y_true[in_rows], predicted[in_rows], n_in),
        "out_of_sample_part": part_metrics(y_true[~in_rows], predicted[~in_rows], len(file_by) - n_in),
    }


__all__ = ["AUDIO", "BYTES", "TrainingHashes", "in_sample_figures", "part_metrics", "training_hashes"]
