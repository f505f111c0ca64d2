"""The evidence stage on real audio with a fake clock: limits (per species per hour, max_mb oldest first, retention),
speech privacy (drop, trim, mute, unscored windows), gaps, and the counters the heartbeat shows."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import samples
import soundfile as sf

from soundmond import identity
from soundmond.config import ConfigError, EvidenceConfig, PrivacyConfig, StationConfig, StoreConfig, load_config
from soundmond.data import Alert, AlertType, AudioWindow, ChunkDetection, SpeciesScore, WindowResult
from soundmond.outputs import messages
from soundmond.outputs.evidence import EvidenceStage, EvidenceWindow, clip_path
from soundmond.outputs.privacy import SPEECH_LABELS, mute_band
from soundmond.outputs.store import Store
from soundmond.workbench.ontology import Ontology

AUDIO = Path(__file__).resolve().parent / "fixtures" / "audio" / "oss_birds_10s.flac"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
WINDOW_S = 1.0


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def audio() -> tuple[np.ndarray, int]:
    samples, rate = sf.read(AUDIO, dtype="float32")
    return samples, rate


def window(audio: tuple[np.ndarray, int], k: int, *, species: tuple[str, ...] = ("Turdus merula",),
           start_unix_s: float = T0, source: str = "rec.flac", offset_s: float = 0.0,
           alerts: tuple[Alert, ...] = (), speech: float | None = 0.0) -> EvidenceWindow:
    samples, rate = audio
    n = int(WINDOW_S * rate)
    start_s = offset_s + k * WINDOW_S
    first = round(start_s * rate)
    w = AudioWindow(f"w{source}{k}", source, start_unix_s + k * WINDOW_S, start_s, rate, samples[first:first + n])
    r = WindowResult(w.window_id, source, w.start_unix_s, w.start_s, w.end_s, None, (), 0.0,
                     tuple(SpeciesScore(s, s, 0.9) for s in species), 0.9, -30.0, 0.0, 1.0)
    return EvidenceWindow(w, r, alerts, speech)


def stage(tmp_path: Path, clock: Clock, store: Store | None = None, **overrides: object) -> EvidenceStage:
    privacy = PrivacyConfig(**{k[8:]: v for k, v in overrides.items() if k.startswith("privacy_")})
    cfg = EvidenceConfig(enabled=True, **{k: v for k, v in overrides.items() if not k.startswith("privacy_")})
    s = EvidenceStage(cfg, privacy, tmp_path / "ev", store=store, stop=threading.Event(), keep_records=True,
                      clock=clock)
    s.root.mkdir(parents=True, exist_ok=True)
    return s  # not started: the tests call handle() on their own thread


def clips(s: EvidenceStage) -> list[Path]:
    return sorted(s.root.rglob("*.flac"))


def test_per_species_per_hour(tmp_path: Path, audio: tuple[np.ndarray, int]) -> None:
    s = stage(tmp_path, Clock(T0), pad_s=0.2, max_per_species_per_hour=2)
    for k in range(5):
        s.handle(window(audio, k, species=("Turdus merula", "Parus major") if k == 0 else ("Turdus merula",)))
    s._flush()
    s._publish()
    names = [r.label for r in s.records]
    assert names.count("Turdus merula") == 2 and names.count("Parus major") == 1
    assert s.stats.skipped["per_species_hour"] == 3
    # the next UTC hour has its own allowance
    s.handle(window(audio, 0, start_unix_s=T0 + 3600, source="later.flac"))
    s._flush()
    assert [r.label for r in s.records].count("Turdus merula") == 3
    # a restart counts what is on disk
    again = stage(tmp_path, Clock(T0), pad_s=0.2, max_per_species_per_hour=2)
    again._scan()
    again.handle(window(audio, 7, source="other.flac"))
    again._flush()
    again._publish()
    assert again.records == [] and again.stats.skipped["per_species_hour"] == 1


def test_max_mb_deletes_the_oldest_first_and_marks_the_store(tmp_path: Path, audio: tuple[np.ndarray, int]) -> None:
    clock = Clock(T0)
    probe = stage(tmp_path / "probe", clock, pad_s=0.0)
    probe.handle(window(audio, 0))
    probe._flush()
    size = probe.records[0].bytes
    store = Store(tmp_path / "s.db", StoreConfig())
    try:
        s = stage(tmp_path, clock, store, pad_s=0.0, max_mb=2.5 * size / (1024 * 1024))
        for k in range(6):
            clock.t = T0 + 10 * k
            s.handle(window(audio, k, species=(f"Species number{k}",)))
        s._flush()
        s._publish()
        kept = {p.stem for p in clips(s)}
        assert kept == {r.event_id for r in s.records[-2:]}  # the two written last
        assert s.stats.deleted["max_mb"] == 4 and s.stats.clips == 2
        assert s.stats.bytes <= 2.5 * size
        conn = sqlite3.connect(tmp_path / "s.db")
        status = {e: (st, why) for e, st, why in conn.execute("SELECT event_id, status, reason FROM evidence")}
        assert status == {r.event_id: ("deleted", "max_mb") if r in s.records[:4] else ("written", None)
                          for r in s.records}
    finally:
        store.close()


def test_retention_deletes_clips_written_long_ago(tmp_path: Path, audio: tuple[np.ndarray, int]) -> None:
    clock = Clock(T0)
    s = stage(tmp_path, clock, pad_s=0.0, retention_days=2)
    s.handle(window(audio, 0))
    s.handle(window(audio, 1))
    clock.t = T0 + 1.5 * 86400
    s.handle(window(audio, 2, species=("Parus major",)))
    s._flush()
    assert len(clips(s)) == 3
    clock.t = T0 + 2.1 * 86400  # the first two are older than 2 days, the third is not
    s.handle(window(audio, 5, species=()))
    s._publish()
    assert [p.stem for p in clips(s)] == [s.records[2].event_id]
    assert s.stats.deleted == {"retention": 2}
    assert not (s.root / clip_path(s.records[0].event_id, "Turdus merula", T0)).parent.exists()  # empty folder gone


def test_speech_window_is_never_saved_drop(tmp_path: Path, audio: tuple[np.ndarray, int]) -> None:
    samples, rate = audio
    store = Store(tmp_path / "s.db", StoreConfig())
    s = stage(tmp_path, Clock(T0), store, pad_s=0.5, privacy_speech_threshold=0.1)
    s.handle(window(audio, 0, species=()))
    s.handle(window(audio, 1, speech=0.6))  # speech: its own detection is not written
    s.handle(window(audio, 2))  # its before-pad would reach the speech window: cut at 2.0 s
    s.handle(window(audio, 3, species=(), speech=None))  # not scored: treated as speech, after-pad cut at 3.0 s
    s._flush()
    s._publish()
    assert len(s.records) == 1
    rec = s.records[0]
    assert (rec.start_s, rec.end_s, rec.privacy) == (2.0, 3.0, "trimmed")
    clip, _ = sf.read(s.root / rec.path, dtype="float32")
    np.testing.assert_array_equal(clip, samples[2 * rate:3 * rate])
    assert s.stats.skipped["speech"] == 1
    assert (s.stats.speech_windows, s.stats.unscored_windows) == (1, 1)
    assert s.stats.privacy == "drop above speech 0.1"
    # the store says which clip was withheld and why, at the path the detection message named
    speech_event = window(audio, 1).result
    planned = s.planned_path(speech_event, speech_event.species[0])
    rows = sqlite3.connect(tmp_path / "s.db").execute("SELECT path, status, reason, bytes FROM evidence "
                                                      "ORDER BY event_start_s").fetchall()
    store.close()
    assert rows == [(planned, "skipped", "speech", None), (rec.path, "written", None, rec.bytes)]


def test_alert_clip_and_mute(tmp_path: Path, audio: tuple[np.ndarray, int]) -> None:
    samples, rate = audio
    s = stage(tmp_path, Clock(T0), pad_s=0.5, privacy_mode="mute")
    first = window(audio, 0, species=())
    alert = Alert(AlertType.UNKNOWN_SOUND, "UNKNOWN_SOUND", "info", T0, "?", alert_id="a" * 32)
    s.handle(window(audio, 0, species=(), alerts=(alert,)))
    s.handle(window(audio, 1, species=(), speech=0.9))
    s._flush()
    assert [(r.kind, r.label, r.privacy) for r in s.records] == [("alert", "alert-UNKNOWN_SOUND", "muted")]
    clip, _ = sf.read(s.root / s.records[0].path, dtype="float32")
    assert clip.shape[0] == int(1.5 * rate)  # the window + its after-pad (clamped before 0)
    np.testing.assert_array_equal(clip[:rate], first.window.samples)  # not speech: the very samples
    muted = clip[rate:]
    original = samples[rate:rate + muted.shape[0]]
    np.testing.assert_allclose(muted, mute_band(original, rate, (300.0, 3400.0), 60.0), atol=2 ** -22)
    spectrum = np.abs(np.fft.rfft(original)) ** 2
    after = np.abs(np.fft.rfft(muted.astype(np.float64))) ** 2
    band = (np.fft.rfftfreq(original.size, 1 / rate) >= 300) & (np.fft.rfftfreq(original.size, 1 / rate) <= 3400)
    assert 10 * np.log10(spectrum[band].sum() / after[band].sum()) > 50  # the speech band is ~60 dB down


def test_a_gap_or_another_recording_ends_the_pads(tmp_path: Path, audio: tuple[np.ndarray, int]) -> None:
    s = stage(tmp_path, Clock(T0), pad_s=0.5)
    s.handle(window(audio, 0))
    s.handle(window(audio, 3, species=()))  # 2 s of audio missing: the first clip is written with what there is
    assert [(r.start_s, r.end_s) for r in s.records] == [(0.0, 1.0)]
    s.handle(window(audio, 0, source="b.flac", species=()))
    assert len(s.records) == 1


def test_the_heartbeat_states_evidence_and_privacy(tmp_path: Path, audio: tuple[np.ndarray, int]) -> None:
    s = stage(tmp_path, Clock(T0), pad_s=0.0)
    s.handle(window(audio, 0, speech=0.5))
    s._publish()
    payload = messages.heartbeat_payload(samples.heartbeat(evidence=s.stats), StationConfig(), ts_unix_s=T0)
    messages.validate(payload)
    assert payload["extra"]["evidence"]["speech_windows"] == 1
    assert payload["extra"]["evidence"]["skipped"] == {"speech": 1}


def test_speech_labels_are_the_ontology_speech_branch(shared_corpus: Path) -> None:
    ontology = Ontology(shared_corpus.parent / "audioset-ontology" / "ontology.json")
    assert ontology.descendants("Speech") == set(SPEECH_LABELS)


def test_config_rejects_unknown_and_bad_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("evidence: {enabled: true, pad: 2}\nprivacy: {mode: blur, mute_band_hz: [3400, 300]}\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    keys = {p.key for p in info.value.problems}
    assert {"evidence.pad", "privacy.mode", "privacy.mute_band_hz"} <= keys


def test_messages_name_the_clip_path_before_it_is_written(tmp_path: Path, audio: tuple[np.ndarray, int]) -> None:
    s = stage(tmp_path, Clock(T0), pad_s=0.0, min_confidence=0.5)
    item = window(audio, 0, species=("Turdus merula",))
    result = item.result
    weak = SpeciesScore("Parus major", "Great Tit", 0.3)
    own = Alert(AlertType.UNKNOWN_SOUND, "UNKNOWN_SOUND", "info", T0, "?",
                alert_id=identity.alert_id("UNKNOWN_SOUND", result.window_id))
    span = Alert(AlertType.INDUSTRIAL_RISE, "INDUSTRIAL_RISE", "warning", T0, "?")  # a span rule: no window
    path = s.planned_path(result, result.species[0])
    assert path is not None and s.planned_path(result, weak) is None and s.planned_path(result, span) is None
    payload = messages.detection_payload(result.species[0], StationConfig(), window_id=result.window_id,
                                         ts_unix_s=result.start_unix_s, evidence_path=path)
    messages.validate(payload)
    alert = messages.alert_payload(own, StationConfig(), evidence_path=s.planned_path(result, own))
    messages.validate(alert)
    s.handle(EvidenceWindow(item.window, result, (own,), 0.0))
    s._flush()
    assert {r.path for r in s.records} == {payload["evidence_path"], alert["evidence_path"]}


def test_a_detection_with_chunk_times_is_its_best_chunk_plus_pads(tmp_path: Path,
                                                                   audio: tuple[np.ndarray, int]) -> None:
    samples, rate = audio
    s = stage(tmp_path, Clock(T0), pad_s=0.5)
    for k in range(3):
        s.handle(window(audio, k, species=()))
    item = window(audio, 3)
    chunks = tuple(ChunkDetection("Turdus merula", "Blackbird", conf, start, start + 3.0, T0 + start, T0 + start + 3.0)
                   for conf, start in ((0.6, 0.8), (0.9, 1.0)))  # chunks ending in this window (3-4 s)
    s.handle(EvidenceWindow(item.window, replace(item.result, detections=chunks), (), 0.0))
    assert s.records == []  # waits for its after-pad
    s.handle(window(audio, 4, species=()))
    [rec] = s.records
    assert (rec.event_start_s, rec.event_end_s, rec.start_s, rec.end_s) == (1.0, 4.0, 0.5, 4.5)
    assert rec.start_unix_s == pytest.approx(T0 + 0.5)
    clip, _ = sf.read(s.root / rec.path, dtype="float32")
    np.testing.assert_array_equal(clip, samples[rate // 2:rate * 9 // 2])


def outbox_messages(db: Path) -> list[dict[str, object]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT payload FROM outbox WHERE kind = 'evidence' ORDER BY id").fetchall()
        return [json.loads(p) for (p,) in rows]
    finally:
        conn.close()


def test_every_change_of_a_clip_queues_one_evidence_message(tmp_path: Path, audio: tuple[np.ndarray, int]) -> None:
    """Written, skipped (speech) and deleted (max_mb) clips each queue one `evidence` message in the outbox, made
    from the store's row; a restart replaying the same audio (the clips found on disk) queues none again."""
    clock = Clock(T0)
    station = StationConfig(id="ev-1")
    store = Store(tmp_path / "s.db", StoreConfig())
    try:
        s = EvidenceStage(EvidenceConfig(enabled=True, pad_s=0.0), PrivacyConfig(speech_threshold=0.1),
                          tmp_path / "ev", store=store, stop=threading.Event(), keep_records=True, clock=clock,
                          station=station)
        s.root.mkdir(parents=True)
        for k in range(3):
            clock.t = T0 + 10 * k + 0.123456789  # a fractional write time, as a real clock gives
            s.handle(window(audio, k, species=(f"Species number{k}",), speech=0.9 if k == 1 else 0.0))
        s._flush()
        written = {r.event_id: r for r in s.records}
        assert len(written) == 2
        sent = outbox_messages(tmp_path / "s.db")
        for m in sent:
            messages.validate(m)
        assert sorted((m["status"], m["for_event_id"]) for m in sent) == sorted(
            [("written", e) for e in written] + [("skipped", identity.detection_id("wrec.flac1", "Species number1"))])
        rows = {r[0]: r[1:] for r in sqlite3.connect(tmp_path / "s.db").execute(
            "SELECT event_id, bytes, sha256, path FROM evidence WHERE status = 'written'")}
        for m in (m for m in sent if m["status"] == "written"):
            data = (s.root / str(m["path"])).read_bytes()
            assert (m["bytes"], m["sha256"], m["path"]) == rows[str(m["for_event_id"])] == (
                len(data), hashlib.sha256(data).hexdigest(), written[str(m["for_event_id"])].path)
        assert next(m for m in sent if m["status"] == "skipped")["reason"] == "speech"

        # a restart replays the same audio: the clips are found on disk, the rows rewritten, no message queued again
        again = EvidenceStage(s.cfg, s.privacy, s.root, store=store, stop=threading.Event(), keep_records=True,
                              clock=clock, station=station)
        again._scan()
        for k in range(3):
            again.handle(window(audio, k, species=(f"Species number{k}",), speech=0.9 if k == 1 else 0.0))
        again._flush()
        assert len(again.records) == 2 and outbox_messages(tmp_path / "s.db") == sent

        # max_mb deletes the oldest: one `deleted` message, with the clip it was
        small = EvidenceStage(s.cfg.model_copy(update={"max_mb": 1.5 * max(r.bytes for r in s.records) / 2**20}),
                              s.privacy, s.root, store=store, stop=threading.Event(), clock=clock, station=station)
        small._scan()
        small._enforce_limits(clock.t)
        deleted = outbox_messages(tmp_path / "s.db")[len(sent):]
        oldest = s.records[0]
        assert [(m["status"], m["reason"], m["for_event_id"], m["sha256"]) for m in deleted] == [
            ("deleted", "max_mb", oldest.event_id, oldest.sha256)]
        messages.validate(deleted[0])
    finally:
        store.close()
