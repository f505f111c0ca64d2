"""The MQTT publisher: drains the SQLite outbox at least once, publishes periodic state, keeps the station's status.

Delivery rules:
- Alerts and detections are in the store's outbox before they reach this module. The publisher reads unsent rows in
  id order (`outbox_pending`), publishes them with QoS 1 within a bounded in-flight window, remembers message id ->
  row id, and marks a row sent (`outbox_mark_sent`) only when the broker's PUBACK arrives (`on_publish`). A broker
  outage, a lost connection or a killed daemon leaves the rows unsent; they are replayed in order on the next
  connection (at least once: subscribers dedupe on `event_id`). Each row is handed to paho once per connection (the
  drain's cursor): paho's own queue is never relied on, every connection uses a fresh client with a clean session,
  so what paho held for a dead connection is forgotten (the outbox still has it). A crashed broker can lose rows it
  had acknowledged: after a LOST connection those of the last `mqtt.resend_acked_s` are published once more, at most
  once per row (`resend.py`, `state().resent`).
- Drain: after `stop`, the publisher keeps going (reconnecting if need be) for up to `mqtt.drain_timeout_s` until every
  pending row is acknowledged, then says `offline` and ends; what is still unsent is logged as a WARNING with the
  count (it stays in the outbox for the next start).
- `soundscape` and `heartbeat` (retained), `windows` (QoS 0) and `status` are published directly. They are periodic,
  so one published while disconnected is dropped and counted (`state().dropped`); the latest soundscape and heartbeat
  are re-sent on the next connect so retained state is fresh.
- The last will is `offline` (retained) on `<prefix>/status`; `online` (retained) is published on every connect and
  `offline` on a clean stop.
- A refused or failed connection is never treated as connected. Its kind is `auth` (CONNACK: bad user name or
  password / not authorised), `unreachable` (connection refused, timeout, DNS, no CONNACK), `tls` (certificate
  verification or handshake failure, unreadable CA/cert/key), `refused` (any other CONNACK refusal) or `lost` (an
  established connection dropped). It is logged once per change and exposed in `state()`. The password is read with
  `read_secret` at each attempt and never logged.

The client itself (protocol, last will, credentials, TLS, connection errors) is made in `broker.py`; what subscribers
may send the station is read in `commands.py`.

All paho calls happen on the publisher's own thread (`client.loop()` is driven by it), so callbacks need no locks
beyond the one guarding the counters `state()` reads.
"""

from __future__ import annotations

import collections
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from soundmond import __version__
from soundmond.config import MqttConfig, StationConfig, read_secret
from soundmond.data import Heartbeat, OutboxCounts, WindowResult
from soundmond.outputs import messages
from soundmond.outputs.broker import connect, new_client
from soundmond.outputs.commands import read_incoming
from soundmond.outputs.publisher_state import Counters, OutboxStore, PublisherState
from soundmond.outputs.resend import ResendWindow
from soundmond.outputs.store import OutboxRow
from soundmond.soundscape.aggregate import SoundscapeSnapshot

logger = logging.getLogger(__name__)

_AUTH_REASONS = {134, 135}  # MQTT 5 "Bad user name or password", "Not authorized" (3.1.1 rc 4 and 5 map to these)
DRAIN_RETRY_S = 0.5  # while draining after `stop`, a lost or refused connection is retried this often


class MqttPublisher:
    """Publishes the outbox and the station's state to one broker, on its own thread, until `stop` is set."""

    def __init__(
        self,
        config: MqttConfig,
        station: StationConfig,
        store: OutboxStore,
        stop: threading.Event,
        clock: Callable[[], float] = time.time,
        *,
        max_in_flight: int = 20,
        poll_interval_s: float = 0.25,
        connack_timeout_s: float = 10.0,
        count_interval_s: float = 2.0,
    ) -> None:
        self.config = config
        self.station = station
        self.topics = messages.Topics.for_station(config, station)
        self._store = store
        self._stop = stop
        self._clock = clock
        self._window = max_in_flight
        self._poll_interval_s = poll_interval_s
        self._connack_timeout_s = connack_timeout_s
        self._count_interval_s = count_interval_s
        self._client_id = config.client_id or f"soundmond-{station.id}"
        self._rng = random.Random()

        self._lock = threading.Lock()  # guards _counters, _connected, _error, _direct, _last_state_payloads
        self._counters = Counters()
        self._connected = False
        self._error: tuple[str, str] | None = None
        self._logged_error: tuple[str, str] | None = None
        self._direct: collections.deque[tuple[str, str, bytes, int, bool]] = collections.deque()
        self._direct_max = 64
        self._last_state_payloads: dict[str, bytes] = {}  # kind -> latest soundscape / heartbeat

        # loop-thread only
        self._client: mqtt.Client | None = None
        self._client_dead = False
        self._connect_started = 0.0
        self._failures = 0
        self._next_attempt = 0.0
        self._inflight: dict[int, tuple[OutboxRow, bool]] = {}  # mid -> (outbox row, published once more?)
        self._resend = ResendWindow(config.resend_acked_s)
        self._cursor = 0  # highest outbox id published on this connection
        self._more = True
        self._next_poll = 0.0
        self._next_count = 0.0
        self._acked: list[int] = []
        self._resend_discovery = False
        self._republish_state = False
        self._closing = False
        self._thread: threading.Thread | None = None

    # ---- public API -----------------------------------------------------------------------------------------------

    def start(self) -> threading.Thread:
        """Run the publisher on its own (non-daemon) thread; it ends after `stop` is set and the flush is done."""
        self._thread = threading.Thread(target=self.run, name="mqtt-publisher")
        self._thread.start()
        return self._thread

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def state(self) -> PublisherState:
        with self._lock:
            c = self._counters
            return PublisherState(
                connected=self._connected,
                last_error_kind=self._error[0] if self._error else None,
                last_error=self._error[1] if self._error else None,
                pending=c.pending,
                in_flight=len(self._inflight),
                published=c.published,
                direct_published=c.direct_published,
                dropped=dict(c.dropped),
                rejected=c.rejected,
                ignored=dict(c.ignored),
                connects=c.connects,
                resent=c.resent,
                republished=c.republished,
            )

    def publish_soundscape(self, snapshot: SoundscapeSnapshot) -> bool:
        """Retained soundscape; False (dropped, counted) while disconnected. Thread-safe."""
        payload = messages.soundscape_payload(snapshot, self.station, ts_unix_s=self._clock())
        return self._publish_direct("soundscape", self.topics.soundscape, messages.encode(payload), 1, True)

    def publish_heartbeat(self, heartbeat: Heartbeat) -> bool:
        """Retained heartbeat (the publisher adds its own counters under `mqtt`); False while disconnected."""
        s = self.state()
        mqtt_health = messages.PublisherHealth(
            connected=s.connected,
            pending=s.pending,
            in_flight=s.in_flight,
            published=s.published,
            dropped=sum(s.dropped.values()),
        )
        payload = messages.heartbeat_payload(heartbeat, self.station, ts_unix_s=self._clock(), mqtt=mqtt_health)
        return self._publish_direct("heartbeat", self.topics.heartbeat, messages.encode(payload), 1, True)

    def publish_window(self, result: WindowResult) -> bool:
        """QoS 0 window message when `mqtt.publish_windows` is on; False when off or disconnected."""
        if not self.config.publish_windows:
            return False
        payload = messages.window_payload(result, self.station)
        return self._publish_direct("window", self.topics.windows, messages.encode(payload), 0, False)

    # ---- thread ---------------------------------------------------------------------------------------------------

    def run(self) -> None:
        """The thread body: connect, drain, reconnect with backoff; after `stop`, flush and say offline."""
        logger.info("MQTT publisher for %s:%s, topics under %s/", self.config.host, self.config.port,
                    self.topics.prefix)
        drain_deadline: float | None = None
        while True:
            now = time.monotonic()
            if self._stop.is_set():
                if drain_deadline is None:
                    drain_deadline = self._begin_drain(now)
                if now >= drain_deadline or self._drained():
                    break
            try:
                self._step(now)
            except Exception:
                logger.exception("MQTT publisher step failed; reconnecting")
                self._teardown()
                self._schedule_retry()
        self._shutdown()

    def _step(self, now: float) -> None:
        if self._client is None:
            if now < self._next_attempt:
                wait_s = min(0.1, self._next_attempt - now)
                if self._stop.is_set():
                    time.sleep(wait_s)  # draining: the stop event is set, so waiting on it would spin
                else:
                    self._stop.wait(wait_s)
                return
            self._connect()
            return
        rc = self._client.loop(timeout=0.05)
        if self._client_dead or rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            if not self._client_dead and self._connected_now():
                self._set_error("lost", f"connection to {self._where()} lost ({mqtt.error_string(rc)})")
            self._teardown()
            self._schedule_retry()
            return
        if not self._connected_now():
            if now - self._connect_started > self._connack_timeout_s:
                self._set_error("unreachable", f"no answer (CONNACK) from {self._where()} within "
                                               f"{self._connack_timeout_s:g} s")
                self._teardown()
                self._schedule_retry()
            return
        self._mark_acked()
        self._on_connected_tasks()
        self._flush_direct()
        self._drain(now)
        if now >= self._next_count:
            self._next_count = now + self._count_interval_s
            self._count_pending()

    # ---- connection -----------------------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def _new_client(self) -> mqtt.Client:
        password = None
        if self.config.username:
            password = read_secret(self.config.password_env, self.config.password_credential)
            if password is None:
                self._warn_once_no_password()
        client = new_client(self.config, self._client_id, self.topics.status, password,
                            max_inflight=self._window + 10, max_queued=self._window + self._direct_max + 32,
                            logger=logging.getLogger(__name__ + ".paho"))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    _no_password_warned = False

    def _warn_once_no_password(self) -> None:
        if not self._no_password_warned:
            self._no_password_warned = True
            logger.warning(
                "mqtt.username is set but no password was found (environment variable %s, systemd credential %s)",
                self.config.password_env, self.config.password_credential,
            )

    def _connect(self) -> None:
        self._client_dead = False
        try:
            client = self._new_client()
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._set_error("tls", f"cannot load the TLS files for {self._where()}: {exc} "
                                   "(check mqtt.tls.ca_file / cert_file / key_file)")
            self._schedule_retry()
            return
        self._client = client
        self._connect_started = time.monotonic()
        failure = connect(client, self.config)
        if failure is not None:
            self._fail(*failure)

    def _fail(self, kind: str, text: str) -> None:
        self._set_error(kind, text)
        self._teardown()
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        self._failures += 1
        delay = min(self.config.reconnect_max_s, self.config.reconnect_min_s * 2 ** min(self._failures - 1, 16))
        delay = max(self.config.reconnect_min_s, delay * self._rng.uniform(0.8, 1.0))
        if self._stop.is_set():
            delay = min(delay, DRAIN_RETRY_S)
        self._next_attempt = time.monotonic() + delay
        logger.debug("MQTT reconnect in %.2f s", delay)

    def _teardown(self) -> None:
        client, self._client = self._client, None
        with self._lock:
            was_connected = self._connected
            self._connected = False
            for kind, *_ in self._direct:
                self._counters.dropped[kind] += 1
            self._direct.clear()
        if client is not None:
            client.on_connect = client.on_disconnect = client.on_publish = client.on_message = None
            try:
                sock = client.socket()
                if sock is not None:
                    sock.close()
            except OSError:
                pass
        self._mark_acked()
        if was_connected and not self._closing:
            resends = [row for row, again in self._inflight.values() if again]
            queued = self._resend.lost(self._clock(), resends)
            if queued:
                logger.info("MQTT: %d rows acknowledged in the %g s before the connection was lost will be published "
                            "once more (a restarted broker may have lost them; subscribers dedupe on event_id)",
                            queued, self.config.resend_acked_s)
                with self._lock:
                    self._counters.resent += queued
        self._inflight.clear()
        self._cursor = 0
        self._more = True
        if was_connected:
            logger.debug("MQTT client discarded; unacknowledged rows stay in the outbox")

    def _set_error(self, kind: str, text: str) -> None:
        with self._lock:
            self._error = (kind, text)
        if (kind, text) != self._logged_error:
            self._logged_error = (kind, text)
            logger.warning("MQTT %s: %s", kind, text)
        else:
            logger.debug("MQTT %s (again): %s", kind, text)

    def _connected_now(self) -> bool:
        with self._lock:
            return self._connected

    # ---- paho callbacks (loop thread) -----------------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if client is not self._client:
            return
        if reason.is_failure:
            kind = "auth" if reason.value in _AUTH_REASONS else "refused"
            hint = (" (check mqtt.username and the password from environment variable "
                    f"{self.config.password_env} / credential {self.config.password_credential})"
                    if kind == "auth" else "")
            self._set_error(kind, f"broker {self._where()} refused the connection: {reason.getName()}{hint}")
            self._client_dead = True
            return
        with self._lock:
            self._connected = True
            self._error = None
            self._counters.connects += 1
        self._failures = 0
        self._logged_error = None
        logger.info("MQTT connected to %s as %s (MQTT %s)", self._where(), self._client_id, self.config.protocol)
        client.publish(self.topics.status, messages.STATUS_ONLINE, qos=1, retain=True)
        subs = [(self.topics.set, 0)]
        if self.config.home_assistant_discovery:
            subs.append((f"{self.config.discovery_prefix}/status", 0))
            self._resend_discovery = True
        client.subscribe(subs)
        self._republish_state = True
        self._cursor = 0
        self._more = True
        self._next_count = 0.0

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if client is not self._client:
            return
        if self._connected_now() and not self._closing:
            self._set_error("lost", f"connection to {self._where()} lost: {reason.getName()}")
        self._client_dead = True

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if client is not self._client:
            return
        sent = self._inflight.pop(mid, None)
        if sent is None:
            return
        row, again = sent
        if reason.is_failure:
            logger.warning("MQTT broker rejected outbox row %s: %s; %s", row.id, reason.getName(),
                           "not re-sent" if again else "it stays unsent")
            with self._lock:
                self._counters.rejected += 1
            return
        if again:  # a row published once more is marked sent already and never enters the window again
            with self._lock:
                self._counters.republished += 1
        else:
            self._acked.append(row.id)
            self._resend.acknowledged(row, self._clock())

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._handle_message(msg.topic, bytes(msg.payload))
        except Exception:  # never let a subscriber's message stop the loop
            self._ignore("malformed", msg.topic, "could not be handled", exc_info=True)

    def _handle_message(self, topic: str, payload: bytes) -> None:
        incoming = read_incoming(topic, payload, set_topic=self.topics.set,
                                 birth_topic=f"{self.config.discovery_prefix}/status")
        if incoming.action == "ignored":
            self._ignore(incoming.reason, topic, incoming.detail)
        elif incoming.action == "resend_discovery":
            logger.info("Home Assistant is online: re-sending discovery")
            self._resend_discovery = True
        elif incoming.action == "republish":
            logger.info("MQTT command: republish")
            self._resend_discovery = self.config.home_assistant_discovery
            self._republish_state = True

    def _ignore(self, reason: str, topic: str, detail: str, *, exc_info: bool = False) -> None:
        with self._lock:
            self._counters.ignored[reason] += 1
            n = self._counters.ignored[reason]
        level = logging.WARNING if n <= 10 else logging.DEBUG
        logger.log(level, "ignored a %s message on %s: %s (%d so far)", reason, topic[:120], detail, n,
                   exc_info=exc_info)

    # ---- work while connected -------------------------------------------------------------------------------------

    def _on_connected_tasks(self) -> None:
        client = self._client
        assert client is not None
        if self._resend_discovery:
            self._resend_discovery = False
            if self.config.home_assistant_discovery:
                for topic, cfg in messages.ha_discovery(self.station, self.topics,
                                                        discovery_prefix=self.config.discovery_prefix,
                                                        sw_version=__version__):
                    self._send(client, "discovery", topic, messages.encode(cfg), 1, True)
        if self._republish_state:
            self._republish_state = False
            with self._lock:
                latest = dict(self._last_state_payloads)
            for kind in ("soundscape", "heartbeat"):
                if kind in latest:
                    self._send(client, kind, self.topics.for_kind(kind), latest[kind], 1, True)

    def _send(self, client: mqtt.Client, kind: str, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        info = client.publish(topic, payload, qos=qos, retain=retain)
        with self._lock:
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._counters.direct_published += 1
            else:
                self._counters.dropped[kind] += 1

    def _publish_direct(self, kind: str, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        with self._lock:
            if retain:
                self._last_state_payloads[kind] = payload
            if not self._connected:
                self._counters.dropped[kind] += 1
                return False
            if len(self._direct) >= self._direct_max:
                self._counters.dropped[self._direct.popleft()[0]] += 1
            self._direct.append((kind, topic, payload, qos, retain))
            return True

    def _flush_direct(self) -> None:
        client = self._client
        assert client is not None
        while True:
            with self._lock:
                if not self._direct:
                    return
                kind, topic, payload, qos, retain = self._direct.popleft()
            self._send(client, kind, topic, payload, qos, retain)

    def _drain(self, now: float) -> None:
        client = self._client
        assert client is not None
        room = self._window - len(self._inflight)
        if room > 0 and len(self._resend):
            again = self._resend.take(room)
            for i, row in enumerate(again):
                if not self._hand_over(client, row, again=True):
                    self._resend.put_back(again[i:])
                    self._next_poll = now + self._poll_interval_s
                    return
            room -= len(again)
        if room <= 0 or (not self._more and now < self._next_poll):
            return
        rows = self._store.outbox_pending(room, after_id=self._cursor)
        self._more = len(rows) >= room
        if not rows:
            self._next_poll = now + self._poll_interval_s
            return
        try:
            self._store.outbox_mark_attempt([row.id for row in rows])
        except Exception:
            logger.debug("outbox_mark_attempt failed", exc_info=True)
        for row in rows:
            if not self._hand_over(client, row, again=False):
                self._more = False
                self._next_poll = now + self._poll_interval_s
                return
            self._cursor = row.id

    def _hand_over(self, client: mqtt.Client, row: OutboxRow, *, again: bool) -> bool:
        """Publish one outbox row on this connection; False when paho did not take it (retried later)."""
        info = client.publish(self.topics.for_kind(row.kind), row.payload, qos=2 if row.qos == 2 else 1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            logger.debug("MQTT publish of outbox row %s not accepted (%s); retrying later", row.id,
                         mqtt.error_string(info.rc))
            return False
        self._inflight[info.mid] = (row, again)
        return True

    def _mark_acked(self) -> None:
        if not self._acked:
            return
        ids, self._acked = self._acked, []
        try:
            self._store.outbox_mark_sent(ids, self._clock())
        except Exception:
            logger.exception("cannot mark %d outbox rows sent; will retry", len(ids))
            self._acked = ids + self._acked
            return
        with self._lock:
            self._counters.published += len(ids)
            if self._counters.pending is not None:
                self._counters.pending = max(0, self._counters.pending - len(ids))

    def _count_pending(self) -> OutboxCounts | None:
        try:
            counts = self._store.outbox_counts()
        except Exception:
            logger.debug("outbox_counts failed", exc_info=True)
            return None
        with self._lock:
            self._counters.pending = counts.pending
        return counts

    # ---- drain and stop -------------------------------------------------------------------------------------------

    def _begin_drain(self, now: float) -> float:
        """`stop` was set: look at the outbox at once, reconnect soon if not connected; returns the deadline."""
        self._more = True
        self._next_poll = 0.0
        self._next_attempt = min(self._next_attempt, now + DRAIN_RETRY_S)
        counts = self._count_pending()
        logger.info("MQTT: draining %s pending outbox rows (up to mqtt.drain_timeout_s = %g s)",
                    "?" if counts is None else counts.pending, self.config.drain_timeout_s)
        return now + self.config.drain_timeout_s

    def _drained(self) -> bool:
        """Nothing in flight, nothing waiting to be published once more, no outbox row left to hand to paho."""
        self._mark_acked()
        if self._inflight or self._acked or len(self._resend) or (self._direct and self._connected_now()):
            return False
        try:
            return not self._store.outbox_pending(1, after_id=self._cursor)
        except Exception:
            logger.debug("outbox_pending failed while draining", exc_info=True)
            return False

    def _shutdown(self) -> None:
        client = self._client
        if client is not None and self._connected_now():
            info = client.publish(self.topics.status, messages.STATUS_OFFLINE, qos=1, retain=True)
            deadline = time.monotonic() + 2.0
            while not info.is_published() and time.monotonic() < deadline and not self._client_dead:
                client.loop(timeout=0.05)
            self._mark_acked()
            self._closing = True
            client.disconnect()
            for _ in range(5):
                if not client.is_connected() or client.loop(timeout=0.02) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        self._teardown()
        counts = self._count_pending()
        s = self.state()
        if counts is not None and counts.pending:
            with self._lock:
                why = f" ({self._error[0]}: {self._error[1]})" if self._error and not self._connected else ""
            logger.warning("MQTT: %d outbox rows (%d alerts) not acknowledged within mqtt.drain_timeout_s = %g s%s; "
                           "they stay in the outbox and are published at the next start", counts.pending,
                           counts.pending_alerts, self.config.drain_timeout_s, why)
        if len(self._resend):
            logger.info("MQTT: %d acknowledged rows were not published once more before the stop", len(self._resend))
        logger.info("MQTT publisher stopped: %d rows acknowledged, %s unsent, %d direct messages dropped",
                    s.published, "?" if s.pending is None else s.pending, sum(s.dropped.values()))
