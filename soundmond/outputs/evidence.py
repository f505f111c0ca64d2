"""Evidence clips: FLAC of what a detection or an alert heard, kept under `evidence.path` within set limits.

The stage owns one thread, a bounded queue and everything it keeps: the recent windows' audio (enough for
`evidence.pad_s` on each side of a chunk), the clips waiting for their after-pad, and the index of the clips on disk.
The pipeline thread hands it every analysed window in order (`submit`), then `end()` when the stream stops and
`close()` at shutdown.

What is saved
    A detection at or above `evidence.min_confidence` (one per species per window, id `identity.detection_id`): its
    best chunk (`WindowResult.detections`) plus `pad_s` before and after; the whole window when the window has no
    chunk times for the species. An alert raised by a window (`evidence.alerts`): the window plus the pads. Audio at
    the capture rate, mono, FLAC 24-bit (lossless for 16- and 24-bit sources: read back, the samples equal the
    source's). Pads are clamped at the start and end of the stream, and at a gap or a change of recording. A clip is
    written once the window after it arrived (or the stream ended), so its after-pad is real audio.

Where
    `<evidence.path>/<YYYY-MM-DD>/<HH>/<label>/<event_id>.flac`: UTC date and hour of the window, label = the species'
    scientific name (or `alert-<TYPE>`) with anything but letters, digits, `.`, `-` replaced by `_`. The path follows
    from the event alone (`clip_path`), so it is known when the detection is published; the store's `evidence` table
    says whether the clip was written (size, SHA-256 of the file) or deleted since. An existing file of the same id
    (a replay of the same audio) is kept, not written again.

Messages
    Given the station (`soundmond run`), every change of a clip's store row (written, skipped, deleted) queues an
    `evidence` message (`messages.evidence_payload`) in the outbox, in the same transaction as the row
    (`Store.write_evidence(..., outbox=)`): published once, after a restart too; a replay of the same change has the
    same id and is not queued again. It may reach subscribers before the detection or alert it is about (that one
    comes through the store writer's batch): they are joined on `for_event_id`.

Limits (every skip and every deletion counted: `EvidenceStats`, in the heartbeat)
    `max_per_species_per_hour`: clips per label per UTC hour of the event (those already on disk count).
    `max_mb`: all clips together; the oldest written are deleted first. `retention_days`: a clip is deleted this long
    after it was written. Speech privacy (`soundmond.outputs.privacy`) decides what audio may be saved at all.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import soundfile as sf

from soundmond import identity
from soundmond.analysis import Analysis, Session
from soundmond.config import EvidenceConfig, LoadedConfig, PrivacyConfig, StationConfig
from soundmond.data import (
    Alert,
    AudioWindow,
    ClipRecord,
    ClipSkip,
    ClipStatus,
    EvidenceStats,
    SpeciesScore,
    WindowResult,
)
from soundmond.outputs.messages import evidence_payload
from soundmond.outputs.privacy import mute_band, speech_indices, speech_score
from soundmond.outputs.store import EvidenceOutbox, OutboxItem

logger = logging.getLogger(__name__)

QUEUE_WINDOWS = 16  # windows waiting for the stage (a clip costs milliseconds; a window takes seconds to come)
SUBMIT_WAIT_S = 2.0  # the pipeline thread waits this long for room, then the window is counted as dropped
HISTORY_MARGIN_S = 10.0  # audio kept before the newest window beyond the pads (a chunk may start before its window)
RETENTION_EVERY_S = 60.0  # retention and max_mb are checked after every clip and at least this often
BYTES_PER_MB = 1024 * 1024
CLIP_SUBTYPE = "PCM_24"

Privacy = Literal["clear", "trimmed", "muted"]  # see ClipRecord.privacy


@runtime_checkable
class EvidenceStore(Protocol):
    """Where clip records go (the Store): one row per clip, marked when the clip is deleted."""

    def write_evidence(self, record: ClipRecord, outbox: EvidenceOutbox | None = None) -> None: ...

    def evidence_skipped(self, skip: ClipSkip, outbox: EvidenceOutbox | None = None) -> None: ...

    def evidence_deleted(self, paths: Sequence[str], reason: str, now: float,
                         outbox: EvidenceOutbox | None = None) -> None: ...


def evidence_outbox(station: StationConfig) -> EvidenceOutbox:
    """The outbox row of a clip's change: the `evidence` message (QoS 1) for `station`."""
    def item(clip: ClipStatus) -> OutboxItem:
        payload = evidence_payload(clip, station)
        return OutboxItem("evidence", payload["event_id"], payload, 1)
    return item


@dataclass(frozen=True, eq=False)
class EvidenceWindow:
    """One analysed window for the stage: its audio at the capture rate, its result, the alerts it raised and the
    tagger's speech score (None: the tagger did not score it)."""

    window: AudioWindow
    result: WindowResult
    alerts: tuple[Alert, ...]
    speech: float | None


@dataclass(frozen=True)
class _Request:
    event_id: str
    kind: Literal["detection", "alert"]
    label: str
    window_id: str
    core_start_s: float  # the chunk or window, within the source
    core_end_s: float
    ts_unix_s: float  # the event's time: date/hour of the path and the per-hour limit
    core_start_unix_s: float


@dataclass
class _Held:
    item: EvidenceWindow
    private: bool


@dataclass
class _Counters:
    written: int = 0
    existing: int = 0
    queue_dropped: int = 0
    speech_windows: int = 0
    unscored_windows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)


def label_slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", label).strip("_") or "_"


def clip_path(event_id: str, label: str, ts_unix_s: float) -> str:
    """Where an event's clip goes, relative to `evidence.path` (known before the clip is written)."""
    t = datetime.fromtimestamp(ts_unix_s, tz=timezone.utc)
    return f"{t:%Y-%m-%d}/{t:%H}/{label_slug(label)}/{event_id}.flac"


def alert_label(alert: Alert) -> str:
    return f"alert-{alert.type.value}"


def requests_for(item: EvidenceWindow, cfg: EvidenceConfig, skipped: dict[str, int]) -> list[_Request]:
    """The clips a window asks for: its detections at or above min_confidence (best chunk, else the window) and the
    alerts it raised. Detections below the floor are counted in `skipped["confidence"]`."""
    r = item.result
    out: list[_Request] = []
    for species in r.species:
        if species.confidence < cfg.min_confidence:
            skipped["confidence"] = skipped.get("confidence", 0) + 1
            continue
        chunks = [d for d in r.detections if d.scientific_name == species.scientific_name]
        if chunks:
            best = max(chunks, key=lambda d: d.confidence)
            core, core_unix = (best.start_s, best.end_s), best.start_unix_s
        else:
            core, core_unix = (r.start_s, r.end_s), r.start_unix_s
        out.append(_Request(identity.detection_id(r.window_id, species.scientific_name), "detection",
                            species.scientific_name, r.window_id, core[0], core[1], r.start_unix_s, core_unix))
    if cfg.alerts:
        for alert in item.alerts:
            out.append(_Request(alert.alert_id, "alert", alert_label(alert), r.window_id, r.start_s, r.end_s,
                                r.start_unix_s, r.start_unix_s))
    return out


class EvidenceStage:
    """The evidence thread. `submit`, `end` and `close` are called by the pipeline thread; `stats` by anyone."""

    def __init__(self, cfg: EvidenceConfig, privacy: PrivacyConfig, root: Path, *, store: EvidenceStore | None,
                 stop: threading.Event, tagger_labels: Sequence[str] = (), keep_records: bool = False,
                 clock: Callable[[], float] = time.time, station: StationConfig | None = None) -> None:
        self.cfg = cfg
        self.speech_indices = speech_indices(tagger_labels)
        self.privacy = privacy
        self.root = root
        self.store = store
        self.outbox = evidence_outbox(station) if station is not None else None  # None: no `evidence` messages
        self.stop = stop
        self.clock = clock
        self._queue: queue.Queue[EvidenceWindow | str | None] = queue.Queue(maxsize=QUEUE_WINDOWS)
        self._thread = threading.Thread(target=self._loop, name="evidence", daemon=True)
        # owned by the evidence thread
        self._history: deque[_Held] = deque()
        self._pending: list[_Request] = []
        self._index: dict[str, tuple[float, int]] = {}  # relative path -> (written unix s, bytes)
        self._per_hour: dict[tuple[str, str], set[str]] = {}  # (label slug, YYYY-MM-DD/HH) -> event ids
        self._counters = _Counters()
        self._last_retention = -float("inf")
        self._queue_dropped = 0  # owned by the pipeline thread (the submitter)
        self.failed: str | None = None
        self.keep_records = keep_records  # analyze lists them; the daemon does not hold them (the store does)
        self.records: list[ClipRecord] = []  # the clips this run wrote or found (evidence thread; read after close)
        self.stats = EvidenceStats(enabled=True, privacy=self._privacy_text())

    @classmethod
    def for_run(cls, loaded: LoadedConfig, session: Session, store: object,
                stop: threading.Event) -> EvidenceStage | NoEvidence:
        """The started stage of `soundmond run`, or a `NoEvidence` while `evidence.enabled` is off. `store`: where
        clip rows (and their `evidence` messages) go when it can take them (the daemon's `Store`)."""
        cfg = loaded.config
        if not cfg.evidence.enabled:
            return NoEvidence()
        tagger = session.analyzer.tagger
        return cls(cfg.evidence, cfg.privacy, loaded.resolve(cfg.evidence.path),
                   store=store if isinstance(store, EvidenceStore) else None, stop=stop,
                   tagger_labels=tagger.labels if tagger is not None else (),
                   station=cfg.station if cfg.mqtt.enabled else None).start()  # no MQTT: no outbox rows

    # ------------------------------------------------------------------ pipeline thread

    def start(self) -> EvidenceStage:
        self.root.mkdir(parents=True, exist_ok=True)
        self._scan()
        self._thread.start()
        return self

    def submit(self, item: EvidenceWindow) -> None:
        """Hand over one analysed window (in order). Waits SUBMIT_WAIT_S for room at most, not at all once the stop
        event is set (shutdown must not wait for clips); a window that does not fit is counted (`queue_full`) and its
        clips are not written."""
        wait = SUBMIT_WAIT_S if self._thread.is_alive() and not self.stop.is_set() else 0.0
        try:
            self._queue.put(item, timeout=wait)
        except queue.Full:
            self._queue_dropped += 1
            logger.warning("the evidence queue is full: window %s gets no clip (%d so far)", item.result.window_id,
                           self._queue_dropped)

    def offer(self, window: AudioWindow, analysis: Analysis, alerts: Sequence[Alert]) -> None:
        """`submit` a window as the pipeline has it: the speech score from the tagger's output (None when the tagger
        did not run), the alerts that this window raised (their id derives from its window id; span rules' do not)."""
        tagger = analysis.tagger_output
        speech = speech_score(tagger.probabilities, self.speech_indices) if tagger is not None else None
        window_id = analysis.result.window_id
        own = tuple(a for a in alerts if a.alert_id == identity.alert_id(a.key, window_id))
        self.submit(EvidenceWindow(window, analysis.result, own, speech))

    def planned_path(self, result: WindowResult | None, event: Alert | SpeciesScore) -> str | None:
        """Where the clip of a detection or an alert of `result` will be kept if it is written (any thread: it reads
        the config only); None when no clip is asked for."""
        if result is None:
            return None
        if isinstance(event, SpeciesScore):
            if event.confidence < self.cfg.min_confidence:
                return None
            return clip_path(identity.detection_id(result.window_id, event.scientific_name), event.scientific_name,
                             result.start_unix_s)
        if not self.cfg.alerts or event.alert_id != identity.alert_id(event.key, result.window_id):
            return None
        return clip_path(event.alert_id, alert_label(event), result.start_unix_s)

    def annotate(self, result: WindowResult | None, items: list[OutboxItem]) -> list[OutboxItem]:
        """The pipeline's outbox items of `result`: each detection and alert payload that asks for a clip gets its
        `evidence_path` (v1.2). The payloads were just made for these items: changed in place, on the pipeline
        thread, before they are queued. Span rules' alerts (no window) get none."""
        if result is None:
            return items
        species = {s.scientific_name: s for s in result.species}
        for item in items:
            path = None
            if item.kind == "detection" and (score := species.get(item.payload.get("scientific_name", ""))):
                path = self.planned_path(result, score)
            elif item.kind == "alert" and self.cfg.alerts and item.event_id == identity.alert_id(
                    str(item.payload.get("key")), result.window_id):
                path = clip_path(item.event_id, f"alert-{item.payload.get('alert_type')}", result.start_unix_s)
            if path is not None:
                item.payload["evidence_path"] = path
        return items

    def planned(self, result: WindowResult, alerts: Sequence[Alert]) -> dict[str, str]:
        """Event id -> `planned_path` of every clip `result` and its `alerts` ask for."""
        events: list[tuple[str, str | None]] = [
            (identity.detection_id(result.window_id, s.scientific_name), self.planned_path(result, s))
            for s in result.species]
        events += [(a.alert_id, self.planned_path(result, a)) for a in alerts]
        return {event_id: path for event_id, path in events if path is not None}

    def end(self) -> None:
        """The stream ended (or stopped): write the clips waiting for an after-pad with the audio there is. `close`
        does it too; this marks the end in the stream's order (a later window would start a new stream)."""
        try:
            self._queue.put("end", timeout=SUBMIT_WAIT_S if self._thread.is_alive() else 0.0)
        except queue.Full:
            logger.warning("the evidence queue is full: the end of the stream is left to close()")

    def close(self, timeout: float = 30.0) -> bool:
        """Write what is pending and end the thread; False (logged) when it did not finish within `timeout`."""
        if not self._thread.is_alive():
            return True
        try:
            self._queue.put(None, timeout=timeout)
            self._thread.join(timeout=timeout)
        except queue.Full:
            pass
        if self._thread.is_alive():
            logger.error("the evidence stage did not finish within %.0f s: its last clips may be missing", timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------------ evidence thread

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    self._flush()
                    self._publish()
                    return
                if item == "end":
                    self._flush()
                elif isinstance(item, EvidenceWindow):
                    self.handle(item)
            except Exception as exc:  # one bad clip must not end the stage: counted, logged, the next goes on
                logger.exception("the evidence stage failed on an item")
                self.failed = str(exc)
                self._skip("error")
            self._publish()

    def handle(self, item: EvidenceWindow) -> None:
        """One window (evidence thread; tests call it directly)."""
        if self._history and not self._continues(item.window):
            self._flush()
        private = self._is_private(item)
        self._history.append(_Held(item, private))
        self._pending.extend(requests_for(item, self.cfg, self._counters.skipped))
        covered_end = max(h.item.window.end_s for h in self._history)
        still: list[_Request] = []
        for req in self._pending:
            if covered_end + 0.5 / item.window.sample_rate_hz >= req.core_end_s + self.cfg.pad_s:
                self._write(req)
            else:
                still.append(req)
        self._pending = still
        self._prune(item.window)
        now = self.clock()
        if now - self._last_retention >= RETENTION_EVERY_S:
            self._enforce_limits(now)
        self._publish()

    def _flush(self) -> None:
        for req in self._pending:
            self._write(req)
        self._pending = []
        self._history.clear()
        self._enforce_limits(self.clock())

    def _continues(self, window: AudioWindow) -> bool:
        last = self._history[-1].item.window
        return (window.source == last.source and window.sample_rate_hz == last.sample_rate_hz
                and last.start_s <= window.start_s <= last.end_s + 1.0 / window.sample_rate_hz)

    def _is_private(self, item: EvidenceWindow) -> bool:
        if not self.privacy.enabled:
            return False
        if item.result.group is not None and item.result.group.quiet:
            return False  # below the quiet floor: nothing audible
        if item.speech is None:
            self._counters.unscored_windows += 1
            return True
        if item.speech > self.privacy.speech_threshold:
            self._counters.speech_windows += 1
            return True
        return False

    def _prune(self, newest: AudioWindow) -> None:
        keep_from = newest.start_s - self.cfg.pad_s - HISTORY_MARGIN_S
        if self._pending:
            keep_from = min(keep_from, min(r.core_start_s for r in self._pending) - self.cfg.pad_s)
        while len(self._history) > 1 and self._history[0].item.window.end_s < keep_from:
            self._history.popleft()

    def _skip(self, reason: str, req: _Request | None = None) -> None:
        self._counters.skipped[reason] = self._counters.skipped.get(reason, 0) + 1
        if req is not None and self.store is not None:
            self.store.evidence_skipped(ClipSkip(req.event_id, req.kind, req.label, req.window_id,
                                                 clip_path(req.event_id, req.label, req.ts_unix_s), req.core_start_s,
                                                 req.core_end_s, reason, self.clock()), self.outbox)

    def _assemble(self, req: _Request) -> tuple[np.ndarray, float, int, Privacy] | str:
        """The clip's samples, its start within the source, its rate and what privacy did; or why there is none."""
        rate = self._history[-1].item.window.sample_rate_hz
        a = max(0, round((req.core_start_s - self.cfg.pad_s) * rate))
        b = round((req.core_end_s + self.cfg.pad_s) * rate)
        n = max(0, b - a)
        audio = np.zeros(n, dtype=np.float32)
        covered = np.zeros(n, dtype=bool)
        private = np.zeros(n, dtype=bool)
        for held in self._history:
            w = held.item.window
            real = w.samples[: w.samples.shape[0] - w.padded_samples]
            w0 = round(w.start_s * rate)
            lo, hi = max(a, w0), min(b, w0 + real.shape[0])
            if lo >= hi:
                continue
            audio[lo - a:hi - a] = real[lo - w0:hi - w0]
            covered[lo - a:hi - a] = True
            if held.private:
                private[lo - a:hi - a] = True
        c0 = min(max(round(req.core_start_s * rate) - a, 0), n)
        c1 = min(max(round(req.core_end_s * rate) - a, c0), n)
        if c1 <= c0 or not covered[c0:c1].all():
            return "no_audio"
        lo, hi = c0, c1
        while lo > 0 and covered[lo - 1]:
            lo -= 1
        while hi < n and covered[hi]:
            hi += 1
        how: Privacy = "clear"
        if private[lo:hi].any():
            if self.privacy.mode == "drop":
                if private[c0:c1].any():
                    return "speech"
                before = np.flatnonzero(private[lo:c0])
                after = np.flatnonzero(private[c1:hi])
                lo = lo + int(before[-1]) + 1 if before.size else lo
                hi = c1 + int(after[0]) if after.size else hi
                how = "trimmed"
            else:
                edges = np.flatnonzero(np.diff(np.concatenate(([0], private[lo:hi].astype(np.int8), [0]))))
                for s, e in zip(edges[0::2], edges[1::2], strict=True):
                    audio[lo + s:lo + e] = mute_band(audio[lo + s:lo + e], rate, self.privacy.mute_band_hz,
                                                     self.privacy.mute_db)
                how = "muted"
        return audio[lo:hi], (a + lo) / rate, rate, how

    def _write(self, req: _Request) -> None:
        try:
            self._write_clip(req)
        except (OSError, sf.LibsndfileError, RuntimeError) as exc:  # a full or read-only disk: counted; the next one
            logger.exception("evidence clip %s could not be written", req.event_id)
            self.failed = f"{req.event_id}: {exc}"
            self._skip("error", req)

    def _write_clip(self, req: _Request) -> None:
        slug = label_slug(req.label)
        hour = datetime.fromtimestamp(req.ts_unix_s, tz=timezone.utc).strftime("%Y-%m-%d/%H")
        ids = self._per_hour.setdefault((slug, hour), set())
        if req.event_id not in ids and len(ids) >= self.cfg.max_per_species_per_hour:
            self._skip("per_species_hour", req)
            return
        assembled = self._assemble(req)
        if isinstance(assembled, str):
            self._skip(assembled, req)
            return
        audio, start_s, rate, how = assembled
        rel = clip_path(req.event_id, req.label, req.ts_unix_s)
        path = self.root / rel
        now = written = self.clock()
        existed = path.exists()
        if existed:  # the same event from the same audio (a replay): kept as it is, with its write time
            self._counters.existing += 1
            written = self._index.get(rel, (path.stat().st_mtime, 0))[0]
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            sf.write(str(tmp), audio, rate, format="FLAC", subtype=CLIP_SUBTYPE)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            os.utime(path, (written, written))  # the write time on the clock the limits go by (a restart reads it)
            written = path.stat().st_mtime  # as a restart reads it back: the `evidence` message's id derives from it
            self._counters.written += 1
        size = path.stat().st_size
        self._index[rel] = (written, size)
        ids.add(req.event_id)
        start_unix_s = req.core_start_unix_s - (req.core_start_s - start_s)
        record = ClipRecord(req.event_id, req.kind, req.label, req.window_id, rel, size, identity.file_sha256(path),
                            start_s, start_s + audio.shape[0] / rate, start_unix_s, req.core_start_s, req.core_end_s,
                            rate, how, written)
        if self.keep_records:
            self.records.append(record)
        if self.store is not None:
            self.store.write_evidence(record, self.outbox)
        logger.info("evidence clip %s (%s, %.1f s, %s)%s", rel, req.label, audio.shape[0] / rate, how,
                    ": already written" if existed else "")
        self._enforce_limits(now)

    def _scan(self) -> None:
        """The clips already on disk: their write times, sizes and per-hour counts (a restart keeps the limits)."""
        for path in self.root.rglob("*.flac"):
            rel = path.relative_to(self.root).as_posix()
            parts = rel.split("/")
            st = path.stat()
            self._index[rel] = (st.st_mtime, st.st_size)
            if len(parts) == 4:
                self._per_hour.setdefault((parts[2], f"{parts[0]}/{parts[1]}"), set()).add(parts[3][:-5])
        for tmp in self.root.rglob("*.flac.tmp"):  # a write cut short by a crash
            tmp.unlink(missing_ok=True)

    def _enforce_limits(self, now: float) -> None:
        self._last_retention = now
        cutoff = now - self.cfg.retention_days * 86400.0
        self._delete([rel for rel, (t, _) in self._index.items() if t < cutoff], "retention", now)
        max_bytes = self.cfg.max_mb * BYTES_PER_MB
        total = sum(size for _, size in self._index.values())
        if total <= max_bytes:
            return
        victims: list[str] = []
        for rel, (_, size) in sorted(self._index.items(), key=lambda kv: (kv[1][0], kv[0])):
            if total <= max_bytes:
                break
            victims.append(rel)
            total -= size
        self._delete(victims, "max_mb", now)

    def _delete(self, rels: list[str], reason: str, now: float) -> None:
        if not rels:
            return
        for rel in rels:
            path = self.root / rel
            path.unlink(missing_ok=True)
            self._index.pop(rel, None)
            for parent in path.parents:  # empty date/hour/label folders go too
                if parent == self.root or not parent.is_relative_to(self.root):
                    break
                try:
                    parent.rmdir()
                except OSError:
                    break
        self._counters.deleted[reason] = self._counters.deleted.get(reason, 0) + len(rels)
        logger.info("evidence: %d clips deleted (%s)", len(rels), reason)
        if self.store is not None:
            self.store.evidence_deleted(rels, reason, now, self.outbox)

    def _privacy_text(self) -> str:
        p = self.privacy
        return f"{p.mode} above speech {p.speech_threshold}" if p.enabled else "off"

    def _publish(self) -> None:
        c = self._counters
        self.stats = EvidenceStats(
            enabled=True, privacy=self._privacy_text(), clips=len(self._index),
            bytes=sum(size for _, size in self._index.values()), written=c.written, existing=c.existing,
            speech_windows=c.speech_windows, unscored_windows=c.unscored_windows,
            skipped={**c.skipped, **({"queue_full": self._queue_dropped} if self._queue_dropped else {})},
            deleted=dict(c.deleted), failing=self.failed,
        )


class NoEvidence:
    """What the daemon holds while `evidence.enabled` is off: takes every window and asks for no clip."""

    stats: EvidenceStats | None = None

    def offer(self, window: AudioWindow, analysis: Analysis, alerts: Sequence[Alert]) -> None:
        return None

    def annotate(self, result: WindowResult | None, items: list[OutboxItem]) -> list[OutboxItem]:
        return items

    def close(self, timeout: float = 30.0) -> bool:
        return True
