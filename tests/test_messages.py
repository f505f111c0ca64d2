"""The message contract: builders produce payloads their JSON Schemas accept; every schema requires the envelope."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from importlib import resources
from typing import Any

import pytest
import samples

from soundmond import identity
from soundmond.config import MqttConfig, StationConfig
from soundmond.data import Alert, AlertType, ClipStatus, GroupPrediction, LabelScore, SpeciesScore, WindowResult
from soundmond.outputs import messages, records
from soundmond.soundscape.species import SpeciesSummary

STATION = StationConfig(id="jura-1", latitude=46.5, longitude=6.1, name="Jura forest")
BARE = StationConfig(id="bare")
T = 1_716_537_600.25  # 2024-05-24T08:00:00.250Z


def window_result(**kw: Any) -> WindowResult:
    base: dict[str, Any] = dict(
        window_id="w1", source="mic:default", start_unix_s=T, start_s=0.0, end_s=5.0,
        group=GroupPrediction("natural", {"natural": 0.7, "industrial": 0.2, "other": 0.1}),
        tagger_top=(LabelScore("Bird", 0.81), LabelScore("Wind", 0.3)), tagger_top_score=0.81,
        species=(SpeciesScore("Turdus merula", "Eurasian Blackbird", 0.91, 0.4),), bird_top_score=0.91,
        rms_dbfs=-32.5, clipped_fraction=0.0, compute_ms=120.0,
    )
    base.update(kw)
    return WindowResult(**base)


def quiet_window() -> WindowResult:
    return window_result(group=GroupPrediction("quiet", {}), status="skipped_quiet", rms_dbfs=-91.2, species=(),
                         tagger_top=(), tagger_top_score=0.0, bird_top_score=0.0)


CLIP_OF = identity.detection_id("w1", "Turdus merula")
WRITTEN = ClipStatus(CLIP_OF, "detection", "Turdus merula", "w1", f"2024-05-24/08/Turdus_merula/{CLIP_OF}.flac",
                     "written", None, 1.0, 4.0, 123_456, "ab" * 32, 0.5, 4.5, T + 0.5, 44100, "clear", T + 9.0, T + 9.0)
SKIPPED = replace(WRITTEN, status="skipped", reason="speech", bytes=None, sha256=None, start_s=None, end_s=None,
                  start_unix_s=None, sample_rate_hz=None, privacy=None, written_unix_s=None)
DELETED = replace(WRITTEN, status="deleted", reason="max_mb", changed_unix_s=T + 99.0)


def all_payloads() -> list[dict[str, Any]]:
    alert = Alert(AlertType.RARE_SPECIES, "RARE_SPECIES:Bubo bubo", "warning", T, "Eurasian Eagle-Owl heard",
                  {"window_ids": ["w1"], "confidence": 0.8})
    silent = Alert(AlertType.RECORDER_SILENT, "RECORDER_SILENT:1", "warning", T, "The recorder has been silent",
                   {"window_id": "w1", "quiet_s": 600.0})
    scape = samples.snapshot(T, samples.span(3600, 700, {"natural": 0.6, "industrial": 0.3, "other": 0.1},
                                             {"Turdus merula": 3, "Bubo bubo": 9}, ts=T, quiet=120),
                             samples.span(60, 0, ts=T))
    out = []
    for st in (STATION, BARE):
        out += [
            messages.window_payload(window_result(), st),
            messages.window_payload(window_result(group=None, status="skipped_quiet", rms_dbfs=-math.inf,
                                                  species=(), tagger_top=()), st),
            messages.detection_payload(SpeciesScore("Turdus merula", "Eurasian Blackbird", 0.91), st,
                                       window_id="w1", ts_unix_s=T),
            messages.alert_payload(alert, st),
            messages.soundscape_payload(scape, st, ts_unix_s=T),
            messages.heartbeat_payload(samples.heartbeat(), st, ts_unix_s=T),
            messages.window_payload(quiet_window(), st),
            messages.alert_payload(silent, st),
            messages.evidence_payload(WRITTEN, st),
            messages.evidence_payload(SKIPPED, st),
            messages.evidence_payload(DELETED, st),
        ]
    return out


def test_every_builder_output_validates_and_encodes() -> None:
    payloads = all_payloads()
    assert {p["type"] for p in payloads} == set(messages.MESSAGE_TYPES)
    for p in payloads:
        messages.validate(p)
        assert json.loads(messages.encode(p)) == p
        assert p["schema"] == "soundmond.v1"
        assert p["ts"].endswith("Z")
    with_loc = [p for p in payloads if p["station_id"] == "jura-1"]
    assert all(p["location"] == {"lat": 46.5, "lon": 6.1} for p in with_loc)
    assert all("location" not in p for p in payloads if p["station_id"] == "bare")


def test_payload_details() -> None:
    w, quiet, det, alert, scape, hb = all_payloads()[:6]
    assert w["event_id"] == "w1" and w["shares"]["natural"] == 0.7 and w["group"] == "natural"
    assert quiet["rms_dbfs"] is None and quiet["shares"] is None  # -inf dBFS is not JSON
    assert alert["alert_type"] == "RARE_SPECIES" and alert["severity"] == "warning"
    assert records.iso_utc(T) == "2024-05-24T08:00:00.250Z" == alert["ts"]
    assert [s["span_s"] for s in scape["spans"]] == [60, 3600]  # shortest first (HA reads spans[0])
    assert [s["scientific_name"] for s in scape["spans"][1]["species"]] == ["Bubo bubo", "Turdus merula"]
    assert hb["capture_state"] == "running" and hb["extra"]["failed_windows"] == 1
    assert det["event_id"] != alert["event_id"]


def test_soundscape_payload_from_the_aggregators_snapshot() -> None:
    scape = samples.snapshot(T, samples.span(3600, 700, {"natural": 0.612345, "industrial": 0.287655, "other": 0.1},
                                             {"Turdus merula": 3, "Bubo bubo": 9, "Abies": 3}, ts=T),
                             samples.span(60, 4, None, {}, ts=T))
    p = messages.soundscape_payload(scape, BARE, ts_unix_s=T)
    assert p["spans"] == [
        {"span_s": 60, "windows": 4, "windows_with_group": 0, "windows_quiet": 0, "quiet": 0.0, "shares": None,
         "species": [], "species_summary": []},
        {"span_s": 3600, "windows": 700, "windows_with_group": 700, "windows_quiet": 0, "quiet": 0.0,
         "shares": {"natural": 0.6123, "industrial": 0.2877, "other": 0.1},
         "species": [{"scientific_name": "Bubo bubo", "count": 9}, {"scientific_name": "Abies", "count": 3},
                     {"scientific_name": "Turdus merula", "count": 3}],
         "species_summary": []},
    ]
    assert list(p) == ["schema", "type", "station_id", "event_id", "ts", "spans"]


def test_species_summary_payload_v1_2() -> None:
    """v1.2: a span's species summary (ISO times, confidence at message precision) validates; a v1.1 span without
    it still validates; a summary missing a field or with a confidence above 1 does not."""
    blackbird = SpeciesSummary("Turdus merula", "Eurasian Blackbird", detections=7, minutes=3, first_unix_s=T - 600,
                               last_unix_s=T - 3.0, max_confidence=0.912345, from_windows=1)
    span = replace(samples.span(3600, 700, {"natural": 0.5, "industrial": 0.25, "other": 0.25},
                                {"Turdus merula": 5}, ts=T), species_summary=(blackbird,))
    p = messages.soundscape_payload(samples.snapshot(T, span), BARE, ts_unix_s=T)
    messages.validate(p)
    (got,) = p["spans"][0]["species_summary"]
    assert got == {"scientific_name": "Turdus merula", "common_name": "Eurasian Blackbird", "detections": 7,
                   "minutes": 3, "first_heard": "2024-05-24T07:50:00.250Z", "last_heard": "2024-05-24T07:59:57.250Z",
                   "max_confidence": 0.9123, "from_windows": 1}
    v11 = {k: v for k, v in p["spans"][0].items() if k != "species_summary"}
    messages.validate({**p, "spans": [v11]})
    for bad in ({k: v for k, v in got.items() if k != "minutes"}, {**got, "max_confidence": 1.5}):
        with pytest.raises(messages.InvalidMessage, match="species_summary"):
            messages.validate({**p, "spans": [{**p["spans"][0], "species_summary": [bad]}]})


def test_quiet_window_and_quiet_share_payloads() -> None:
    """A quiet window: group "quiet", no shares (no head ran); a span's quiet share is over all its windows and the
    group shares stay over the windows with a head's group. A v1.0 span without the quiet fields still validates."""
    w = messages.window_payload(quiet_window(), STATION)
    assert (w["group"], w["shares"], w["species"], w["status"]) == ("quiet", None, [], "skipped_quiet")
    messages.validate(w)
    scape = samples.snapshot(T, samples.span(3600, 700, {"natural": 0.5, "industrial": 0.25, "other": 0.25},
                                             {}, ts=T, quiet=175))
    p = messages.soundscape_payload(scape, BARE, ts_unix_s=T)
    (span,) = p["spans"]
    assert (span["windows"], span["windows_with_group"], span["windows_quiet"], span["quiet"]) == (700, 525, 175, 0.25)
    messages.validate(p)
    old = {k: v for k, v in span.items() if k not in ("windows_quiet", "quiet")}
    messages.validate({**p, "spans": [old]})
    with pytest.raises(messages.InvalidMessage, match="quiet"):
        messages.validate({**p, "spans": [{**span, "quiet": 1.5}]})


def test_heartbeat_payload_keeps_its_shape() -> None:
    """Known keys at the top in their order, the publisher's `mqtt` when given, the rest under `extra`."""
    mqtt = messages.PublisherHealth(connected=True, pending=2, in_flight=0, published=30, dropped=1)
    hb = samples.heartbeat(uptime_s=12.34567, rtf=0.0512345)
    p = messages.heartbeat_payload(hb, STATION, ts_unix_s=T, mqtt=mqtt)
    messages.validate(p)
    assert list(p) == ["schema", "type", "station_id", "event_id", "ts", "location", "uptime_s", "rtf",
                       "windows_processed", "dropped_windows", "capture_state", "disk", "models", "config_sha256",
                       "version", "mqtt", "extra"]
    assert (p["uptime_s"], p["rtf"]) == (12.346, 0.051)
    assert p["disk"] == {"store_bytes": 1000, "free_bytes": 10**9, "total_bytes": 2 * 10**9}
    assert p["mqtt"] == {"connected": True, "pending": 2, "in_flight": 0, "published": 30, "dropped": 1}
    extra = p["extra"]
    assert list(extra) == ["failed_windows", "skipped_quiet_windows", "capture", "outbox", "store_writer", "baseline"]
    assert (extra["failed_windows"], extra["skipped_quiet_windows"]) == (1, 3)
    assert extra["capture"]["device"] == "hw:1,0" and extra["capture"]["stream_rate_hz"] == 48000.0
    assert extra["outbox"] == {"pending": 2, "pending_alerts": 1, "sent": 30, "dropped": 0, "refused": 0}
    assert extra["store_writer"]["rows_written"] == 400 and extra["store_writer"]["last_error"] is None
    assert extra["baseline"]["rules"] == {
        "HIGH_FREQUENCY": {"ready": False, "usable_days": 2, "days_needed": 7, "span_s": 3600},
        "INDUSTRIAL_RISE": {"ready": False, "usable_days": 2, "days_needed": 7, "span_s": 3600},
    }
    assert "mqtt" not in messages.heartbeat_payload(hb, STATION, ts_unix_s=T)
    recording = messages.heartbeat_payload(samples.heartbeat(capture=None, rtf=None), BARE, ts_unix_s=T)
    assert recording["rtf"] is None and recording["extra"]["capture"] is None
    messages.validate(recording)


def test_detection_event_ids_derive_from_the_window_and_the_species() -> None:
    def event_id(window_id: str, species: str) -> str:
        score = SpeciesScore(species, "C", 0.5)
        return str(messages.detection_payload(score, BARE, window_id=window_id, ts_unix_s=T)["event_id"])

    assert event_id("w1", "A b") == event_id("w1", "A b")  # a replayed detection keeps its id
    ids = {event_id(f"w{i}", species) for i in range(100) for species in ("A b", "A c")}
    assert len(ids) == 200 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


@pytest.mark.parametrize("kind", messages.MESSAGE_TYPES)
def test_schema_rejects_missing_event_id(kind: str) -> None:
    payload = next(p for p in all_payloads() if p["type"] == kind)
    messages.validate(payload)
    broken = {k: v for k, v in payload.items() if k != "event_id"}
    with pytest.raises(messages.InvalidMessage, match="event_id"):
        messages.validate(broken)


@pytest.mark.parametrize("kind", messages.MESSAGE_TYPES)
def test_schema_files_are_draft_2020_12_with_envelope(kind: str) -> None:
    text = resources.files("soundmond.outputs").joinpath("schemas", f"{kind}.v1.json").read_text("utf-8")
    schema = json.loads(text)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/{kind}.v1.json")
    assert {"schema", "type", "station_id", "event_id", "ts"} <= set(schema["required"])


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda p: p.update(ts="2024-05-24 08:00:00"), "ts"),
        (lambda p: p.update(schema="soundmond.v2"), "schema"),
        (lambda p: p.update(severity="fatal"), "severity"),
        (lambda p: p.update(surprise=1), "surprise"),
        (lambda p: p.update(location={"lat": 91, "lon": 0}), "lat"),
    ],
)
def test_schema_rejects_bad_alerts(mutate: Any, match: str) -> None:
    payload = messages.alert_payload(Alert(AlertType.FALLING_BEHIND, "X", "info", T, "m"), STATION)
    mutate(payload)
    with pytest.raises(messages.InvalidMessage, match=match):
        messages.validate(payload)


def test_validate_rejects_unknown_or_missing_type() -> None:
    with pytest.raises(messages.InvalidMessage, match="unknown message type"):
        messages.validate({"type": "nope"})
    with pytest.raises(messages.InvalidMessage, match="type"):
        messages.validate({"event_id": "x"})


def test_topics_and_ha_discovery() -> None:
    t = messages.Topics.for_station(MqttConfig(), STATION)
    assert t.prefix == "soundmond/jura-1" and t.status == "soundmond/jura-1/status"
    assert t.for_kind("alert") == "soundmond/jura-1/alerts" and t.for_kind("detection").endswith("/detections")
    assert messages.Topics.for_station(MqttConfig(topic_prefix="city/noise/"), STATION).alerts == "city/noise/alerts"
    with pytest.raises(ValueError, match="wildcards"):
        messages.Topics.for_station(MqttConfig(topic_prefix="a/+/b"), STATION)
    configs = messages.ha_discovery(STATION, t)
    topics = [c[0] for c in configs]
    assert topics == [f"homeassistant/sensor/soundmond_jura-1/{o}/config" for o in
                      ("natural_share", "industrial_share", "last_species", "last_alert", "capture_state")]
    for _, cfg in configs:
        assert cfg["availability_topic"] == t.status
        assert cfg["payload_available"] == "online" and cfg["payload_not_available"] == "offline"
        assert cfg["unique_id"].startswith("soundmond_jura-1_")
        assert cfg["state_topic"].startswith(t.prefix + "/")


def test_evidence_payloads_say_what_became_of_a_clip() -> None:
    """v1.2 `evidence`: written (the file's bytes, SHA-256, where the clip lies, rate, privacy), skipped (why, no clip
    fields) and deleted (why, the clip that was). Ids derive from the change: the same change keeps its id, another
    change of the same clip (a deletion, a write after a deletion) gets its own."""
    written, skipped, deleted = (messages.evidence_payload(c, STATION) for c in (WRITTEN, SKIPPED, DELETED))
    assert messages.Topics.for_station(MqttConfig(), STATION).for_kind("evidence") == "soundmond/jura-1/evidence"
    assert {k: written[k] for k in ("for_event_id", "status", "reason", "bytes", "sha256", "sample_rate_hz")} == {
        "for_event_id": CLIP_OF, "status": "written", "reason": None, "bytes": 123_456, "sha256": "ab" * 32,
        "sample_rate_hz": 44100}
    assert (written["clip_start"], written["clip_end"]) == ("2024-05-24T08:00:00.750Z", "2024-05-24T08:00:04.750Z")
    assert (written["clip_start_s"], written["clip_end_s"], written["ts"]) == (0.5, 4.5, "2024-05-24T08:00:09.250Z")
    assert skipped["reason"] == "speech" and all(skipped[k] is None for k in ("bytes", "sha256", "clip_start"))
    assert (deleted["reason"], deleted["sha256"]) == ("max_mb", "ab" * 32)
    assert written["path"] == skipped["path"] == WRITTEN.path
    ids = [p["event_id"] for p in (written, skipped, deleted)]
    assert len(set(ids)) == 3 and ids[0] == messages.evidence_payload(WRITTEN, BARE)["event_id"]
    assert messages.evidence_payload(replace(WRITTEN, written_unix_s=T + 500), STATION)["event_id"] != ids[0]
    assert messages.evidence_payload(replace(SKIPPED, changed_unix_s=T + 5), STATION)["event_id"] == ids[1]
    for bad, match in ((dict(written, sha256=None), "sha256"), (dict(written, reason="speech"), "reason"),
                       (dict(skipped, bytes=10), "bytes"), (dict(deleted, reason=None), "reason"),
                       (dict(written, path="../etc/passwd"), "path"), (dict(written, status="lost"), "status")):
        with pytest.raises(messages.InvalidMessage, match=match):
            messages.validate(bad)
