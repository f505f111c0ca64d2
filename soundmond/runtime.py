"""Building the analysis session from the configuration: models (checked against their sidecars), head, aggregator,
alert rules; and processing one window through all of them.

`Session.process(window, now)` is the single code path behind both `soundmond analyze` and the daemon.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from soundmond.aggregate import Aggregator
from soundmond.alerts import AlertEngine
from soundmond.analyzer import Analysis, Analyzer
from soundmond.config import LoadedConfig
from soundmond.data import Alert, AudioWindow
from soundmond.protocols import BirdModel, GroupHead, Tagger

logger = logging.getLogger(__name__)

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
    from soundmond.head import HeadError, load_head
    from soundmond.models import BirdnetModel, load_tagger
    from soundmond.sidecar import ModelFolderError

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
            birds = BirdnetModel(loaded.resolve(cfg.models.birds.path), cfg.models.birds,
                                 cfg.station.latitude, cfg.station.longitude)
        except ModelFolderError as exc:
            raise ModelLoadError(f"models.birds.path: {exc}") from exc
        versions["birds"] = _version(birds)
    head_path = loaded.resolve(cfg.models.head.path) if cfg.models.head.path else None
    try:
        head = load_head(head_path, tagger.family, len(tagger.labels), birds_enabled=cfg.models.birds.enabled)
    except HeadError as exc:
        raise ModelLoadError(f"{' / '.join(exc.config_keys)}: {exc}") from exc
    try:  # the analyzer's own refusals (head for another tagger, bird features without birds) fail here, not later
        Analyzer(tagger, birds, head)
    except ValueError as exc:
        raise ModelLoadError(f"models.head.path: {exc}") from exc
    versions["head"] = f"{head.path.name if head.path else 'head'} ({head.tagger_family} tagger)"
    return tagger, birds, head, versions


def _version(model: object) -> str | None:
    """One line naming the model exactly: family, source, revision or model checksum, quantization."""
    sidecar = getattr(model, "sidecar", None)
    if sidecar is None:
        return None
    from soundmond.sidecar import model_digest

    pinned = sidecar.source.revision or f"sha256:{model_digest(sidecar)[:16]}"
    return f"{sidecar.family} {sidecar.source.id}@{pinned} {sidecar.quantization}"


def build_session(loaded: LoadedConfig, *, with_store: bool = False,
                  models: tuple[Tagger, BirdModel | None, GroupHead, dict[str, Any]] | None = None) -> Session:
    cfg = loaded.config
    tagger, birds, head, versions = models if models is not None else load_models(loaded)
    analyzer = Analyzer(tagger, birds, head, min_rms_dbfs=cfg.windows.min_rms_dbfs,
                        side_by_side=cfg.models.side_by_side)
    aggregator = Aggregator(cfg.aggregation.spans_s)
    engine = AlertEngine(cfg.alerts, cfg.aggregation.spans_s)
    return Session(analyzer, aggregator, engine, versions)
