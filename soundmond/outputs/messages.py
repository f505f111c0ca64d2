"""The MQTT message contract: topics, payload builders and JSON Schema validation.

Every payload soundmond publishes under its topic prefix (except the plain-text `status`) is a JSON object with
`schema` ("soundmond.v1"), `type`, `station_id`, a unique `event_id`, an ISO-8601 UTC `ts` and, when the station's
coordinates are configured, `location` {lat, lon}. Window, detection and alert event ids derive from what they report
(`soundmond.identity`): a replayed event keeps its id. The JSON Schemas (draft 2020-12) live in
`soundmond/outputs/schemas/<type>.v1.json`; a change to a schema bumps its version. Additions within v1 (listed in
each schema's `$comment`, e.g. v1.1: a window's group "quiet", a span's `quiet` and `windows_quiet`; v1.2: a
detection's best chunk, `chunk_start_s` / `chunk_end_s` / `chunk_start` / `chunk_end`; the `evidence` type) keep every
earlier field and its meaning, but a consumer validating against an older copy of the v1 files (closed objects,
closed enums) refuses the new values: it takes the current files from this folder.

Topic tree (prefix defaults to `soundmond/<station_id>`):

    <prefix>/status       retained "online" / "offline" (plain text; the last will is "offline")
    <prefix>/windows      one message per analysed window (optional), QoS 0
    <prefix>/detections   bird species detections, QoS 1, via the outbox
    <prefix>/alerts       alerts, QoS 1, via the outbox
    <prefix>/evidence     what became of a detection's or alert's evidence clip (written, skipped, deleted), QoS 1,
                          via the outbox (v1.2; `evidence_payload`)
    <prefix>/soundscape   rolling shares per span and species counts, retained, every N s
    <prefix>/heartbeat    uptime, real-time factor, drops, capture state, disk, model versions, config hash; retained
    <prefix>/set          commands to the station (JSON, small); malformed ones are ignored and counted

The builders are pure: they take the stage dataclasses (`WindowResult`, `SpeciesScore`, `Alert`, the aggregator's
`SoundscapeSnapshot`, the pipeline's `Heartbeat`, the store's `ClipStatus`) and return dicts ready for `encode`.
Windows, species and alerts are serialised by `soundmond.outputs.records` (shared with `soundmond analyze` and the
store), numbers per `records.MESSAGE`. `validate` needs the `jsonschema` package (a dev dependency), imported lazily.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import Any

from soundmond.config import MqttConfig, StationConfig
from soundmond.data import (
    GROUPS,
    Alert,
    BaselineStatus,
    ChunkDetection,
    ClipStatus,
    Heartbeat,
    SpeciesScore,
    WindowResult,
    new_id,
)
from soundmond.identity import detection_id, evidence_id
from soundmond.outputs.records import (
    MESSAGE,
    alert_record,
    chunk_record,
    iso_utc,
    number,
    species_record,
    window_record,
)
from soundmond.soundscape.aggregate import SoundscapeSnapshot
from soundmond.soundscape.species import SpeciesSummary

SCHEMA = "soundmond.v1"
SCHEMA_VERSION = 1
MESSAGE_TYPES: tuple[str, ...] = ("window", "detection", "alert", "soundscape", "heartbeat", "evidence")

# outbox / message kind -> topic leaf
KIND_TOPICS: dict[str, str] = {
    "window": "windows",
    "detection": "detections",
    "alert": "alerts",
    "soundscape": "soundscape",
    "heartbeat": "heartbeat",
    "evidence": "evidence",
}

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"

HEARTBEAT_DIGITS = 3  # uptime_s and rtf in the heartbeat


class InvalidMessage(ValueError):
    """A payload does not match its JSON Schema (or names no known type)."""


@dataclass(frozen=True)
class Topics:
    """The station's topic tree."""

    prefix: str

    @classmethod
    def for_station(cls, config: MqttConfig, station: StationConfig) -> Topics:
        prefix = (config.topic_prefix or f"soundmond/{station.id}").strip().rstrip("/")
        if not prefix or any(c in prefix for c in "+#\0"):
            raise ValueError(f"mqtt.topic_prefix {prefix!r} is not a valid topic prefix (no wildcards, not empty)")
        return cls(prefix)

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def windows(self) -> str:
        return f"{self.prefix}/windows"

    @property
    def detections(self) -> str:
        return f"{self.prefix}/detections"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}/alerts"

    @property
    def evidence(self) -> str:
        return f"{self.prefix}/evidence"

    @property
    def soundscape(self) -> str:
        return f"{self.prefix}/soundscape"

    @property
    def heartbeat(self) -> str:
        return f"{self.prefix}/heartbeat"

    @property
    def set(self) -> str:
        return f"{self.prefix}/set"

    def for_kind(self, kind: str) -> str:
        """Topic of an outbox kind ("alert" -> <prefix>/alerts); unknown kinds go to <prefix>/<kind>."""
        return f"{self.prefix}/{KIND_TOPICS.get(kind, kind)}"


def _envelope(kind: str, station: StationConfig, ts_unix_s: float, event_id: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "schema": SCHEMA,
        "type": kind,
        "station_id": station.id,
        "event_id": event_id or new_id(),
        "ts": iso_utc(ts_unix_s),
    }
    if station.latitude is not None and station.longitude is not None:
        payload["location"] = {"lat": station.latitude, "lon": station.longitude}
    return payload


def window_payload(result: WindowResult, station: StationConfig) -> dict[str, Any]:
    """One analysed window (event_id = window_id)."""
    rec = window_record(result, MESSAGE)
    probs = rec["probabilities"]
    p = _envelope("window", station, result.start_unix_s, result.window_id)
    p.update(
        {
            "window_id": rec["window_id"],
            "source": rec["source"],
            "start_s": rec["start_s"],
            "end_s": rec["end_s"],
            "status": rec["status"],
            "group": rec["group"],
            "shares": {g: probs.get(g, 0.0) for g in GROUPS} if probs is not None else None,
            "tagger_top": rec["tagger_top"],
            "species": rec["species"],
            "bird_top_score": rec["bird_top_score"],
            "rms_dbfs": rec["rms_dbfs"],
            "clipped_fraction": rec["clipped_fraction"],
            "compute_ms": rec["compute_ms"],
            "error": rec["error"],
        }
    )
    if rec["indices"] is not None:  # v1.2
        p["indices"] = rec["indices"]
    return p


def detection_payload(
    score: SpeciesScore,
    station: StationConfig,
    *,
    window_id: str,
    ts_unix_s: float,
    event_id: str | None = None,
    chunk: ChunkDetection | None = None,
    evidence_path: str | None = None,
) -> dict[str, Any]:
    """One species detected in one window (ts = the window's start; event_id derived from the window and the
    species unless given, so a replayed detection keeps its id). `chunk`: the species' best bird-model chunk of the
    window (`WindowResult.best_chunks`), sent as chunk_start_s / chunk_end_s (within the source) and chunk_start /
    chunk_end (ISO UTC), v1.2. `evidence_path` (v1.2): where its evidence clip is kept under `evidence.path` when it
    is written (`soundmond.outputs.evidence`)."""
    p = _envelope("detection", station, ts_unix_s, event_id or detection_id(window_id, score.scientific_name))
    p["window_id"] = window_id
    p.update(species_record(score, MESSAGE))
    if chunk is not None:
        rec = chunk_record(chunk, MESSAGE)
        p.update({"chunk_start_s": rec["start_s"], "chunk_end_s": rec["end_s"],
                  "chunk_start": iso_utc(chunk.start_unix_s), "chunk_end": iso_utc(chunk.end_unix_s)})
    if evidence_path is not None:
        p["evidence_path"] = evidence_path
    return p


def alert_payload(alert: Alert, station: StationConfig, *, evidence_path: str | None = None) -> dict[str, Any]:
    """An alert (event_id = alert_id, so a replayed alert keeps its id); `evidence_path` as for detections."""
    rec = alert_record(alert)
    p = _envelope("alert", station, alert.ts_unix_s, alert.alert_id)
    p.update(
        {
            "alert_type": rec["type"],
            "key": rec["key"],
            "severity": rec["severity"],
            "message": rec["message"],
            "evidence": json.loads(json.dumps(rec["evidence"], default=str)),
        }
    )
    if evidence_path is not None:
        p["evidence_path"] = evidence_path
    return p


def evidence_payload(clip: ClipStatus, station: StationConfig) -> dict[str, Any]:
    """What became of the evidence clip of one detection or alert (`for_event_id`, whose message named the clip's
    `evidence_path`): `written` (bytes and SHA-256 of the file, where it lies in the source and in UTC, rate,
    privacy), `skipped` (`reason`; no clip fields) or `deleted` (`reason`; the fields of the clip that was deleted).
    ts = when the status changed; event_id = `identity.evidence_id` (a replay of the same change keeps it)."""
    p = _envelope("evidence", station, clip.changed_unix_s,
                  evidence_id(clip.event_id, clip.status, clip.written_unix_s, clip.reason))

    def t(x: float | None) -> float | None:
        return None if x is None else number(x, MESSAGE.time, MESSAGE)

    has_clip = clip.status != "skipped" and clip.bytes is not None
    start = end = None
    if has_clip and clip.start_unix_s is not None and clip.start_s is not None and clip.end_s is not None:
        start, end = iso_utc(clip.start_unix_s), iso_utc(clip.start_unix_s + clip.end_s - clip.start_s)
    p.update({
        "for_event_id": clip.event_id,
        "kind": clip.kind,
        "label": clip.label,
        "window_id": clip.window_id,
        "status": clip.status,
        "reason": clip.reason,
        "path": clip.path,
        "event_start_s": t(clip.event_start_s),
        "event_end_s": t(clip.event_end_s),
        "bytes": clip.bytes if has_clip else None,
        "sha256": clip.sha256 if has_clip else None,
        "clip_start_s": t(clip.start_s) if has_clip else None,
        "clip_end_s": t(clip.end_s) if has_clip else None,
        "clip_start": start,
        "clip_end": end,
        "sample_rate_hz": clip.sample_rate_hz if has_clip else None,
        "privacy": clip.privacy if has_clip else None,
    })
    return p


def soundscape_payload(snapshot: SoundscapeSnapshot, station: StationConfig, *, ts_unix_s: float) -> dict[str, Any]:
    """Rolling shares per span and species counts, spans shortest first, species by count (highest first).

    `windows_with_group` is the number of windows behind the shares (quiet, skipped or failed windows have no head
    group); `shares` is null when there is none. `windows_quiet` counts the quiet windows and `quiet` is their share of
    all the span's windows (null when the span holds none). `species_summary` (v1.2): per species its chunk
    detections, distinct UTC minutes with one, first and last heard (ISO UTC), best confidence, and how many of the
    detections are whole windows without chunk times (`from_windows`); most detections first
    (`soundmond.soundscape.species`). Also v1.2: `indices`, per acoustic index the mean, p10, p90 and the windows
    behind them (absent when indices are off).
    """
    spans: list[dict[str, Any]] = []
    for span in sorted(snapshot.spans, key=lambda s: s.span_s):
        ranked = sorted(span.species_counts.items(), key=lambda kv: (-int(kv[1]), kv[0]))
        species = [{"scientific_name": name, "count": int(n)} for name, n in ranked]
        spans.append(
            {
                "span_s": int(span.span_s),
                "windows": int(span.windows),
                "windows_with_group": int(span.windows_with_group),
                "windows_quiet": int(span.windows_quiet),
                "quiet": number(span.quiet_share, MESSAGE.score, MESSAGE),
                "shares": (
                    {g: number(span.shares.get(g, 0.0), MESSAGE.score, MESSAGE) for g in GROUPS}
                    if span.shares
                    else None
                ),
                "species": species,
                "species_summary": [_species_summary(s) for s in span.species_summary],
            }
        )
        if span.indices is not None:  # v1.2
            spans[-1]["indices"] = {
                name: None if f is None else {
                    "mean": number(f.mean, _digits(name), MESSAGE), "p10": number(f.p10, _digits(name), MESSAGE),
                    "p90": number(f.p90, _digits(name), MESSAGE), "windows": f.windows,
                }
                for name, f in span.indices.items()
            }
    p = _envelope("soundscape", station, ts_unix_s, None)
    p["spans"] = spans
    return p


def _species_summary(s: SpeciesSummary) -> dict[str, Any]:
    return {
        "scientific_name": s.scientific_name,
        "common_name": s.common_name,
        "detections": s.detections,
        "minutes": s.minutes,
        "first_heard": iso_utc(s.first_unix_s),
        "last_heard": iso_utc(s.last_unix_s),
        "max_confidence": number(s.max_confidence, MESSAGE.score, MESSAGE),
        "from_windows": s.from_windows,
    }
def _digits(index_name: str) -> int | None:
    """Decimals of an acoustic index in messages: levels as rms_dbfs, the others as `MESSAGE.index`."""
    return MESSAGE.rms_dbfs if index_name.startswith("leq") else MESSAGE.index


@dataclass(frozen=True)
class PublisherHealth:
    """The MQTT publisher as the heartbeat reports it (under `mqtt`)."""

    connected: bool
    pending: int | None  # unsent outbox rows as of the last count (None before the first)
    in_flight: int
    published: int
    dropped: int  # direct messages dropped while disconnected, all kinds


def _baseline(b: BaselineStatus) -> dict[str, Any]:
    return {
        "ready": b.ready,
        "days_available": b.days_available,
        "days_needed": b.days_needed,
        "message": b.message,
        "rules": {str(t): asdict(r) for t, r in b.rules.items()},
    }


def heartbeat_payload(
    heartbeat: Heartbeat, station: StationConfig, *, ts_unix_s: float, mqtt: PublisherHealth | None = None
) -> dict[str, Any]:
    """Station health: uptime_s, rtf, windows_processed, dropped_windows, capture_state, disk, models, config_sha256,
    version, `mqtt` (when given) at the top; failed and quiet windows, capture, outbox, store_writer and baseline
    under `extra`."""
    hb = heartbeat
    p = _envelope("heartbeat", station, ts_unix_s, None)
    p.update(
        {
            "uptime_s": number(hb.uptime_s, HEARTBEAT_DIGITS, MESSAGE),
            "rtf": number(hb.rtf, HEARTBEAT_DIGITS, MESSAGE),
            "windows_processed": hb.windows_processed,
            "dropped_windows": hb.dropped_windows,
            "capture_state": hb.capture_state,
            "disk": asdict(hb.disk) if hb.disk is not None else None,
            "models": dict(hb.models),
            "config_sha256": hb.config_sha256,
            "version": hb.version,
        }
    )
    if mqtt is not None:
        p["mqtt"] = asdict(mqtt)
    extra = {
        "failed_windows": hb.failed_windows,
        "skipped_quiet_windows": hb.skipped_quiet_windows,
        "capture": asdict(hb.capture) if hb.capture is not None else None,
        "outbox": asdict(hb.outbox) if hb.outbox is not None else None,
        "store_writer": asdict(hb.store_writer) if hb.store_writer is not None else None,
        "baseline": _baseline(hb.baseline),
    }
    if hb.evidence is not None:  # v1.2
        extra["evidence"] = asdict(hb.evidence)
    p["extra"] = json.loads(json.dumps(extra, default=str))
    return p


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; NaN/inf are refused (the builders turn them into null)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


# ---- Home Assistant discovery -------------------------------------------------------------------------------------

_HA_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def ha_discovery(
    station: StationConfig, topics: Topics, *, discovery_prefix: str = "homeassistant", sw_version: str = ""
) -> list[tuple[str, dict[str, Any]]]:
    """(config topic, config payload) for each Home Assistant sensor, availability on the status topic."""
    node = "soundmond_" + _HA_SAFE.sub("_", station.id)
    device = {
        "identifiers": [node],
        "name": station.name or f"soundmond {station.id}",
        "manufacturer": "soundmond",
        "model": "soundscape station",
        "sw_version": sw_version,
    }
    shortest = "value_json.spans[0].shares"
    sensors: list[tuple[str, dict[str, Any]]] = [
        ("natural_share", {
            "name": "Natural share", "state_topic": topics.soundscape, "unit_of_measurement": "%",
            "state_class": "measurement", "icon": "mdi:tree",
            "value_template": f"{{{{ ({shortest}.natural * 100) | round(1) if {shortest} else none }}}}",
        }),
        ("industrial_share", {
            "name": "Industrial share", "state_topic": topics.soundscape, "unit_of_measurement": "%",
            "state_class": "measurement", "icon": "mdi:factory",
            "value_template": f"{{{{ ({shortest}.industrial * 100) | round(1) if {shortest} else none }}}}",
        }),
        ("last_species", {
            "name": "Last species", "state_topic": topics.detections, "icon": "mdi:bird",
            "value_template": "{{ value_json.common_name }}", "json_attributes_topic": topics.detections,
        }),
        ("last_alert", {
            "name": "Last alert", "state_topic": topics.alerts, "icon": "mdi:alert",
            "value_template": "{{ value_json.alert_type }}", "json_attributes_topic": topics.alerts,
        }),
        ("capture_state", {
            "name": "Capture state", "state_topic": topics.heartbeat, "icon": "mdi:microphone",
            "value_template": "{{ value_json.capture_state }}", "entity_category": "diagnostic",
        }),
    ]
    out = []
    for object_id, cfg in sensors:
        cfg.update(
            {
                "unique_id": f"{node}_{object_id}",
                "object_id": f"{node}_{object_id}",
                "availability_topic": topics.status,
                "payload_available": STATUS_ONLINE,
                "payload_not_available": STATUS_OFFLINE,
                "device": device,
            }
        )
        out.append((f"{discovery_prefix}/sensor/{node}/{object_id}/config", cfg))
    return out


# ---- validation ---------------------------------------------------------------------------------------------------


@cache
def load_schema(kind: str, version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """The JSON Schema of one message type, from soundmond/outputs/schemas/<type>.v<version>.json."""
    if kind not in MESSAGE_TYPES:
        raise InvalidMessage(f"unknown message type {kind!r} (known: {', '.join(MESSAGE_TYPES)})")
    text = resources.files("soundmond.outputs").joinpath("schemas", f"{kind}.v{version}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator(kind: str) -> Any:
    import jsonschema  # dev dependency: only tests and `listen --validate` validate

    cls = jsonschema.Draft202012Validator
    schema = load_schema(kind)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate(payload: Mapping[str, Any]) -> None:
    """Raise `InvalidMessage` naming every problem if `payload` does not match the schema of its `type`."""
    if not isinstance(payload, Mapping):
        raise InvalidMessage("a soundmond message is a JSON object")
    kind = payload.get("type")
    if not isinstance(kind, str):
        raise InvalidMessage("the message has no string 'type'")
    errors = sorted(_validator(kind).iter_errors(dict(payload)), key=lambda e: list(e.absolute_path))
    if errors:
        problems: Sequence[str] = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]
        raise InvalidMessage(f"{kind} message does not match {kind}.v{SCHEMA_VERSION}.json: " + "; ".join(problems))
