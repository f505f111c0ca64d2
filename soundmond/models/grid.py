"""The bird model's chunk grid on the stream, not on the window.

BirdNET analyses 3-s chunks. BirdNET-Analyzer (and birdnetlib) cut a recording into chunks that start every
`stride` seconds from its first sample (stride 3 = no overlap). `ChunkGrid` cuts the same chunks out of soundmond's
stream of windows, so a call is heard in the same chunk whatever the window length and hop:

- **The grid.** Chunk k starts at k * `stride_s` from stream offset 0 (the start of the file, or of the capture
  session: `AudioWindow.start_s` is measured from there) and lasts the model's chunk length. Chunks cross window
  boundaries: the grid keeps the tail of audio the next chunk needs (at the bird model's rate). A file resumed after a
  crash hands its first window the audio before it (`AudioWindow.lead_in`), so the chunk across the resume point is
  analysed as in an uninterrupted run. In samples at the bird
  model's rate, chunk k starts at k * round(stride_s * rate), as BirdNET-Analyzer's `split_signal` steps.
- **Which window reports a chunk.** A chunk is reported with the window it ENDS in: the first window whose audio holds
  the chunk's last sample. With overlapping windows (hop < length) that is the window whose new audio (past the end of
  the window before it) holds the chunk's end, so every chunk belongs to exactly one window. A window may hold no
  chunk (a hop shorter than the stride), one, or several.
- **Restarts.** A window that does not continue the stream (another source or sample rate, a gap, dropped windows)
  restarts the grid: the tail is dropped and the next chunk starts at the first grid point
  at or after the new audio's start, so no chunk mixes audio from two recordings or from both sides of a gap.
- **A file's end.** The window marked `final` (a file's last) flushes the resampler and closes the grid; a last chunk
  holding at least `MIN_TAIL_FRACTION` (half) of a chunk of audio is zero-padded to the chunk length, shorter ones
  are dropped: for BirdNET's 3-s chunk that is birdnetlib's `split_signal` (minlen 1.5 s, zero padding). The rule
  scales with the chunk so that a longer-clip model (an hf model's 5-s clip) never sees a last input that is mostly
  zeros: at least half of what it hears is the recording, as for BirdNET. The padded chunk's `end_s` is still
  start_s + the chunk length (what the model was given); `audio_end_s` is where the recording's audio in it ends, the
  time a detection in it reports (`soundmond.models.hf`). A live stream has no last chunk.
- **Quiet, gated and failed windows.** The analyzer feeds every window to the grid before deciding whether to run the
  models, so the grid stays continuous through them: a chunk that ends in a quiet, gated or failed window is not
  analysed (no model runs on that window; it is lost with the window's other results), and its audio still serves the
  chunks that end in the next window.
- **Resampling.** A source that is not at the bird model's rate is resampled with one soxr `ResampleStream` per grid
  stream: its output is bit-identical to resampling the whole recording at once (measured: max |diff| 0 on a 60-s,
  32-kHz chorus), where resampling each 5-s window alone differs by up to 0.013 near window edges. The stream holds
  back about 15 ms of output until more audio comes; a chunk that ends within that last stretch of a window is
  completed from a resample of the window's last 0.25 s (the same filter, with the future unknown: zeros), which
  differs from the whole-recording resample only in the chunk's last few milliseconds. A file's last window flushes
  the stream instead (exact).

`ChunkGrid` is mutable session state: the analyzer owns it (the pipeline thread's session), nothing else touches it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soxr

from soundmond.data import AudioWindow

Float32Array = npt.NDArray[np.float32]

MIN_TAIL_FRACTION = 0.5  # a file's last, short chunk is analysed (zero-padded) when it holds this fraction of a
# chunk of audio: BirdNET's 3-s chunk -> 1.5 s, birdnetlib's minlen
PROVISIONAL_TAIL_S = 0.25  # source audio resampled once to complete a chunk the stream resampler still holds back


@dataclass(frozen=True, eq=False)
class GridChunk:
    """One chunk of the grid, at the bird model's rate, with where it lies in its source and in UTC."""

    samples: Float32Array  # [chunk samples] at the bird model's rate; a file's last chunk is zero-padded
    start_s: float  # chunk start within its source (file or capture session), seconds
    end_s: float  # start_s + the chunk length
    start_unix_s: float  # chunk start, UTC epoch seconds
    padded_samples: int = 0  # zeros at the end (a file's last chunk)

    @property
    def end_unix_s(self) -> float:
        return self.start_unix_s + (self.end_s - self.start_s)

    @property
    def audio_end_s(self) -> float:
        """Where the recording's audio in the chunk ends: `end_s`, or before it for a file's zero-padded last chunk
        (never past the end of the file)."""
        if not self.padded_samples:
            return self.end_s
        n = self.samples.shape[0]
        return self.start_s + (self.end_s - self.start_s) * (n - self.padded_samples) / n


class _Stream:
    """One contiguous stretch of one source: the resampler, the bird-rate audio not yet consumed, the next chunk."""

    def __init__(self, window: AudioWindow, first_sample: int, rate_hz: int, stride_samples: int) -> None:
        self.source = window.source
        self.source_rate = window.sample_rate_hz
        self.rate = rate_hz
        self.origin = first_sample  # source-rate sample (from source offset 0) where this stream starts
        self.fed_to = first_sample  # source-rate sample up to which audio was fed
        # bird-rate index (from source offset 0) of the stream's first output sample
        self.origin_out = round(first_sample * rate_hz / self.source_rate)
        self.resampler = (
            None if self.source_rate == rate_hz
            else soxr.ResampleStream(self.source_rate, rate_hz, 1, dtype="float32", quality="HQ")
        )
        self.out = np.zeros(0, dtype=np.float32)  # committed bird-rate audio from index `out_start` on
        self.out_start = self.origin_out
        self.tail = np.zeros(0, dtype=np.float32)  # the last source samples fed (for the provisional resample)
        self.next_k = -(-self.origin_out // stride_samples)  # first grid point at or after the stream's start
        self.closed = False

    def continues(self, window: AudioWindow, first: int, end: int) -> bool:
        return (not self.closed and window.source == self.source and window.sample_rate_hz == self.source_rate
                and first <= self.fed_to <= end)

    @property
    def out_end(self) -> int:
        return self.out_start + self.out.shape[0]

    def feed(self, new: Float32Array, final: bool) -> None:
        if self.resampler is None:
            out = new
        else:
            out = np.asarray(self.resampler.resample_chunk(new, last=final), dtype=np.float32)
        self.out = np.concatenate([self.out, out]) if self.out.size else np.array(out, dtype=np.float32)
        self.fed_to += new.shape[0]
        keep = max(1, math.ceil(PROVISIONAL_TAIL_S * self.source_rate))
        self.tail = np.concatenate([self.tail, new])[-keep:]
        if final:
            self.closed = True

    def provisional(self) -> tuple[int, Float32Array]:
        """(first bird-rate index, samples) completing the committed output up to the end of the audio fed: a
        one-shot resample of the source's last samples, started at a source sample that maps onto a whole output
        sample."""
        if self.resampler is None or self.closed:
            return self.out_end, np.zeros(0, dtype=np.float32)
        step = self.source_rate // math.gcd(self.source_rate, self.rate)  # source samples per whole output sample
        tail_first = self.fed_to - self.tail.shape[0]
        first = self.origin + -(-(tail_first - self.origin) // step) * step
        segment = self.tail[first - tail_first:]
        out = np.asarray(soxr.resample(segment, self.source_rate, self.rate, quality="HQ"), dtype=np.float32)
        out_first = self.origin_out + (first - self.origin) * self.rate // self.source_rate
        if out_first > self.out_end:  # the held-back output is longer than the tail (never at the usual rates)
            out = np.concatenate([np.zeros(out_first - self.out_end, dtype=np.float32), out])
            out_first = self.out_end
        return self.out_end, out[self.out_end - out_first:]

    def drop_before(self, index: int) -> None:
        n = min(max(0, index - self.out_start), self.out.shape[0])
        self.out = self.out[n:]
        self.out_start += n


class ChunkGrid:
    """Windows in, the grid's chunks that end in each window out (see the module docstring)."""

    def __init__(self, rate_hz: int, chunk_samples: int, stride_s: float, min_tail_s: float | None = None) -> None:
        """`min_tail_s`: the audio a file's last, zero-padded chunk must hold (default: `MIN_TAIL_FRACTION` of a
        chunk)."""
        self.rate_hz = rate_hz
        self.chunk_samples = chunk_samples
        self.stride_s = stride_s
        self.stride_samples = round(stride_s * rate_hz)
        if not 0 < self.stride_samples <= chunk_samples:
            raise ValueError(f"the stride must be > 0 and at most a chunk ({chunk_samples / rate_hz:g} s), "
                             f"not {stride_s:g} s")
        self.min_tail_samples = (round(MIN_TAIL_FRACTION * chunk_samples) if min_tail_s is None
                                 else round(min_tail_s * rate_hz))
        self.restarts = 0  # streams begun (files, gaps, dropped windows)
        self._stream: _Stream | None = None

    @property
    def chunk_s(self) -> float:
        return self.chunk_samples / self.rate_hz

    def reset(self) -> None:
        """Forget the tail: the next window starts a new stream."""
        self._stream = None

    def chunks(self, window: AudioWindow) -> list[GridChunk]:
        """Feed the window's new audio; return the chunks that end in it (start order)."""
        rate = window.sample_rate_hz
        real = window.samples[: window.samples.shape[0] - window.padded_samples]
        first = round(window.start_s * rate)
        end = first + real.shape[0]
        stream = self._stream
        if stream is None or not stream.continues(window, first, end):
            lead = window.lead_in if window.lead_in is not None else np.zeros(0, dtype=np.float32)
            stream = self._stream = _Stream(window, first - lead.shape[0], self.rate_hz, self.stride_samples)
            self.restarts += 1
            if lead.size:  # a resumed file: the chunks that end in this window are whole; earlier ones were stored
                window_first_out = round(first * self.rate_hz / rate)
                stream.next_k = max(stream.next_k,
                                    (window_first_out - self.chunk_samples) // self.stride_samples + 1)
                stream.feed(lead, False)
        stream.feed(real[stream.fed_to - first:], window.final)
        chunks: list[GridChunk] = []
        extra_first, extra = (stream.out_end, np.zeros(0, dtype=np.float32))
        available = stream.out_end
        if not stream.closed:
            extra_first, extra = stream.provisional()
            available = extra_first + extra.shape[0]
        while True:
            start = stream.next_k * self.stride_samples
            stop = start + self.chunk_samples
            if stop <= available:
                samples = self._take(stream, start, stop, extra_first, extra)
                padded = 0
            elif stream.closed and available - start >= self.min_tail_samples:
                got = self._take(stream, start, available, extra_first, extra)
                padded = self.chunk_samples - got.shape[0]
                samples = np.concatenate([got, np.zeros(padded, dtype=np.float32)])
            else:
                break
            start_s = start / self.rate_hz
            chunks.append(GridChunk(samples=samples, start_s=start_s, end_s=start_s + self.chunk_s,
                                    start_unix_s=window.start_unix_s + (start_s - window.start_s),
                                    padded_samples=padded))
            stream.next_k += 1
            if padded:
                break
        stream.drop_before(stream.next_k * self.stride_samples)
        if stream.closed:
            self._stream = None
        return chunks

    @staticmethod
    def _take(stream: _Stream, start: int, stop: int, extra_first: int, extra: Float32Array) -> Float32Array:
        committed = stream.out[max(0, start - stream.out_start): max(0, min(stop, stream.out_end) - stream.out_start)]
        if stop <= stream.out_end:
            return committed.copy()
        more = extra[max(0, start - extra_first): stop - extra_first]
        return np.concatenate([committed, more]).astype(np.float32, copy=False)
