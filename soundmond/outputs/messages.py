"""The MQTT message contract: topics, payload builders and JSON Schema validation.

Every payload soundmond publishes under its topic prefix (except the plain-text `status`) is a JSON object with
`schema` ("soundmond.v1"), `type`, `station_id`, a unique `event_id`, an ISO-8601 UTC `ts` and, when the station's
coordinates are configured, `location` {lat, lon}. The JSON Schemas (draft 2020-12) live in
`soundmond/outputs/schemas/<type>.v1.json`; a change to a schema bumps its version.

Topic tree (prefix defaults to `soundmond/<station_id>`):

    <prefix>/status       retained "online" / "offline" (plain text; the last will is "offline")
    <prefix>/windows      one message per analysed window (optional), QoS 0
    <prefix>/detections   bird species detections, QoS 1, via the outbox
    <prefix>/alerts       alerts, QoS 1, via the outbox
    <prefix>/soundscape   rolling shares per span and species counts, retained, every N s
    <prefix>/heartbeat    uptime, real-time factor, drops, capture state, disk, model versions, config hash; retained
    <prefix>/set          commands to the station (JSON, small); malformed ones are ignored and counted

The builders are pure: they take the stage dataclasses (or plain dicts for the soundscape snapshot and the heartbeat)
and return dicts ready for `encode`. `validate` needs the `jsonschema` package (a dev dependency), imported lazily.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from typing import Any

from soundmond.config import MqttConfig, StationConfig
from soundmond.data import Alert, SpeciesScore, WindowResult, new_id

SCHEMA = "soundmond.v1"
SCHEMA_VERSION = 1
MESSAGE_TYPES: tuple[str, ...] = ("window", "detection", "alert", "soundscape", "heartbeat")

# outbox / message kind -> topic leaf
KIND_TOPICS: dict[str, str] = {
    "window": "windows",
    "detection": "detections",
    "alert": "alerts",
    "soundscape": "soundscape",
    "heartbeat": "heartbeat",
}

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"

_HEARTBEAT_KEYS = (
    "uptime_s",
    "rtf",
    "windows_processed",
    "dropped_windows",
    "capture_state",
    "disk",
    "models",
    "config_sha256",
    "mqtt",
    "version",
)


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


def iso_utc(ts_unix_s: float) -> str:
    """ISO-8601 UTC with milliseconds and a Z: 2024-05-01T06:00:00.000Z."""
    return datetime.fromtimestamp(ts_unix_s, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(x: float | None, ndigits: int = 4) -> float | None:
    """JSON has no NaN/inf (e.g. -inf dBFS of digital silence): those become null."""
    if x is None:
        return None
    x = float(x)
    return round(x, ndigits) if math.isfinite(x) else None


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


def _species(s: SpeciesScore) -> dict[str, Any]:
    return {
        "scientific_name": s.scientific_name,
        "common_name": s.common_name,
        "confidence": _num(s.confidence),
        "occurrence": _num(s.occurrence),
    }


def window_payload(result: WindowResult, station: StationConfig) -> dict[str, Any]:
    """One analysed window (event_id = window_id)."""
    p = _envelope("window", station, result.start_unix_s, result.window_id)
    p.update(
        {
            "window_id": result.window_id,
            "source": result.source,
            "start_s": _num(result.start_s, 3),
            "end_s": _num(result.end_s, 3),
            "status": result.status,
            "group": result.group.group if result.group else None,
            "shares": (
                {g: _num(result.group.probabilities.get(g, 0.0)) for g in ("natural", "industrial", "other")}
                if result.group
                else None
            ),
            "tagger_top": [{"label": ls.label, "score": _num(ls.score)} for ls in result.tagger_top],
            "species": [_species(s) for s in result.species],
            "bird_top_score": _num(result.bird_top_score),
            "rms_dbfs": _num(result.rms_dbfs, 2),
            "clipped_fraction": _num(result.clipped_fraction),
            "compute_ms": _num(result.compute_ms, 1),
            "error": result.error,
        }
    )
    return p


def detection_payload(
    score: SpeciesScore,
    station: StationConfig,
    *,
    window_id: str,
    ts_unix_s: float,
    event_id: str | None = None,
) -> dict[str, Any]:
    """One species detected in one window (ts = the window's start)."""
    p = _envelope("detection", station, ts_unix_s, event_id)
    p["window_id"] = window_id
    p.update(_species(score))
    return p


def alert_payload(alert: Alert, station: StationConfig) -> dict[str, Any]:
    """An alert (event_id = alert_id, so a replayed alert keeps its id)."""
    p = _envelope("alert", station, alert.ts_unix_s, alert.alert_id)
    p.update(
        {
            "alert_type": alert.type,
            "key": alert.key,
            "severity": alert.severity,
            "message": alert.message,
            "evidence": json.loads(json.dumps(alert.evidence, default=str)),
        }
    )
    return p


def soundscape_payload(snapshot: Mapping[str, Any], station: StationConfig, *, ts_unix_s: float) -> dict[str, Any]:
    """Rolling shares per span and species counts.

    `snapshot` = {"spans": {span_s: {"windows": int, "shares": {"natural": f, "industrial": f, "other": f} | None,
    "species": {scientific_name: count} | [{"scientific_name", "common_name"?, "count"}]}}}, or the aggregator's
    `SoundscapeSnapshot.to_dict()` (a list of spans with `span_s`, `windows_with_group` and `species_counts`).
    `windows_with_group` is the number of windows behind the shares (skipped or failed windows have no group).
    Spans are sorted shortest first; species by count, highest first.
    """
    spans_in = snapshot.get("spans", {})
    items = spans_in.items() if isinstance(spans_in, Mapping) else ((s.get("span_s"), s) for s in spans_in)
    spans = []
    for span_s, span in sorted(items, key=lambda kv: int(kv[0])):
        shares = span.get("shares")
        species_in = span.get("species") or span.get("species_counts") or {}
        if isinstance(species_in, Mapping):
            species: list[dict[str, Any]] = [
                {"scientific_name": str(k), "count": int(v)} for k, v in species_in.items()
            ]
        else:
            species = []
            for s in species_in:
                entry: dict[str, Any] = {"scientific_name": str(s["scientific_name"]), "count": int(s["count"])}
                if s.get("common_name"):
                    entry["common_name"] = str(s["common_name"])
                species.append(entry)
        species.sort(key=lambda s: (-int(s["count"]), str(s["scientific_name"])))
        spans.append(
            {
                "span_s": int(span_s),
                "windows": int(span.get("windows", 0)),
                "windows_with_group": int(span.get("windows_with_group", span.get("windows", 0))),
                "shares": (
                    {g: _num(float(shares.get(g, 0.0))) for g in ("natural", "industrial", "other")}
                    if shares
                    else None
                ),
                "species": species,
            }
        )
    p = _envelope("soundscape", station, ts_unix_s, None)
    p["spans"] = spans
    return p


def heartbeat_payload(info: Mapping[str, Any], station: StationConfig, *, ts_unix_s: float) -> dict[str, Any]:
    """Station health. Known keys: uptime_s, rtf, windows_processed, dropped_windows, capture_state, disk {...},
    models {name: version}, config_sha256, mqtt {...}, version; anything else goes under `extra`."""
    p = _envelope("heartbeat", station, ts_unix_s, None)
    extra: dict[str, Any] = {}
    for k, v in info.items():
        if k in _HEARTBEAT_KEYS:
            p[k] = _num(v, 3) if isinstance(v, float) else v
        else:
            extra[k] = v
    p.setdefault("uptime_s", 0.0)
    p.setdefault("capture_state", "unknown")
    if extra:
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
