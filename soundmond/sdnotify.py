"""systemd's sd_notify protocol without a library: datagrams to the unix socket named in `$NOTIFY_SOCKET`.

`Notifier.from_env()` is a no-op when the daemon is not run by systemd (`NOTIFY_SOCKET` unset), so the daemon calls
it unconditionally. A leading `@` in the socket name means a Linux abstract socket. Sending never raises: a failure
is logged at WARNING once, then at DEBUG (a watchdog that cannot be fed will be noticed by systemd anyway).

The watchdog must mean "the pipeline makes progress", not "a timer fires": `ProgressWatchdog` pings `WATCHDOG=1`
only if `progress()` was called since the previous ping, at most every half of `WATCHDOG_USEC`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; every method is a no-op when there is no notify socket."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self._watchdog_usec = watchdog_usec
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Notifier:
        """From `NOTIFY_SOCKET` and `WATCHDOG_USEC` (ignored when `WATCHDOG_PID` names another process)."""
        env = os.environ if environ is None else environ
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if raw and (not pid or pid == str(os.getpid())):
            try:
                usec = int(raw) if int(raw) > 0 else None
            except ValueError:
                logger.warning("ignoring WATCHDOG_USEC=%r: not an integer", raw)
        return cls(env.get("NOTIFY_SOCKET"), usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half of systemd's WatchdogSec, or None when the watchdog is off."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 2e6

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))

    def notify(self, message: str) -> bool:
        """Send one message (newline-separated assignments); True if it was sent."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:  # a socket per message, as libsystemd does: messages are rare and nothing stays open
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)  # a receiver that stops reading must never block the daemon
                sock.sendto(message.encode("utf-8"), target)
        except OSError as exc:
            with self._lock:
                level = logging.DEBUG if self._warned else logging.WARNING
                self._warned = True
            logger.log(level, "sd_notify to %s failed: %s", self.address, exc)
            return False
        logger.debug("sd_notify %s", message.replace("\n", " "))
        return True


class ProgressWatchdog:
    """WATCHDOG=1 only when the pipeline made progress since the last ping: a stuck pipeline gets restarted.

    Call `progress()` per processed window or capture block (cheap, any thread) and `maybe_ping(now)` often (e.g.
    from the main loop every second): it pings at most every `interval_s` (default: half of WATCHDOG_USEC), and only
    if progress happened since the previous ping.
    """

    def __init__(
        self,
        notifier: Notifier,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float | None = None,
    ) -> None:
        self._notifier = notifier
        self._clock = clock
        self.interval_s = interval_s if interval_s is not None else notifier.watchdog_interval_s()
        self._progress = 0
        self._progress_at_ping = 0
        self._last_ping: float | None = None
        self.pings = 0

    def progress(self) -> None:
        self._progress += 1  # one writer per stage is typical; a lost increment only delays a ping

    def maybe_ping(self, now: float | None = None) -> bool:
        """Ping if due and progress happened since the last ping. Returns True if WATCHDOG=1 was sent."""
        if self.interval_s is None:
            return False
        now = self._clock() if now is None else now
        if self._last_ping is not None and now - self._last_ping < self.interval_s:
            return False
        current = self._progress
        if current == self._progress_at_ping:
            return False
        self._progress_at_ping = current
        self._last_ping = now
        self.pings += 1
        self._notifier.watchdog()
        return True
