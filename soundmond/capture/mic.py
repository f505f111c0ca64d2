"""Live capture from a microphone (sounddevice / PortAudio), supervised so that a dead microphone cannot go unnoticed.

`MicSource` opens a `sounddevice.InputStream` whose callback only copies each block and puts it, with its frame
offset and timestamps, into a bounded queue (a full queue and PortAudio input overflows are counted, never ignored).
`windows(stop)` runs in the capture thread: it takes blocks, picks a channel (or averages them), applies the gain,
removes DC, cuts windows with `WindowCutter` and yields `AudioWindow`s.

State machine (every change is logged once and reported once through `on_event` as a `CaptureEvent`)::

    starting --first block--> running
    starting/running/flat/clipped --no block for stall_timeout_s, or the stream finished--> lost
    lost --reopened and blocks flow again--> running   (previous="lost": the daemon's CAPTURE_RESTORED)
    running --flat (peak < 1e-6 or constant) for flat_timeout_s--> flat
    running --clipped (> 1 % of samples at |x| >= 0.999 after gain) for flat_timeout_s--> clipped
    flat/clipped --normal audio for min(1 s, flat_timeout_s)--> running

Policies:
- Start-up: if the device cannot be opened when capture starts (no input device at all, a named device missing, an
  unsupported rate), `open()` / the first `next(windows(...))` raises `CaptureError` with a hint. The daemon exits
  non-zero and systemd restarts it (RestartSec=10, no start limit: a USB microphone that is not ready at boot is
  picked up by a later start, and a typo in `source.device` shows up in the journal at once).
- Stall: no block for `stall_timeout_s` (or, for a freshly opened stream, for max(stall_timeout_s,
  FIRST_BLOCK_TIMEOUT_S=5 s), as PulseAudio can take ~1.5 s to deliver the first block), or PortAudio's
  finished_callback (the stream died: device unplugged, audio server killed; detected at once) -> lost.
- Mid-run: once capture has started, a lost device is retried forever: the stream is closed, PortAudio rescans its
  devices (`sd._terminate(); sd._initialize()`) and the stream is reopened with exponential backoff
  (`reopen_backoff_s` doubling up to `reopen_backoff_max_s`; retries are logged at DEBUG). If a reopened stream
  delivers nothing within `stall_timeout_s` it is closed and retried again.
- Gaps are never glued: after a reopen, or when blocks were dropped, the window cutter is reset so no window spans
  the gap.
- Timestamps: a stream's first sample is anchored to the wall clock once, when its first block arrives
  (arrival time minus PortAudio's capture latency `currentTime - inputBufferAdcTime`); every later sample is
  timestamped from its frame offset in the stream. If the wall clock and the audio clock come to disagree by more
  than `REANCHOR_S` (an NTP step on a Raspberry Pi without RTC, or clock drift over days), the anchor is moved (logged).
- Gain: `gain_db` multiplies the selected channel; the result is clipped to [-1, 1] (and clipping is detected after
  the gain, so a gain that clips is reported too).
- DC removal (`remove_dc`): subtraction of a running mean, an exponential moving average of block means with a time
  constant of `DC_TIME_CONSTANT_S` (0.5 s, i.e. a first-order high-pass with its corner near 0.3 Hz), started at the
  first block's mean. It removes an ADC offset without touching anything audible (50 Hz hum is untouched).

`sd._initialize()` briefly redirects the process's stderr to /dev/null while PortAudio scans (sounddevice does that
to hide ALSA's noise); other threads' log lines written to stderr in those milliseconds are lost.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from soundmond.capture.windowing import WindowCutter
from soundmond.config import MicSourceConfig
from soundmond.data import AudioWindow, CaptureEvent, CaptureState, CaptureStats
from soundmond.identity import mic_source_identity, window_id

logger = logging.getLogger(__name__)

Float32Array = npt.NDArray[np.float32]

DEVICE_HINT = "run `soundmond devices` to list them; set source.device"
FLAT_PEAK = 1e-6  # a block whose peak is below this is "flat" (digital silence)
CLIP_LEVEL = 0.999  # |x| at or above this counts as clipped
CLIP_FRACTION = 0.01  # a block with more clipped samples than this is "clipped"
RECOVER_S = 1.0  # normal audio needed to leave flat/clipped (or flat_timeout_s if shorter)
DC_TIME_CONSTANT_S = 0.5  # running-mean DC removal time constant
REANCHOR_S = 1.0  # wall clock vs audio clock disagreement that moves the anchor
MAX_LAG_S = 10.0  # PortAudio capture latencies above this are not trusted
FIRST_BLOCK_TIMEOUT_S = 5.0  # a freshly opened stream may take this long for its first block (PulseAudio: ~1.5 s)
CLOSE_TIMEOUT_S = 2.0  # a dead stream that does not close within this is abandoned (see _close_stream)


class CaptureError(Exception):
    """Capture cannot start: no such input device, none at all, or parameters the device refuses. Has a hint."""


def _sd() -> Any:
    """Import sounddevice, translating a missing PortAudio library into a CaptureError."""
    try:
        import sounddevice as sd
    except OSError as exc:  # "PortAudio library not found"
        raise CaptureError(
            f"cannot load PortAudio ({exc}); install it (Debian: apt-get install libportaudio2, or run "
            "scripts/install-system-deps.sh)"
        ) from exc
    return sd


def rescan_devices() -> None:
    """Make PortAudio scan the devices again (a microphone plugged in, an audio server restarted)."""
    sd = _sd()
    try:
        sd._terminate()
    except sd.PortAudioError:  # not initialised (a previous _initialize failed)
        pass
    sd._initialize()


def list_input_devices() -> list[dict[str, object]]:
    """Input-capable devices as PortAudio sees them now, for `soundmond devices`."""
    sd = _sd()
    hostapis = sd.query_hostapis()
    out: list[dict[str, object]] = []
    for dev in sd.query_devices():
        if int(dev["max_input_channels"]) <= 0:
            continue
        out.append(
            {
                "index": int(dev["index"]),
                "name": str(dev["name"]),
                "default_samplerate": float(dev["default_samplerate"]),
                "max_input_channels": int(dev["max_input_channels"]),
                "hostapi": str(hostapis[int(dev["hostapi"])]["name"]),
            }
        )
    return out


@dataclass(frozen=True, eq=False)
class _Block:
    generation: int  # which stream it came from (blocks of a closed stream are ignored)
    start_frame: int  # offset of its first frame in its stream (dropped blocks leave a gap)
    samples: npt.NDArray[np.float32]  # [frames, channels]
    lag_s: float  # PortAudio's currentTime - inputBufferAdcTime: how long ago the first frame was captured
    arrival_unix_s: float
    arrival_mono_s: float


class MicSource:
    """A supervised live microphone; implements `AudioSource`. See the module docstring for states and policies."""

    def __init__(
        self,
        config: MicSourceConfig,
        window_s: float,
        hop_s: float,
        on_event: Callable[[CaptureEvent], None],
        clock: Callable[[], float] = time.time,
        *,
        latency: str | float = "high",
        station: str = "",
    ) -> None:
        if config.channel is not None and config.channel >= config.channels:
            raise CaptureError(
                f"source.channel is {config.channel} but source.channels is {config.channels}: channels count "
                "from 0; set source.channel below source.channels (or leave it empty to average them)"
            )
        self._config = config
        self._rate = config.sample_rate_hz
        self._block_frames = max(1, round(config.block_ms * self._rate / 1000))
        self._window_samples = round(window_s * self._rate)
        self._hop_samples = round(hop_s * self._rate)
        self._cutter = WindowCutter(self._window_samples, self._hop_samples, self._block_frames)
        self._on_event = on_event
        self._clock = clock
        self._latency = latency  # PortAudio's "high" (robust against a busy CPU) unless a test wants "low"
        self._gain = float(10.0 ** (config.gain_db / 20.0))
        self._device_label = "default" if config.device is None else str(config.device)
        self.source = f"mic:{self._device_label}"
        self._station = station
        self._identity = mic_source_identity(self._device_label)  # a new capture session per source made

        self._queue: queue.Queue[_Block] = queue.Queue(config.queue_blocks)
        self._stream: Any = None
        self._generation = 0
        self._finished_generation = -1  # set by PortAudio's finished_callback
        self._opened_once = False
        self._state: CaptureState = "starting"
        self._device_name = self._device_label

        # counters (written by one thread each; read by stats())
        self._blocks = 0
        self._overflows = 0
        self._queue_drops = 0
        self._gaps = 0
        self._reopen_attempts = 0
        self._stuck_closers: list[threading.Thread] = []
        self._reanchors = 0
        self._last_block_mono: float | None = None
        self._reported_losses = (0, 0)

        # per-stream timing
        self._stream_opened_mono = 0.0
        self._stream_has_blocks = False
        self._stream_anchor_unix = 0.0  # wall clock of the stream's frame 0
        self._stream_offset_s = 0.0  # the stream's frame 0 within the capture session (start_s)
        self._session_anchor_unix: float | None = None
        self._last_end_s = 0.0
        self._expected_frame = 0
        self._first_arrival_mono = 0.0
        self._first_frame = 0
        self._rate_measured: float | None = None
        self._clock_off_blocks = 0

        # reopen
        self._backoff_s = config.reopen_backoff_s
        self._next_attempt_mono = 0.0

        # signal condition
        self._dc = 0.0
        self._dc_started = False
        self._abnormal: str | None = None
        self._abnormal_samples = 0
        self._normal_samples = 0

    # --- public ---------------------------------------------------------------------------------------------------
    @property
    def state(self) -> CaptureState:
        return self._state

    def stats(self) -> CaptureStats:
        last = self._last_block_mono
        return CaptureStats(
            state=self._state,
            device=self._device_name,
            blocks=self._blocks,
            overflows=self._overflows,
            queue_drops=self._queue_drops,
            gaps=self._gaps,
            reopen_attempts=self._reopen_attempts,
            clock_reanchors=self._reanchors,
            last_block_age_s=None if last is None else round(time.monotonic() - last, 3),
            stream_rate_hz=self._rate_measured,
            queue_depth=self._queue.qsize(),
        )

    def open(self) -> None:
        """Open the device now (start-up): raises `CaptureError` with a hint if it cannot be opened."""
        if self._stream is not None:
            return
        self._open_stream()
        self._opened_once = True
        logger.info("capture opened: %s at %d Hz, %d channel(s)", self._device_name, self._rate, self._config.channels)

    def close(self) -> None:
        self._close_stream()

    def windows(self, stop: threading.Event) -> Iterator[AudioWindow]:
        """Yield windows until `stop` is set; raises `CaptureError` only if the device cannot be opened at start."""
        if not self._opened_once:
            self.open()
        poll_s = min(0.1, self._config.stall_timeout_s / 4)
        try:
            while not stop.is_set():
                if self._state == "lost" and self._stream is None:
                    self._reopen_step(stop)
                    continue
                try:
                    block = self._queue.get(timeout=poll_s)
                except queue.Empty:
                    block = None
                if block is not None and block.generation == self._generation:
                    yield from self._process(block)
                self._report_losses()
                self._check_alive()
        finally:
            self._close_stream()

    # --- stream ---------------------------------------------------------------------------------------------------
    def _make_callback(self, generation: int) -> Callable[..., None]:
        frames_seen = 0
        put = self._queue.put_nowait
        clock = self._clock
        mono = time.monotonic

        def callback(indata: npt.NDArray[np.float32], frames: int, time_info: Any, status: Any) -> None:
            # Only copy and enqueue: anything slow here loses audio, and an exception stops the stream for good.
            nonlocal frames_seen
            start = frames_seen
            frames_seen += frames
            if status.input_overflow:
                self._overflows += 1
            try:
                put(_Block(generation, start, indata.copy(), time_info.currentTime - time_info.inputBufferAdcTime,
                           clock(), mono()))  # fmt: skip
            except queue.Full:
                self._queue_drops += 1

        return callback

    def _open_stream(self) -> None:
        sd = _sd()
        self._generation += 1
        generation = self._generation

        def finished() -> None:
            self._finished_generation = generation

        try:
            stream = sd.InputStream(
                device=self._config.device,
                samplerate=self._rate,
                channels=self._config.channels,
                dtype="float32",
                blocksize=self._block_frames,
                latency=self._latency,
                callback=self._make_callback(generation),
                finished_callback=finished,
            )
        except (sd.PortAudioError, ValueError) as exc:
            raise CaptureError(self._explain(exc)) from exc
        try:
            stream.start()
        except sd.PortAudioError as exc:
            stream.close(ignore_errors=True)
            raise CaptureError(self._explain(exc)) from exc
        self._stream = stream
        try:
            self._device_name = str(sd.query_devices(stream.device)["name"])
        except (sd.PortAudioError, ValueError):
            self._device_name = self._device_label
        self._stream_opened_mono = time.monotonic()
        self._stream_has_blocks = False

    def _explain(self, exc: Exception) -> str:
        try:
            inputs = list_input_devices()
        except Exception:  # noqa: BLE001 - only for the message
            inputs = []
        if not inputs:
            return (
                f"no input device: PortAudio sees no microphone at all (no sound card, USB microphone not plugged "
                f"in, or the audio server is not running) ({exc}); {DEVICE_HINT}"
            )
        names = ", ".join(f"{d['index']}: {d['name']!r}" for d in inputs[:8])
        if isinstance(exc, ValueError):
            return f"no input device matching {self._device_label!r} (available: {names}); {DEVICE_HINT}"
        return (
            f"cannot open input device {self._device_label!r} at {self._rate} Hz with {self._config.channels} "
            f"channel(s): {exc} (available: {names}); {DEVICE_HINT}; check source.sample_rate_hz and source.channels"
        )

    def _close_stream(self) -> None:
        """Abort and close the current stream without ever blocking capture for long: with the audio server killed,
        PortAudio's ALSA layer can hang in abort/close (its thread stuck in poll on a dead socket). The close runs on
        a helper thread; if it has not returned after `CLOSE_TIMEOUT_S`, the stream is abandoned (logged) and capture
        goes on reopening."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        self._generation += 1  # blocks still queued from it are ignored

        def close() -> None:
            try:
                stream.abort(ignore_errors=True)
                stream.close(ignore_errors=True)
            except Exception:  # noqa: BLE001 - a dead device may fail to close in any way; it is gone anyway
                logger.debug("closing the dead stream failed", exc_info=True)

        closer = threading.Thread(target=close, name="capture-close", daemon=True)
        closer.start()
        closer.join(CLOSE_TIMEOUT_S)
        if closer.is_alive():
            logger.warning("the dead audio stream did not close within %.0f s: abandoned (PortAudio is stuck on it)",
                           CLOSE_TIMEOUT_S)
            self._stuck_closers.append(closer)

    # --- supervision ----------------------------------------------------------------------------------------------
    def _check_alive(self) -> None:
        if self._stream is None:
            return
        now = time.monotonic()
        if self._stream_has_blocks:
            assert self._last_block_mono is not None
            since, timeout = self._last_block_mono, self._config.stall_timeout_s
        else:  # the first block of a new stream can be slow to come: a stall timeout below that would never start
            since, timeout = self._stream_opened_mono, max(self._config.stall_timeout_s, FIRST_BLOCK_TIMEOUT_S)
        finished = self._finished_generation == self._generation
        stalled = now - since > timeout
        if not (finished or stalled):
            return
        reason = (
            "the stream stopped (device unplugged or audio server gone)"
            if finished
            else f"no audio for {now - since:.1f} s (limit {timeout:g} s)"
        )
        if self._state != "lost":  # say so first: closing a dead stream can itself hang
            self._backoff_s = self._config.reopen_backoff_s
            self._set_state("lost", f"capture lost on {self._device_name}: {reason}; retrying", reason=reason)
        else:
            logger.debug("reopened stream delivered nothing: %s", reason)
        self._close_stream()
        self._reset_stream_state()
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        """Next attempt after the current backoff; the one after waits twice as long (up to the maximum)."""
        self._next_attempt_mono = time.monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self._config.reopen_backoff_max_s)

    def _reopen_step(self, stop: threading.Event) -> None:
        wait = self._next_attempt_mono - time.monotonic()
        if wait > 0:
            stop.wait(min(wait, 0.25))
            return
        self._reopen_attempts += 1
        self._stuck_closers = [t for t in self._stuck_closers if t.is_alive()]
        try:
            if not self._stuck_closers:  # Pa_Terminate would wait for a stream PortAudio is stuck on
                rescan_devices()
            self._open_stream()
        except Exception as exc:  # noqa: BLE001 - PortAudioError, ValueError, CaptureError: retry forever
            logger.debug("reopen attempt %d failed: %s; next in %.1f s", self._reopen_attempts, exc, self._backoff_s)
            self._schedule_retry()
            return
        logger.debug("capture reopened (attempt %d), waiting for audio", self._reopen_attempts)

    def _reset_stream_state(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._abnormal = None
        self._abnormal_samples = 0
        self._normal_samples = 0

    def _set_state(self, new: CaptureState, message: str, **detail: object) -> None:
        previous = self._state
        if new == previous:
            return
        self._state = new
        detail.setdefault("device", self._device_name)
        detail.update(overflows=self._overflows, queue_drops=self._queue_drops, reopen_attempts=self._reopen_attempts)
        level = logging.INFO if new == "running" else logging.WARNING
        logger.log(level, "capture %s -> %s: %s", previous, new, message)
        event = CaptureEvent(state=new, previous=previous, ts_unix_s=self._clock(), message=message, detail=detail)
        try:
            self._on_event(event)
        except Exception:  # a broken event handler must not stop the capture
            logger.exception("capture event handler failed for %s", event)

    def _report_losses(self) -> None:
        current = (self._overflows, self._queue_drops)
        if current != self._reported_losses:
            logger.warning(
                "capture lost audio: %d input overflow(s), %d block(s) dropped on a full queue so far "
                "(the capture thread is not keeping up)",
                *current,
            )
            self._reported_losses = current

    # --- processing -----------------------------------------------------------------------------------------------
    def _process(self, block: _Block) -> Iterator[AudioWindow]:
        frames = block.samples.shape[0]
        now_mono = time.monotonic()
        self._last_block_mono = now_mono
        self._blocks += 1
        if not self._stream_has_blocks:
            self._start_stream_timing(block)
        elif block.start_frame != self._expected_frame:
            self._gaps += 1  # blocks were dropped: never glue the audio across the hole
            self._cutter.reset(block.start_frame)
        else:
            self._check_clock(block)
        self._expected_frame = block.start_frame + frames
        if block.arrival_mono_s > self._first_arrival_mono:
            self._rate_measured = round(
                (block.start_frame - self._first_frame) / (block.arrival_mono_s - self._first_arrival_mono), 1
            )

        raw = block.samples
        if raw.shape[1] == 1:
            mono = raw[:, 0]
        elif self._config.channel is not None:
            mono = raw[:, self._config.channel]
        else:
            mono = raw.mean(axis=1, dtype=np.float32)
        peak = float(np.max(np.abs(mono))) if frames else 0.0
        flat = peak < FLAT_PEAK or bool(mono.max() == mono.min())
        y = mono * np.float32(self._gain) if self._gain != 1.0 else mono.astype(np.float32, copy=True)
        clipped = float(np.count_nonzero(np.abs(y) >= CLIP_LEVEL)) / max(frames, 1) > CLIP_FRACTION
        if self._config.remove_dc:
            y = self._remove_dc(y)
        np.clip(y, -1.0, 1.0, out=y)
        self._update_condition("flat" if flat else "clipped" if clipped else None, frames)

        for cut in self._cutter.push(y):
            start_unix = self._stream_anchor_unix + cut.start_sample / self._rate
            start_s = self._stream_offset_s + cut.start_sample / self._rate
            window = AudioWindow(
                window_id=window_id(self._station, self._identity, self._window_samples, self._hop_samples,
                                    self._rate, round(start_s * self._rate)),
                source=self.source,
                start_unix_s=start_unix,
                start_s=start_s,
                sample_rate_hz=self._rate,
                samples=cut.samples,
            )
            self._last_end_s = window.end_s
            yield window

    def _start_stream_timing(self, block: _Block) -> None:
        lag = block.lag_s if 0.0 <= block.lag_s < MAX_LAG_S else block.samples.shape[0] / self._rate
        self._stream_anchor_unix = block.arrival_unix_s - lag - block.start_frame / self._rate
        if self._session_anchor_unix is None:
            self._session_anchor_unix = self._stream_anchor_unix
            self._stream_offset_s = 0.0
        else:  # after a gap: place the new stream by the wall clock, never before the audio already delivered
            self._stream_offset_s = max(self._stream_anchor_unix - self._session_anchor_unix, self._last_end_s)
        self._cutter.reset(block.start_frame)
        self._stream_has_blocks = True
        self._first_arrival_mono = block.arrival_mono_s
        self._first_frame = block.start_frame
        self._clock_off_blocks = 0
        self._backoff_s = self._config.reopen_backoff_s
        if self._state in ("starting", "lost"):
            was_lost = self._state == "lost"
            gap_s = round(time.monotonic() - self._stream_opened_mono, 3)
            self._set_state(
                "running",
                f"capture {'restored' if was_lost else 'running'} on {self._device_name}",
                first_block_delay_s=gap_s,
            )

    def _check_clock(self, block: _Block) -> None:
        lag = block.lag_s if 0.0 <= block.lag_s < MAX_LAG_S else block.samples.shape[0] / self._rate
        expected = self._stream_anchor_unix + block.start_frame / self._rate
        off = (block.arrival_unix_s - lag) - expected
        if abs(off) <= REANCHOR_S:
            self._clock_off_blocks = 0
            return
        self._clock_off_blocks += 1
        if self._clock_off_blocks >= 3:  # not one late block: a persistent disagreement
            self._stream_anchor_unix += off
            self._reanchors += 1
            self._clock_off_blocks = 0
            logger.warning(
                "wall clock and audio clock disagree by %.3f s (clock step or drift): timestamps re-anchored", off
            )

    def _remove_dc(self, y: Float32Array) -> Float32Array:
        m = float(y.mean()) if y.size else 0.0
        if not self._dc_started:
            self._dc = m
            self._dc_started = True
        else:
            alpha = 1.0 - math.exp(-(y.size / self._rate) / DC_TIME_CONSTANT_S)
            self._dc += alpha * (m - self._dc)
        y -= np.float32(self._dc)
        return y

    def _update_condition(self, kind: str | None, frames: int) -> None:
        if kind is None:
            self._abnormal = None
            self._abnormal_samples = 0
            if self._state in ("flat", "clipped"):
                self._normal_samples += frames
                if self._normal_samples >= min(RECOVER_S, self._config.flat_timeout_s) * self._rate:
                    self._set_state("running", f"capture signal back to normal on {self._device_name}")
            return
        self._normal_samples = 0
        if kind != self._abnormal:
            self._abnormal = kind
            self._abnormal_samples = 0
        self._abnormal_samples += frames
        if self._state != kind and self._abnormal_samples >= self._config.flat_timeout_s * self._rate:
            what = (
                "flat signal (digital silence or a constant value): microphone muted, disconnected or broken?"
                if kind == "flat"
                else f"clipping (> {CLIP_FRACTION:.0%} of samples at full scale): lower source.gain_db or the "
                "input level"
            )
            seconds = self._abnormal_samples / self._rate
            self._set_state(
                "flat" if kind == "flat" else "clipped", f"{what} for {seconds:.1f} s on {self._device_name}"
            )
