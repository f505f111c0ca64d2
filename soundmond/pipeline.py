"""`soundmond run`: the one place where the stages are wired.

Threads, each with one job, sharing one stop event, and who owns what:

    capture    source.windows() -> the bounded backlog (capture/backlog.py: its counters and drop policy), READY
    pipeline   THE owner of the analysis session (analyzer, aggregator, alert engine), the per-window counters and
               the capture state: takes windows from the backlog and messages from its control queue (capture
               events, falling-behind notices), runs the periodic snapshot, span rules and heartbeat itself
    store      StoreWriter: batched SQLite writes off the pipeline thread
    publisher  MqttPublisher: drains the outbox to the broker (when MQTT is enabled)
    evidence   EvidenceStage: clips of detections and alerts, fed every analysed window (when evidence is enabled)
    main       signals, sd_notify WATCHDOG / STATUS (it reads only the frozen `PipelineStatus`)

Nothing but the pipeline thread touches the session: other threads send it messages (`post`), so the aggregator
and the alert engine need no lock. Every queue is bounded. A restart remembers (`alert_memory.py`): the alert engine's
state is taken over from the store before the threads start, and saved by the pipeline thread through the store
writer after alerts fire and at every snapshot.

Falling behind (live sources): `capture/backlog.py` drops windows by `windows.backlog_policy` when the backlog is
full; every dropped window is counted (stored and published in the heartbeat) and FALLING_BEHIND is raised once per
episode. File replay that is not real time never drops: capture waits for inference.

Shutdown (SIGTERM / SIGINT): capture stops first; windows already queued are analysed until `DRAIN_TIMEOUT_S`, the rest
are counted as skipped (`windows_skipped_shutdown`); the pipeline thread takes its last messages and writes the last
snapshot; the store is flushed; the publisher goes last. A fatal error (the store cannot be written, a stage thread
died) exits non-zero so systemd restarts the service.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soundmond import __version__, alert_memory
from soundmond.analysis import ModelLoadError, Session, build_session
from soundmond.capture.backlog import Backlog, EndOfStream
from soundmond.capture.files import FileSource
from soundmond.capture.mic import CaptureError, MicSource
from soundmond.config import ConfigError, FileSourceConfig, LoadedConfig, MicSourceConfig
from soundmond.data import (
    Alert,
    AlertType,
    AudioWindow,
    CaptureEvent,
    CaptureState,
    DiskUsage,
    Heartbeat,
    Severity,
    WindowResult,
)
from soundmond.errors import ExitCode
from soundmond.outputs.evidence import EvidenceStage
from soundmond.outputs.messages import alert_payload, detection_payload
from soundmond.outputs.metrics import MetricsError, MetricsServer, Tally
from soundmond.outputs.publish import MqttPublisher
from soundmond.outputs.store import OutboxItem, Store, StoreError, StoreWriter
from soundmond.protocols import AudioSource, BirdModel, GroupHead, Publisher, ResultStore, ResultWriter, Tagger
from soundmond.sdnotify import Notifier, ProgressWatchdog
from soundmond.speed import startup_rtf_check

logger = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 30.0
CAPTURE_STOP_GRACE_S = 10.0  # capture gets this long to stop after SIGTERM (a stuck audio driver must not block)
IDLE_BEAT_S = 0.25  # an idle pipeline thread proves it is alive this often (WATCHDOG=1 needs progress)
RTF_WINDOWS = 60  # the real-time factor is measured over the last N windows
CONTROL_QUEUE = 256  # capture events and notices waiting for the pipeline thread (they are rare: a few per hour)
CONTROL_WAIT_S = 5.0  # a sender waits this long for room before the message is counted as lost (and logged)
FIRST_PERIODIC_S = 5.0  # the first soundscape snapshot and heartbeat, this long after start
PUBLISHER_STOP_MARGIN_S = 15.0  # beyond mqtt.drain_timeout_s: a last connect attempt, `offline`, the disconnect


@dataclass(frozen=True)
class FallingBehind:
    """Sent by the capture thread when it starts dropping windows (once per episode)."""

    rtf: float | None
    backlog_windows: int
    policy: str
    windows_dropped: int


@dataclass(frozen=True)
class PipelineStatus:
    """What the pipeline thread has done so far; replaced (never changed) after every step, read by any thread."""

    windows_in: int = 0
    windows_done: int = 0
    windows_dropped: int = 0
    windows_failed: int = 0
    windows_skipped_quiet: int = 0
    windows_skipped_shutdown: int = 0
    alerts: int = 0
    rtf: float | None = None  # compute seconds per second of audio over the last RTF_WINDOWS windows
    capture_state: CaptureState = "starting"


class Daemon:
    def __init__(
        self,
        loaded: LoadedConfig,
        session: Session,
        source: AudioSource,
        *,
        live: bool,
        store: ResultStore | None = None,
        writer: ResultWriter | None = None,
        publisher: Publisher | None = None,
        publisher_stop: threading.Event | None = None,
        notifier: Notifier | None = None,
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
        self.evidence = EvidenceStage.for_run(loaded, session, store, self.stop)  # its thread; a no-op when off
        self.clock = clock
        self.backlog = Backlog(cfg.windows.backlog_windows, cfg.windows.backlog_policy, live=live, stop=self.stop,
                               on_falling_behind=self._notice_falling_behind)
        self._control: queue.Queue[CaptureEvent | FallingBehind] = queue.Queue(maxsize=CONTROL_QUEUE)
        self._capture_done = threading.Event()
        self._pipeline_done = threading.Event()
        self._fatal: str | None = None
        self._watchdog = ProgressWatchdog(notifier) if notifier is not None else None
        self._stalled = False
        self._started_mono = time.monotonic()
        # owned by the capture thread
        self._ready = threading.Event()
        self._source_ended = False
        self._control_lost = 0
        # owned by the pipeline thread
        self._done = 0
        self._failed = 0
        self._skipped_quiet = 0
        self._skipped_shutdown = 0
        self._alerts = 0
        self._recent: deque[tuple[float, float]] = deque(maxlen=RTF_WINDOWS)
        self._capture_state: CaptureState = "starting"
        self._drops_stored = 0
        self._alert_memory = alert_memory.AlertMemory(writer)
        # written by the pipeline thread only, read by anyone
        self.status = PipelineStatus()
        self.tally = Tally()  # alerts by type, detections by species (for the metrics)

    # ------------------------------------------------------------------ messages for the pipeline thread

    def post(self, message: CaptureEvent | FallingBehind) -> None:
        """Hand a message to the pipeline thread, from any thread. The control queue is bounded: a sender waits for
        room (the pipeline takes messages between windows and every IDLE_BEAT_S when idle), at most CONTROL_WAIT_S."""
        try:
            self._control.put(message, timeout=CONTROL_WAIT_S)
        except queue.Full:
            self._control_lost += 1
            logger.error("the pipeline's control queue is full: %s was not delivered (%d so far)",
                         type(message).__name__, self._control_lost)

    def on_capture_event(self, event: CaptureEvent) -> None:
        """A live source's state change (called on the capture thread): READY on the first "running", then the
        event goes to the pipeline thread, which turns it into an alert like every other alert."""
        if event.state == "running":
            self._send_ready()
        self.post(event)

    # ------------------------------------------------------------------ capture thread

    def _notice_falling_behind(self, windows_dropped: int) -> None:
        self.post(FallingBehind(self.status.rtf, self.backlog.maxsize, self.backlog.policy, windows_dropped))

    def _capture_loop(self) -> None:
        try:
            for window in self.source.windows(self.stop):
                self._send_ready()
                self.backlog.put(window)
                if self.stop.is_set():
                    break
            else:
                self._source_ended = True  # the recordings ran out (not stopped by a signal)
        except Exception as exc:
            logger.exception("the capture thread failed")
            self._fatal = f"capture failed: {exc}"
            self.stop.set()
        finally:
            self._capture_done.set()
            self.backlog.end(self._pipeline_done)

    def _send_ready(self) -> None:
        if self._ready.is_set():
            return
        self._ready.set()
        logger.info("models loaded and audio flowing: ready")
        if self.notifier is not None:
            self.notifier.ready()

    # ------------------------------------------------------------------ pipeline thread (the session's owner)

    def _pipeline_loop(self) -> None:
        drain_deadline: float | None = None
        now_mono = time.monotonic()
        due = {"soundscape": now_mono + FIRST_PERIODIC_S, "heartbeat": now_mono + FIRST_PERIODIC_S}
        try:
            while True:
                self._take_messages()
                self._periodic(time.monotonic(), due)
                item = self.backlog.get(timeout=IDLE_BEAT_S)
                if item is None:
                    self._progress()  # idle, not wedged: waiting for audio is progress for the watchdog
                    if self.stop.is_set():
                        drain_deadline = drain_deadline or time.monotonic() + CAPTURE_STOP_GRACE_S
                        if self._capture_done.is_set() or time.monotonic() > drain_deadline:
                            if not self._capture_done.is_set():
                                logger.warning("capture did not stop within %.0f s (audio driver stuck?): "
                                               "shutting down without it", CAPTURE_STOP_GRACE_S)
                            break
                    continue
                if isinstance(item, EndOfStream):
                    break
                if self.stop.is_set():
                    drain_deadline = drain_deadline or time.monotonic() + DRAIN_TIMEOUT_S
                    if time.monotonic() > drain_deadline:
                        self._skipped_shutdown += 1
                        continue
                self._process(item)
            self._take_messages()
            self._snapshot(self.clock())  # the last figures of the run, and the span rules on them
        except Exception as exc:
            logger.exception("the pipeline thread failed")
            self._fatal = f"inference failed: {exc}"
            self.stop.set()
        finally:
            if self._skipped_shutdown:
                logger.warning("%d queued windows were not analysed before the shutdown deadline",
                               self._skipped_shutdown)
                if self.store is not None:
                    self.store.increment("windows_skipped_shutdown", self._skipped_shutdown)
            self._sync_drops()
            self._publish_status()
            self._pipeline_done.set()

    def _take_messages(self) -> None:
        self._sync_drops()
        while True:
            try:
                message = self._control.get_nowait()
            except queue.Empty:
                return
            if isinstance(message, CaptureEvent):
                self._on_capture_event(message)
            else:
                self._on_falling_behind(message)

    def _sync_drops(self) -> None:
        """Store the windows the capture thread dropped since the last call (it counts; this thread writes)."""
        dropped = self.backlog.windows_dropped
        if dropped > self._drops_stored:
            if self.store is not None:
                self.store.increment("windows_dropped", dropped - self._drops_stored)
            self._drops_stored = dropped

    def _on_capture_event(self, event: CaptureEvent) -> None:
        self._capture_state = event.state
        detail = dict(event.detail)
        # Each capture episode is its own alert key: a second loss an hour after the first is a new CAPTURE_LOST,
        # never held back by the cooldown, so LOST/RESTORED pairs always tell the truth about the microphone.
        # The episode number lives in the alert engine's state, so it goes on after a restart.
        engine = self.session.engine
        new_episode = event.state in ("lost", "flat", "clipped")
        key = f"CAPTURE:{engine.next_episode('CAPTURE') if new_episode else engine.episode('CAPTURE')}"
        if event.state == "lost":
            self._raise(AlertType.CAPTURE_LOST, key + ":lost", "critical", event.message, detail)
        elif event.state == "running" and event.previous in ("lost", "flat", "clipped"):
            self._raise(AlertType.CAPTURE_RESTORED, key + ":restored", "info", event.message, detail)
        elif event.state in ("flat", "clipped"):
            alert_type = AlertType.CAPTURE_FLAT if event.state == "flat" else AlertType.CAPTURE_CLIPPED
            self._raise(alert_type, key + ":" + event.state, "warning", event.message, detail)
        self._publish_status()

    def _on_falling_behind(self, notice: FallingBehind) -> None:
        rtf = notice.rtf
        self._raise(
            AlertType.FALLING_BEHIND, "FALLING_BEHIND", "warning",
            f"inference is slower than real time (RTF {rtf:.2f})" if rtf else "inference is slower than real time",
            {"rtf": rtf, "backlog_windows": notice.backlog_windows, "policy": notice.policy,
             "windows_dropped": notice.windows_dropped},
        )

    def _raise(self, alert_type: AlertType, key: str, severity: Severity, message: str,
               evidence: dict[str, object]) -> None:
        alert = self.session.engine.external(alert_type, key, severity, message, evidence, self.clock())
        if alert is None:
            return
        self._submit_alerts([alert])

    def _submit_alerts(self, alerts: list[Alert]) -> None:
        self._alerts += len(alerts)
        self.tally.count(None, alerts)
        if self.writer is not None:
            for alert in alerts:
                self.writer.submit_alert(alert, next(iter(self._outbox_for(None, [alert])), None))
        if alerts:
            self._save_alert_state()

    def _outbox_for(self, result: WindowResult | None, alerts: list[Alert]) -> list[OutboxItem]:
        if not self.cfg.mqtt.enabled:  # nothing would ever send them: the outbox would fill and keep alerts forever
            return []
        station = self.cfg.station
        items = [OutboxItem("alert", a.alert_id, alert_payload(a, station), 1) for a in alerts]
        if result is not None:
            best = result.best_chunks()
            for species in result.species:
                payload = detection_payload(species, station, window_id=result.window_id,
                                            ts_unix_s=result.start_unix_s, chunk=best.get(species.scientific_name))
                items.append(OutboxItem("detection", payload["event_id"], payload, 1))
        return self.evidence.annotate(result, items)  # where each event's clip will be kept

    def _process(self, window: AudioWindow) -> None:
        started = time.perf_counter()
        analysis, alerts = self.session.process(window, self.clock())
        compute_s = time.perf_counter() - started
        self._progress()
        result = analysis.result
        if isinstance(self.source, FileSource):  # recordings (real-time replays too) have no capture events
            self._capture_state = "running"
        self._done += 1
        self._recent.append((window.duration_s, compute_s))
        if result.status == "error":
            self._failed += 1
        elif result.status == "skipped_quiet":
            self._skipped_quiet += 1
        self._alerts += len(alerts)
        self.tally.count(result, alerts)
        if self.writer is not None:
            self.writer.submit(result, alerts, self._outbox_for(result, alerts))
        self.evidence.offer(window, analysis, alerts)
        if alerts:
            self._save_alert_state()
        if self.publisher is not None and self.cfg.mqtt.publish_windows:
            self.publisher.publish_window(result)
        self._publish_status()
        logger.debug("window %s: %s in %.0f ms", result.window_id, result.group.group if result.group else "-",
                     compute_s * 1000)

    def _rtf(self) -> float | None:
        audio_s = sum(a for a, _ in self._recent)
        return sum(c for _, c in self._recent) / audio_s if audio_s > 0 else None

    def _publish_status(self) -> None:
        self.status = PipelineStatus(self.backlog.windows_in, self._done, self.backlog.windows_dropped, self._failed,
                                     self._skipped_quiet, self._skipped_shutdown, self._alerts, self._rtf(),
                                     self._capture_state)

    def _periodic(self, now_mono: float, due: dict[str, float]) -> None:
        if now_mono >= due["soundscape"]:
            due["soundscape"] = now_mono + self.cfg.mqtt.soundscape_interval_s
            self._snapshot(self.clock())
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
        alerts = self.session.tick(now)
        self._submit_alerts(alerts)
        self._save_alert_state()  # hysteresis moved on even without an alert (a key cleared, ...)

    def _save_alert_state(self) -> None:
        """Queue the alert engine's state for the store (when it changed), behind the alerts it accounts for."""
        self._alert_memory.save(self.session.engine, self.clock())

    def _restore_alert_state(self) -> None:
        """Before the threads start: take over the alert engine's state from the store (a restart remembers)."""
        if self.store is not None:
            alert_memory.restore(self.store, self.session.engine, self.clock())

    def heartbeat(self) -> Heartbeat:
        """Station health (pipeline thread: it reads the alert engine's baselines)."""
        s = self.status
        disk = None
        if self.store is not None:
            usage = shutil.disk_usage(Path(self.store.path).parent)
            disk = DiskUsage(store_bytes=self.store.file_bytes(), free_bytes=usage.free, total_bytes=usage.total)
        return Heartbeat(
            uptime_s=round(time.monotonic() - self._started_mono, 1),
            rtf=s.rtf,
            windows_processed=s.windows_done,
            dropped_windows=s.windows_dropped,
            failed_windows=s.windows_failed,
            skipped_quiet_windows=s.windows_skipped_quiet,
            capture_state=s.capture_state,
            capture=self.source.stats(),
            disk=disk,
            models=dict(self.session.model_versions),
            config_sha256=self.loaded.sha256,
            version=__version__,
            outbox=self.store.outbox_counts() if self.store is not None else None,
            store_writer=self.writer.health() if self.writer is not None else None,
            baseline=self.session.engine.baseline_status(self.session.aggregator, self.clock()),
            evidence=self.evidence.stats,
        )

    def _progress(self) -> None:
        if self._watchdog is not None:
            self._watchdog.progress()

    # ------------------------------------------------------------------ main thread

    def status_text(self) -> str:
        s = self.status
        up = max(time.monotonic() - self._started_mono, 1e-9)
        if s.rtf is None:
            return f"capture {s.capture_state}, waiting"
        return (f"{s.windows_done} windows ({s.windows_done / up:.2f}/s), RTF {s.rtf:.3f}, "
                f"dropped {s.windows_dropped}, capture {s.capture_state}")

    def _supervise(self, now_mono: float, due: dict[str, float]) -> None:
        """sd_notify from the main thread: WATCHDOG only while the pipeline makes progress, STATUS every 5 s."""
        if self._watchdog is not None and self._ready.is_set():
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
        if self.notifier is not None and now_mono >= due["status"]:
            due["status"] = now_mono + 5.0
            self.notifier.status(self.status_text())

    def run(self) -> int:
        self._restore_alert_state()
        threads = [
            threading.Thread(target=self._capture_loop, name="capture", daemon=True),
            threading.Thread(target=self._pipeline_loop, name="pipeline", daemon=True),
        ]
        for t in threads:
            t.start()
        due = {"watchdog": time.monotonic(), "status": 0.0}
        while not self._pipeline_done.wait(0.5):
            self._supervise(time.monotonic(), due)
        how = ("the recordings ended" if self._source_ended else "capture stopped" if self._capture_done.is_set()
               else "capture did not stop")
        logger.info("stopping: %s, %d windows analysed", how, self.status.windows_done)
        if self.notifier is not None:
            self.notifier.stopping()
        self.stop.set()
        for t in threads:
            t.join(timeout=DRAIN_TIMEOUT_S)
        return self._shutdown()

    def _shutdown(self) -> int:
        self.session.close()  # the pipeline thread is done: end the analyzer's worker (models side by side)
        self.evidence.close(timeout=DRAIN_TIMEOUT_S)  # the last clips (it logs what it could not finish)
        flushed = True
        if self.writer is not None:
            flushed = self.writer.close(timeout=30.0)
            if not flushed:
                logger.error("the store could not be flushed: some results were not written")
        if self.publisher is not None:  # last: it drains what the store just wrote (mqtt.drain_timeout_s), says offline
            self.publisher_stop.set()
            if not self.publisher.join(timeout=self.cfg.mqtt.drain_timeout_s + PUBLISHER_STOP_MARGIN_S):
                logger.warning("the MQTT publisher did not finish in time; unsent messages stay in the outbox")
        if self.store is not None:
            self.store.close()
        if self._fatal:
            logger.error("fatal: %s", self._fatal)
            return ExitCode.FATAL
        return ExitCode.OK if flushed else ExitCode.FATAL


def _make_source(loaded: LoadedConfig, daemon_ref: list[Daemon], source_override: Path | None, realtime: bool,
                 store: Store, reanalyze: bool, on_input_error: Callable[[Path, str], None] | None,
                 models: Mapping[str, Any] | None = None) -> tuple[AudioSource, bool]:
    cfg = loaded.config
    w = cfg.windows
    src = cfg.source
    station = cfg.station.id
    if source_override is None and isinstance(src, FileSourceConfig):
        source_override, realtime = loaded.resolve(src.path), src.realtime
    if source_override is not None:  # a replay: the store says what is already analysed
        return FileSource([source_override], w.length_s, w.hop_s, realtime=realtime, station=station, ledger=store,
                          reanalyze=reanalyze, on_error=on_input_error, models=models,
                          bird_stride_s=cfg.models.birds.stride_s if cfg.models.birds.enabled else None), realtime
    assert isinstance(src, MicSourceConfig)

    def on_event(event: CaptureEvent) -> None:
        if daemon_ref:
            daemon_ref[0].on_capture_event(event)

    return MicSource(src, w.length_s, w.hop_s, on_event=on_event, station=station), True


def run_daemon(
    loaded: LoadedConfig,
    *,
    source_override: Path | None = None,
    realtime: bool = False,
    reanalyze: bool = False,
    models: tuple[Tagger, BirdModel | None, GroupHead, dict[str, Any]] | None = None,
    on_input_error: Callable[[Path, str], None] | None = None,
) -> int:
    """Run until the source ends or SIGTERM/SIGINT; returns the process exit code. A file replay skips what the
    store already holds (`reanalyze`: replaces it). `on_input_error(path, problem)` hears of every recording a file
    source could not decode (called on the capture thread); the run goes on."""
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
        return ExitCode.MODELS
    except ConfigError as exc:  # names in the config the models do not know (the preflight refuses them first)
        for problem in exc.problems:
            print(str(problem), file=sys.stderr)
        return ExitCode.USAGE
    startup_rtf_check(session, cfg)  # a WARNING with advice when the configured models cannot keep up here
    try:
        metrics = MetricsServer.start(cfg.metrics, cfg.station.id)  # None unless metrics.port is set
    except MetricsError as exc:
        print(f"soundmond: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        store = Store(loaded.resolve(cfg.store.path), cfg.store)
        store.record_run(cfg.station.id, session.model_versions)
    except StoreError as exc:
        print(f"soundmond: store: {exc}", file=sys.stderr)
        return ExitCode.FATAL
    writer_stop = threading.Event()
    writer = StoreWriter(store, writer_stop).start()
    publisher = None
    publisher_stop = threading.Event()
    if cfg.mqtt.enabled:
        publisher = MqttPublisher(cfg.mqtt, cfg.station, store, publisher_stop)
        publisher.start()
    daemon_ref: list[Daemon] = []
    try:
        source, live = _make_source(loaded, daemon_ref, source_override, realtime, store, reanalyze, on_input_error,
                                    session.model_versions)
        source.open()  # a replay: files hashed, looked up, earlier rows deleted with --reanalyze
    except CaptureError as exc:
        print(f"soundmond: {exc}", file=sys.stderr)
        writer.close(timeout=10.0)
        publisher_stop.set()
        if publisher is not None:
            publisher.join(timeout=cfg.mqtt.drain_timeout_s + PUBLISHER_STOP_MARGIN_S)
        store.close()
        return ExitCode.DEVICE
    alert_memory.restore_aggregates(cfg, session.aggregator, store)  # after source.open(): --reanalyze's deletes
    daemon = Daemon(loaded, session, source, live=live, store=store, writer=writer, publisher=publisher,
                    publisher_stop=publisher_stop, notifier=notifier, stop=stop)
    daemon_ref.append(daemon)
    if metrics is not None:
        metrics.attach(daemon)
    logger.info("soundmond %s running: station %s, tagger %s, birds %s, source %s", __version__, cfg.station.id,
                cfg.models.tagger.family, "on" if cfg.models.birds.enabled else "off",
                source_override or cfg.source.type)
    try:
        return daemon.run()
    finally:
        if metrics is not None:
            metrics.close()
