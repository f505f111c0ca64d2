"""`soundmond run`: the 24/7 service.

Threads, each with one job, sharing one stop event:

    capture   source.windows() -> bounded window queue (the backlog)     [FileSource or MicSource]
    inference window -> Session.process -> StoreWriter.submit (+ outbox rows for alerts and detections)
    store     StoreWriter: batched SQLite writes off the inference thread
    publisher MqttPublisher: drains the outbox to the broker (when MQTT is enabled)
    main      signals, periodic soundscape / heartbeat / span rules, sd_notify READY / WATCHDOG / STATUS

Falling behind (live sources): the backlog holds `windows.backlog_windows` windows. When inference is slower than real
time and the backlog is full, `drop_oldest` drops the oldest waiting window (the newest audio is kept), and `thin`
drops every other incoming window while the backlog stays full. Every dropped window is counted (`windows_dropped`,
stored and published in the heartbeat) and FALLING_BEHIND is raised once per episode. File replay that is not real
time never drops: capture waits for inference.

Shutdown (SIGTERM / SIGINT): capture stops first; windows already queued are analysed until `DRAIN_TIMEOUT_S`, the rest
are counted as skipped (`windows_skipped_shutdown`); the store is flushed; the publisher goes last. A fatal error
(the store cannot be written, the capture thread died) exits non-zero so systemd restarts the service.
"""

from __future__ import annotations

import logging
import queue
import shutil
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soundmond import __version__
from soundmond.analysis import ModelLoadError, Session, build_session
from soundmond.capture.files import FileSource
from soundmond.config import FileSourceConfig, LoadedConfig, MicSourceConfig
from soundmond.data import (
    Alert,
    AlertType,
    AudioWindow,
    BaselineRule,
    BaselineStatus,
    CaptureEvent,
    CaptureState,
    CaptureStats,
    DiskUsage,
    Heartbeat,
    Severity,
    WindowResult,
)
from soundmond.protocols import AudioSource, BirdModel, GroupHead, Tagger
from soundmond.sdnotify import Notifier, ProgressWatchdog

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_MODELS, EXIT_DEVICE, EXIT_FATAL = 0, 1, 2, 3, 4, 5
DRAIN_TIMEOUT_S = 30.0
CAPTURE_STOP_GRACE_S = 10.0  # capture gets this long to stop after SIGTERM (a stuck audio driver must not block)
IDLE_BEAT_S = 0.25  # an idle inference thread proves it is alive this often (WATCHDOG=1 needs progress)
RTF_WINDOWS = 60  # the real-time factor is measured over the last N windows

_SENTINEL = object()


@dataclass
class Counters:
    windows_in: int = 0
    windows_done: int = 0
    windows_dropped: int = 0
    windows_failed: int = 0
    windows_skipped_quiet: int = 0
    windows_skipped_shutdown: int = 0
    alerts: int = 0
    recent: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=RTF_WINDOWS))

    def rtf(self) -> float | None:
        """Compute seconds per second of audio over the recent windows (< 1 keeps up with real time)."""
        audio_s = sum(a for a, _ in self.recent)
        return sum(c for _, c in self.recent) / audio_s if audio_s > 0 else None


class Daemon:
    def __init__(
        self,
        loaded: LoadedConfig,
        session: Session,
        source: AudioSource,
        *,
        live: bool,
        store: Any = None,
        writer: Any = None,
        publisher: Any = None,
        publisher_stop: threading.Event | None = None,
        notifier: Any = None,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        cfg = loaded.config
        self.loaded = loaded
        self.cfg = cfg
        self.session = session
        self.source = source
        self.live = live
        self.store = store
        self.writer = writer
        self.publisher = publisher
        self.publisher_stop = publisher_stop or threading.Event()
        self.notifier = notifier
        self.stop = stop or threading.Event()
        self.clock = clock
        self.counters = Counters()
        self.backlog: queue.Queue[Any] = queue.Queue(maxsize=cfg.windows.backlog_windows)
        self._lock = threading.Lock()
        self._capture_done = threading.Event()
        self._inference_done = threading.Event()
        self._fatal: str | None = None
        self._ready_sent = False
        self._falling_behind = False
        self._thin_toggle = False
        self._watchdog = ProgressWatchdog(notifier) if notifier is not None else None
        self._capture_episode = 0
        self._stalled = False
        self._capture_state: CaptureState = "starting"
        self._started_unix_s = clock()
        self._started_mono = time.monotonic()

    # ------------------------------------------------------------------ alerts and outbox

    def _outbox_for(self, result: WindowResult | None, alerts: list[Alert]) -> list[Any]:
        from soundmond.outputs.messages import alert_payload, detection_payload
        from soundmond.outputs.store import OutboxItem

        station = self.cfg.station
        items = [OutboxItem("alert", a.alert_id, alert_payload(a, station), 1) for a in alerts]
        if result is not None:
            for species in result.species:
                payload = detection_payload(species, station, window_id=result.window_id,
                                            ts_unix_s=result.start_unix_s)
                items.append(OutboxItem("detection", payload["event_id"], payload, 1))
        return items

    def raise_external(self, alert_type: AlertType, key: str, severity: Severity, message: str,
                       evidence: dict[str, Any]) -> None:
        alert = self.session.engine.external(alert_type, key, severity, message, evidence, self.clock())
        if alert is None:
            return
        self.counters.alerts += 1
        logger.warning("%s: %s", alert.type, alert.message)
        if self.writer is not None:
            self.writer.submit_alert(alert, self._outbox_for(None, [alert])[0])

    def on_capture_event(self, event: CaptureEvent) -> None:
        """Capture state changes from a live source become alerts through the same path as every other alert."""
        self._capture_state = event.state
        if event.state == "running" and not self._ready_sent:
            self._send_ready()
        detail = dict(event.detail)
        # Each capture episode is its own alert key: a second loss an hour after the first is a new CAPTURE_LOST,
        # never held back by the cooldown, so LOST/RESTORED pairs always tell the truth about the microphone.
        if event.state in ("lost", "flat", "clipped"):
            self._capture_episode += 1
        key = f"CAPTURE:{self._capture_episode}"
        if event.state == "lost":
            self.raise_external(AlertType.CAPTURE_LOST, key + ":lost", "critical", event.message, detail)
        elif event.state == "running" and event.previous in ("lost", "flat", "clipped"):
            self.raise_external(AlertType.CAPTURE_RESTORED, key + ":restored", "info", event.message, detail)
        elif event.state in ("flat", "clipped"):
            alert_type = AlertType.CAPTURE_FLAT if event.state == "flat" else AlertType.CAPTURE_CLIPPED
            self.raise_external(alert_type, key + ":" + event.state, "warning", event.message, detail)

    # ------------------------------------------------------------------ capture thread

    def _enqueue(self, window: AudioWindow) -> None:
        self.counters.windows_in += 1
        if not self.live:
            while not self.stop.is_set():
                try:
                    self.backlog.put(window, timeout=0.5)
                    return
                except queue.Full:
                    continue
            return
        if self.backlog.full():
            dropped = None
            if self.cfg.windows.backlog_policy == "drop_oldest":
                try:
                    dropped = self.backlog.get_nowait()
                except queue.Empty:
                    pass
            else:  # thin: while full, every other incoming window is dropped
                self._thin_toggle = not self._thin_toggle
                if self._thin_toggle:
                    self._count_drop(window)
                    return
                try:
                    dropped = self.backlog.get_nowait()
                except queue.Empty:
                    pass
            if isinstance(dropped, AudioWindow):
                self._count_drop(dropped)
        elif self._falling_behind and self.backlog.qsize() <= self.backlog.maxsize // 2:
            self._falling_behind = False
            logger.info("inference keeps up again (backlog %d windows)", self.backlog.qsize())
        try:
            self.backlog.put_nowait(window)
        except queue.Full:
            self._count_drop(window)

    def _count_drop(self, window: AudioWindow) -> None:
        self.counters.windows_dropped += 1
        if self.store is not None:
            self.store.increment("windows_dropped")
        logger.debug("dropped window %s (%s) to keep up with real time", window.window_id, window.source)
        if not self._falling_behind:
            self._falling_behind = True
            rtf = self.counters.rtf()
            self.raise_external(
                AlertType.FALLING_BEHIND, "FALLING_BEHIND", "warning",
                f"inference is slower than real time (RTF {rtf:.2f})" if rtf else "inference is slower than real time",
                {"rtf": rtf, "backlog_windows": self.backlog.maxsize, "policy": self.cfg.windows.backlog_policy,
                 "windows_dropped": self.counters.windows_dropped},
            )

    def _capture_loop(self) -> None:
        try:
            for window in self.source.windows(self.stop):
                if not self._ready_sent:
                    self._send_ready()
                self._enqueue(window)
                if self.stop.is_set():
                    break
        except Exception as exc:
            logger.exception("the capture thread failed")
            self._fatal = f"capture failed: {exc}"
            self.stop.set()
        finally:
            self._capture_done.set()
            while not self._inference_done.is_set():  # end-of-stream marker, unless inference already ended
                try:
                    self.backlog.put(_SENTINEL, timeout=0.5)
                    break
                except queue.Full:
                    continue

    # ------------------------------------------------------------------ inference thread

    def _inference_loop(self) -> None:
        drain_deadline: float | None = None
        try:
            while True:
                try:
                    item = self.backlog.get(timeout=IDLE_BEAT_S)
                except queue.Empty:
                    self._progress()  # idle, not wedged: waiting for audio is progress for the watchdog
                    if self.stop.is_set():
                        drain_deadline = drain_deadline or time.monotonic() + CAPTURE_STOP_GRACE_S
                        if self._capture_done.is_set() or time.monotonic() > drain_deadline:
                            if not self._capture_done.is_set():
                                logger.warning("capture did not stop within %.0f s (audio driver stuck?): "
                                               "shutting down without it", CAPTURE_STOP_GRACE_S)
                            break
                    continue
                if item is _SENTINEL:
                    break
                if self.stop.is_set():
                    drain_deadline = drain_deadline or time.monotonic() + DRAIN_TIMEOUT_S
                    if time.monotonic() > drain_deadline:
                        self.counters.windows_skipped_shutdown += 1
                        continue
                self._process(item)
        except Exception as exc:
            logger.exception("the inference thread failed")
            self._fatal = f"inference failed: {exc}"
            self.stop.set()
        finally:
            if self.counters.windows_skipped_shutdown:
                logger.warning("%d queued windows were not analysed before the shutdown deadline",
                               self.counters.windows_skipped_shutdown)
                if self.store is not None:
                    self.store.increment("windows_skipped_shutdown", self.counters.windows_skipped_shutdown)
            self._inference_done.set()

    def _process(self, window: AudioWindow) -> None:
        started = time.perf_counter()
        analysis, alerts = self.session.process(window, self.clock())
        compute_s = time.perf_counter() - started
        self._progress()
        result = analysis.result
        c = self.counters
        c.windows_done += 1
        c.recent.append((window.duration_s, compute_s))
        if result.status == "error":
            c.windows_failed += 1
        elif result.status == "skipped_quiet":
            c.windows_skipped_quiet += 1
        c.alerts += len(alerts)
        for alert in alerts:
            logger.info("%s: %s", alert.type, alert.message)
        if self.writer is not None:
            self.writer.submit(result, alerts, self._outbox_for(result, alerts))
        if self.publisher is not None and self.cfg.mqtt.publish_windows:
            self.publisher.publish_window(result)
        logger.debug("window %s: %s in %.0f ms", result.window_id, result.group.group if result.group else "-",
                     compute_s * 1000)

    # ------------------------------------------------------------------ main thread

    def _send_ready(self) -> None:
        self._ready_sent = True
        logger.info("models loaded and audio flowing: ready")
        if self.notifier is not None:
            self.notifier.ready()

    def status_text(self) -> str:
        c = self.counters
        up = max(time.monotonic() - self._started_mono, 1e-9)
        rtf = c.rtf()
        return (f"{c.windows_done} windows ({c.windows_done / up:.2f}/s), RTF {rtf:.3f}, dropped {c.windows_dropped}, "
                f"capture {self._capture_state}") if rtf is not None else f"capture {self._capture_state}, waiting"

    def heartbeat(self) -> Heartbeat:
        c = self.counters
        disk = None
        if self.store is not None:
            usage = shutil.disk_usage(Path(self.store.path).parent)
            disk = DiskUsage(store_bytes=self.store.file_bytes(), free_bytes=usage.free, total_bytes=usage.total)
        # interim adapters until stats() / baseline_status() return the typed parts (the lead's rewrite)
        stats: Any = self.source.stats() if hasattr(self.source, "stats") else None
        baseline: Any = self.session.engine.baseline_status(self.session.aggregator, self.clock())
        return Heartbeat(
            uptime_s=round(time.monotonic() - self._started_mono, 1),
            rtf=c.rtf(),
            windows_processed=c.windows_done,
            dropped_windows=c.windows_dropped,
            failed_windows=c.windows_failed,
            skipped_quiet_windows=c.windows_skipped_quiet,
            capture_state=self._capture_state,
            capture=stats if stats is None or isinstance(stats, CaptureStats) else CaptureStats(**stats),
            disk=disk,
            models=self.session.model_versions,
            config_sha256=self.loaded.sha256,
            version=__version__,
            outbox=self.store.outbox_counts() if self.store is not None else None,
            store_writer=self.writer.health() if self.writer is not None else None,
            baseline=baseline if isinstance(baseline, BaselineStatus) else BaselineStatus(
                ready=baseline["ready"], days_available=baseline["days_available"],
                days_needed=baseline["days_needed"], message=baseline["message"],
                rules={AlertType(t): BaselineRule(**r) for t, r in baseline["rules"].items()},
            ),
        )

    def _progress(self) -> None:
        if self._watchdog is not None:
            self._watchdog.progress()

    def _periodic(self, now_mono: float, due: dict[str, float]) -> None:
        now = self.clock()
        if self._watchdog is not None and self._ready_sent:
            interval = self._watchdog.interval_s
            if self._watchdog.maybe_ping(now_mono):
                if self._stalled:
                    logger.info("the pipeline makes progress again: systemd watchdog pings resumed")
                self._stalled = False
                due["watchdog"] = now_mono
            elif interval is not None and now_mono - due["watchdog"] > 2 * interval and not self._stalled:
                self._stalled = True
                logger.error("the pipeline made no progress for %.0f s: withholding the systemd watchdog ping "
                             "(systemd restarts the service when WatchdogSec runs out)", now_mono - due["watchdog"])
        if self.notifier is not None:
            if now_mono >= due["status"]:
                due["status"] = now_mono + 5.0
                self.notifier.status(self.status_text())
        if now_mono >= due["soundscape"]:
            due["soundscape"] = now_mono + self.cfg.mqtt.soundscape_interval_s
            self._snapshot(now)
        if now_mono >= due["heartbeat"]:
            due["heartbeat"] = now_mono + self.cfg.mqtt.heartbeat_interval_s
            if self.publisher is not None:
                self.publisher.publish_heartbeat(self.heartbeat())
            logger.info("status: %s", self.status_text())

    def _snapshot(self, now: float) -> None:
        snapshot = self.session.aggregator.snapshot(now)
        if self.store is not None:
            self.store.write_aggregate(now, snapshot)
        if self.publisher is not None:
            self.publisher.publish_soundscape(snapshot)
        for alert in self.session.tick(now):
            self.counters.alerts += 1
            logger.warning("%s: %s", alert.type, alert.message)
            if self.writer is not None:
                self.writer.submit_alert(alert, self._outbox_for(None, [alert])[0])

    def run(self) -> int:
        threads = [
            threading.Thread(target=self._capture_loop, name="capture", daemon=True),
            threading.Thread(target=self._inference_loop, name="inference", daemon=True),
        ]
        for t in threads:
            t.start()
        due = {"watchdog": time.monotonic(), "status": 0.0, "soundscape": time.monotonic() + 5.0,
               "heartbeat": time.monotonic() + 5.0}
        while not self._inference_done.wait(0.5):
            self._periodic(time.monotonic(), due)
        logger.info("stopping: capture %s, %d windows analysed", "done" if self._capture_done.is_set() else "stopped",
                    self.counters.windows_done)
        if self.notifier is not None:
            self.notifier.stopping()
        self.stop.set()
        for t in threads:
            t.join(timeout=DRAIN_TIMEOUT_S)
        self._snapshot(self.clock())
        return self._shutdown()

    def _shutdown(self) -> int:
        self.session.close()  # the inference thread is done: end the analyzer's worker (models side by side)
        flushed = True
        if self.writer is not None:
            flushed = self.writer.close(timeout=30.0)
            if not flushed:
                logger.error("the store could not be flushed: some results were not written")
        if self.publisher is not None:  # last: it flushes what the store just wrote, then says offline
            self.publisher_stop.set()
            if not self.publisher.join(timeout=15.0):
                logger.warning("the MQTT publisher did not finish in time; unsent messages stay in the outbox")
        if self.store is not None:
            self.store.close()
        if self._fatal:
            logger.error("fatal: %s", self._fatal)
            return EXIT_FATAL
        return EXIT_OK if flushed else EXIT_FATAL


def _make_source(loaded: LoadedConfig, daemon_ref: list[Daemon], source_override: Path | None,
                 realtime: bool) -> tuple[AudioSource, bool]:
    cfg = loaded.config
    w = cfg.windows
    src = cfg.source
    if source_override is not None:
        return FileSource([source_override], w.length_s, w.hop_s, realtime=realtime), realtime
    if isinstance(src, FileSourceConfig):
        return FileSource([loaded.resolve(src.path)], w.length_s, w.hop_s, realtime=src.realtime), src.realtime
    assert isinstance(src, MicSourceConfig)
    from soundmond.capture.mic import MicSource

    def on_event(event: CaptureEvent) -> None:
        if daemon_ref:
            daemon_ref[0].on_capture_event(event)

    return MicSource(src, w.length_s, w.hop_s, on_event=on_event), True


def run_daemon(
    loaded: LoadedConfig,
    *,
    source_override: Path | None = None,
    realtime: bool = False,
    models: tuple[Tagger, BirdModel | None, GroupHead, dict[str, Any]] | None = None,
) -> int:
    """Run until the source ends or SIGTERM/SIGINT; returns the process exit code."""
    from soundmond.outputs.store import Store, StoreError, StoreWriter

    cfg = loaded.config
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        logger.info("%s received: stopping (capture first, then the queue, the store, the publisher)",
                    signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    notifier = Notifier.from_env()
    try:
        session = build_session(loaded, models=models)
    except ModelLoadError as exc:
        print(f"soundmond: {exc}", file=sys.stderr)
        return EXIT_MODELS
    from soundmond.workbench.bench import startup_rtf_check

    startup_rtf_check(session, cfg)  # a WARNING with advice when the configured models cannot keep up here
    try:
        store = Store(loaded.resolve(cfg.store.path), cfg.store)
    except StoreError as exc:
        print(f"soundmond: store: {exc}", file=sys.stderr)
        return EXIT_FATAL
    history_s = max(max(cfg.aggregation.spans_s), cfg.alerts.frequency.baseline_days * 86400)
    restored = store.recent_results(time.time() - history_s)
    if restored:
        session.aggregator.restore(restored)
        logger.info("restored %d stored windows into the rolling aggregates", len(restored))
    writer_stop = threading.Event()
    writer = StoreWriter(store, writer_stop).start()
    publisher = None
    publisher_stop = threading.Event()
    if cfg.mqtt.enabled:
        from soundmond.outputs.publish import MqttPublisher

        publisher = MqttPublisher(cfg.mqtt, cfg.station, store, publisher_stop)
        publisher.start()
    daemon_ref: list[Daemon] = []
    try:
        source, live = _make_source(loaded, daemon_ref, source_override, realtime)
        if hasattr(source, "open"):
            source.open()
    except Exception as exc:
        from soundmond.capture.mic import CaptureError

        if not isinstance(exc, CaptureError):
            raise
        print(f"soundmond: {exc}", file=sys.stderr)
        writer.close(timeout=10.0)
        publisher_stop.set()
        if publisher is not None:
            publisher.join(timeout=5.0)
        store.close()
        return EXIT_DEVICE
    daemon = Daemon(loaded, session, source, live=live, store=store, writer=writer, publisher=publisher,
                    publisher_stop=publisher_stop, notifier=notifier, stop=stop)
    daemon_ref.append(daemon)
    logger.info("soundmond %s running: station %s, tagger %s, birds %s, source %s", __version__, cfg.station.id,
                cfg.models.tagger.family, "on" if cfg.models.birds.enabled else "off",
                source_override or cfg.source.type)
    return daemon.run()
