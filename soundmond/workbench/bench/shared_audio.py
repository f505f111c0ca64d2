"""The whole pipeline in process, as the daemon builds it (models, head, aggregation, alert rules, store), several
configurations interleaved window by window; and the shared decode/resample lever."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from soundmond.workbench.bench.artefacts import write_config
from soundmond.workbench.bench.audio import decode_windows
from soundmond.workbench.bench.common import WINDOW_S, BenchError
from soundmond.workbench.bench.measure import Variant, _rows, _timed, summarize, time_interleaved


@dataclasses.dataclass
class PipelineSpec:
    """One daemon configuration: tagger folder (+ family), BirdNET folder or None, threads per session, head, gate,
    and whether the tagger and BirdNET run side by side (`models.side_by_side`) or one after the other."""

    name: str
    family: str
    tagger: Path
    birds: Path | None
    threads: int
    head: Path | None = None
    min_rms_dbfs: float | None = None
    side_by_side: bool = False

    def config(self, path: Path, store: Path, source: Path | None = None, heartbeat_s: float = 60.0) -> Path:
        return write_config(path, tagger=self.tagger, family=self.family, birds=self.birds, threads=self.threads,
                            store=store, head=self.head, min_rms_dbfs=self.min_rms_dbfs, source=source,
                            heartbeat_s=heartbeat_s, side_by_side=self.side_by_side)


def bench_pipeline(specs: Sequence[PipelineSpec], files: Sequence[Path], tmp: Path, repeats: int = 1
                   ) -> list[dict[str, Any]]:
    """Each spec as the daemon builds it (`build_session`: models, head, aggregation, alert rules) plus a synchronous
    store write per window; the specs interleaved window by window. RTF = compute / audio seconds."""
    from soundmond.analysis import build_session
    from soundmond.config import load_config
    from soundmond.outputs.store import Store

    base = 1.7e9  # consecutive start times: files carry unrelated dates (names, mtimes) the aggregator would refuse
    windows = [dataclasses.replace(w, start_unix_s=base + k * WINDOW_S) for k, w in enumerate(decode_windows(files))]
    if not windows:
        raise BenchError("no audio windows to run the pipeline on")
    audio_s = sum(w.duration_s for w in windows)
    loaded_specs = []
    for k, spec in enumerate(specs):
        loaded = load_config(spec.config(tmp / f"pipeline-{k}.yaml", tmp / f"pipeline-{k}.db"))
        session, load_s = _timed(functools.partial(build_session, loaded))
        store = Store(tmp / f"pipeline-{k}.db", loaded.config.store)
        loaded_specs.append((spec, session, store, load_s))
    times: dict[str, list[float]] = {s.name: [] for s in specs}
    for r in range(repeats):
        for w0 in windows:
            w = dataclasses.replace(w0, window_id=f"{w0.window_id}-{r}",
                                    start_unix_s=w0.start_unix_s + r * len(windows) * WINDOW_S) if r else w0
            now = w.start_unix_s + w.duration_s
            for spec, session, store, _ in loaded_specs:
                t0 = time.perf_counter()
                analysis, alerts = session.process(w, now)
                store.write_batch([analysis.result], alerts, [], now=now)
                times[spec.name].append((time.perf_counter() - t0) * 1000.0)
    rows = []
    for spec, session, store, load_s in loaded_specs:
        t = times[spec.name]
        rows.append({
            "config": spec.name, "threads": spec.threads, "side_by_side": spec.side_by_side,
            "gate_dbfs": spec.min_rms_dbfs,
            "windows": len(windows), "audio_s": round(audio_s, 1), "repeats": repeats,
            "ms_per_window": summarize(t),
            "rtf": round(sum(t) / 1000.0 / (audio_s * repeats), 4),
            "load_s": round(load_s, 2),
            "windows_skipped_quiet": session.analyzer.windows_skipped_quiet,
        })
        store.close()
        session.close()
    return rows


# --- levers measured outside the pipeline ---------------------------------------------------------------------------


def bench_shared_audio(files: Sequence[Path], repeats: int) -> dict[str, Any]:
    """Decode + resample per 5-s window: shared (decode once, resample once per model rate, as the Analyzer does)
    vs not shared (each model decodes the file and resamples on its own, as two separate tools would)."""
    import soundfile as sf

    from soundmond.capture.audio import resample, to_mono

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
    return {"rows": _rows(times, variants, variants[0].name, "5-s window (2 models)", WINDOW_S)}
