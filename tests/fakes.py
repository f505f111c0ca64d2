"""Test doubles shared by the tests. Each implements the same Protocol as the real part (soundmond.protocols) and is
used only where the real part cannot do what the test needs (speed under forced thread switching, a chosen output).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from soundmond.data import (
    AudioWindow,
    BirdOutput,
    CaptureStats,
    ChunkDetection,
    GroupPrediction,
    LabelScore,
    SpeciesScore,
    TaggerOutput,
)
from soundmond.models.grid import GridChunk
from soundmond.protocols import BirdModel, Tagger

SPECIES = (("Turdus merula", "Eurasian Blackbird"), ("Parus major", "Great Tit"), ("Erithacus rubecula", "Robin"),
           ("Fringilla coelebs", "Common Chaffinch"), ("Sylvia atricapilla", "Eurasian Blackcap"))


class StaticTagger:
    """A `Tagger`: the same probabilities and embedding for every window (labels a, b, c, ...). `on_tag`, when given,
    is called on every window (e.g. to move a test's fake clock as if the model took time)."""

    family = "yamnet"
    sample_rate_hz = 16000

    def __init__(self, n_labels: int = 3, *, probabilities: Sequence[float] | None = None,
                 embedding: Sequence[float] = (1.0, 1.0, 1.0, 1.0), on_tag: Callable[[], None] | None = None) -> None:
        self.labels: Sequence[str] = tuple(chr(ord("a") + i) for i in range(n_labels))
        self.probabilities = (np.linspace(0.9, 0.1, n_labels) if probabilities is None
                              else np.asarray(probabilities)).astype(np.float32)
        self.embedding = np.asarray(embedding, np.float32)
        self.on_tag = on_tag
        self.calls = 0

    def tag(self, samples: np.ndarray) -> TaggerOutput:
        self.calls += 1
        if self.on_tag is not None:
            self.on_tag()
        top = tuple(LabelScore(lab, float(p)) for lab, p in zip(self.labels, self.probabilities, strict=True))[:3]
        return TaggerOutput(self.probabilities, self.embedding, top)


class SlowTagger:
    """A `Tagger`: a real tagger made slow (`delay_s` per window), or wedged after its first window until `gate` is
    set."""

    def __init__(self, real: Tagger, delay_s: float, gate: threading.Event | None = None) -> None:
        self.real = real
        self.family = real.family
        self.sample_rate_hz = real.sample_rate_hz
        self.labels = real.labels
        self.delay_s = delay_s
        self.gate = gate
        self.calls = 0

    def tag(self, samples: Any) -> TaggerOutput:
        self.calls += 1
        if self.gate is not None and self.calls > 1:
            self.gate.wait()  # wedged until the test lets go
        time.sleep(self.delay_s)
        return self.real.tag(samples)


class FixedBirds:
    """A `BirdModel` that reports no species and the same embedding for every window."""

    sample_rate_hz = 48000
    chunk_samples = 144000
    stride_s = 3.0

    def __init__(self, embedding: Sequence[float] = (9.0, 9.0, 9.0, 9.0)) -> None:
        self.embedding = np.asarray(embedding, np.float32)

    def detect(self, samples: np.ndarray, *, start_unix_s: float) -> BirdOutput:
        return BirdOutput((), 0.0, embedding=self.embedding)

    def detect_chunks(self, chunks: Sequence[GridChunk], *, start_unix_s: float) -> BirdOutput:
        return BirdOutput((), 0.0, embedding=self.embedding)


class ThreadRecordingBirds:
    """A `BirdModel`: a real one, recording which thread each call runs on, how many calls are running (`active`),
    and failing on the windows (by start time) asked to."""

    def __init__(self, birds: BirdModel, fail_on: frozenset[float] = frozenset()) -> None:
        self.birds = birds
        self.sample_rate_hz = birds.sample_rate_hz
        self.chunk_samples = birds.chunk_samples
        self.stride_s = birds.stride_s
        self.threads: list[str] = []
        self.active = 0
        self.fail_on = fail_on

    def detect(self, samples: np.ndarray, *, start_unix_s: float) -> BirdOutput:
        return self._call(lambda: self.birds.detect(samples, start_unix_s=start_unix_s), start_unix_s)

    def detect_chunks(self, chunks: Sequence[GridChunk], *, start_unix_s: float) -> BirdOutput:
        return self._call(lambda: self.birds.detect_chunks(chunks, start_unix_s=start_unix_s), start_unix_s)

    def _call(self, call: Callable[[], BirdOutput], start_unix_s: float) -> BirdOutput:
        self.threads.append(threading.current_thread().name)
        self.active += 1
        try:
            if start_unix_s in self.fail_on:
                raise RuntimeError("bird model failed on this window")
            return call()
        finally:
            self.active -= 1


class ChunkRecordingBirds:
    """A `BirdModel` recording the grid chunks it is handed per call (`calls`: their start_s) and the windows it is
    asked for whole (`whole`: their start time); it names Turdus merula in every chunk, and gives an embedding only
    from chunks or a whole window."""

    sample_rate_hz = 48000
    chunk_samples = 144000

    def __init__(self, stride_s: float = 3.0) -> None:
        self.stride_s = stride_s
        self.calls: list[list[float]] = []
        self.whole: list[float] = []

    def detect_chunks(self, chunks: Sequence[GridChunk], *, start_unix_s: float) -> BirdOutput:
        self.calls.append([c.start_s for c in chunks])
        found = tuple(ChunkDetection("Turdus merula", "Eurasian Blackbird", 0.9, c.start_s, c.end_s, c.start_unix_s,
                                     c.end_unix_s) for c in chunks)
        species = (SpeciesScore("Turdus merula", "Eurasian Blackbird", 0.9),) if chunks else ()
        return BirdOutput(species, 0.9 if chunks else 0.0, np.ones(4, np.float32) if chunks else None, found)

    def detect(self, samples: np.ndarray, *, start_unix_s: float) -> BirdOutput:
        self.whole.append(start_unix_s)
        return BirdOutput((), 0.0, np.zeros(4, np.float32))


class RotatingBirds:
    """A `BirdModel`: one species per window, taken in turn from SPECIES by the window's start time (whole seconds),
    at a confidence that alternates between 0.3 and 0.8 (so the per-window rules see new keys and flips), whatever
    the window's chunks."""

    sample_rate_hz = 48000
    chunk_samples = 144000
    stride_s = 3.0

    def detect_chunks(self, chunks: Sequence[GridChunk], *, start_unix_s: float) -> BirdOutput:
        return self.detect(np.zeros(0, np.float32), start_unix_s=start_unix_s)

    def detect(self, samples: np.ndarray, *, start_unix_s: float) -> BirdOutput:
        i = int(start_unix_s)
        scientific, common = SPECIES[i % len(SPECIES)]
        confidence = 0.8 if i % 2 else 0.3
        return BirdOutput((SpeciesScore(scientific, common, confidence, occurrence=0.001),), confidence,
                          np.ones(4, np.float32))


class FixedHead:
    """A `GroupHead` that calls every window `group`; with `needs_birds` it asks for the bird model's output. It
    records the bird outputs it was given (`seen`)."""

    tagger_family = "yamnet"

    def __init__(self, group: str = "natural", *, needs_birds: bool = False) -> None:
        self.group = group
        self.needs_birds = needs_birds
        self.seen: list[BirdOutput | None] = []

    def predict(self, tagger_output: TaggerOutput, bird_output: BirdOutput | None = None) -> GroupPrediction:
        self.seen.append(bird_output)
        others = [g for g in ("natural", "industrial", "other") if g != self.group]
        return GroupPrediction(self.group, {self.group: 0.8, others[0]: 0.1, others[1]: 0.1})  # type: ignore[arg-type]


class ListSource:
    """An `AudioSource` over windows made in memory: `count` windows of -30 dBFS noise, one per second of stream
    time. With `hold_last`, the last window waits for that event, so a test's other threads finish first."""

    def __init__(self, count: int, *, rate_hz: int = 16000, length_s: float = 1.0, start_unix_s: float = 1.7e9,
                 hold_last: threading.Event | None = None) -> None:
        self.count = count
        self.rate_hz = rate_hz
        self.length_s = length_s
        self.start_unix_s = start_unix_s
        self.hold_last = hold_last
        self.opened = False

    def open(self) -> None:
        self.opened = True

    def close(self) -> None:
        self.opened = False

    def stats(self) -> CaptureStats | None:
        return None

    def windows(self, stop: threading.Event) -> Iterator[AudioWindow]:
        rng = np.random.default_rng(0)
        n = int(self.rate_hz * self.length_s)
        for i in range(self.count):
            if stop.is_set():
                return
            if i == self.count - 1 and self.hold_last is not None:
                self.hold_last.wait(timeout=300)
            samples = (0.03 * rng.standard_normal(n)).astype(np.float32)
            yield AudioWindow(f"w{i:06d}", "list", self.start_unix_s + i, float(i), self.rate_hz, samples)
