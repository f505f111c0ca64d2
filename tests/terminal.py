"""Running a command with its stderr on a pseudo-terminal, as a person at a terminal sees it (progress bars)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_with_tty_stderr(cmd: list[str], timeout_s: float = 240.0, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `cmd` from the repository with stderr on a pseudo-terminal of 120 columns (stdout discarded); returns
    (exit code, what the terminal showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))  # 120 columns (a new pty has 0)
    proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave,
                            env=env)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")
