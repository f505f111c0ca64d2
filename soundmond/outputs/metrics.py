"""Live metrics in the Prometheus text format (`metrics.port`; off by default, bound to `metrics.bind`, 127.0.0.1).

Nothing here counts on its own: every scrape reads what the daemon already publishes for other threads, so the
pipeline thread stays the only owner of the session and no lock is added:

- `PipelineStatus` (frozen, replaced after every step): windows processed / dropped / failed / quiet, RTF, capture
  state;
- `Tally.snapshot` (frozen, replaced by the pipeline thread after every window that raised an alert or named a
  species): alerts by type, detections by species. Species labels are bounded: the first MAX_SPECIES_LABELS species
  heard get their own label, later ones are summed under `species="other"` (a BirdNET run knows 6,522 classes);
- the store's outbox counts and file size and the store writer's health (both are safe from any thread).

`MetricsServer.start(config, source)` serves `/metrics` with `prometheus_client`'s WSGI server on a daemon thread;
`close()` stops it. A port that cannot be bound is a `MetricsError` naming the key and how to fix it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from soundmond import __version__
from soundmond.config import MetricsConfig
from soundmond.data import Alert, WindowResult
from soundmond.errors import HintedError

logger = logging.getLogger(__name__)

MAX_SPECIES_LABELS = 100
OTHER_SPECIES = "other"
CAPTURE_STATES = ("starting", "running", "lost", "flat", "clipped")


class MetricsError(HintedError):
    """The metrics server cannot start."""


@dataclass(frozen=True)
class TallySnapshot:
    alerts_by_type: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    detections_by_species: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


class Tally:
    """Alerts by type and detections by species, counted by the pipeline thread (its only writer); other threads
    read `snapshot`, a frozen copy replaced after each change."""

    def __init__(self, max_species: int = MAX_SPECIES_LABELS) -> None:
        self._max_species = max_species
        self._alerts: dict[str, int] = {}
        self._species: dict[str, int] = {}
        self.snapshot = TallySnapshot()

    def count(self, result: WindowResult | None, alerts: list[Alert]) -> None:
        for alert in alerts:
            self._alerts[str(alert.type)] = self._alerts.get(str(alert.type), 0) + 1
        for s in result.species if result is not None else ():
            name = s.scientific_name
            if name not in self._species and len(self._species) >= self._max_species:
                name = OTHER_SPECIES
            self._species[name] = self._species.get(name, 0) + 1
        if alerts or (result is not None and result.species):
            self.snapshot = TallySnapshot(MappingProxyType(dict(self._alerts)), MappingProxyType(dict(self._species)))


class MetricsSource(Protocol):
    """What the collector reads from the daemon (`soundmond.pipeline.Daemon`)."""

    @property
    def status(self) -> Any: ...  # PipelineStatus: windows_done, windows_dropped, ..., rtf, capture_state

    @property
    def tally(self) -> Tally: ...

    @property
    def store(self) -> Any: ...  # ResultStore | None: outbox_counts(), file_bytes()

    @property
    def writer(self) -> Any: ...  # ResultWriter | None: health()


class DaemonCollector(Collector):
    def __init__(self, station: str, started_unix_s: float) -> None:
        self.station = station
        self.started_unix_s = started_unix_s
        self.source: MetricsSource | None = None  # set once the daemon exists; until then only the info metrics

    def collect(self) -> Iterator[Any]:
        yield InfoMetricFamily("soundmond", "soundmond version and station",
                               value={"version": __version__, "station": self.station})
        yield GaugeMetricFamily("soundmond_start_time_seconds", "when the daemon started (UTC epoch seconds)",
                                value=self.started_unix_s)
        source = self.source
        if source is None:
            return
        s = source.status
        for name, value, text in (
                ("windows_processed", s.windows_done, "windows analysed (any status)"),
                ("windows_dropped", s.windows_dropped, "windows dropped by the backlog policy (falling behind)"),
                ("windows_failed", s.windows_failed, "windows whose analysis failed"),
                ("windows_quiet", s.windows_skipped_quiet, "windows too quiet to run the models on")):
            yield CounterMetricFamily(f"soundmond_{name}", text, value=value)
        rtf = GaugeMetricFamily("soundmond_rtf", "compute seconds per second of audio over the last 60 windows "
                                                 "(below 1 keeps up; NaN before the first window)",
                                value=float("nan") if s.rtf is None else s.rtf)
        yield rtf
        state = GaugeMetricFamily("soundmond_capture_state", "1 for the capture's current state",
                                  labels=["state"])
        for name in CAPTURE_STATES:
            state.add_metric([name], 1.0 if s.capture_state == name else 0.0)
        yield state
        tally = source.tally.snapshot
        alerts = CounterMetricFamily("soundmond_alerts", "alerts raised, by type", labels=["type"])
        for name, n in sorted(tally.alerts_by_type.items()):
            alerts.add_metric([name], n)
        yield alerts
        detections = CounterMetricFamily(
            "soundmond_detections", f"species detections (window x species), by scientific name (the first "
            f"{MAX_SPECIES_LABELS} species heard; later ones under species=\"{OTHER_SPECIES}\")", labels=["species"])
        for name, n in sorted(tally.detections_by_species.items()):
            detections.add_metric([name], n)
        yield detections
        yield from self._store(source)

    @staticmethod
    def _store(source: MetricsSource) -> Iterator[Any]:
        store = source.store
        if store is None:
            return
        try:
            counts = store.outbox_counts()
            size = store.file_bytes()
        except HintedError as exc:  # the store is locked or gone for a moment: the scrape still answers
            logger.warning("metrics: cannot read the store: %s", exc)
            return
        outbox = GaugeMetricFamily("soundmond_outbox_rows", "outbox rows: pending (waiting for the broker) and sent "
                                                             "(not yet deleted)", labels=["state"])
        outbox.add_metric(["pending"], counts.pending)
        outbox.add_metric(["sent"], counts.sent)
        yield outbox
        yield GaugeMetricFamily("soundmond_outbox_pending_alerts", "pending outbox rows that are alerts",
                                value=counts.pending_alerts)
        yield CounterMetricFamily("soundmond_outbox_dropped", "outbox rows dropped or refused by the outbox policy",
                                  value=counts.dropped + counts.refused)
        yield GaugeMetricFamily("soundmond_store_bytes", "size of the store's files (database, WAL)", value=size)
        writer = source.writer
        if writer is not None:
            health = writer.health()
            yield GaugeMetricFamily("soundmond_store_writer_queue", "items waiting for the store writer",
                                    value=health.queue_depth)
            yield CounterMetricFamily("soundmond_store_dropped_windows", "windows the store writer dropped (its "
                                                                        "queue stayed full)",
                                      value=health.dropped_windows)


class MetricsServer:
    def __init__(self, server: WSGIServer, thread: threading.Thread, collector: DaemonCollector) -> None:
        self._server = server
        self._thread = thread
        self.collector = collector

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @classmethod
    def start(cls, config: MetricsConfig, station: str) -> MetricsServer | None:
        """Serve /metrics when `metrics.port` is set (None otherwise); `attach(daemon)` once the daemon exists."""
        if config.port is None:
            return None
        registry = CollectorRegistry(auto_describe=False)
        collector = DaemonCollector(station, time.time())
        registry.register(collector)
        try:
            server, thread = start_http_server(config.port, addr=config.bind, registry=registry)
        except OSError as exc:
            raise MetricsError(f"metrics.port: cannot listen on {config.bind}:{config.port} ({exc.strerror or exc})",
                               "pick a free port (or stop what uses it), or check metrics.bind is an address of "
                               "this machine") from exc
        logger.info("metrics at http://%s:%d/metrics", config.bind, config.port)
        return cls(server, thread, collector)

    def attach(self, source: MetricsSource) -> None:
        self.collector.source = source

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
