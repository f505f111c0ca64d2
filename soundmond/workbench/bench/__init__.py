"""The full `soundmond bench` (a workstation with the workbench and export extras: torch, transformers,
ai-edge-litert, scikit-learn): how soundmond's models and pipeline compare with their originals on this machine.

`soundmond bench --quick` (a sensor) and the daemon's start-up speed check live with the runtime in `soundmond.speed`,
which holds the command's arguments and imports this package only for the full and soak runs. This package builds on
`soundmond.speed`'s timing, audio, pipeline and process helpers.

- the full run: everything `--quick` measures, for every variant, side by side in one run, as ratios: the notebook
  path (transformers feature extractor + PyTorch eager AST) against soundmond's ONNX AST fp32 / int8 / 512-frame /
  512-frame int8; BirdNET and YAMNet ONNX against their TFLite originals; the levers (threads, 512 frames, int8, the
  RMS gate, shared resampling, batched BirdNET chunks), each on and off; batch throughput with all cores; each faster
  variant's agreement with its fp32 original on real audio.
- `--soak` replays >= 1 h of audio through `soundmond run` and samples RSS and open file descriptors.
- `--hf-birds`: the daemon's peak RSS with a Hugging Face bird model of the seed study's size (`hf_birds`).
- `--budget` (also part of the full run): the budget and one-core figures (`budget`).

AST timings use a full-size AST with RANDOM weights (same compute as the real model; predictions meaningless, so
AST agreement figures measure numerical drift only). Exports are cached by source checksum in `.cache/bench-models/`.

Timing method: the variants are loaded side by side and interleaved (every repeat runs each variant on the same
windows in turn), so a colleague's load on a shared machine hits every variant alike; ratios are the robust figures,
absolute milliseconds carry the load at the time (recorded in the report). Tests never assert timings.
Outputs: `bench.json` and `bench.md` (`soak.json`, `soak.md`) in `--out` (default `reports/bench/`).

The modules, one job each:

- `common`: the cache, the TFLite original, the configurations and targets the modules share.
- `measure`: a variant's agreement with its original, report rows by key, growth over a soak.
- `audio`: the pipeline files (spread over the corpus, plus quiet recordings for the gate lever).
- `artefacts`: the cached random AST and its exports, the timing head.
- `models`: per-model comparisons (AST notebook path vs ONNX variants, BirdNET and YAMNet ONNX vs TFLite, BirdNET's
  levers, the CPU's fp32 / int8 matrix-product rates).
- `shared_audio`: the shared decode/resample lever.
- `processes`: batch throughput (several `soundmond run` processes) and the soak.
- `pinning`: processes pinned to CPUs (their threads' allowed CPUs read from /proc while they run, a core's CPU from
  /proc/cpuinfo), a `soundmond run` process with the features its config had on and what they left in its store.
- `pinned_models`: a config's models timed per window in a process of its own (`python -m ...`; pinned by `budget`).
- `budget`: issue 21's budget (the shipped config with this turn's features on, and the AST int8-512 one, as
  sensor-like daemons: RTF and peak RSS vs targets) and the one-core figures (`--budget`, and a section of the full
  run).
- `report`: levers, targets, `bench.md` and `soak.md`.
- `hf_birds`: `--hf-birds`, the daemon's peak RSS with a Wav2Vec2-base-sized hf bird model (fp32, int8) + YAMNet.
- `runs`: the full run, the soak and `--hf-birds` (`run_workbench`, called by `soundmond.speed.command.run_bench`).
- `bird_grid`: the bird chunk grid study (`python -m soundmond.workbench.bench.bird_grid`): recall, false detections
  and cost per BirdNET stride, sensitivity and min_confidence on the corpus (bench/BIRD_GRID.md).
- `__main__`: `python -m soundmond.workbench.bench [full|tiny]` warms the AST export cache.

torch, transformers, ai-edge-litert, scikit-learn and onnx are imported inside the functions that need them.
"""

from __future__ import annotations

from soundmond.workbench.bench.measure import agreement, growth
from soundmond.workbench.bench.models import ast_forward_gflop
from soundmond.workbench.bench.runs import run_workbench

__all__ = [
    "agreement",
    "ast_forward_gflop",
    "growth",
    "run_workbench",
]
