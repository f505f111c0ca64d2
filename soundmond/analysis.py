"""One window through the models and the head, and the session that adds it to the soundscape.

`Analyzer`: one window in, one `WindowResult` out (tagger, bird model, then the head on their outputs), with the
audio resampled once per model rate and shared between models.

With `side_by_side` the bird model runs on a worker thread of the analyzer while the tagger runs on the caller's:
ONNX Runtime releases the GIL, so on two cores a window costs about the slower model instead of the sum (each model
keeps its own thread count). The worker (`ModelWorker`) is one daemon thread holding at most the current window's bird
call; `close()` ends it.

A model that fails on a window marks that window `error` with the reason; the next window is analysed as usual.

The bird model runs on the stream's chunk grid (`soundmond.models.grid`), not on the window: the analyzer owns the
grid (the tail of audio a chunk needs across windows) and feeds it every window it is given, quiet, gated or failed
ones included, before deciding whether to run the models; a window's result holds the chunks that end in it
(`WindowResult.detections`) and each species' best chunk (`species`). When a head needs BirdNET's embedding and no
chunk ends in a window (a hop shorter than the stride), the embedding comes from the window's own chunks (`detect`).

Quiet windows (`quiet_below_dbfs`, and digital silence whatever the floor: a peak under one 16-bit step) run no
model: the group is "quiet" with no probabilities, no species, status `skipped_quiet` (counted with the gate's). The
models say nothing true there: the head calls zeros and -90 dBFS hiss industrial, BirdNET names a woodpecker in white
noise (measurements next to `WindowConfig.quiet_below_dbfs`). The gate (`min_rms_dbfs`) still skips louder windows
without a group, as before.

Acoustic indices (`indices.enabled`, `soundmond.soundscape.indices`) are computed on every window's real audio before
the quiet floor and the gate, so quiet, gated and failed windows have them too: a noise survey needs the quiet hours'
levels (leaving them out would bias every span's Leq and indices towards the loud windows). Digital silence and a
tail too short for the spectrogram have none (`WindowResult.indices` None).

`Session.process(window, now)` (analyzer -> aggregator -> alert rules) is the single code path behind both
`soundmond analyze` and the daemon; `build_session` loads the configured models (checked against their sidecars).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from soundmond.capture.audio import resample
from soundmond.config import LoadedConfig
from soundmond.data import QUIET, Alert, AudioWindow, BirdOutput, GroupPrediction, TaggerOutput, WindowResult
from soundmond.head.loader import load_head
from soundmond.head.meta import HeadError
from soundmond.models.birds import BirdnetModel
from soundmond.models.grid import ChunkGrid, GridChunk
from soundmond.models.hf import HfBirdModel
from soundmond.models.sidecar import ModelFolderError, model_digest
from soundmond.models.taggers import load_tagger
from soundmond.protocols import BirdModel, GroupHead, Tagger
from soundmond.soundscape.aggregate import Aggregator
from soundmond.soundscape.alerts import AlertEngine
from soundmond.soundscape.indices import compute as acoustic_indices

logger = logging.getLogger(__name__)

CLIP_LEVEL = 0.999
DIGITAL_SILENCE_PEAK = 1.0 / 32768.0  # below one 16-bit step: nothing was recorded


def peak(samples: np.ndarray) -> float:
    return float(np.max(np.abs(samples))) if samples.size else 0.0


def rms_dbfs(samples: np.ndarray) -> float:
    """The window's level, dB re full scale, without its DC offset: an offset is not sound (a recorder's ADC offset
    read as level kept a dead microphone's file at -40 dBFS, never quiet). The microphone path removes DC before
    (`source.remove_dc`); for files it is removed here. The acoustic indices' `leq_dbfs` is the same number
    (`soundscape.indices`)."""
    if samples.size == 0:
        return -math.inf
    x = np.asarray(samples, dtype=np.float64)
    rms = float(np.sqrt(np.mean(np.square(x - x.mean()))))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def is_quiet(samples: np.ndarray, level_dbfs: float, quiet_below_dbfs: float | None) -> bool:
    """Whether a window is quiet (no model runs on it): digital silence (peak under one 16-bit step once any DC offset
    is removed: a constant is no sound), or an RMS level (`rms_dbfs` of the same samples, without DC) under
    `quiet_below_dbfs` (None: only digital silence). The daemon's decision (`Analyzer.is_quiet`), also applied by
    `soundmond evaluate`."""
    if quiet_below_dbfs is not None and level_dbfs < quiet_below_dbfs:
        return True
    return peak(samples - samples.mean()) < DIGITAL_SILENCE_PEAK if samples.size else True


def clipped_fraction(samples: np.ndarray) -> float:
    if samples.size == 0:
        return 0.0
    return float(np.mean(np.abs(samples) >= CLIP_LEVEL))


class ModelWorker:
    """One daemon thread that runs calls handed to it (the bird model, side by side with the tagger).

    The queue holds one call at most: the analyzer waits for each result before it hands over the next window, so a
    second call never waits. A daemon thread, so that a wedged model call cannot keep the process from exiting (the
    daemon's watchdog notices a wedged pipeline); `close` waits `timeout_s` at most.
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        self._closed = False

    def submit(self, call: Callable[[], Any]) -> Future[Any]:
        if self._closed:
            raise RuntimeError("the model worker is closed")
        future: Future[Any] = Future()
        self._calls.put((call, future))
        return future

    def _loop(self) -> None:
        while (item := self._calls.get()) is not None:
            call, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the caller through the future, not lost in this thread
                future.set_exception(exc)

    def close(self, timeout_s: float = 10.0) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._calls.put(None, timeout=timeout_s)
        except queue.Full:
            logger.warning("the model worker is still busy after %.0f s; leaving it", timeout_s)
            return
        self._thread.join(timeout=timeout_s)


@dataclass(frozen=True, eq=False)
class Analysis:
    """A window's result plus the raw model outputs (for training, evaluation and debugging)."""

    result: WindowResult
    tagger_output: TaggerOutput | None
    bird_output: BirdOutput | None


class Analyzer:
    def __init__(
        self,
        tagger: Tagger | None,
        birds: BirdModel | None,
        head: GroupHead | None,
        *,
        min_rms_dbfs: float | None = None,
        quiet_below_dbfs: float | None = None,
        side_by_side: bool = False,
        indices: bool = False,
        calibration_db: float | None = None,
    ) -> None:
        if head is not None and tagger is not None and head.tagger_family != tagger.family:
            raise ValueError(f"the head was trained on '{head.tagger_family}' outputs, the tagger is '{tagger.family}'")
        if head is not None and head.needs_birds and birds is None:
            raise ValueError(
                "the head needs BirdNET's embedding but the bird model is disabled: enable models.birds, or set "
                "models.head.path to a head trained on tagger features only"
            )
        self.tagger = tagger
        self.birds = birds
        self.head = head
        self.min_rms_dbfs = min_rms_dbfs
        self.quiet_below_dbfs = quiet_below_dbfs
        self.windows_skipped_quiet = 0
        self.indices = indices
        self.calibration_db = calibration_db
        self._birds_worker = (
            ModelWorker("birds") if side_by_side and tagger is not None and birds is not None else None
        )
        # the bird model's chunk grid on the stream: session state, owned here (see the module docstring)
        self.grid = (ChunkGrid(birds.sample_rate_hz, birds.chunk_samples, birds.stride_s)
                     if birds is not None else None)

    def is_quiet(self, samples: np.ndarray, level_dbfs: float) -> bool:
        """Digital silence or an RMS level under `quiet_below_dbfs`: the module function `is_quiet`."""
        return is_quiet(samples, level_dbfs, self.quiet_below_dbfs)

    @property
    def side_by_side(self) -> bool:
        return self._birds_worker is not None

    def close(self) -> None:
        """End the bird model's worker thread (side by side) once a call in progress is done. Idempotent."""
        if self._birds_worker is not None:
            self._birds_worker.close()

    def analyze(self, window: AudioWindow, *, use_gate: bool = True) -> Analysis:
        """One window through the models and the head. `use_gate=False`: the models run whatever the window's level
        (neither the quiet floor nor the RMS gate is applied, nothing is counted as skipped; the start-up speed
        check)."""
        started = time.perf_counter()
        real = window.samples[: window.samples.shape[0] - window.padded_samples]
        level = rms_dbfs(real)
        clipped = clipped_fraction(real)
        base: dict[str, Any] = {
            "window_id": window.window_id,
            "source": window.source,
            "start_unix_s": window.start_unix_s,
            "start_s": window.start_s,
            "end_s": window.end_s,
            "rms_dbfs": level,
            "clipped_fraction": clipped,
            "indices": (acoustic_indices(real, window.sample_rate_hz, self.calibration_db) if self.indices else None),
        }
        try:
            chunks = self.grid.chunks(window) if self.grid is not None else []
        except Exception as exc:  # never lose the stream over one window: the grid starts again with the next
            assert self.grid is not None
            self.grid.reset()
            logger.exception("window %s of %s: cutting bird chunks failed", window.window_id, window.source)
            return Analysis(
                WindowResult(**base, group=None, tagger_top=(), tagger_top_score=0.0, species=(),
                             bird_top_score=0.0, compute_ms=_ms(started), status="error",
                             error=f"{type(exc).__name__}: {exc}"),
                None, None,
            )
        if use_gate and self.is_quiet(real, level):
            self.windows_skipped_quiet += 1
            logger.debug("window %s at %.1f dBFS is quiet: models skipped", window.window_id, level)
            return Analysis(
                WindowResult(**base, group=GroupPrediction(QUIET, {}), tagger_top=(), tagger_top_score=0.0,
                             species=(), bird_top_score=0.0, compute_ms=_ms(started), status="skipped_quiet"),
                None, None,
            )
        if use_gate and self.min_rms_dbfs is not None and level < self.min_rms_dbfs:
            self.windows_skipped_quiet += 1
            logger.debug("window %s at %.1f dBFS is below the gate: models skipped", window.window_id, level)
            return Analysis(
                WindowResult(**base, group=None, tagger_top=(), tagger_top_score=0.0, species=(),
                             bird_top_score=0.0, compute_ms=_ms(started), status="skipped_quiet"),
                None, None,
            )
        resampled: dict[int, np.ndarray] = {}

        def at(rate: int) -> np.ndarray:
            if rate not in resampled:
                resampled[rate] = resample(window.samples, window.sample_rate_hz, rate)
            return resampled[rate]

        tagger_output = bird_output = None
        group = None
        pending: Future[BirdOutput] | None = None
        try:
            # a head that needs BirdNET's embedding, in a window no grid chunk ends in: the window's own chunks
            own = (at(self.birds.sample_rate_hz) if self.birds is not None and not chunks and self.head is not None
                   and self.head.needs_birds else None)
            if self.birds is not None and self._birds_worker is not None:
                pending = self._birds_worker.submit(lambda: self._detect_birds(window, chunks, own))
            if self.tagger is not None:
                tagger_output = self.tagger.tag(at(self.tagger.sample_rate_hz))
            if pending is not None:
                bird_output = pending.result()
            elif self.birds is not None:
                bird_output = self._detect_birds(window, chunks, own)
            if self.head is not None and tagger_output is not None:
                group = self.head.predict(tagger_output, bird_output)
        except Exception as exc:  # a model failing on one window must not stop the stream
            if pending is not None and not pending.cancel():  # the tagger failed: the bird call ends first
                pending.exception()
            logger.exception("window %s of %s: analysis failed", window.window_id, window.source)
            return Analysis(
                WindowResult(**base, group=None, tagger_top=(), tagger_top_score=0.0, species=(),
                             bird_top_score=0.0, compute_ms=_ms(started), status="error",
                             error=f"{type(exc).__name__}: {exc}"),
                None, None,
            )
        result = WindowResult(
            **base,
            group=group,
            tagger_top=tagger_output.top if tagger_output else (),
            tagger_top_score=tagger_output.top[0].score if tagger_output and tagger_output.top else 0.0,
            species=bird_output.species if bird_output else (),
            bird_top_score=bird_output.top_score if bird_output else 0.0,
            compute_ms=_ms(started),
            detections=bird_output.detections if bird_output else (),
        )
        return Analysis(result, tagger_output, bird_output)

    def _detect_birds(self, window: AudioWindow, chunks: Sequence[GridChunk], own: np.ndarray | None) -> BirdOutput:
        """The grid chunks ending in the window; `own` (the window at the bird rate): the head's embedding when no
        chunk gave one."""
        assert self.birds is not None
        output = self.birds.detect_chunks(chunks, start_unix_s=window.start_unix_s)
        if own is not None and output.embedding is None:
            output = replace(output, embedding=self.birds.detect(own, start_unix_s=window.start_unix_s).embedding)
        return output


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


TICK_INTERVAL_S = 60.0


class ModelLoadError(Exception):
    """A model folder or head cannot be used; the message names the config key and how to fix it."""


@dataclass
class Session:
    analyzer: Analyzer
    aggregator: Aggregator
    engine: AlertEngine
    model_versions: dict[str, Any] = field(default_factory=dict)
    _next_tick_unix_s: float = 0.0

    def process(self, window: AudioWindow, now: float) -> tuple[Analysis, list[Alert]]:
        """Analyse one window, add it to the aggregate, and return the alerts it (and the spans) raised."""
        analysis = self.analyzer.analyze(window)
        self.aggregator.add(analysis.result)
        alerts = list(self.engine.on_window(analysis.result, now))
        alerts.extend(self.tick(now))
        return analysis, alerts

    def close(self) -> None:
        """Release the analyzer's worker thread (models side by side)."""
        self.analyzer.close()

    def tick(self, now: float, force: bool = False) -> list[Alert]:
        """Span rules (frequency, industrial rise, activity drop), at most once per `TICK_INTERVAL_S`."""
        if not force and now < self._next_tick_unix_s:
            return []
        self._next_tick_unix_s = now + TICK_INTERVAL_S
        return list(self.engine.on_tick(self.aggregator, now))


def load_models(loaded: LoadedConfig) -> tuple[Tagger, BirdModel | None, GroupHead, dict[str, Any]]:
    """Load and check every configured model; any problem -> `ModelLoadError` naming the config key."""
    cfg = loaded.config
    tagger_cfg = cfg.models.tagger
    versions: dict[str, Any] = {}
    try:
        tagger = load_tagger(loaded.resolve(tagger_cfg.path), tagger_cfg)
    except ModelFolderError as exc:
        raise ModelLoadError(f"models.tagger.path: {exc}") from exc
    versions["tagger"] = _version(tagger)
    birds: BirdModel | None = None
    if cfg.models.birds.enabled:
        try:
            birds = _bird_model(loaded)
        except ModelFolderError as exc:
            raise ModelLoadError(f"models.birds.path: {exc}") from exc
        versions["birds"] = _version(birds)
    head_path = loaded.resolve(cfg.models.head.path) if cfg.models.head.path else None
    try:
        # an hf bird model gives no BirdNET embedding: heads that need one are treated as with birds disabled
        birdnet_embedding = cfg.models.birds.enabled and cfg.models.birds.family == "birdnet"
        head = load_head(head_path, tagger.family, len(tagger.labels), birds_enabled=birdnet_embedding)
    except HeadError as exc:
        raise ModelLoadError(f"{' / '.join(exc.config_keys)}: {exc}") from exc
    try:  # the analyzer's own refusals (head for another tagger, bird features without birds) fail here, not later
        Analyzer(tagger, birds, head)
    except ValueError as exc:
        raise ModelLoadError(f"models.head.path: {exc}") from exc
    versions["head"] = f"{head.path.name if head.path else 'head'} ({head.tagger_family} tagger)"
    return tagger, birds, head, versions


def _bird_model(loaded: LoadedConfig) -> BirdModel:
    """`models.birds.family`: BirdNET, or a Hugging Face classifier exported by `python -m export hf`."""
    cfg = loaded.config
    birds = cfg.models.birds
    if birds.family == "hf":
        species_map = loaded.resolve(birds.species_map) if birds.species_map is not None else None
        return HfBirdModel(loaded.resolve(birds.path), birds, species_map)
    return BirdnetModel(loaded.resolve(birds.path), birds, cfg.station.latitude, cfg.station.longitude)


def _version(model: object) -> str | None:
    """One line naming the model exactly: family, source, revision or model checksum, quantization."""
    sidecar = getattr(model, "sidecar", None)
    if sidecar is None:
        return None
    pinned = sidecar.source.revision or f"sha256:{model_digest(sidecar)[:16]}"
    return f"{sidecar.family} {sidecar.source.id}@{pinned} {sidecar.quantization}"


def build_session(loaded: LoadedConfig, *,
                  models: tuple[Tagger, BirdModel | None, GroupHead, dict[str, Any]] | None = None) -> Session:
    cfg = loaded.config
    tagger, birds, head, versions = models if models is not None else load_models(loaded)
    analyzer = Analyzer(tagger, birds, head, min_rms_dbfs=cfg.windows.min_rms_dbfs,
                        quiet_below_dbfs=cfg.windows.quiet_below_dbfs, side_by_side=cfg.models.side_by_side,
                        indices=cfg.indices.enabled, calibration_db=cfg.source.calibration_db)
    aggregator = Aggregator(cfg.aggregation.spans_s)
    engine = AlertEngine(cfg.alerts, cfg.aggregation.spans_s)
    return Session(analyzer, aggregator, engine, versions)
