"""Milliseconds per window of each model of a daemon config, in a process of its own (the one-core figures run it
pinned to one core, as the daemon beside it): `python -m soundmond.workbench.bench.pinned_models --config C --out J`.

The models are loaded as the daemon loads them (`load_models`: the config's threads per model), then timed
interleaved on real 5-s windows: the tagger, BirdNET on the chunks its stream grid gives each window (the config's
stride and hop), the head, the acoustic indices, and the whole analysis of a window (`Analyzer.analyze`, as the
daemon's `compute_ms`: models - side by side if the config says so -, head and indices; the quiet floor not applied,
so every window runs the models). The JSON also says which CPUs each of this process's threads was allowed, read
after the models ran (every thread they start exists then)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from soundmond.analysis import Analyzer, load_models
from soundmond.capture.audio import resample
from soundmond.config import load_config
from soundmond.data import AudioWindow
from soundmond.soundscape.indices import compute as acoustic_indices
from soundmond.speed.audio import load_windows
from soundmond.speed.common import WINDOW_S
from soundmond.speed.inprocess import grid_chunks
from soundmond.speed.measure import Variant, proc_status, time_interleaved, timing_rows
from soundmond.workbench.bench.pinning import thread_cpus


def model_variants(config: Path, corpus: Path | None, windows: int) -> tuple[list[Variant], int, Callable[[], None]]:
    """The variants to time (tagger, BirdNET, head, indices, whole analysis), the number of windows, and a close."""
    loaded = load_config(config)
    cfg = loaded.config
    tagger, birds, head, _ = load_models(loaded)
    audio = load_windows(corpus, windows)
    n = len(audio.native)
    at_tagger = [resample(s, r, tagger.sample_rate_hz) for s, r in audio.native]
    variants = [Variant(f"tagger ({cfg.models.tagger.family})", lambda i: tagger.tag(at_tagger[i]).probabilities,
                        info={"model": "tagger", "threads": cfg.models.tagger.threads})]
    tags = [tagger.tag(w) for w in at_tagger]
    bird_outputs: list[Any] = [None] * n
    if birds is not None:
        at_birds = [resample(s, r, birds.sample_rate_hz) for s, r in audio.native]
        chunks = grid_chunks(birds, at_birds, cfg.windows.hop_s)
        per_window = sum(map(len, chunks)) / max(1, n)

        def run_birds(i: int) -> None:
            birds.detect_chunks(chunks[i], start_unix_s=0.0)

        variants.append(Variant(f"BirdNET, stride {birds.stride_s:g} s ({per_window:.2f} chunks per window)",
                                run_birds, info={"model": "birds", "threads": cfg.models.birds.threads,
                                                 "stride_s": birds.stride_s,
                                                 "chunks_per_window": round(per_window, 3)}))
        bird_outputs = [birds.detect(w, start_unix_s=0.0) for w in at_birds]  # a window's own embedding for the head

    def run_head(i: int) -> None:
        head.predict(tags[i], bird_outputs[i])

    variants.append(Variant("head", run_head, info={"model": "head", "threads": 1}))

    def run_indices(i: int) -> None:
        samples, rate = audio.native[i]
        acoustic_indices(samples, rate, cfg.source.calibration_db)

    variants.append(Variant("acoustic indices", run_indices, info={"model": "indices", "threads": 1}))
    analyzer = Analyzer(tagger, birds, head, side_by_side=cfg.models.side_by_side, indices=cfg.indices.enabled,
                        calibration_db=cfg.source.calibration_db)
    calls = [0]

    def run_window(i: int) -> None:  # consecutive stream times: the analyzer's bird grid follows the stream
        samples, rate = audio.native[i]
        t = calls[0] * cfg.windows.hop_s
        calls[0] += 1
        analyzer.analyze(AudioWindow(f"pinned-{calls[0]}", "bench", 1.7e9 + t, t, rate, samples), use_gate=False)

    side = ", side by side" if cfg.models.side_by_side and birds is not None else ""
    variants.append(Variant(f"whole analysis of a window (models{side}, head, indices)", run_window,
                            info={"model": "window", "threads": cfg.models.tagger.threads}))
    return variants, n, analyzer.close


def measure(config: Path, corpus: Path | None, windows: int, repeats: int) -> dict[str, Any]:
    variants, n, close = model_variants(config, corpus, windows)
    try:
        times, _ = time_interleaved(variants, n, repeats)
        threads = thread_cpus()
    finally:
        close()
    hwm = proc_status().get("VmHWM")
    return {"windows": n, "repeats": repeats, "rows": timing_rows(times, variants, None, "5-s window", WINDOW_S),
            "affinity": {"sched_getaffinity": sorted(os.sched_getaffinity(0)),
                         "thread_cpu_sets": sorted({tuple(sorted(c)) for c in threads.values()}),
                         "threads": len(threads)},
            "peak_rss_mb": round(hwm / 1024, 1) if hwm else None}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m soundmond.workbench.bench.pinned_models", description=__doc__)
    p.add_argument("--config", type=Path, required=True, help="the daemon config whose models are timed")
    p.add_argument("--out", type=Path, required=True, help="where the JSON figures go")
    p.add_argument("--corpus", type=Path, default=None, help="real audio (default: the bench's corpus)")
    p.add_argument("--windows", type=int, default=8, help="5-s windows timed")
    p.add_argument("--repeats", type=int, default=3, help="timed passes (after one warm-up pass)")
    args = p.parse_args(argv)
    result = measure(args.config, args.corpus, args.windows, args.repeats)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a child process by `soundmond.workbench.bench.budget`
    sys.exit(main())
