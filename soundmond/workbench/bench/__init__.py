"""`soundmond bench`: how fast soundmond's models and pipeline are on the machine it runs on.

Two modes:

- `soundmond bench --quick [--config FILE]` (a sensor: numpy + onnxruntime only): the configured models' load time,
  milliseconds per 5-s window (median and spread), real-time factor (RTF = compute seconds per second of audio) at
  1 and 2 threads, the whole pipeline's RTF, and the peak RSS of a real `soundmond run` process; says whether this
  machine keeps up with a margin and suggests settings.
- `soundmond bench` (a workstation with the export extra: torch, transformers, ai-edge-litert): everything above for
  every variant, side by side in one run, as ratios: the notebook path (transformers feature extractor + PyTorch eager
  AST) against soundmond's ONNX AST fp32 / int8 / 512-frame / 512-frame int8; BirdNET and YAMNet ONNX against their
  TFLite originals; the levers (threads, 512 frames, int8, the RMS gate, shared resampling, batched BirdNET chunks),
  each on and off; batch throughput with all cores; each faster variant's agreement with its fp32 original on real
  audio. `--soak` replays >= 1 h of audio through `soundmond run` and samples RSS and open file descriptors.

AST timings use a full-size AST with RANDOM weights (same compute as the real model; predictions meaningless, so
AST agreement figures measure numerical drift only). Exports are cached by source checksum in `.cache/bench-models/`.

Timing method: the variants are loaded side by side and interleaved (every repeat runs each variant on the same
windows in turn), so a colleague's load on a shared machine hits every variant alike; ratios are the robust figures,
absolute milliseconds carry the load at the time (recorded in the report). Tests never assert timings.
Outputs: `bench.json` and `bench.md` in `--out` (default `reports/bench/`).

The modules, one job each:

- `common`: the paths, window length, RTF limits and targets every module shares, and `BenchError`.
- `measure`: statistics (spread of repeated runs, growth over a soak), process figures (RSS, open fds, CPU
  features, the machine), a variant's agreement with its original, interleaved timing.
- `audio`: real 5-s windows and files from the corpus (else the test fixtures, else noise); `--source` folders.
- `artefacts`: model folders, the cached random AST and its exports, the timing head, daemon configs.
- `models`: per-model comparisons (AST notebook path vs ONNX variants, BirdNET and YAMNet ONNX vs TFLite, BirdNET's
  levers).
- `pipeline`: the whole pipeline in process, as the daemon builds it; the shared decode/resample lever.
- `processes`: `soundmond run` processes: peak RSS, load time, wall RTF, batch throughput, the soak.
- `startup`: the daemon's own speed check at start-up (`startup_rtf_check`).
- `report`: levers, targets, `bench.json` and `bench.md`.
- `cli`: the `soundmond bench` arguments and the quick, full and soak runs.
- `__main__`: `python -m soundmond.workbench.bench [full|tiny]` warms the AST export cache.

Importing this package stays cheap (the daemon does, at start-up on a sensor): numpy and the standard library only;
onnxruntime, torch, transformers, scikit-learn, yaml and soundmond's model code are imported inside the functions
that need them.
"""

from __future__ import annotations

from soundmond.workbench.bench.cli import add_bench_arguments, run_bench
from soundmond.workbench.bench.common import BenchError
from soundmond.workbench.bench.measure import agreement, cpu_features, cpu_name, growth, summarize
from soundmond.workbench.bench.models import ast_forward_gflop
from soundmond.workbench.bench.startup import keep_up_advice, startup_rtf_check

__all__ = [
    "BenchError",
    "add_bench_arguments",
    "agreement",
    "ast_forward_gflop",
    "cpu_features",
    "cpu_name",
    "growth",
    "keep_up_advice",
    "run_bench",
    "startup_rtf_check",
    "summarize",
]
