"""A REAL Mosquitto per test (see ../shared/RIGS.md), shared by the publisher, listen and daemon end-to-end tests.

- `Broker(root)`: mosquitto on a free 127.0.0.1 port with a temp config (`user root`; anonymous, or a password file;
  optional TLS; optional persistence so sessions and queued QoS 1 messages survive `kill()` + `start()`).
  `kill()` is SIGKILL; the port stays the same across restarts. `log_all=True` logs every packet, and
  `publishes_received(client_id)` counts the PUBLISH packets the broker got from one client.
- `make_tls(root)`: a self-signed server certificate for localhost/127.0.0.1 (openssl), plus an unrelated CA that
  must NOT verify it.
- `Collector`: a paho subscriber recording every message (optionally with a persistent session that survives
  broker restarts, QoS 1).
- `python tests/mqtt_rig.py publisher --db DB --port PORT [--station ID]`: a publisher process (Store + MqttPublisher)
  for kill -9 tests; it runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parents[1]


def mosquitto_available() -> str | None:
    """None when the rig can run, else the reason it cannot (for pytest.skip)."""
    for tool in ("mosquitto", "mosquitto_passwd", "openssl"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (run scripts/install-system-deps.sh)"
    return None


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # the server's self-signed certificate: also the CA a client must trust
    key: Path
    wrong_ca: Path  # an unrelated self-signed certificate: verification against it fails


def make_tls(root: Path) -> TlsFiles:
    root.mkdir(parents=True, exist_ok=True)

    def selfsigned(name: str) -> tuple[Path, Path]:
        cert, key = root / f"{name}.pem", root / f"{name}.key"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return cert, key

    cert, key = selfsigned("server")
    wrong, _ = selfsigned("other")
    return TlsFiles(cert, key, wrong)


class Broker:
    """A private mosquitto on 127.0.0.1:<free port>."""

    def __init__(
        self,
        root: Path,
        *,
        persistence: bool = False,
        autosave_s: int = 1,
        tls: TlsFiles | None = None,
        users: dict[str, str] | None = None,
        port: int | None = None,
        log_all: bool = False,
    ) -> None:
        self.root = root
        self.log_all = log_all
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persistence = persistence
        self.autosave_s = autosave_s
        self.tls = tls
        self.users = users
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = root / "mosquitto.conf"
        self.log = root / "mosquitto.log"
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            "user root",
            f"listener {self.port} 127.0.0.1",
            "max_queued_messages 100000",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if self.log_all:  # every packet, e.g. `Received PUBLISH from <client id> (d0, q1, r0, m5, '<topic>', ...`
            lines.append("log_type all")
        if self.users is not None:
            pwfile = self.root / "passwords"
            pwfile.write_text("")
            for user, pw in self.users.items():
                subprocess.run(
                    [_exe("mosquitto_passwd"), "-b", str(pwfile), user, pw], check=True, capture_output=True, timeout=30
                )
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls is not None:
            lines += [f"certfile {self.tls.cert}", f"keyfile {self.tls.key}"]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.root}/", f"autosave_interval {self.autosave_s}"]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout_s: float = 10.0) -> Broker:
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        with open(self.root / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(
                [_exe("mosquitto"), "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT
            )

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        if not wait_until(listening, timeout_s):
            raise RuntimeError(f"mosquitto not listening on {self.port} after {timeout_s} s")
        return self

    def wait_saved(self, after: float, timeout_s: float = 10.0) -> bool:
        """Wait until the persistence file was written after `after` (time.time()): mosquitto saves every
        autosave_interval only while running, so a session must be saved once before a SIGKILL can keep it."""
        db = self.root / "mosquitto.db"
        return wait_until(lambda: db.exists() and db.stat().st_mtime > after, timeout_s, 0.05)

    def save(self, timeout_s: float = 10.0) -> bool:
        """Make mosquitto write its persistence file now (SIGUSR1) and wait until it has."""
        assert self.proc is not None and self.persistence
        before = time.time() - 0.01
        self.proc.send_signal(signal.SIGUSR1)
        return self.wait_saved(before, timeout_s)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no final persistence save."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def publishes_received(self, client_id: str) -> list[PublishSeen]:
        """Every PUBLISH packet the broker logged as received from `client_id` (needs `log_all=True`), across
        restarts (the log file is appended to)."""
        pattern = re.compile(r"Received PUBLISH from (\S+) \(d(\d), q(\d), r(\d), m(\d+), '([^']*)'")
        seen = []
        for line in self.log_text().splitlines():
            m = pattern.search(line)
            if m and m.group(1) == client_id:
                seen.append(PublishSeen(m.group(6), dup=m.group(2) == "1", qos=int(m.group(3))))
        return seen

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class PublishSeen:
    """A PUBLISH packet in the broker's log: its topic, DUP flag and QoS."""

    topic: str
    dup: bool
    qos: int


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int


class Collector:
    """A subscriber that records every message; with `persistent=True` its session (and QoS 1 messages queued while
    it is away) survives broker restarts (needs broker persistence)."""

    def __init__(
        self,
        port: int,
        topics: list[str],
        *,
        qos: int = 1,
        client_id: str | None = None,
        persistent: bool = False,
        protocol: str = "5",
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.messages: list[Received] = []
        self.connects: list[tuple[float, bool, str]] = []  # (monotonic time, session present, reason)
        self._lock = threading.RLock()
        self._subscribed = threading.Event()
        self.topics = topics
        self.qos = qos
        v5 = protocol == "5"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"collector-{os.getpid()}-{id(self)}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else not persistent,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=str(ca_file))
        self.client.reconnect_delay_set(1, 2)
        self.client.enable_logger(logging.getLogger("collector"))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        props = None
        if v5 and persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        if v5:
            # clean_start=False from the first connect: mosquitto 2.0.11 did not restore (after a restart) a session
            # that began with clean_start=True, even with a session expiry interval
            self.client.connect("127.0.0.1", port, keepalive=10, properties=props,
                                clean_start=not persistent)
        else:
            self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("collector did not subscribe within 10 s")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connects.append((time.monotonic(), bool(flags.session_present), str(reason)))
        if not reason.is_failure and not flags.session_present:
            client.subscribe([(t, self.qos) for t in self.topics])
        elif not reason.is_failure:
            self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if mqtt.topic_matches_sub(topic, m.topic)]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float) -> bool:
        def check() -> bool:
            with self._lock:
                return predicate(list(self.messages))

        return wait_until(check, timeout_s)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def publisher_command(db: Path, port: int, station: str = "kill-test", *, extra: list[str] | None = None) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "publisher",
        "--db",
        str(db),
        "--port",
        str(port),
        "--station",
        station,
        *(extra or []),
    ]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _publisher_main(argv: list[str]) -> int:
    """A publisher process on a real Store: prints READY when its thread runs; SIGTERM/SIGINT stop it cleanly."""
    import logging

    from soundmond.config import MqttConfig, StationConfig, StoreConfig
    from soundmond.outputs.publish import MqttPublisher
    from soundmond.outputs.store import Store

    p = argparse.ArgumentParser()
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--station", default="kill-test")
    p.add_argument("--in-flight", type=int, default=20)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    store = Store(args.db, StoreConfig())
    cfg = MqttConfig(enabled=True, host="127.0.0.1", port=args.port, reconnect_min_s=0.1, reconnect_max_s=0.5)
    pub = MqttPublisher(
        cfg, StationConfig(id=args.station), store, stop, max_in_flight=args.in_flight, poll_interval_s=0.05
    )
    pub.start()
    print("READY", flush=True)
    while not stop.is_set():
        stop.wait(0.5)
    pub.join(30)
    store.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "publisher":
        sys.exit(_publisher_main(sys.argv[2:]))
    sys.exit("usage: mqtt_rig.py publisher --db DB --port PORT [--station ID]")
