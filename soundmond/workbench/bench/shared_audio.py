"""The shared decode/resample lever (decode once and resample once per model rate, as the Analyzer does, vs each
model decoding on its own). The whole pipeline in process: `soundmond.speed.inprocess`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

from soundmond.capture.audio import resample, to_mono
from soundmond.speed.common import WINDOW_S
from soundmond.speed.measure import Variant, time_interleaved, timing_rows


def bench_shared_audio(files: Sequence[Path], repeats: int) -> dict[str, Any]:
    """Decode + resample per 5-s window: shared (decode once, resample once per model rate, as the Analyzer does)
    vs not shared (each model decodes the file and resamples on its own, as two separate tools would)."""
    def decode(path: Path, start: int, rate: int) -> npt.NDArray[np.float32]:
        with sf.SoundFile(str(path)) as fh:
            fh.seek(start)
            data = fh.read(int(WINDOW_S * rate), dtype="float32", always_2d=True)
        return to_mono(data)

    items = []
    for f in files:
        info = sf.info(str(f))
        items.append((f, int(info.samplerate)))

    def shared(i: int) -> None:
        f, rate = items[i]
        wave = decode(f, 0, rate)
        resample(wave, rate, 16000)
        resample(wave, rate, 48000)

    def separate(i: int) -> None:
        f, rate = items[i]
        resample(decode(f, 0, rate), rate, 16000)
        resample(decode(f, 0, rate), rate, 48000)

    variants = [Variant("not shared: each model decodes + resamples", separate),
                Variant("shared: decode once, resample once per rate", shared)]
    times, _ = time_interleaved(variants, len(items), repeats)
    return {"rows": timing_rows(times, variants, variants[0].name, "5-s window (2 models)", WINDOW_S)}
