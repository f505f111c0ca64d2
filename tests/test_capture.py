"""MicSource on a REAL virtual microphone: a private PulseAudio null sink read through PortAudio's ALSA `pulse` device.

Audio is played into the sink with pacat and read back by MicSource; the server is SIGKILLed and restarted on the same
socket to pull the "microphone" out and plug it back. Skipped only when PulseAudio is not installed
(scripts/install-system-deps.sh installs it).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from soundmond.capture.audio import load_audio
from soundmond.capture.files import FileSource
from soundmond.capture.mic import CaptureError, MicSource, list_input_devices
from soundmond.config import MicSourceConfig
from soundmond.data import AudioWindow, CaptureEvent
from tests.rigs import RATE_HZ, PulseRig, pulseaudio_available, rescan_portaudio, tone

FIXTURES = Path(__file__).parent / "fixtures" / "audio"

_missing = pulseaudio_available()
pytestmark = pytest.mark.skipif(_missing is not None, reason=f"virtual microphone unavailable: {_missing}")


@pytest.fixture
def virtual_mic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseRig]:
    """A private PulseAudio server whose null sink monitor is this process's default PortAudio input."""
    pytest.importorskip("sounddevice", reason="sounddevice needs libportaudio2 (scripts/install-system-deps.sh)")
    rig = PulseRig(tmp_path / "pulse")
    for key, value in rig.client_env().items():
        monkeypatch.setenv(key, value)
    try:
        rig.start()
        rig.start_keepalive()
        rescan_portaudio()  # PortAudio scanned at import time, before these variables were set
        yield rig
    finally:
        rig.close()


class Capture:
    """Runs MicSource.windows in its own thread, like the daemon's capture stage."""

    def __init__(self, config: MicSourceConfig, window_s: float = 1.0, hop_s: float = 1.0, consume_s: float = 0.0):
        self.events: queue.Queue[tuple[float, CaptureEvent]] = queue.Queue()
        self.all_events: list[CaptureEvent] = []
        self.windows: list[tuple[float, AudioWindow]] = []
        self.source = MicSource(config, window_s, hop_s, self._on_event)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._consume_s = consume_s
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_event(self, event: CaptureEvent) -> None:
        self.all_events.append(event)
        self.events.put((time.monotonic(), event))

    def _run(self) -> None:
        try:
            for w in self.source.windows(self.stop):
                self.windows.append((time.time(), w))
                if self._consume_s:
                    time.sleep(self._consume_s)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc

    def __enter__(self) -> Capture:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "capture thread did not stop"

    def wait_event(self, state: str, timeout_s: float) -> tuple[float, CaptureEvent]:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {state!r} event within {timeout_s} s; events: {self.all_events}")
            try:
                t, ev = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if ev.state == state:
                return t, ev

    def wait_windows(self, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.windows) < n:
            assert self.error is None, repr(self.error)
            assert time.monotonic() < deadline, f"only {len(self.windows)} windows after {timeout_s} s"
            time.sleep(0.05)


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    n = 8 * len(samples)  # zero-padded: 1/8-bin resolution
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)), n=n))
    return float(np.argmax(spectrum) * rate / n)


def mic_config(**kw: object) -> MicSourceConfig:
    base: dict[str, object] = {"device": None, "block_ms": 100, "stall_timeout_s": 3.0}
    base.update(kw)
    return MicSourceConfig.model_validate(base)


def test_tone_is_read_back_at_1khz_with_honest_windows(virtual_mic: PulseRig) -> None:
    opened = time.time()
    with Capture(mic_config(), window_s=1.0, hop_s=0.5) as cap:
        _, ev = cap.wait_event("running", timeout_s=10)
        assert ev.previous == "starting"
        virtual_mic.play(tone(1000.0, 4.0))
        cap.wait_windows(9, timeout_s=15)
        time.sleep(3.5)
        got = list(cap.windows)
    assert cap.error is None
    ws = [w for _, w in got]
    assert all(w.samples.shape == (RATE_HZ,) and w.sample_rate_hz == RATE_HZ for w in ws)
    assert all(w.samples.dtype == np.float32 for w in ws)
    assert all(w.source == "mic:default" for w in ws)
    assert len({w.window_id for w in ws}) == len(ws)
    # hop exactly 0.5 s in stream time and wall time (timestamps come from the sample count, not the cut time)
    assert np.allclose(np.diff([w.start_s for w in ws]), 0.5, atol=1e-9)
    assert np.allclose(np.diff([w.start_unix_s for w in ws]), 0.5, atol=1e-6)
    # the first sample was captured after the stream opened, and a window ends before it is handed over
    assert opened - 0.5 <= ws[0].start_unix_s <= opened + 5
    for handed_at, w in got:
        assert w.start_unix_s + w.duration_s <= handed_at + 0.05
    loud = [w for w in ws if np.sqrt(np.mean(w.samples**2)) > 0.3]
    assert len(loud) >= 4, [float(np.sqrt(np.mean(w.samples**2))) for w in ws]
    freqs = [peak_frequency(w.samples, RATE_HZ) for w in loud]
    logging.getLogger(__name__).info("tone read back at %s Hz", freqs)
    assert all(abs(f - 1000.0) <= 2.0 for f in freqs), freqs
    amp = max(float(np.max(np.abs(w.samples))) for w in loud)
    assert 0.45 < amp < 0.55
    stats = cap.source.stats()
    assert stats.blocks and stats.overflows == 0 and stats.queue_drops == 0
    rate = stats.stream_rate_hz
    assert isinstance(rate, float) and abs(rate - RATE_HZ) < 0.05 * RATE_HZ


def test_real_recording_comes_back_with_its_content(virtual_mic: PulseRig) -> None:
    original, _ = load_audio(FIXTURES / "oss_birds_10s.flac", rate_hz=RATE_HZ)
    clip = original[: 5 * RATE_HZ]
    clip = (clip / max(float(np.max(np.abs(clip))), 1e-6) * 0.5).astype(np.float32)
    with Capture(mic_config(), window_s=1.0, hop_s=1.0) as cap:
        cap.wait_event("running", timeout_s=10)
        virtual_mic.play(clip, wait=True)
        time.sleep(2.0)
    assert cap.error is None
    ws = [w for _, w in cap.windows]
    assert np.allclose(np.diff([w.start_s for w in ws]), 1.0, atol=1e-9)  # contiguous: no gap, no overlap
    captured = np.concatenate([w.samples for w in ws])
    # Content, not timing: find each 0.5 s chunk of the clip in the capture (cross-correlation) and compare it there.
    # Chunk by chunk, so that a player underrun on a loaded machine (a shift in the middle) does not fail the test.
    chunk = RATE_HZ // 2
    corrs = []
    for i in range(0, len(clip) - chunk + 1, chunk):
        part = clip[i : i + chunk]
        n = len(captured) + chunk
        xc = np.fft.irfft(np.fft.rfft(captured, n) * np.conj(np.fft.rfft(part, n)), n)[: len(captured) - chunk]
        lag = int(np.argmax(xc))
        corrs.append(float(np.corrcoef(captured[lag : lag + chunk], part)[0, 1]))
    assert np.median(corrs) > 0.95, corrs
    assert sum(c > 0.9 for c in corrs) >= 0.8 * len(corrs), corrs


def test_each_capture_session_has_window_ids_of_its_own(virtual_mic: PulseRig) -> None:
    sessions = []
    for _ in range(2):  # two daemon starts on the same device
        with Capture(mic_config(), window_s=1.0, hop_s=1.0) as cap:
            cap.wait_event("running", timeout_s=10)
            cap.wait_windows(2, timeout_s=15)
        assert cap.error is None
        sessions.append([w for _, w in cap.windows])
    first, second = ({w.window_id for w in ws} for ws in sessions)
    assert len(first) == len(sessions[0]) and len(second) == len(sessions[1])
    assert [w.start_s for w in sessions[0][:2]] == [w.start_s for w in sessions[1][:2]] == [0.0, 1.0]
    assert not first & second  # the same offsets, another capture session: other ids
    recording = FileSource([FIXTURES / "oss_birds_10s.flac"], 1.0, 1.0).windows(threading.Event())
    assert not (first | second) & {w.window_id for w in recording}  # a microphone never collides with a file


def test_named_device_missing_is_a_clear_capture_error(virtual_mic: PulseRig) -> None:
    source = MicSource(mic_config(device="no-such-microphone"), 1.0, 1.0, lambda e: None)
    with pytest.raises(CaptureError, match=r"no input device matching 'no-such-microphone'.*soundmond devices"):
        source.open()
    with pytest.raises(CaptureError, match="source.device"):
        next(source.windows(threading.Event()))


def test_no_input_device_at_all_is_a_clear_capture_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sounddevice", reason="sounddevice needs libportaudio2 (scripts/install-system-deps.sh)")
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/dead/native")  # no audio server there
    client_conf = tmp_path / "client.conf"
    client_conf.write_text("autospawn = no\n")
    monkeypatch.setenv("PULSE_CLIENTCONFIG", str(client_conf))
    rescan_portaudio()
    try:
        if list_input_devices():
            pytest.skip("this machine has a real input device (a sound card): cannot test 'no device at all'")
        source = MicSource(mic_config(), 1.0, 1.0, lambda e: None)
        with pytest.raises(CaptureError, match=r"^no input device: .*run `soundmond devices`.*set source.device"):
            source.open()
    finally:
        monkeypatch.undo()
        rescan_portaudio()


def test_bad_channel_config_is_refused() -> None:
    with pytest.raises(CaptureError, match="source.channel"):
        MicSource(mic_config(channels=1, channel=1), 1.0, 1.0, lambda e: None)


def test_server_killed_mid_run_is_lost_then_restored(virtual_mic: PulseRig) -> None:
    cfg = mic_config(stall_timeout_s=1.0, reopen_backoff_s=0.2, reopen_backoff_max_s=1.0)
    with Capture(cfg, window_s=0.5, hop_s=0.5) as cap:
        cap.wait_event("running", timeout_s=10)
        cap.wait_windows(2, timeout_s=10)
        killed = time.monotonic()
        virtual_mic.kill()
        t_lost, lost = cap.wait_event("lost", timeout_s=cfg.stall_timeout_s + 2.0)
        detect_s = t_lost - killed
        time.sleep(2.5)  # several failed reopen attempts while the server is gone
        assert cap.thread.is_alive() and cap.error is None
        assert cap.source.state == "lost"
        attempts_down = cap.source.stats().reopen_attempts
        n_before = len(cap.windows)
        restarted = time.monotonic()
        virtual_mic.start()
        virtual_mic.start_keepalive()
        t_back, back = cap.wait_event("running", timeout_s=15)
        restore_s = t_back - restarted
        cap.wait_windows(n_before + 3, timeout_s=10)
    assert cap.error is None
    assert lost.previous == "running" and "retrying" in lost.message
    assert back.previous == "lost" and "restored" in back.message
    assert attempts_down >= 2
    assert [e.state for e in cap.all_events] == ["running", "lost", "running"]  # each change reported once
    logging.getLogger(__name__).info("loss detected in %.2f s, restored %.2f s after restart", detect_s, restore_s)
    # no window spans the gap: windows after the restore start after the last one before it ended
    ws = [w for _, w in cap.windows]
    before, after = ws[:n_before], ws[n_before:]
    assert after[0].start_s >= before[-1].end_s
    assert after[0].start_unix_s >= before[-1].start_unix_s + before[-1].duration_s + 1.0  # the gap is in the clock
    assert np.allclose(np.diff([w.start_s for w in after]), 0.5, atol=1e-9)


def test_queue_drops_are_counted_not_hidden(virtual_mic: PulseRig) -> None:
    cfg = mic_config(block_ms=10, queue_blocks=4, stall_timeout_s=5.0)
    with Capture(cfg, window_s=0.1, hop_s=0.1, consume_s=0.5) as cap:  # a consumer far slower than real time
        cap.wait_event("running", timeout_s=10)
        cap.wait_windows(4, timeout_s=10)
        stats = cap.source.stats()
    assert stats.queue_drops > 0
    assert stats.gaps > 0
    ws = [w for _, w in cap.windows]
    assert all(b.start_s >= a.end_s - 1e-9 for a, b in zip(ws, ws[1:], strict=False))  # never glued across drops


def test_digital_silence_is_flat_and_a_tone_brings_it_back(virtual_mic: PulseRig) -> None:
    cfg = mic_config(flat_timeout_s=1.0)
    with Capture(cfg, window_s=0.5, hop_s=0.5) as cap:
        cap.wait_event("running", timeout_s=10)
        virtual_mic.play(np.zeros(3 * RATE_HZ, dtype=np.float32))  # digital silence
        _, flat = cap.wait_event("flat", timeout_s=5)
        assert flat.previous == "running" and "flat signal" in flat.message
        virtual_mic.play(tone(440.0, 4.0, amplitude=0.3))
        _, back = cap.wait_event("running", timeout_s=5)
        assert back.previous == "flat"


def test_clipping_is_detected(virtual_mic: PulseRig) -> None:
    cfg = mic_config(flat_timeout_s=1.0)
    with Capture(cfg, window_s=0.5, hop_s=0.5) as cap:
        cap.wait_event("running", timeout_s=10)
        square = np.sign(tone(200.0, 4.0)).astype(np.float32)  # full scale
        virtual_mic.play(square)
        _, ev = cap.wait_event("clipped", timeout_s=5)
        assert "source.gain_db" in ev.message
