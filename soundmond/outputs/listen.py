"""`soundmond listen`: follow alerts and soundscapes of one or many stations from any machine with broker access.

Subscribes (QoS 1) to `soundmond/+/alerts` and `soundmond/+/soundscape` by default, prints one human-readable line per
message (or the message as a JSON line with `--json`), and prints an event only once: replays (the publisher is at
least once) and retained re-deliveries are recognised by `event_id` in a bounded LRU set. `--share GROUP` uses MQTT 5
shared subscriptions (`$share/GROUP/<topic>`) so several listeners split one stream. Broker settings come from the
`mqtt` section of the config (host, port, protocol, TLS, username, password via env/credential); flags override.
It exits 0 once it has been connected, and `ExitCode.FATAL` (5), saying why on stderr, when it never connected (broker
unreachable, connection refused, bad credentials) before `--duration` ran out or it was stopped.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import threading
import time
from importlib.util import find_spec
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from soundmond.config import MqttConfig, load_config, read_secret
from soundmond.errors import ExitCode
from soundmond.outputs import messages

logger = logging.getLogger(__name__)

DEFAULT_TOPICS = ("soundmond/+/alerts", "soundmond/+/soundscape")
MAX_MESSAGE_BYTES = 1_000_000
EXIT_CODES_HELP = f"""\
exit codes of listen:
  0  it was connected to the broker (and ran until --duration, --count or Ctrl-C)
  2  bad usage or invalid configuration
  {int(ExitCode.FATAL)}  it never connected to the broker (unreachable, refused, bad credentials) before --duration
     ran out: the reason is on stderr
"""


class SeenIds:
    """A bounded LRU set of event ids."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()

    def seen(self, event_id: str) -> bool:
        """True if `event_id` was seen before (and refresh it); else remember it and return False."""
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return True
        self._ids[event_id] = None
        if len(self._ids) > self.maxsize:
            self._ids.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._ids)


def add_listen_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", action="append", dest="topics", metavar="TOPIC",
                        help="topic filter to follow (repeatable); default: " + ", ".join(DEFAULT_TOPICS))
    parser.add_argument("--json", action="store_true", help="print each message as one JSON line")
    parser.add_argument("--share", metavar="GROUP", help="MQTT 5 shared subscription group: listeners in the same "
                        "group split the stream")
    parser.add_argument("--validate", action="store_true",
                        help="check each message against its JSON Schema (needs the jsonschema package)")
    parser.add_argument("--host", help="broker host (default: mqtt.host of the config)")
    parser.add_argument("--port", type=int, help="broker port (default: mqtt.port of the config)")
    parser.add_argument("--username", help="broker user (default: mqtt.username); the password comes from the "
                        "config's password_env / password_credential")
    parser.add_argument("--protocol", choices=["3.1.1", "5"], help="MQTT version (default: mqtt.protocol)")
    parser.add_argument("--count", type=int, default=0, help="exit after printing N messages (0: run until Ctrl-C)")
    parser.add_argument("--duration", type=float, default=0.0, help="exit after S seconds (0: no limit)")
    parser.add_argument("--dedup-size", type=int, default=10_000, help="how many event ids to remember")
    parser.epilog = (parser.epilog + "\n\n" if parser.epilog else "") + EXIT_CODES_HELP


class Listener:
    """The subscriber behind `soundmond listen`; `run()` blocks until stop, --count or --duration."""

    def __init__(self, args: argparse.Namespace, config: MqttConfig, out: TextIO,
                 stop: threading.Event | None = None) -> None:
        self.args = args
        self.config = config
        self.out = out
        self.stop = stop or threading.Event()
        self.seen = SeenIds(args.dedup_size)
        self.printed = 0
        self.duplicates = 0
        self.invalid = 0
        self.subscribed = threading.Event()
        self.connected_once = False  # a CONNACK accepted the connection at least once
        self.last_error: str | None = None  # why the last attempt failed (for the never-connected message)
        topics = args.topics or list(DEFAULT_TOPICS)
        self.topics = [f"$share/{args.share}/{t}" if args.share else t for t in topics]

    def _client(self) -> mqtt.Client:
        v5 = self.config.protocol == "5"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                             clean_session=None if v5 else True)
        if self.config.username:
            client.username_pw_set(self.config.username,
                                   read_secret(self.config.password_env, self.config.password_credential))
        if self.config.tls is not None:
            tls = self.config.tls
            client.tls_set(ca_certs=str(tls.ca_file) if tls.ca_file else None,
                           certfile=str(tls.cert_file) if tls.cert_file else None,
                           keyfile=str(tls.key_file) if tls.key_file else None)
            client.tls_insecure_set(tls.insecure)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = lambda *a: self.subscribed.set()
        return client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.last_error = f"the broker refused the connection: {reason.getName()}"
            logger.error("broker %s:%s refused the connection: %s", self.config.host, self.config.port,
                         reason.getName())
            return
        self.connected_once = True
        logger.info("listening on %s:%s to %s", self.config.host, self.config.port, ", ".join(self.topics))
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            line = self.handle(msg.topic, bytes(msg.payload))
        except Exception:
            logger.warning("could not handle a message on %s", msg.topic[:120], exc_info=True)
            return
        if line is not None:
            print(line, file=self.out, flush=True)
            self.printed += 1
            if self.args.count and self.printed >= self.args.count:
                self.stop.set()

    def handle(self, topic: str, payload: bytes) -> str | None:
        """The line to print for one message, or None (duplicate, ignored)."""
        if len(payload) > MAX_MESSAGE_BYTES:
            logger.warning("ignored a %d-byte message on %s", len(payload), topic[:120])
            return None
        try:
            data = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            text = payload.decode("utf-8", "replace").strip()[:200]
            if self.args.json:
                return json.dumps({"topic": topic, "payload": text}, ensure_ascii=False)
            return f"{topic}: {text}"
        if isinstance(data, dict) and isinstance(data.get("event_id"), str):
            if self.seen.seen(data["event_id"]):
                self.duplicates += 1
                return None
        if self.args.validate:
            try:
                messages.validate(data)
            except messages.InvalidMessage as exc:
                self.invalid += 1
                logger.warning("invalid message on %s: %s", topic[:120], exc)
        if self.args.json:
            return json.dumps({"topic": topic, "payload": data}, ensure_ascii=False, separators=(",", ":"))
        return format_line(topic, data)

    def run(self) -> int:
        client = self._client()
        deadline = time.monotonic() + self.args.duration if self.args.duration else None
        backoff = self.config.reconnect_min_s
        connected = False
        try:
            while not self.stop.is_set() and (deadline is None or time.monotonic() < deadline):
                if not connected:
                    try:
                        client.connect(self.config.host, self.config.port, self.config.keepalive_s)
                        connected = True
                        backoff = self.config.reconnect_min_s
                    except OSError as exc:
                        self.last_error = f"cannot connect: {exc}"
                        logger.warning("cannot connect to %s:%s: %s; retrying in %.0f s", self.config.host,
                                       self.config.port, exc, backoff)
                        self.stop.wait(backoff)
                        backoff = min(backoff * 2, self.config.reconnect_max_s)
                        continue
                if client.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    connected = False
                    logger.warning("connection to %s:%s lost; reconnecting", self.config.host, self.config.port)
                    self.stop.wait(backoff)
        finally:
            if connected:
                client.disconnect()
        logger.info("listen: %d printed, %d duplicates skipped, %d invalid", self.printed, self.duplicates,
                    self.invalid)
        if not self.connected_once:
            print(f"soundmond listen: never connected to {self.config.host}:{self.config.port} "
                  f"({self.last_error or 'no answer from the broker'}) - check --host / --port "
                  "(mqtt.host / mqtt.port), that the broker runs, and mqtt.username with its password", file=sys.stderr)
            return ExitCode.FATAL
        return ExitCode.OK


def _pct(x: Any) -> str:
    return f"{x * 100:.0f}%" if isinstance(x, (int, float)) else "-"


def format_line(topic: str, data: Any) -> str:
    """One human-readable line for a soundmond message."""
    if not isinstance(data, dict):
        return f"{topic}: {json.dumps(data)[:200]}"
    ts, station, kind = data.get("ts", "?"), data.get("station_id", "?"), data.get("type")
    if kind == "alert":
        return f"{ts} {station} ALERT {str(data.get('severity', '')).upper()} {data.get('alert_type')}: " \
               f"{data.get('message')}"
    if kind == "soundscape":
        parts = []
        for span in data.get("spans") or []:
            sh = span.get("shares") or {}
            top = ", ".join(f"{s.get('common_name') or s.get('scientific_name')} {s.get('count')}"
                            for s in (span.get("species") or [])[:3])
            parts.append(f"{span.get('span_s')}s: natural {_pct(sh.get('natural'))} industrial "
                         f"{_pct(sh.get('industrial'))} other {_pct(sh.get('other'))} ({span.get('windows')} windows)"
                         + (f" [{top}]" if top else ""))
        return f"{ts} {station} SOUNDSCAPE " + "; ".join(parts)
    if kind == "detection":
        return f"{ts} {station} DETECTION {data.get('common_name')} ({data.get('scientific_name')}) " \
               f"{data.get('confidence')}"
    if kind == "evidence":
        what = (f"{data.get('bytes')} bytes sha256 {str(data.get('sha256'))[:12]}" if data.get("status") == "written"
                else str(data.get("reason")))
        return f"{ts} {station} EVIDENCE {str(data.get('status', '')).upper()} {data.get('label')} " \
               f"{data.get('path')} ({what})"
    if kind == "heartbeat":
        return f"{ts} {station} HEARTBEAT up {data.get('uptime_s')} s, capture {data.get('capture_state')}"
    return f"{ts} {station} {str(kind).upper()} {json.dumps(data)[:200]}"


def listen_config(args: argparse.Namespace) -> MqttConfig:
    """The config's mqtt section with command-line overrides."""
    config = load_config(getattr(args, "config", None)).config.mqtt
    overrides = {k: getattr(args, k) for k in ("host", "port", "username", "protocol")
                 if getattr(args, k, None) is not None}
    if getattr(args, "share", None) and (overrides.get("protocol") or config.protocol) != "5":
        logger.warning("--share needs MQTT 5 shared subscriptions; Mosquitto also accepts them over 3.1.1")
    return config.model_copy(update=overrides)


def run_listen(args: argparse.Namespace, out: TextIO | None = None, stop: threading.Event | None = None) -> int:
    """Run `soundmond listen` with parsed `args`; returns the exit code."""
    if args.validate and find_spec("jsonschema") is None:
        print("soundmond listen: --validate needs jsonschema, which is not installed: pip install jsonschema "
              "(or pip install 'soundmond[dev]')", file=sys.stderr)
        return ExitCode.USAGE
    return Listener(args, listen_config(args), out or sys.stdout, stop).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soundmond listen", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="config.yaml (for the mqtt section)")
    add_listen_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    try:
        return run_listen(args)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
