"""The audio the speed checks run on: real 5-s windows from files spread over a corpus (else the test fixtures, else
noise), every window of some files as the daemon cuts them, and folders of symlinks for `soundmond run --source`."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from soundmond.capture.audio import find_audio_files, load_audio, resample
from soundmond.capture.files import FileSource
from soundmond.data import AudioWindow
from soundmond.speed.common import DEFAULT_CORPUS, FIXTURE_AUDIO, WINDOW_S, BenchError

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class BenchAudio:
    """Real 5-s windows (native rate and resampled to 16 and 48 kHz) and where they came from."""

    source: str  # the corpus or fixtures folder
    files: list[str]
    paths: list[Path]
    native: list[tuple[npt.NDArray[np.float32], int]]
    at16k: list[npt.NDArray[np.float32]]
    at48k: list[npt.NDArray[np.float32]]


def audio_folder(corpus: Path | None, fallback: Path | None = None) -> tuple[Path | None, str]:
    """Where the real audio comes from: `--corpus`; else the shared corpus (../shared/data/corpus); else the committed
    fixtures; else `fallback` (the daemon's own recordings folder, `soundmond bench --quick` on a sensor); else None:
    synthetic noise. Never the current folder."""
    if corpus is not None:
        if not corpus.exists():
            raise BenchError(f"--corpus {corpus}: no such folder")
        return corpus, "given"
    if (DEFAULT_CORPUS / "audio").is_dir():
        return DEFAULT_CORPUS, "corpus"
    if FIXTURE_AUDIO.is_dir():
        logger.warning("the shared corpus (%s) is not here: using the test fixtures' audio", DEFAULT_CORPUS)
        return FIXTURE_AUDIO, "fixtures"
    if fallback is not None and fallback.exists():
        return fallback, "source.path"
    return None, "synthetic"


def corpus_files(folder: Path | None) -> list[Path]:
    return find_audio_files(folder) if folder is not None else []


def pick_files(files: Sequence[Path], count: int) -> list[Path]:
    """`count` files spread evenly over the sorted list (every group of the corpus is represented)."""
    if not files:
        return []
    idx = np.unique(np.linspace(0, len(files) - 1, num=min(count, len(files))).round().astype(int))
    return [files[i] for i in idx]


def load_windows(corpus: Path | None, count: int, fallback: Path | None = None) -> BenchAudio:
    """`count` real 5-s windows (the first 5 s of files spread over the corpus); synthetic noise when no audio."""
    folder, kind = audio_folder(corpus, fallback)
    files = pick_files(corpus_files(folder), count)
    native: list[tuple[npt.NDArray[np.float32], int]] = []
    names = []
    for path in files:
        samples, rate = load_audio(path)
        n = int(WINDOW_S * rate)
        if samples.size < n:
            samples = np.pad(samples, (0, n - samples.size))
        native.append((np.ascontiguousarray(samples[:n], dtype=np.float32), rate))
        names.append(str(path.relative_to(folder)) if folder is not None and path.is_relative_to(folder) else path.name)
    if not native:
        logger.warning("no audio files found: timing on synthetic noise (agreement figures are then not meaningful)")
        rng = np.random.default_rng(0)
        for i in range(count):
            native.append(((0.05 * rng.standard_normal(int(WINDOW_S * 48000))).astype(np.float32), 48000))
            names.append(f"noise-{i}")
    return BenchAudio(
        source=f"{kind}: {folder}" if folder is not None else kind,
        files=names,
        paths=list(files),
        native=native,
        at16k=[resample(s, r, 16000) for s, r in native],
        at48k=[resample(s, r, 48000) for s, r in native],
    )


def decode_windows(files: Sequence[Path]) -> list[AudioWindow]:
    """Every 5-s window of `files` as the daemon's FileSource cuts them (decoding is not part of the timings)."""
    source = FileSource(list(files), WINDOW_S, WINDOW_S)
    return list(source.windows(threading.Event()))


def source_dir(files: Sequence[Path], folder: Path, repeats: int = 1) -> Path:
    """A folder for `--source`: symlinks to `files`, and for each further repeat a copy of each with bytes of its own
    (`distinct_copy`): a replay recognises a recording by its content, so a second link to the same file would be
    skipped as already analysed."""
    folder.mkdir(parents=True, exist_ok=True)
    for r in range(repeats):
        for i, f in enumerate(files):
            name = f"r{r:02d}_{i:04d}_{f.name}"
            if r == 0:
                link = folder / name
                if not link.exists():
                    link.symlink_to(f.resolve())
            elif not (copy := folder / Path(name).with_suffix(".flac")).exists():
                distinct_copy(f, copy, f"repeat {r}")
    return folder


def distinct_copy(src: Path, dst: Path, tag: str) -> Path:
    """`src` re-encoded as FLAC at `dst` with `tag` in its comment: the same sound, other bytes, so a replay takes it
    for a recording of its own (load tests and the soak need more audio than they have recordings)."""
    data, rate = sf.read(str(src), dtype="float32", always_2d=True)
    with sf.SoundFile(str(dst), "w", samplerate=rate, channels=data.shape[1], format="FLAC", subtype="PCM_16") as f:
        f.comment = f"soundmond copy {tag}"
        f.write(data)
    return dst


def synthetic_files(tmp: Path, count: int) -> list[Path]:
    """`count` 10-s files of noise (48 kHz) in `tmp`, for machines without any audio files."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        path = tmp / f"noise-{i}.wav"
        sf.write(str(path), (0.05 * rng.standard_normal(int(2 * WINDOW_S * 48000))).astype(np.float32), 48000)
        out.append(path)
    return out
