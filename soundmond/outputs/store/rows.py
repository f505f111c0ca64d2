"""Between the stage dataclasses and the store's rows: the outbox item and row, the column tuples, and back.

The window and detection columns come from `records.window_record` at full precision (`records.STORED`), so the
store, `soundmond analyze` and MQTT serialise a window in one place.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from soundmond.data import (
    GROUPS,
    INDEX_NAMES,
    AcousticIndices,
    Alert,
    AlertType,
    ChunkDetection,
    GroupPrediction,
    LabelScore,
    SpeciesScore,
    WindowResult,
)
from soundmond.outputs.records import STORED, alert_record, window_record

ALERT_KIND = "alert"

WINDOW_COLUMNS = (
    'window_id, source, start_unix_s, start_s, end_s, status, error, "group", p_natural, p_industrial, p_other, '
    "tagger_top, tagger_top_score, bird_top_score, rms_dbfs, clipped_fraction, compute_ms, stored_unix_s, "
    + ", ".join(INDEX_NAMES)
)
DETECTION_COLUMNS = ("window_id, rank, scientific_name, common_name, confidence, occurrence, start_unix_s, "
                     "chunk_start_s, chunk_end_s, chunk_start_unix_s, chunk_end_unix_s")
ALERT_COLUMNS = "alert_id, type, key, severity, ts_unix_s, message, evidence"


@dataclass(frozen=True)
class OutboxItem:
    """A message to publish, handed to the store with the data it describes."""

    kind: str  # "alert", "detection", "window", "soundscape", ...; only "alert" is never dropped
    event_id: str  # unique per event (alerts: the alert_id), lets subscribers de-duplicate replays
    payload: dict[str, Any]  # stored as JSON (non-finite floats become null, numpy scalars plain numbers)
    qos: int = 1

    def __post_init__(self) -> None:
        if not self.kind:
            raise ValueError("OutboxItem.kind must not be empty")
        if self.qos not in (0, 1, 2):
            raise ValueError(f"OutboxItem.qos must be 0, 1 or 2, not {self.qos!r}")


@dataclass(frozen=True)
class OutboxRow:
    """A pending outbox row as the publisher sees it; `id` is the replay order."""

    id: int
    kind: str
    event_id: str
    payload: str  # JSON text, published as is
    qos: int
    created_unix_s: float
    attempts: int


@dataclass(frozen=True)
class SavedState:
    """What a stage remembers across restarts (table `engine_state`): one JSON value per name, replaced whole on every
    save. The store does not read inside it (the alert engine's is `soundscape.alert_state.EngineState.to_dict()`)."""

    name: str  # "alerts": the alert engine
    saved_unix_s: float
    state: Any  # JSON types only


def clean(obj: Any) -> Any:
    """A JSON-safe copy: non-finite floats -> None (strict JSON has no NaN), numpy values -> Python values."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return clean(obj.item())
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset, deque)):
        return [clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} as JSON")


def dumps(obj: Any) -> str:
    """Compact strict JSON of `clean(obj)`: what the store's JSON columns hold."""
    return json.dumps(clean(obj), allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def _float_or_nan(v: float | None) -> float:
    """SQLite stores NaN as NULL; a NULL measurement comes back as NaN (unknown), never as a made-up number."""
    return math.nan if v is None else float(v)


def window_row(r: WindowResult, stored_unix_s: float) -> tuple[Any, ...]:
    """The `windows` columns (WINDOW_COLUMNS order) of one result."""
    rec = window_record(r, STORED)
    probs = rec["probabilities"] or {}
    return (
        rec["window_id"],
        rec["source"],
        rec["start_unix_s"],
        rec["start_s"],
        rec["end_s"],
        rec["status"],
        rec["error"],
        rec["group"],
        *(probs.get(g) for g in GROUPS),
        dumps([[t["label"], t["score"]] for t in rec["tagger_top"]]),
        rec["tagger_top_score"],
        rec["bird_top_score"],
        rec["rms_dbfs"],
        rec["clipped_fraction"],
        rec["compute_ms"],
        float(stored_unix_s),
        *(rec["indices"] or dict.fromkeys(INDEX_NAMES)).values(),
    )


def detection_rows(r: WindowResult) -> list[tuple[Any, ...]]:
    """The `detections` rows (DETECTION_COLUMNS order) of one result, rank = position in `species`, with the
    species' best chunk (None where the result has no chunk for it)."""
    rec = window_record(r, STORED)
    best = r.best_chunks()
    rows = []
    for rank, s in enumerate(rec["species"]):
        chunk = best.get(s["scientific_name"])
        where = (None, None, None, None) if chunk is None else (
            float(chunk.start_s), float(chunk.end_s), float(chunk.start_unix_s), float(chunk.end_unix_s))
        rows.append((rec["window_id"], rank, s["scientific_name"], s["common_name"], s["confidence"],
                     s["occurrence"], rec["start_unix_s"], *where))
    return rows


def alert_row(a: Alert) -> tuple[Any, ...]:
    """The `alerts` row (ALERT_COLUMNS order); `type` is AlertType's stable name."""
    rec = alert_record(a)
    return (rec["alert_id"], rec["type"], rec["key"], rec["severity"], float(a.ts_unix_s), rec["message"],
            dumps(rec["evidence"]))


def alert_from_row(row: sqlite3.Row | Mapping[str, Any]) -> Alert:
    """The Alert an `alerts` row holds (`alert_row` undone: `evidence` decoded, the stored id kept)."""
    return Alert(AlertType(row["type"]), row["key"], row["severity"], float(row["ts_unix_s"]), row["message"],
                 json.loads(row["evidence"]), row["alert_id"])


def results_from_rows(windows: Iterable[sqlite3.Row] | Iterable[Mapping[str, Any]],
                      detections: Iterable[sqlite3.Row] | Iterable[Mapping[str, Any]]) -> list[WindowResult]:
    """WindowResults rebuilt from `windows` rows and their `detections` rows (ordered by window_id, rank): rows of a
    store, or the same columns read elsewhere (a Parquet dataset, `soundmond.batch.into_store`). The store
    keeps each species' best chunk only: a rebuilt result's `detections` hold those (chunk start order, then best
    first)."""
    species: dict[str, list[SpeciesScore]] = {}
    chunks: dict[str, list[ChunkDetection]] = {}
    for d in detections:
        species.setdefault(d["window_id"], []).append(
            SpeciesScore(d["scientific_name"], d["common_name"], _float_or_nan(d["confidence"]), d["occurrence"])
        )
        if d["chunk_start_s"] is not None:
            chunks.setdefault(d["window_id"], []).append(ChunkDetection(
                d["scientific_name"], d["common_name"], _float_or_nan(d["confidence"]), d["chunk_start_s"],
                d["chunk_end_s"], d["chunk_start_unix_s"], d["chunk_end_unix_s"], d["occurrence"]))
    out = []
    for w in windows:
        group = None
        if w["group"] is not None:
            probs = {g: w[f"p_{g}"] for g in GROUPS if w[f"p_{g}"] is not None}
            group = GroupPrediction(w["group"], {g: float(p) for g, p in probs.items()})
        tagger_top: Sequence[Sequence[Any]] = json.loads(w["tagger_top"])
        out.append(
            WindowResult(
                window_id=w["window_id"],
                source=w["source"],
                start_unix_s=w["start_unix_s"],
                start_s=w["start_s"],
                end_s=w["end_s"],
                group=group,
                tagger_top=tuple(LabelScore(label, _float_or_nan(score)) for label, score in tagger_top),
                tagger_top_score=_float_or_nan(w["tagger_top_score"]),
                species=tuple(species.get(w["window_id"], ())),
                bird_top_score=_float_or_nan(w["bird_top_score"]),
                rms_dbfs=_float_or_nan(w["rms_dbfs"]),
                clipped_fraction=_float_or_nan(w["clipped_fraction"]),
                compute_ms=_float_or_nan(w["compute_ms"]),
                status=w["status"],
                error=w["error"],
                detections=tuple(sorted(chunks.get(w["window_id"], ()), key=lambda c: (c.start_s, -c.confidence))),
                indices=_indices(w),
            )
        )
    return out


def _indices(w: sqlite3.Row | Mapping[str, Any]) -> AcousticIndices | None:
    """A stored window's indices; None when it has none (its `leq_dbfs` is NULL)."""
    keys = w.keys()
    if "leq_dbfs" not in keys or w["leq_dbfs"] is None:
        return None
    values = {name: _float_or_nan(w[name]) for name in INDEX_NAMES if name != "leq_db_spl"}
    spl = w["leq_db_spl"]
    return AcousticIndices(**values, leq_db_spl=None if spl is None else float(spl))
