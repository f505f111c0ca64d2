"""One Protocol per replaceable stage. Real classes and test doubles implement the same Protocol."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from soundmond.data import AudioWindow, BirdOutput, GroupPrediction, TaggerOutput

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
    """Bird species model (BirdNET): 48 kHz mono window -> species with confidences, pooled over 3-s chunks."""

    sample_rate_hz: int

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
    """Yields analysis windows until exhausted or `stop` is set."""

    def windows(self, stop: threading.Event) -> Iterator[AudioWindow]: ...
