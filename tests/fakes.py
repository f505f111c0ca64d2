"""Test doubles shared by the tests. Each implements the same Protocol as the real part (soundmond.protocols) and is
used only where the real part cannot do what the test needs (speed under forced thread switching, a chosen output).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np

from soundmond.data import (
    AudioWindow,
    BirdOutput,
    CaptureStats,
    GroupPrediction,
    LabelScore,
    SpeciesScore,
    TaggerOutput,
)

SPECIES = (("Turdus merula", "Eurasian Blackbird"), ("Parus major", "Great Tit"), ("Erithacus rubecula", "Robin"),
           ("Fringilla coelebs", "Common Chaffinch"), ("Sylvia atricapilla", "Eurasian Blackcap"))


class StaticTagger:
    """A `Tagger`: the same probabilities and embedding for every window (labels a, b, c, ...)."""

    family = "yamnet"
    sample_rate_hz = 16000

    def __init__(self, n_labels: int = 3) -> None:
        self.labels: Sequence[str] = tuple(chr(ord("a") + i) for i in range(n_labels))
        self.probabilities = np.linspace(0.9, 0.1, n_labels).astype(np.float32)
        self.calls = 0

    def tag(self, samples: np.ndarray) -> TaggerOutput:
        self.calls += 1
        top = tuple(LabelScore(lab, float(p)) for lab, p in zip(self.labels, self.probabilities, strict=True))[:3]
        return TaggerOutput(self.probabilities, np.ones(4, np.float32), top)


class RotatingBirds:
    """A `BirdModel`: one species per window, taken in turn from SPECIES by the window's start time (whole seconds),
    at a confidence that alternates between 0.3 and 0.8 (so the per-window rules see new keys and flips)."""

    sample_rate_hz = 48000

    def detect(self, samples: np.ndarray, *, start_unix_s: float) -> BirdOutput:
        i = int(start_unix_s)
        scientific, common = SPECIES[i % len(SPECIES)]
        confidence = 0.8 if i % 2 else 0.3
        return BirdOutput((SpeciesScore(scientific, common, confidence, occurrence=0.001),), confidence,
                          np.ones(4, np.float32))


class FixedHead:
    """A `GroupHead` that calls every window `group` (tagger output only)."""

    tagger_family = "yamnet"
    needs_birds = False

    def __init__(self, group: str = "natural") -> None:
        self.group = group

    def predict(self, tagger_output: TaggerOutput, bird_output: BirdOutput | None = None) -> GroupPrediction:
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
