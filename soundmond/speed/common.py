"""What the speed checks and the benchmark share: paths, the window length, the real-time limits, `BenchError`."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # soundmond/speed/common.py -> the repository (or the install prefix)
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "corpus"
FIXTURE_AUDIO = REPO / "tests" / "fixtures" / "audio"
TEST_MODELS = REPO / ".cache" / "test-models"
WINDOW_S = 5.0
KEEP_UP_RTF = 0.8  # above this the daemon warns that it may not keep up (live audio needs RTF < 1)
MARGIN_RTF = 0.5  # "keeps up with a margin": at most half of real time


class BenchError(Exception):
    """The benchmark cannot run (a model folder or audio is missing); the message says what."""
