"""soundmond.models.features (numpy, torch-free) against transformers' ASTFeatureExtractor on real recordings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from soundmond.capture.audio import find_audio_files, load_audio
from soundmond.models.features import ASTFeatures, frames_for_samples, samples_for_frames

pytestmark = pytest.mark.export  # the reference implementation needs transformers (and torch)

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "audio"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def clips() -> list[tuple[str, np.ndarray]]:
    return [(p.name, load_audio(p, 16000)[0]) for p in find_audio_files(FIXTURES)]


def _reference(samples: np.ndarray, max_length: int) -> np.ndarray:
    transformers = pytest.importorskip("transformers")
    extractor = transformers.ASTFeatureExtractor(max_length=max_length)
    out = extractor(samples, sampling_rate=16000, return_tensors="np")["input_values"][0]
    return np.asarray(out)


@pytest.mark.parametrize("max_length", [1024, 512])
def test_equal_to_ast_feature_extractor_on_real_audio(clips: list[tuple[str, np.ndarray]], max_length: int) -> None:
    ours = ASTFeatures(max_length=max_length)
    # shorter than one frame, 1 s, 5 s, exactly max_length frames, one frame more, the whole clip (5-20 s)
    lengths = [300, 16000, 80000, samples_for_frames(max_length), samples_for_frames(max_length) + 160, None]
    checked = 0
    for name, samples in clips:
        for n in lengths:
            segment = samples[:n]
            got = ours(segment)
            assert got.shape == (max_length, 128) and got.dtype == np.float32
            diff = float(np.max(np.abs(got - _reference(segment, max_length))))
            assert diff <= TOLERANCE, f"{name}[:{n}]: max abs difference {diff}"
            checked += 1
    assert checked == len(clips) * len(lengths)


@pytest.mark.parametrize(
    "signal",
    [
        np.zeros(80000, dtype=np.float32),
        (0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(80000) / 16000)).astype(np.float32),
        (0.99 * np.sign(np.sin(2 * np.pi * 440.0 * np.arange(170000) / 16000))).astype(np.float32),
    ],
    ids=["silence", "tone-1k", "clipped-square-longer-than-1024"],
)
def test_equal_on_silence_and_tones(signal: np.ndarray) -> None:
    for max_length in (1024, 512):
        diff = np.max(np.abs(ASTFeatures(max_length=max_length)(signal) - _reference(signal, max_length)))
        assert diff <= TOLERANCE


def test_framing_and_settings_round_trip() -> None:
    assert samples_for_frames(1024) == 164080 and samples_for_frames(512) == 82160
    assert frames_for_samples(samples_for_frames(512)) == 512 and frames_for_samples(399) == 0
    features = ASTFeatures(max_length=512)
    assert ASTFeatures.from_sidecar_extra({"features": features.as_dict()}) == features
    assert features.chunk_samples == 82160


def test_fast_enough(clips: list[tuple[str, np.ndarray]]) -> None:
    window = clips[0][1][:80000]
    features = ASTFeatures(max_length=512)
    features(window)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        features(window)
        times.append(time.perf_counter() - start)
    # The mark is 15-20 ms per 5-s window (measured about 2 ms here); a loose bound for a shared machine.
    assert sorted(times)[3] < 0.1


def test_imports_and_runs_without_torch_or_transformers() -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "sys.modules['transformers'] = None\n"
        "import numpy as np\n"
        "from soundmond.models.features import ASTFeatures\n"
        "x = ASTFeatures(max_length=512)(np.zeros(80000, dtype=np.float32))\n"
        "assert x.shape == (512, 128), x.shape\n"
        "assert not any(m.startswith(('torch', 'transformers')) and sys.modules[m] is not None for m in sys.modules)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
