"""One Protocol per replaceable stage. Real classes and test doubles implement the same Protocol."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from soundmond.data import (
    Alert,
    AudioWindow,
    BirdOutput,
    CaptureStats,
    GroupPrediction,
    Heartbeat,
    OutboxCounts,
    ReplayProgress,
    TaggerOutput,
    WindowResult,
    WriterHealth,
)
from soundmond.models.grid import GridChunk
from soundmond.outputs.store import OutboxItem, SavedState
from soundmond.soundscape.aggregate import SoundscapeSnapshot

Float32Array = npt.NDArray[np.float32]


@runtime_checkable
class Tagger(Protocol):
    """AudioSet tagger (AST or YAMNet): 16 kHz mono window -> sigmoid probabilities, top labels, embedding."""

    family: str
    sample_rate_hz: int
    labels: Sequence[str]

    def tag(self, samples: Float32Array) -> TaggerOutput: ...


@runtime_checkable
class BirdModel(Protocol):
    """Bird species model (BirdNET) at `sample_rate_hz` on chunks of `chunk_samples`.

    `detect_chunks`: the stream grid's chunks that end in one window (`soundmond.models.grid`, a chunk every
    `stride_s` seconds) -> per-chunk detections and per-species max (no chunk: nothing, embedding None).
    `detect`: one window, in chunks from the window's own start -> species and the mean embedding (training features,
    and the head's bird embedding for a window no grid chunk ends in)."""

    sample_rate_hz: int
    chunk_samples: int
    stride_s: float

    def detect_chunks(self, chunks: Sequence[GridChunk], *, start_unix_s: float) -> BirdOutput: ...

    def detect(self, samples: Float32Array, *, start_unix_s: float) -> BirdOutput: ...


@runtime_checkable
class GroupHead(Protocol):
    """natural / industrial / other from the tagger's output (and the bird model's, for heads that use it)."""

    tagger_family: str

    @property
    def needs_birds(self) -> bool:
        """True when `predict` needs `bird_output` (the head's input includes the bird model's embedding)."""
        ...

    def predict(self, tagger_output: TaggerOutput, bird_output: BirdOutput | None = None) -> GroupPrediction: ...


@runtime_checkable
class AudioSource(Protocol):
    """Yields analysis windows until exhausted or `stop` is set (`FileSource`, `MicSource`)."""

    def open(self) -> None:
        """Open the input now (start-up), so a missing device fails before the daemon says it is ready."""
        ...

    def close(self) -> None: ...

    def windows(self, stop: threading.Event) -> Iterator[AudioWindow]: ...

    def stats(self) -> CaptureStats | None:
        """A live source's counters for the heartbeat; None for recordings."""
        ...


class ResultStore(Protocol):
    """What the pipeline asks of the store directly (`soundmond.outputs.store.Store`); rows go through the writer."""

    path: Path

    def increment(self, name: str, by: int = 1) -> int: ...

    def write_aggregate(self, ts_unix_s: float, snapshot: SoundscapeSnapshot) -> None: ...

    def outbox_counts(self) -> OutboxCounts: ...

    def load_state(self, name: str) -> SavedState | None: ...

    def file_bytes(self) -> int: ...

    def close(self) -> None: ...


class ResultWriter(Protocol):
    """The store's writer thread (`soundmond.outputs.store.StoreWriter`): batched writes off the pipeline's thread."""

    def submit(self, result: WindowResult, alerts: Sequence[Alert] = (), outbox: Sequence[OutboxItem] = ()) -> bool: ...

    def submit_alert(self, alert: Alert, outbox_item: OutboxItem | None = None) -> None: ...

    def submit_state(self, state: SavedState) -> bool: ...

    def close(self, timeout: float = 10.0) -> bool: ...

    def health(self) -> WriterHealth: ...


class Publisher(Protocol):
    """The MQTT publisher (`soundmond.outputs.publish.MqttPublisher`): its own thread drains the store's outbox."""

    def publish_window(self, result: WindowResult) -> bool: ...

    def publish_soundscape(self, snapshot: SoundscapeSnapshot) -> bool: ...

    def publish_heartbeat(self, heartbeat: Heartbeat) -> bool: ...

    def join(self, timeout: float | None = None) -> bool: ...


class ReplayLedger(Protocol):
    """Which recordings (by content hash) were analysed how far (the store, `Store` implements it)."""

    def replay_progress(self, sha256: str) -> list[ReplayProgress]:
        """Every record of this content, whatever the settings or the path it was analysed with."""
        ...

    def replay_started(self, sha256: str, analysis: str, path: str) -> None: ...

    def replay_decoded(self, sha256: str, analysis: str, path: str, last_window_id: str, windows: int) -> None:
        """Decoding finished; the file is complete once `last_window_id` is stored (the writer keeps order)."""
        ...

    def has_window(self, window_id: str) -> bool: ...

    def forget_source(self, sha256: str) -> dict[str, int]:
        """Delete what was stored of this content (windows, detections, alerts, their outbox rows, the records):
        `--reanalyze`. Returns rows deleted per table."""
        ...

    def recorded_models(self, identity: str) -> dict[str, Any] | None:
        """The model versions recorded under this models identity (`identity.models_identity`), None if unknown."""
        ...
