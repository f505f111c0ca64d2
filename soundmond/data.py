"""What flows between the pipeline's stages: frozen dataclasses with units in their names."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

Group = Literal["natural", "industrial", "other"]
GROUPS: tuple[Group, ...] = ("natural", "industrial", "other")

Severity = Literal["info", "warning", "critical"]


def new_id() -> str:
    """A unique id for windows, alerts and published events (uuid4, hex)."""
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
    confidence: float  # sigmoid(sensitivity * logit)
    occurrence: float | None = None  # meta-model occurrence at the station's location/week, when known


@dataclass(frozen=True, eq=False)
class BirdOutput:
    species: tuple[SpeciesScore, ...]  # kept species (above min confidence, filters applied), best first
    top_score: float  # best confidence of any species before filtering (for LOW_CONFIDENCE / UNKNOWN_SOUND)
    embedding: npt.NDArray[np.float32] | None = None  # [1024] mean over chunks


@dataclass(frozen=True)
class GroupPrediction:
    group: Group
    probabilities: dict[str, float]  # natural / industrial / other -> probability


@dataclass(frozen=True)
class WindowResult:
    """Everything soundmond knows about one window; the unit that is stored, aggregated and published."""

    window_id: str
    source: str
    start_unix_s: float
    start_s: float
    end_s: float
    group: GroupPrediction | None  # None when the models were skipped (gate) or failed
    tagger_top: tuple[LabelScore, ...]
    tagger_top_score: float
    species: tuple[SpeciesScore, ...]
    bird_top_score: float
    rms_dbfs: float
    clipped_fraction: float
    compute_ms: float
    status: Literal["ok", "skipped_quiet", "error"] = "ok"
    error: str | None = None


@dataclass(frozen=True)
class Alert:
    """An alert raised by a rule: stable type name, severity, evidence and a message for people."""

    type: str  # RARE_SPECIES, LOW_CONFIDENCE, UNKNOWN_SOUND, HIGH_FREQUENCY, LOW_FREQUENCY, INDUSTRIAL_RISE, ...
    key: str  # what the hysteresis / cooldown is per (e.g. "HIGH_FREQUENCY:Turdus merula:3600")
    severity: Severity
    ts_unix_s: float
    message: str
    evidence: dict[str, object] = field(default_factory=dict)  # window ids, scores, baselines
    alert_id: str = field(default_factory=new_id)


CaptureState = Literal["starting", "running", "lost", "flat", "clipped"]


@dataclass(frozen=True)
class CaptureEvent:
    """A change of the capture state, reported once per change by a live source."""

    state: CaptureState
    previous: CaptureState
    ts_unix_s: float
    message: str
    detail: dict[str, object] = field(default_factory=dict)  # device, error, reopen attempts, overflows
