"""sd_notify against a real datagram socket, as systemd's manager would receive it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from soundmond.sdnotify import Notifier, ProgressWatchdog


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    sock.settimeout(0.2)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except TimeoutError:
        return out


def test_messages_reach_the_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000"})
    assert n.enabled and n.watchdog_interval_s() == 30.0
    assert n.ready(status="capturing from mic:default")
    assert n.status("3 windows/s")
    assert n.watchdog()
    assert n.stopping()
    assert received(sock) == [
        "READY=1\nSTATUS=capturing from mic:default",
        "STATUS=3 windows/s",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_abstract_socket() -> None:
    name = f"soundmond-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_no_socket_is_a_noop() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and n.watchdog_interval_s() is None
    assert not ProgressWatchdog(n).maybe_ping(100.0)


def test_dead_socket_does_not_raise(tmp_path: Path) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert n.ready() is False
    assert n.watchdog() is False


def test_watchdog_usec_for_another_pid_is_ignored() -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert n.watchdog_interval_s() is None


def test_progress_watchdog_pings_only_after_progress(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    wd = ProgressWatchdog(Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"}))
    assert wd.interval_s == 5.0
    assert not wd.maybe_ping(0.0)  # nothing processed yet: no ping
    wd.progress()
    assert wd.maybe_ping(0.0)  # progress: ping
    wd.progress()
    assert not wd.maybe_ping(1.0)  # progress, but too soon after the last ping
    assert wd.maybe_ping(5.0)  # due, and progress happened since
    assert not wd.maybe_ping(11.0)  # due, but the pipeline is stuck: no ping, systemd will restart us
    assert not wd.maybe_ping(30.0)
    wd.progress()
    assert wd.maybe_ping(31.0)
    assert received(sock) == ["WATCHDOG=1"] * 3


def test_child_process_sees_notify_socket(notify_socket: tuple[socket.socket, str], tmp_path: Path) -> None:
    """As under systemd: the variables are set for the child, which reports READY and feeds the watchdog."""
    sock, path = notify_socket
    code = textwrap.dedent(
        """
        from soundmond.sdnotify import Notifier, ProgressWatchdog
        n = Notifier.from_env()
        wd = ProgressWatchdog(n)
        n.ready()
        wd.progress()
        wd.maybe_ping()
        print(n.watchdog_interval_s())
        """
    )
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="4000000")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "2.0"
    assert received(sock) == ["READY=1", "WATCHDOG=1"]
