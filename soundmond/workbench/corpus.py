"""Labelled clips for head training, and which clips belong together (the CV grouping).

`read_corpus`: the corpus's `labels.csv` -> clips with their group (natural / industrial / other), the *source
recording* each clip came from (`source_group`: the CV grouping; clips of one recording never straddle folds) and a
stricter *session* (`session_group`: same machine / same site and day; a secondary, pessimistic figure).

Grouping rules (`source_group`, per corpus source: clips from one source recording never split across folds):
- ESC-50 (`original_id` "freesound:<id> take A/B/..."): the freesound clip id. Takes A, B, C of one freesound clip
  are excerpts of one recording and stay together.
- DCASE2020 Task 2 machines (`dcase2020t2_machine_*`): the source file (`source_path`). Every DCASE clip is its own
  10-s recording file (normal_id_00_00000003.wav, anomaly_id_00_00000000.wav, ...), taken from one machine (id_00).
- Xeno-canto (`original_id` "XC<n>"): the XC number (one recording each).
- scikit-maad Jura soundscapes, opensoundscape, whisp, BirdNET-Analyzer: the source repository's file
  (`source_repo:source_path`); the Jura files are separate recordings made at different times of one day.
  A long recording cut into several excerpts would share that file and stay together.
- Anything else: the corpus file.
The stricter `session_group` (reported as a secondary figure, never used for selection):
- DCASE: the machine id (all 14 clips are machine id_00: one group).
- scikit-maad Jura: recorder + day (all S4A03895 files of 2019-05-22, day and night: one group).
- whisp field recordings: one group (one author's field recordings).
- ESC-50: freesound ids of one category within 10 of each other (likely one uploader's session, e.g. 50454 / 50455).
- Otherwise the source recording.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from soundmond.data import GROUPS
from soundmond.identity import file_sha256
from soundmond.workbench.audio_hash import audio_sha256
from soundmond.workbench.labels import LabelsError, read_label_rows


class CorpusError(LabelsError):
    """The corpus is missing or its labels file is unusable."""


@dataclass(frozen=True)
class Clip:
    path: Path
    file: str  # as in labels.csv
    group: str
    category: str
    source: str  # source recording: clips with the same source stay in one CV fold
    session: str = ""  # stricter grouping (same machine / site and day), for the secondary figure
    dataset: str = ""  # source data set (`source_dataset`): the unit held out by the source-held-out CV


_FREESOUND = re.compile(r"freesound:(\d+)")
_XENO_CANTO = re.compile(r"^(XC\d+)\b", re.IGNORECASE)
_DCASE_ID = re.compile(r"(id_\d+)")
_MAAD_DAY = re.compile(r"(S4A\d+)_(\d{8})_\d{6}")


def _is_dcase(row: Mapping[str, str]) -> bool:
    return "dcase" in row.get("file", "").lower()


def source_group(row: Mapping[str, str]) -> str:
    """The recording a clip came from, for grouped CV (rules per corpus source in the module docstring)."""
    original = (row.get("original_id") or "").strip()
    if match := _FREESOUND.search(original):
        return f"freesound:{match.group(1)}"
    if match := _XENO_CANTO.match(original):
        return match.group(1).upper()
    if _is_dcase(row):
        # each DCASE clip is its own recording file; the machine is the stricter `session_group`
        if row.get("source_path"):
            return f"dcase:{row['source_path']}"
        return f"dcase:{Path(row['file']).name}"
    if original:
        return original
    if row.get("source_repo") and row.get("source_path"):
        return f"{row['source_repo']}:{row['source_path']}"
    return row.get("file", "")


ESC50 = "esc50"


def source_dataset(row: Mapping[str, str]) -> str:
    """The data set a clip came from (what a new site would be): "esc50" (freesound ids), "dcase2020t2" (the DCASE
    machines), "xeno-canto" (XC numbers), else the source repository's name (scikit-maad, whisp, opensoundscape,
    BirdNET-Analyzer), else "other". The unit the source-held-out CV holds out whole (ESC-50 is split by recording)."""
    original = (row.get("original_id") or "").strip()
    if _FREESOUND.search(original):
        return ESC50
    if _XENO_CANTO.match(original):
        return "xeno-canto"
    if _is_dcase(row):
        return "dcase2020t2"
    if repo := (row.get("source_repo") or "").strip():
        return repo.rsplit("/", 1)[-1]
    return (row.get("source") or "").strip() or "other"


def session_group(row: Mapping[str, str], esc50_sessions: Mapping[str, str] | None = None) -> str:
    """A stricter grouping than the source recording: same machine, same recorder and day, same field session."""
    name = row.get("file", "")
    if _is_dcase(row):
        match = _DCASE_ID.search(name)
        return f"dcase-machine:{match.group(1) if match else 'unknown'}"
    if match := _MAAD_DAY.search(row.get("source_path", "")):
        return f"maad:{match.group(1)}:{match.group(2)}"
    if row.get("source_repo") == "aquietlife/whisp":
        return "whisp:field_recordings"
    source = source_group(row)
    if esc50_sessions is not None and source in esc50_sessions:
        return esc50_sessions[source]
    return source


def esc50_sessions(rows: Sequence[Mapping[str, str]], max_gap: int = 10) -> dict[str, str]:
    """freesound source -> session: ids of one category within `max_gap` of each other chain into one session."""
    by_category: dict[str, list[int]] = {}
    for row in rows:
        if match := _FREESOUND.search(row.get("original_id") or ""):
            by_category.setdefault(row.get("category", ""), []).append(int(match.group(1)))
    sessions: dict[str, str] = {}
    for category, ids in by_category.items():
        start = prev = -(10**9)
        for fid in sorted(set(ids)):
            if fid - prev > max_gap:
                start = fid
            sessions[f"freesound:{fid}"] = f"freesound-session:{category}:{start}"
            prev = fid
    return sessions


def read_corpus(corpus: Path) -> list[Clip]:
    """Every clip of the corpus's labels.csv; any unusable row stops (the corpus is curated: nothing is skipped)."""
    labels = corpus / "labels.csv"
    if not labels.is_file():
        raise CorpusError(f"{labels} not found", "the corpus is expected beside the project checkout "
                          "(../shared/data/corpus); pass --corpus DIR")
    try:
        rows = read_label_rows(labels, corpus, one_of=("group",))
    except LabelsError as exc:
        raise CorpusError(exc.problem, exc.hint) from exc
    sessions = esc50_sessions([r.columns for r in rows])
    clips = []
    for row in rows:
        if row.group not in GROUPS:
            raise CorpusError(f"{labels}: {row.file}: group {row.group!r} is not one of {GROUPS}")
        if not row.audio_exists:
            raise CorpusError(f"{row.path} is listed in labels.csv but missing")
        clips.append(Clip(row.path, row.file, row.group, row.category, source_group(row.columns),
                          session_group(row.columns, sessions), source_dataset(row.columns)))
    if not clips:
        raise CorpusError(f"{labels} lists no clips")
    return clips


def training_files_sha256(clips: Sequence[Clip]) -> dict[str, str]:
    """Every training clip's content hash (sha256 of the file's bytes), by its name in the labels: recorded with a
    head so that `evaluate` can tell which evaluated files the head saw, wherever they are stored."""
    return {clip.file: file_sha256(clip.path) for clip in clips}


def training_audio_sha256(clips: Sequence[Clip]) -> dict[str, str]:
    """Every training clip's audio hash (`soundmond.workbench.audio_hash.audio_sha256`: sample rate, channels and the
    decoded samples), by its name in the labels: recorded with a head beside `training_files_sha256`, so that
    `evaluate` also recognises a training clip stored in another container (a WAV of a FLAC clip)."""
    return {clip.file: audio_sha256(clip.path) for clip in clips}


def training_data_sha256(corpus: Path, clips: Sequence[Clip]) -> str:
    """The corpus head's training-data checksum: labels.csv and every clip's file (what `evaluate` compares)."""
    digest = hashlib.sha256((corpus / "labels.csv").read_bytes())
    for clip in clips:
        digest.update(f"{clip.file}:{file_sha256(clip.path)}\n".encode())
    return digest.hexdigest()


__all__ = ["ESC50", "Clip", "CorpusError", "esc50_sessions", "source_dataset", "training_audio_sha256",
           "training_files_sha256",
           "read_corpus", "session_group", "source_group",
           "training_data_sha256"]
