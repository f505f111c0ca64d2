"""A headless Chromium the tests drive over the DevTools protocol, with no client library.

`Chromium(root)` starts Debian's `chromium` (installed by scripts/install-system-deps.sh) with
`--remote-debugging-pipe`: the DevTools protocol as NUL-terminated JSON messages on the child's fds 3 (commands in)
and 4 (replies and events out), so neither a websocket client nor a free port is needed. `open(url)` loads a page in
a new tab and returns a `Page`: `evaluate(js)` (the value, JSON-compatible), `screenshot(path)` (the whole page),
and `errors`: every console error, uncaught exception and failed load (e.g. an image that is not there) the page
produced. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from base64 import b64decode
from pathlib import Path
from typing import Any

TIMEOUT_S = 60.0


def chromium_available() -> str | None:
    """None, or why there is no usable Chromium here."""
    if shutil.which("chromium") is None:
        return "chromium is not installed (run scripts/install-system-deps.sh)"
    return None


class Chromium:
    def __init__(self, root: Path, *, width: int = 1280, height: int = 900) -> None:
        self.root = root
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict[str, Any]] = []
        cmd_r, cmd_w = os.pipe()  # we write commands, Chromium reads them on fd 3
        out_r, out_w = os.pipe()  # Chromium writes on fd 4, we read

        def to_3_and_4() -> None:  # in the child: its ends to fds 3 and 4 (via high fds: either may be 3 or 4 now)
            os.dup2(cmd_r, 90)
            os.dup2(out_w, 91)
            os.dup2(90, 3)
            os.dup2(91, 4)

        self.log = open(root / "chromium.log", "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
             f"--user-data-dir={root / 'profile'}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, pass_fds=(3, 4),
            preexec_fn=to_3_and_4)
        for fd in (cmd_r, out_w):
            os.close(fd)
        self._w = cmd_w
        self._r = out_r

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout_s=10.0)
        except (OSError, TimeoutError, RuntimeError):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the protocol -----------------------------------------------------------------------------------------

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from Chromium in time (see chromium.log)")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed its pipe (exit {self.proc.poll()}; see chromium.log)")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, session: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        for e in self.events:
            if e["method"] == method and e.get("sessionId") == session:
                return e
        while True:
            e = self._receive(deadline)
            if "method" in e:
                self.events.append(e)
                if e["method"] == method and e.get("sessionId") == session:
                    return e

    def open(self, url: str) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_event("Page.loadEventFired", session)
        return Page(self, session)


class Page:
    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    def evaluate(self, expression: str) -> Any:
        result = self.browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                   session=self.session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        size = self.browser.call("Page.getLayoutMetrics", session=self.session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.browser.call("Page.captureScreenshot", {"format": "png", "clip": clip,
                                                            "captureBeyondViewport": True}, session=self.session)
        path.write_bytes(b64decode(shot["data"]))
        return path

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads of this page so far."""
        self.evaluate("0")  # a round trip: events sent before it are read
        found = []
        for e in self.browser.events:
            if e.get("sessionId") != self.session:
                continue
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                found.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif e["method"] == "Runtime.exceptionThrown":
                found.append("exception: " + str(p["exceptionDetails"].get("text")))
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                found.append(f"log ({p['entry']['source']}): {p['entry']['text']} {p['entry'].get('url', '')}")
        return found
