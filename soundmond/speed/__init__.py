"""How fast soundmond runs on this machine, as a sensor needs to know it: the sensor runtime and its dependencies only
(numpy, onnxruntime, soundfile, pyyaml); no workbench module is imported here (a test checks).

- `startup_rtf_check` (`soundmond run`, at start-up): a few synthetic windows through the loaded models; a WARNING
  with `keep_up_advice` when they take more than `KEEP_UP_RTF` of real time.
- `soundmond bench` (`add_bench_arguments`, `run_bench`): `--quick` runs here: the configured models' load time and
  ms per window at 1 and 2 threads, the pipeline RTF, the peak RSS of a `soundmond run` process, and a verdict with
  suggested settings; `--batch` the dataset job's throughput (`analyze --format parquet`, 1 and 2 local workers, a
  Dask cluster with `--batch-cluster`). The full comparison, `--soak`, `--hf-birds` and `--budget` are the workbench's
  (`soundmond.workbench.bench`), imported only for those runs; without it (or torch, transformers, scikit-learn...) the
  command says what to install, exit 2.

The modules, one job each (the full benchmark builds on them):

- `common`: paths, window length, real-time limits, `BenchError`.
- `measure`: the spread of repeated runs, interleaved timing of variants, /proc figures, the machine.
- `audio`: real 5-s windows from a corpus (else the test fixtures, else noise); `--source` folders.
- `inprocess`: model folders, daemon configs (`PipelineSpec`), the whole pipeline timed in this process.
- `processes`: a fresh `soundmond run --source` process: peak RSS, load time, wall RTF.
- `startup`: the start-up speed check and its advice.
- `quick`: the `--quick` run and its verdict.
- `report`: `bench-quick.json` / `.md`, and the report sections every mode shares.
- `batch`: `--batch`, the dataset job's throughput (hours of audio per hour) with 1 and 2 local workers.
- `command`: the command's arguments and `run_bench`.
"""

from __future__ import annotations

from soundmond.speed.command import add_bench_arguments, run_bench
from soundmond.speed.common import KEEP_UP_RTF
from soundmond.speed.startup import keep_up_advice, startup_rtf_check

__all__ = ["KEEP_UP_RTF", "add_bench_arguments", "keep_up_advice", "run_bench", "startup_rtf_check"]
