"""`Analyzer` with the tagger and BirdNET side by side (`models.side_by_side`): the real models on real audio give the
same results as one after the other, BirdNET runs on the analyzer's worker thread, a failure there marks only its own
window, and the worker ends on `close()`."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from soundmond.analysis import Analyzer, ModelWorker
from soundmond.capture.files import FileSource
from soundmond.config import BirdConfig, TaggerConfig
from soundmond.data import AudioWindow, BirdOutput
from soundmond.head.meta import load_head
from soundmond.models.birds import BirdnetModel
from soundmond.models.taggers import load_tagger
from soundmond.protocols import BirdModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(yamnet_dir: Path, birdnet_dir: Path) -> tuple:
    tagger = load_tagger(yamnet_dir, TaggerConfig(family="yamnet", path=yamnet_dir))
    birds = BirdnetModel(birdnet_dir, BirdConfig(path=birdnet_dir))
    head = load_head(None, "yamnet", len(tagger.labels), birds_enabled=True)
    return tagger, birds, head


@pytest.fixture(scope="module")
def windows(fixture_audio: Path) -> list[AudioWindow]:
    files = [fixture_audio / "maad_spinetail_Cranioleuca_erythrops.flac", fixture_audio / "whisp_field_horn.flac"]
    return list(FileSource(files, 5.0, 5.0).windows(threading.Event()))


class ThreadRecordingBirds:
    """The real BirdNET, recording which thread each call runs on (and failing on the windows asked to)."""

    def __init__(self, birds: BirdModel, fail_on: frozenset[float] = frozenset()) -> None:
        self.birds = birds
        self.sample_rate_hz = birds.sample_rate_hz
        self.threads: list[str] = []
        self.fail_on = fail_on

    def detect(self, samples: np.ndarray, *, start_unix_s: float) -> BirdOutput:
        self.threads.append(threading.current_thread().name)
        if start_unix_s in self.fail_on:
            raise RuntimeError("bird model failed on this window")
        return self.birds.detect(samples, start_unix_s=start_unix_s)


def test_side_by_side_gives_the_same_results_as_one_after_the_other(models: tuple, windows: list) -> None:
    tagger, birds, head = models
    recording = ThreadRecordingBirds(birds)
    assert isinstance(recording, BirdModel)
    sequential = Analyzer(tagger, birds, head)
    side = Analyzer(tagger, recording, head, side_by_side=True)
    assert side.side_by_side and not sequential.side_by_side
    named = set()
    try:
        for window in windows:
            a, b = sequential.analyze(window), side.analyze(window)
            assert a.result.status == b.result.status == "ok"
            assert a.result.group == b.result.group
            assert a.result.species == b.result.species and a.result.tagger_top == b.result.tagger_top
            assert a.bird_output is not None and b.bird_output is not None
            assert np.array_equal(a.bird_output.embedding, b.bird_output.embedding)
            named.update(s.scientific_name for s in b.result.species)
    finally:
        side.close()
    assert recording.threads == ["birds"] * len(windows)  # never on the caller's thread
    assert "Cranioleuca erythrops" in named  # the spinetail recording, named side by side too


def test_a_bird_model_failing_on_its_thread_marks_only_that_window(models: tuple, windows: list) -> None:
    tagger, birds, head = models
    failing = ThreadRecordingBirds(birds, fail_on=frozenset({windows[0].start_unix_s}))
    analyzer = Analyzer(tagger, failing, head, side_by_side=True)
    try:
        first, second = analyzer.analyze(windows[0]), analyzer.analyze(windows[1])
    finally:
        analyzer.close()
    assert first.result.status == "error" and "bird model failed" in (first.result.error or "")
    assert second.result.status == "ok" and second.result.group is not None


def test_a_tagger_failing_waits_for_the_bird_call_and_the_worker_goes_on(models: tuple, windows: list) -> None:
    _, birds, head = models

    class BrokenTagger:
        family = "yamnet"
        sample_rate_hz = 16000
        labels = models[0].labels

        def tag(self, samples: np.ndarray) -> None:
            raise RuntimeError("tagger failed")

    recording = ThreadRecordingBirds(birds)
    analyzer = Analyzer(BrokenTagger(), recording, head, side_by_side=True)  # type: ignore[arg-type]
    try:
        results = [analyzer.analyze(w).result for w in windows[:2]]
    finally:
        analyzer.close()
    assert [r.status for r in results] == ["error", "error"] and recording.threads == ["birds", "birds"]


def test_the_worker_ends_on_close_and_refuses_later_calls() -> None:
    worker = ModelWorker("test-worker")
    assert worker.submit(lambda: 6 * 7).result(timeout=5) == 42
    with pytest.raises(ZeroDivisionError):
        worker.submit(lambda: 1 / 0).result(timeout=5)
    worker.close()
    worker.close()  # idempotent
    assert not any(t.name == "test-worker" for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(lambda: None)


def test_side_by_side_needs_both_models(models: tuple) -> None:
    tagger, _, _ = models
    head = load_head(None, "yamnet", len(tagger.labels), birds_enabled=False)
    analyzer = Analyzer(tagger, None, head, side_by_side=True)
    assert not analyzer.side_by_side  # nothing to run beside the tagger: no thread
    analyzer.close()


@pytest.mark.parametrize(("setting", "expected"), [("", True), ("  side_by_side: false\n", False)])
def test_the_daemon_session_follows_models_side_by_side(
    tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, setting: str, expected: bool
) -> None:
    from soundmond.analysis import build_session
    from soundmond.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text(f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n  birds: {{path: {birdnet_dir}}}\n"
                    + setting)
    session = build_session(load_config(path))
    try:
        assert session.analyzer.side_by_side is expected
    finally:
        session.close()
