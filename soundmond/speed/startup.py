"""The daemon's own speed check at start-up (`soundmond run`, on a sensor): a few synthetic windows through the loaded
models, and advice when this machine cannot keep up with live audio."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable

import numpy as np

from soundmond.analysis import Analyzer, Session
from soundmond.config import Config
from soundmond.data import AudioWindow
from soundmond.speed.common import KEEP_UP_RTF

logger = logging.getLogger(__name__)


def keep_up_advice(rtf: float, cfg: Config) -> str:
    """What to change when the configured models are too slow (or too close) for real time on this machine."""
    tips = []
    tagger = cfg.models.tagger
    cores = os.cpu_count() or 1
    if tagger.threads < cores or (cfg.models.birds.enabled and cfg.models.birds.threads < cores):
        tips.append(f"models.*.threads up to {cores} (this machine's cores)")
    if tagger.family == "ast":
        tips.append("an AST exported with `python -m export ast --frames 512 --quantize int8`")
        tips.append("models.tagger.family: yamnet (the light tagger)")
    tips.append("windows.min_rms_dbfs (e.g. -60) to skip the models on quiet windows")
    if cfg.windows.hop_s < cfg.windows.length_s:
        tips.append("windows.hop_s = windows.length_s (no overlap)")
    tips.append("`soundmond bench --quick` to compare settings on this machine")
    return "; ".join(tips)


def startup_rtf_check(session: Session, cfg: Config, *, windows: int = 2, warn_above: float = KEEP_UP_RTF,
                      clock: Callable[[], float] = time.perf_counter) -> float | None:
    """Time `windows` synthetic windows (noise at about -30 dBFS, 48 kHz) through the loaded models and head
    (`session.analyzer`, no aggregation, no store, the RMS gate not applied: the check is about windows the models
    run on) and log the real-time factor; a WARNING with advice when the windows take more than `warn_above` of the
    time between windows (live audio would fall behind). Stops after one window when that one is already too slow.
    Returns the measured load (compute / hop) or None."""
    length_s, hop_s = float(cfg.windows.length_s), float(cfg.windows.hop_s)
    loads = _probe_windows(session.analyzer, windows, length_s, hop_s, warn_above, clock)
    if loads is None:
        return None
    load = float(np.median(loads))
    if load > warn_above:
        logger.warning(
            "these models may not keep up on this machine: %.0f ms per %.0f-s window = %.2f of real time (RTF %.3f, "
            "limit %.2f); windows will be dropped from live audio. Try: %s",
            load * hop_s * 1000, length_s, load, load * hop_s / length_s, warn_above, keep_up_advice(load, cfg))
    else:
        logger.info("start-up speed check: %.0f ms per %.0f-s window (RTF %.3f): keeps up with %.1fx margin",
                    load * hop_s * 1000, length_s, load * hop_s / length_s, 1 / load if load else math.inf)
    return load


def _probe_windows(analyzer: Analyzer, windows: int, length_s: float, hop_s: float, warn_above: float,
                   clock: Callable[[], float]) -> list[float] | None:
    rng = np.random.default_rng(0)
    loads: list[float] = []
    for i in range(windows):
        samples = (0.03 * rng.standard_normal(int(length_s * 48000))).astype(np.float32)
        window = AudioWindow(window_id=f"startup-check-{i}", source="startup-check", start_unix_s=time.time(),
                             start_s=0.0, sample_rate_hz=48000, samples=samples)
        t0 = clock()
        result = analyzer.analyze(window, use_gate=False).result
        compute_s = clock() - t0
        if result.status == "error":
            logger.warning("start-up speed check: the models failed on a test window (%s)", result.error)
            return None
        loads.append(compute_s / hop_s)
        if loads[-1] > 2 * warn_above:
            break
    return loads
