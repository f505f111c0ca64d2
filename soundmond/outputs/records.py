"""How a `WindowResult` and an `Alert` are written out: the fields, their rounding and their non-finite values, once.

`window_record(result, precision)` is the one serialiser of a window; every output picks and names its fields from it:

- `soundmond analyze`: `analyze_record` (a JSON line) and `csv_row` (the CSV), precision `ANALYZE`;
- MQTT: `messages.window_payload` and `messages.detection_payload`, precision `MESSAGE`;
- the store: `store.rows.window_row` / `detection_rows` (the columns, and `tagger_top` as JSON), precision `STORED`.

`alert_record(alert)` is the alert as `analyze --summary` prints it; the MQTT alert payload and the store's alert row
take their fields from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from soundmond.data import INDEX_NAMES, AcousticIndices, Alert, ChunkDetection, SpeciesScore, WindowResult


@dataclass(frozen=True)
class Precision:
    """Decimal digits kept per quantity (None: full precision) and what happens to NaN / inf."""

    time: int | None  # start_s, end_s (seconds)
    score: int | None  # probabilities, scores, confidences, occurrence, clipped_fraction
    rms_dbfs: int | None
    compute_ms: int | None
    finite_only: bool  # True: NaN / inf become None (strict JSON has neither); False: kept (SQLite REAL holds inf)
    index: int | None = None  # acoustic indices (NDSI, ACI, ...); their Leq levels take `rms_dbfs`


ANALYZE = Precision(time=3, score=4, rms_dbfs=1, compute_ms=1, finite_only=True, index=4)
MESSAGE = Precision(time=3, score=4, rms_dbfs=2, compute_ms=1, finite_only=True, index=4)
STORED = Precision(time=None, score=None, rms_dbfs=None, compute_ms=None, finite_only=False)

CSV_FIELDS = ["file", "start_s", "end_s", "start_utc", "status", "group", "p_natural", "p_industrial", "p_other",
              "tagger_top", "species", "error", *INDEX_NAMES]


def iso_utc(ts_unix_s: float) -> str:
    """ISO-8601 UTC with milliseconds and a Z: 2024-05-01T06:00:00.000Z."""
    return datetime.fromtimestamp(ts_unix_s, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def number(x: float | None, digits: int | None, precision: Precision) -> float | None:
    """`x` as a plain float rounded to `digits` (None: as is); None stays None, NaN / inf per `precision`."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None if precision.finite_only else x
    return x if digits is None else round(x, digits)


def species_record(s: SpeciesScore, precision: Precision) -> dict[str, Any]:
    return {
        "scientific_name": s.scientific_name,
        "common_name": s.common_name,
        "confidence": number(s.confidence, precision.score, precision),
        "occurrence": number(s.occurrence, precision.score, precision),
    }


def chunk_record(d: ChunkDetection, precision: Precision) -> dict[str, Any]:
    """One species in one bird-model chunk: the species' fields, then where the chunk lies in its source (seconds)
    and in UTC (epoch seconds)."""
    return {
        "scientific_name": d.scientific_name,
        "common_name": d.common_name,
        "confidence": number(d.confidence, precision.score, precision),
        "occurrence": number(d.occurrence, precision.score, precision),
        "start_s": number(d.start_s, precision.time, precision),
        "end_s": number(d.end_s, precision.time, precision),
        "start_unix_s": float(d.start_unix_s),
        "end_unix_s": float(d.end_unix_s),
    }
def indices_record(ix: AcousticIndices | None, precision: Precision) -> dict[str, float | None] | None:
    """The acoustic indices as {name: value} (`data.INDEX_NAMES` order), levels at `rms_dbfs` digits; None without."""
    if ix is None:
        return None
    p = precision
    return {name: number(getattr(ix, name), p.rms_dbfs if name.startswith("leq") else p.index, p)
            for name in INDEX_NAMES}


def window_record(r: WindowResult, precision: Precision) -> dict[str, Any]:
    """Every field of `r` as plain values, numbers per `precision`.

    `probabilities` is the head's group -> probability dict as it came (None without a group, and for a "quiet" window,
    which no head saw), `tagger_top` a list of
    {label, score}, `species` a list of `species_record`s, best first, `detections` a list of `chunk_record`s (the
    bird-model chunks that end in the window, chunk start order, then best first).
    """
    p = precision
    return {
        "window_id": r.window_id,
        "source": r.source,
        "start_unix_s": float(r.start_unix_s),
        "start_s": number(r.start_s, p.time, p),
        "end_s": number(r.end_s, p.time, p),
        "status": r.status,
        "error": r.error,
        "group": r.group.group if r.group is not None else None,
        "probabilities": (
            {g: number(v, p.score, p) for g, v in r.group.probabilities.items()}
            if r.group is not None and not r.group.quiet
            else None
        ),
        "tagger_top": [{"label": t.label, "score": number(t.score, p.score, p)} for t in r.tagger_top],
        "tagger_top_score": number(r.tagger_top_score, p.score, p),
        "species": [species_record(s, p) for s in r.species],
        "detections": [chunk_record(d, p) for d in r.detections],
        "bird_top_score": number(r.bird_top_score, p.score, p),
        "rms_dbfs": number(r.rms_dbfs, p.rms_dbfs, p),
        "clipped_fraction": number(r.clipped_fraction, p.score, p),
        "compute_ms": number(r.compute_ms, p.compute_ms, p),
        "indices": indices_record(r.indices, p),
    }


def analyze_record(r: WindowResult) -> dict[str, Any]:
    """One `soundmond analyze` JSON line (a species' `occurrence` only when known). `detections`: every species in
    every bird-model chunk that ends in the window, with the chunk's start / end within the file (s) and in UTC."""
    """One `soundmond analyze` JSON line (a species' `occurrence` only when known, `indices` only when computed)."""
    rec = window_record(r, ANALYZE)
    line: dict[str, Any] = {
        "file": rec["source"],
        "window_id": rec["window_id"],
        "start_s": rec["start_s"],
        "end_s": rec["end_s"],
        "start_utc": iso_utc(r.start_unix_s),
        "status": rec["status"],
        "error": rec["error"],
        "group": rec["group"],
        "group_probabilities": rec["probabilities"],
        "tagger_top": rec["tagger_top"],
        "species": [
            {k: v for k, v in s.items() if k != "occurrence" or v is not None} for s in rec["species"]
        ],
        "rms_dbfs": rec["rms_dbfs"],
        "clipped_fraction": rec["clipped_fraction"],
        "compute_ms": rec["compute_ms"],
        "detections": [
            {"start_s": d["start_s"], "end_s": d["end_s"], "start_utc": iso_utc(d["start_unix_s"]),
             "end_utc": iso_utc(d["end_unix_s"]), "scientific_name": d["scientific_name"],
             "common_name": d["common_name"], "confidence": d["confidence"],
             **({"occurrence": d["occurrence"]} if d["occurrence"] is not None else {})}
            for d in rec["detections"]
        ],
    }
    if rec["indices"] is not None:
        line["indices"] = rec["indices"]
    return line


def csv_row(rec: dict[str, Any]) -> dict[str, Any]:
    """An `analyze_record` as one row of `soundmond analyze --format csv` (columns `CSV_FIELDS`)."""
    probs = rec["group_probabilities"] or {}
    return {
        "file": rec["file"], "start_s": rec["start_s"], "end_s": rec["end_s"], "start_utc": rec["start_utc"],
        "status": rec["status"], "group": rec["group"] or "",
        "p_natural": probs.get("natural", ""), "p_industrial": probs.get("industrial", ""),
        "p_other": probs.get("other", ""),
        "tagger_top": "; ".join(f"{t['label']}:{t['score']}" for t in rec["tagger_top"]),
        "species": "; ".join(f"{s['scientific_name']}:{s['confidence']}" for s in rec["species"]),
        "error": rec["error"] or "",
        **{name: "" if v is None else v for name, v in (rec.get("indices") or dict.fromkeys(INDEX_NAMES)).items()},
    }


def alert_record(alert: Alert) -> dict[str, Any]:
    """An alert as `analyze --summary` prints it; `type` is the stable name, `evidence` as the rule made it."""
    return {
        "alert_id": alert.alert_id,
        "type": str(alert.type),
        "severity": alert.severity,
        "key": alert.key,
        "ts": iso_utc(alert.ts_unix_s),
        "message": alert.message,
        "evidence": alert.evidence,
    }
