"""What flows between the pipeline's stages: frozen dataclasses with units in their names."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

import numpy as np
import numpy.typing as npt

from soundmond import identity

Group = Literal["natural", "industrial", "other"]
GROUPS: tuple[Group, ...] = ("natural", "industrial", "other")
QUIET: Literal["quiet"] = "quiet"  # digital silence or below `windows.quiet_below_dbfs`: no head ran
WindowGroup = Literal["natural", "industrial", "other", "quiet"]

Severity = Literal["info", "warning", "critical"]


class AlertType(str, Enum):
    """Every alert soundmond raises; the value is the stable name in the store, MQTT and `alerts.disabled`."""

    RARE_SPECIES = "RARE_SPECIES"
    LOW_CONFIDENCE = "LOW_CONFIDENCE"
    UNKNOWN_SOUND = "UNKNOWN_SOUND"
    HIGH_FREQUENCY = "HIGH_FREQUENCY"
    LOW_FREQUENCY = "LOW_FREQUENCY"
    INDUSTRIAL_RISE = "INDUSTRIAL_RISE"
    BIRD_ACTIVITY_DROP = "BIRD_ACTIVITY_DROP"
    CAPTURE_LOST = "CAPTURE_LOST"
    CAPTURE_RESTORED = "CAPTURE_RESTORED"
    CAPTURE_FLAT = "CAPTURE_FLAT"
    CAPTURE_CLIPPED = "CAPTURE_CLIPPED"
    FALLING_BEHIND = "FALLING_BEHIND"
    RECORDER_SILENT = "RECORDER_SILENT"

    def __str__(self) -> str:  # the bare name in f-strings, logs and JSON on every Python (a StrEnum from 3.11 on)
        return self.value


def new_id() -> str:
    """A unique id for messages that are not replayed events (soundscape, heartbeat): uuid4, hex. Windows,
    detections and alerts have ids derived from what they are (`soundmond.identity`)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, eq=False)
class AudioWindow:
    """One analysis window of mono audio, as cut by a source."""

    window_id: str
    source: str  # file path, or "mic:<device>"
    start_unix_s: float  # wall-clock time of the first sample (UTC epoch seconds)
    start_s: float  # offset of the first sample within its source (file or capture session)
    sample_rate_hz: int
    samples: npt.NDArray[np.float32]  # mono float32 in [-1, 1]
    padded_samples: int = 0  # zeros appended at the end (a file's short tail): not audio that was heard
    final: bool = False  # the last window of its file: the bird chunk grid flushes and closes its last chunk
    # the source's audio just before `samples` (at most `capture.files.LEAD_IN_S`), given only to the first window of a
    # file resumed after a crash: the bird chunk grid's chunks that cross the resume point need it. Never analysed.
    lead_in: npt.NDArray[np.float32] | None = None

    @property
    def duration_s(self) -> float:
        """Seconds of real audio in the window (padding excluded)."""
        return (self.samples.shape[0] - self.padded_samples) / self.sample_rate_hz

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True, eq=False)
class TaggerOutput:
    """AudioSet tagger result for one window: sigmoid probabilities, the top labels and the embedding."""

    probabilities: npt.NDArray[np.float32]  # [527] (AST) or [521] (YAMNet)
    embedding: npt.NDArray[np.float32]  # [768] (AST) or [1024] (YAMNet)
    top: tuple[LabelScore, ...]


@dataclass(frozen=True)
class SpeciesScore:
    """One bird-model species for one window (max over the window's chunks)."""

    scientific_name: str
    common_name: str
    confidence: float  # sigmoid(logit_scale(sensitivity) * logit), as BirdNET-Analyzer
    occurrence: float | None = None  # meta-model occurrence at the station's location/week, when known


@dataclass(frozen=True)
class ChunkDetection:
    """One species in one bird-model chunk of the stream-aligned grid (BirdNET's unit of detection: a 3-s chunk
    starting every `models.birds.stride_s` seconds from the start of the file or capture session). A window holds the
    chunks that END within it (see `soundmond.models.grid`)."""

    scientific_name: str
    common_name: str
    confidence: float  # sigmoid(logit_scale(sensitivity) * logit) in this chunk
    start_s: float  # chunk start within its source (file or capture session), seconds
    end_s: float  # chunk end within its source, seconds (start_s + the model's chunk length)
    start_unix_s: float  # chunk start, UTC epoch seconds
    end_unix_s: float
    occurrence: float | None = None  # meta-model occurrence at the station's location/week, when known


@dataclass(frozen=True, eq=False)
class BirdOutput:
    species: tuple[SpeciesScore, ...]  # kept species (above min confidence, filters applied), best first
    top_score: float  # best confidence of any species before filtering (for LOW_CONFIDENCE / UNKNOWN_SOUND)
    embedding: npt.NDArray[np.float32] | None = None  # [1024] mean over chunks
    # every kept species in every chunk of the window (chunk start order, then best first); `species` is their max
    detections: tuple[ChunkDetection, ...] = ()


@dataclass(frozen=True)
class GroupPrediction:
    group: WindowGroup  # "quiet" only from the analyzer's quiet floor, never from a head
    probabilities: dict[str, float]  # natural / industrial / other -> probability; empty for "quiet"

    @property
    def quiet(self) -> bool:
        return self.group == QUIET


@dataclass(frozen=True)
class AcousticIndices:
    """Soundscape-ecology indices of one window (`soundmond.soundscape.indices`: definitions, bands, parameters)."""

    ndsi: float  # normalised difference soundscape index, -1 (anthrophony) .. 1 (biophony)
    aci: float  # acoustic complexity index (whole window as one step)
    adi: float  # acoustic diversity index (Shannon, nats)
    aei: float  # acoustic evenness index (Gini), 0..1
    bi: float  # bioacoustic index
    hf: float  # spectral entropy, 0..1
    ht: float  # temporal entropy, 0..1
    h: float  # acoustic entropy index H = hf * ht, 0..1
    leq_dbfs: float  # equivalent continuous level, dB re full scale
    leq_db_spl: float | None = None  # dB SPL re 20 uPa, when `source.calibration_db` is set


INDEX_NAMES: tuple[str, ...] = ("ndsi", "aci", "adi", "aei", "bi", "hf", "ht", "h", "leq_dbfs", "leq_db_spl")


@dataclass(frozen=True)
class WindowResult:
    """Everything soundmond knows about one window; the unit that is stored, aggregated and published."""

    window_id: str
    source: str
    start_unix_s: float
    start_s: float
    end_s: float
    group: GroupPrediction | None  # None when the models were skipped (gate) or failed; "quiet" below the quiet floor
    tagger_top: tuple[LabelScore, ...]
    tagger_top_score: float
    species: tuple[SpeciesScore, ...]
    bird_top_score: float
    rms_dbfs: float
    clipped_fraction: float
    compute_ms: float
    status: Literal["ok", "skipped_quiet", "error"] = "ok"
    error: str | None = None
    # the kept species of every bird-model chunk that ends in this window (chunk start order, then best first);
    # `species` holds each species' best chunk
    detections: tuple[ChunkDetection, ...] = ()
    indices: AcousticIndices | None = None  # None: indices off, digital silence, or too short a window

    def best_chunks(self) -> dict[str, ChunkDetection]:
        """Each species' best chunk of this window (the earliest of equal confidences), by scientific name."""
        best: dict[str, ChunkDetection] = {}
        for d in self.detections:
            if d.scientific_name not in best or d.confidence > best[d.scientific_name].confidence:
                best[d.scientific_name] = d
        return best


@dataclass(frozen=True)
class Alert:
    """An alert raised by a rule: stable type name, severity, evidence and a message for people."""

    type: AlertType
    key: str  # what the hysteresis / cooldown is per (e.g. "HIGH_FREQUENCY:Turdus merula:3600")
    severity: Severity
    ts_unix_s: float
    message: str
    evidence: dict[str, object] = field(default_factory=dict)  # window ids, scores, baselines
    alert_id: str = ""  # the alert engine derives it from the key and the window or time that raised it

    def __post_init__(self) -> None:
        if not self.alert_id:  # an alert made by hand: its key and time
            object.__setattr__(self, "alert_id", identity.alert_id(self.key, f"t{self.ts_unix_s!r}"))


CaptureState = Literal["starting", "running", "lost", "flat", "clipped"]


@dataclass(frozen=True)
class CaptureEvent:
    """A change of the capture state, reported once per change by a live source."""

    state: CaptureState
    previous: CaptureState
    ts_unix_s: float
    message: str
    detail: dict[str, object] = field(default_factory=dict)  # device, error, reopen attempts, overflows


# ---------------------------------------------------------------- station health (the heartbeat)


@dataclass(frozen=True)
class CaptureStats:
    """A live source's counters since start (`MicSource.stats()`)."""

    state: CaptureState
    device: str | None
    blocks: int
    overflows: int
    queue_drops: int
    gaps: int
    reopen_attempts: int
    clock_reanchors: int
    last_block_age_s: float | None
    stream_rate_hz: float | None
    queue_depth: int


@dataclass(frozen=True)
class DiskUsage:
    store_bytes: int
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class OutboxCounts:
    """Rows waiting for the broker (`pending`, of which `pending_alerts`), sent but not yet deleted, and the rows
    dropped or refused by the outbox policy since the store was made."""

    pending: int
    pending_alerts: int
    sent: int
    dropped: int
    refused: int


@dataclass(frozen=True)
class WriterHealth:
    """The store writer thread: alive, its queue, what it wrote, dropped and refused, and its last error."""

    alive: bool
    queue_depth: int
    overflow_alerts: int
    failing: bool
    last_error: str | None
    last_error_unix_s: float | None
    batches_written: int
    rows_written: int
    dropped_windows: int
    dropped_outbox_items: int
    rejected_items: int


@dataclass(frozen=True)
class BaselineRule:
    ready: bool
    usable_days: int
    days_needed: int
    span_s: int


@dataclass(frozen=True)
class BaselineStatus:
    """Whether the baseline alert rules can fire yet, and a sentence for people saying so."""

    ready: bool
    days_available: float
    days_needed: int
    message: str
    rules: Mapping[AlertType, BaselineRule]


@dataclass(frozen=True)
class ClipRecord:
    """An evidence clip written under `evidence.path` (`path` relative to it; `soundmond.outputs.evidence`)."""

    event_id: str  # detection_id or alert_id
    kind: Literal["detection", "alert"]
    label: str  # scientific name, or "alert-<TYPE>"
    window_id: str
    path: str
    bytes: int
    sha256: str  # of the file's bytes
    start_s: float  # clip start / end within the source (file or capture session)
    end_s: float
    start_unix_s: float
    event_start_s: float  # the chunk or window the clip is of, within the source (the rest are pads)
    event_end_s: float
    sample_rate_hz: int
    privacy: Literal["clear", "trimmed", "muted"]  # trimmed: a pad cut short at speech; muted: speech band attenuated
    written_unix_s: float


@dataclass(frozen=True)
class ClipSkip:
    """An evidence clip that was asked for and not written (`reason`: speech, per_species_hour, no_audio, error)."""

    event_id: str
    kind: Literal["detection", "alert"]
    label: str
    window_id: str
    path: str  # where it would have been (what the detection / alert message named)
    event_start_s: float
    event_end_s: float
    reason: str
    ts_unix_s: float


@dataclass(frozen=True)
class ClipStatus:
    """What became of an event's evidence clip: its row of the store's `evidence` table as a change left it (the
    `evidence` MQTT message is made from it). Clip fields are None while no clip was written (`skipped`)."""

    event_id: str  # the detection or alert the clip is of
    kind: Literal["detection", "alert"]
    label: str
    window_id: str
    path: str
    status: Literal["written", "skipped", "deleted"]
    reason: str | None
    event_start_s: float
    event_end_s: float
    bytes: int | None
    sha256: str | None
    start_s: float | None
    end_s: float | None
    start_unix_s: float | None
    sample_rate_hz: int | None
    privacy: str | None
    written_unix_s: float | None
    changed_unix_s: float


@dataclass(frozen=True)
class EvidenceStats:
    """The evidence stage (`soundmond.outputs.evidence`): clips on disk, what was written, skipped (by reason:
    confidence, per_species_hour, speech, no_audio, queue_full, error) and deleted (retention, max_mb), and the speech
    privacy in force with the windows it kept from being saved (speech, and unscored: the tagger did not run)."""

    enabled: bool
    privacy: str  # "drop above speech 0.1", "mute above speech 0.1" or "off"
    clips: int = 0
    bytes: int = 0
    written: int = 0
    existing: int = 0  # clips of replayed events found already written
    speech_windows: int = 0
    unscored_windows: int = 0
    skipped: Mapping[str, int] = field(default_factory=dict)
    deleted: Mapping[str, int] = field(default_factory=dict)
    failing: str | None = None


@dataclass(frozen=True)
class Heartbeat:
    """Station health, built by the pipeline every `mqtt.heartbeat_interval_s` and published as it is."""

    uptime_s: float
    rtf: float | None  # compute seconds per second of audio over the last windows (< 1 keeps up)
    windows_processed: int
    dropped_windows: int
    failed_windows: int
    skipped_quiet_windows: int
    capture_state: CaptureState
    capture: CaptureStats | None  # None for recordings
    disk: DiskUsage | None
    models: Mapping[str, str | None]  # tagger / birds / head -> exact version line
    config_sha256: str
    version: str
    outbox: OutboxCounts | None
    store_writer: WriterHealth | None
    baseline: BaselineStatus
    evidence: EvidenceStats | None = None  # None while evidence clips are off


@dataclass(frozen=True)
class ReplayProgress:
    """What the store knows of one recording (by content) analysed with one set of window settings at one path."""

    sha256: str  # of the file's bytes
    analysis: str  # the settings its window ids derive from (`capture.replay.analysis_key`)
    path: str  # where it was read (windows.source)
    windows: int | None  # windows its decoding yielded (None while decoding has not finished)
    complete: bool  # decoding finished and its last window is stored
