"""Test rigs shared by the capture tests and the daemon end-to-end tests: a private PulseAudio null sink used as a
REAL virtual microphone (see ../shared/RIGS.md).

`PulseRig(root)` runs `pulseaudio` in user mode in a temp dir with a unix socket and one null sink `v` (48 kHz mono);
its monitor `v.monitor` is the default source, so PortAudio's ALSA `pulse`/`default` devices record what is played
into `v` with `pacat`. `kill()` SIGKILLs the server (a "microphone unplugged"); `start()` again brings it back on the
same socket. `client_env()` is what a client (this process or a child daemon) needs in its environment.

Nothing here imports sounddevice: a caller that uses PortAudio in-process must set the environment and then rescan
(`sd._terminate(); sd._initialize()`), see `rescan_portaudio()`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt

RATE_HZ = 48000


def pulseaudio_available() -> str | None:
    """None when the rig can run, else the reason it cannot (for pytest.skip)."""
    for tool in ("pulseaudio", "pacat", "parec", "pactl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (run scripts/install-system-deps.sh)"
    return None


class PulseRig:
    """A private PulseAudio server with a null sink `v`; its monitor is the virtual microphone."""

    def __init__(self, root: Path, rate_hz: int = RATE_HZ, channels: int = 1) -> None:
        self.root = root
        self.run_dir = root / "run"
        self.socket = self.run_dir / "native"
        self.rate_hz = rate_hz
        self.channels = channels
        self._server: subprocess.Popen[bytes] | None = None
        self._keepalive: subprocess.Popen[bytes] | None = None
        self._players: list[subprocess.Popen[bytes]] = []
        self._feeders: list[threading.Thread] = []
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.client_conf = root / "client.conf"
        self.client_conf.write_text("autospawn = no\n")

    # --- environment -------------------------------------------------------------------------------------------
    def client_env(self) -> dict[str, str]:
        """Environment variables a PulseAudio client needs to reach this server (and only this one)."""
        return {
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_RUNTIME_PATH": str(self.run_dir),
            "PULSE_COOKIE": str(self.root / "cookie"),
            "PULSE_CLIENTCONFIG": str(self.client_conf),
        }

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.client_env())
        env["HOME"] = str(self.root)
        env["XDG_RUNTIME_DIR"] = str(self.run_dir)
        return env

    # --- server --------------------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server (again, after `kill`) on the same socket and wait until it answers."""
        if self._server is not None and self._server.poll() is None:
            return
        self.socket.unlink(missing_ok=True)
        cmd = [
            "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
            "--disallow-exit", "--log-target=stderr", "--log-level=error",
            "-L", f"module-native-protocol-unix socket={self.socket} auth-anonymous=1",
            "-L", f"module-null-sink sink_name=v rate={self.rate_hz} channels={self.channels}",
        ]  # fmt: skip
        log = open(self.root / "pulseaudio.log", "ab")  # noqa: SIM115 - the child owns it
        self._server = subprocess.Popen(cmd, env=self._env(), stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self._server.returncode}: {self.log_tail()}")
            if self.socket.exists() and self._pactl("info").returncode == 0:
                self._pactl("set-default-source", "v.monitor")
                return
            time.sleep(0.05)
        raise RuntimeError(f"pulseaudio did not answer within {timeout_s} s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the server, like an audio server crash or a microphone pulled out."""
        self.stop_keepalive()
        self.stop_players()
        if self._server is not None and self._server.poll() is None:
            self._server.send_signal(signal.SIGKILL)
            self._server.wait(timeout=10)
        self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        p = self.root / "pulseaudio.log"
        return p.read_text(errors="replace")[-n:] if p.exists() else ""

    def _pactl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["pactl", *args], env=self._env(), capture_output=True, timeout=10, check=False)

    # --- keep-alive recorder: cuts the first-callback delay of an idle null sink from 1-2 s to ~20 ms -------------
    def start_keepalive(self) -> None:
        if self._keepalive is not None and self._keepalive.poll() is None:
            return
        self._keepalive = subprocess.Popen(
            ["parec", "--latency-msec=10", "-d", "v.monitor"],
            env=self._env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def stop_keepalive(self) -> None:
        if self._keepalive is not None:
            _terminate(self._keepalive)
            self._keepalive = None

    # --- playing audio into the sink (what the virtual microphone "hears") ---------------------------------------
    def play(self, samples: npt.NDArray[np.float32], *, wait: bool = False) -> subprocess.Popen[bytes]:
        """Play mono float32 samples at `rate_hz` into the sink with pacat (in the background unless `wait`)."""
        data = np.ascontiguousarray(samples, dtype="<f4").tobytes()
        proc = subprocess.Popen(
            ["pacat", "--playback", "--device=v", "--format=float32le", f"--rate={self.rate_hz}", "--channels=1",
             "--latency-msec=100"],
            env=self._env(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self._players.append(proc)

        def feed() -> None:
            assert proc.stdin is not None
            try:
                proc.stdin.write(data)
            except OSError:  # the player was stopped (or the server killed) before it took everything
                pass
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        t = threading.Thread(target=feed, daemon=True)
        self._feeders.append(t)
        t.start()
        if wait:
            t.join()
            proc.wait(timeout=len(samples) / self.rate_hz + 30)
        return proc

    def stop_players(self) -> None:
        for p in self._players:
            _terminate(p)
        for t in self._feeders:
            t.join(timeout=5)
        self._players.clear()
        self._feeders.clear()

    def close(self) -> None:
        self.kill()


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def rescan_portaudio() -> None:
    """Make PortAudio (in this process) scan the devices again, e.g. after the PulseAudio env vars changed."""
    import sounddevice as sd

    sd._terminate()
    sd._initialize()


@contextmanager
def pulse_rig(root: Path, keepalive: bool = True) -> Iterator[PulseRig]:
    rig = PulseRig(root)
    try:
        rig.start()
        if keepalive:
            rig.start_keepalive()
        yield rig
    finally:
        rig.close()


def tone(freq_hz: float, duration_s: float, rate_hz: int = RATE_HZ, amplitude: float = 0.5) -> npt.NDArray[np.float32]:
    t = np.arange(int(duration_s * rate_hz)) / rate_hz
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
