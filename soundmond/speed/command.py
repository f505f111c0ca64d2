"""The `soundmond bench` command: its arguments, and the run that `--quick` and `--batch` (here), the full comparison,
`--soak` and `--hf-birds` (the optional workbench, `soundmond.workbench.bench`) make."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from soundmond.batch.cluster import ClusterError
from soundmond.batch.tables import arrow
from soundmond.capture.audio import AudioError
from soundmond.commands.common import report_config_error
from soundmond.config import ConfigError, load_config
from soundmond.errors import ExitCode
from soundmond.head.meta import HeadError
from soundmond.logs import setup_logging
from soundmond.models.sidecar import ModelFolderError
from soundmond.preflight import preflight
from soundmond.speed.batch import batch_markdown, run_batch, worker_counts
from soundmond.speed.common import DEFAULT_CORPUS, BenchError
from soundmond.speed.quick import run_quick
from soundmond.speed.report import quick_markdown, write_report

logger = logging.getLogger(__name__)

# What the workbench runs import beyond the sensor runtime (module: the extra that brings it). The full run needs them
# all (the reference paths, the exports of the random AST, its timing head); the soak only with `--soak-tagger ast`.
WORKBENCH_NEEDS = {"torch": "export", "transformers": "export", "ai_edge_litert": "export", "sklearn": "workbench",
                   "skops": "workbench", "onnx": "workbench"}
HF_BIRDS_NEEDS = {"torch": "export", "transformers": "export", "optimum": "export"}  # `--hf-birds`: its exports

# a run: (args, scratch folder) -> (the report, its markdown, the file stem of the report)
Run = Callable[[argparse.Namespace, Path], tuple[dict[str, Any], str, str]]


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="only the configured models (numpy + onnxruntime; for a sensor): keeps up? which settings?")
    mode.add_argument("--soak", action="store_true",
                      help="replay >= --soak-seconds of audio through `soundmond run`; RSS and open fds over time")
    mode.add_argument("--hf-birds", action="store_true",
                      help="the daemon's peak RSS with a Wav2Vec2-base-sized hf bird model (random weights, fp32 and "
                           "int8) + YAMNet, beside YAMNet + BirdNET (sensor-like `soundmond run`; needs the export "
                           "extra the first time: the exports are cached)")
    mode.add_argument("--budget", action="store_true",
                      help="issue 21's budget: the shipped config with this turn's features (and the AST int8-512 "
                           "one) as sensor-like daemons, RTF and peak RSS vs targets; and both pinned to one core "
                           "(--one-core-cpu), 1 thread per model: RTF, ms per window per model, peak RSS")
    mode.add_argument("--batch", action="store_true",
                      help="the dataset job (`analyze --format parquet`, needs pyarrow): hours of audio per hour with "
                           "--batch-workers local workers (and --batch-cluster)")
    p.add_argument("--config", type=Path, default=None,
                   help="--quick, --batch: the daemon config whose models are measured; --budget and the full run: "
                        "the shipped configuration (default config.yaml)")
    p.add_argument("--out", type=Path, default=Path("reports/bench"), help="report folder (default reports/bench)")
    p.add_argument("--corpus", type=Path, default=None,
                   help=f"real audio (default {DEFAULT_CORPUS}; without it the test fixtures)")
    p.add_argument("--models", type=Path, default=None,
                   help="folder of model folders (yamnet/, birdnet/; --quick: alternatives to time); default models/ "
                        "or .cache/test-models/")
    p.add_argument("--ast-size", choices=("full", "tiny"), default="full",
                   help="random AST checkpoint size (full = the real architecture; tiny for CI)")
    p.add_argument("--hf-size", choices=("base", "tiny"), default="base",
                   help="--hf-birds: the random Wav2Vec2's size (base = the seed model's shape; tiny for CI)")
    p.add_argument("--threads", type=int, default=2, help="threads per session in the per-model comparisons")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the windows (after one warm-up pass)")
    p.add_argument("--windows", type=int, default=8, help="5-s windows timed per model")
    p.add_argument("--agree-windows", type=int, default=24, help="5-s windows for the agreement figures")
    p.add_argument("--pipeline-files", type=int, default=16, help="corpus files replayed for the pipeline/daemon runs")
    p.add_argument("--throughput-files", type=int, default=60, help="corpus files replayed for batch throughput")
    p.add_argument("--gate-dbfs", type=float, default=-35.0, help="RMS gate level for the gate lever")
    p.add_argument("--one-core-cpu", type=int, default=None, metavar="N",
                   help="--budget and the full run: the core the one-core figures are pinned to (default: the "
                        "highest-numbered CPU this process may use)")
    p.add_argument("--soak-seconds", type=float, default=3600.0, help="--soak: audio replayed at least (s)")
    p.add_argument("--soak-tagger", choices=("yamnet", "ast"), default="yamnet",
                   help="--soak: YAMNet + BirdNET (1 thread each, side by side), or the AST int8-512 + BirdNET "
                        "(2 threads, one after the other; needs the cached AST exports)")
    p.add_argument("--short", action="store_true",
                   help="CI: one daemon process per target configuration, throughput of YAMNet + BirdNET only")
    p.add_argument("--batch-files", type=int, default=24, help="--batch: corpus files in each dataset job")
    p.add_argument("--batch-workers", type=worker_counts, default=[1, 2], metavar="N,N",
                   help="--batch: a run per local pool of this many worker processes (default 1,2)")
    p.add_argument("--batch-cluster", default=None, metavar="ADDRESS",
                   help="--batch: one more run on this running Dask scheduler (tcp://host:8786; the cluster extra)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the scratch folder (configs, daemon logs, stores)")


def refusal(config: Path | None) -> ExitCode | None:
    """What `soundmond run` would refuse in this config's models (`soundmond.preflight`: model folders, head, species
    names), printed as check-config prints it, with run's exit code; None when they load: a speed verdict on models
    that cannot run is no help. The store and the source are not what the speed check measures."""
    try:
        loaded = load_config(config)
    except ConfigError as exc:
        return report_config_error(exc)
    return preflight(loaded, models_only=True).refused()


def run_quick_report(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, Any], str, str]:
    report = run_quick(args, tmp)
    return report, quick_markdown(report), "bench-quick"


def run_batch_report(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, Any], str, str]:
    report = run_batch(args, tmp)
    return report, batch_markdown(report), "bench-batch"


def batch_refusal() -> str | None:
    """Why `--batch` cannot run here (pyarrow missing), or None."""
    try:
        arrow()
    except ImportError as exc:
        return str(exc)
    return None


def workbench_run(args: argparse.Namespace) -> Run | str:
    """The full or soak run of the optional workbench, or (when it or a library it needs is not installed) one line
    naming what to install."""
    needs = ([] if args.soak and args.soak_tagger != "ast" else list(HF_BIRDS_NEEDS) if args.hf_birds
             else list(WORKBENCH_NEEDS))
    missing = [m for m in needs if find_spec(m) is None]
    run: Run | None = None
    try:
        from soundmond.workbench.bench.runs import run_workbench  # the optional workbench: only for these runs
    except ModuleNotFoundError as exc:
        missing.insert(0, exc.name or "soundmond.workbench")
    else:
        run = run_workbench
    if run is None or missing:
        extras = sorted({{**WORKBENCH_NEEDS, **HF_BIRDS_NEEDS}.get(m, "workbench") for m in missing})
        what = ("the soak" if args.soak else "--hf-birds" if args.hf_birds else "the budget run" if args.budget
                else "the full benchmark")
        return (f"{what} needs {', '.join(missing)} (not installed): pip install 'soundmond[{','.join(extras)}]', "
                "or run `soundmond bench --quick` on a sensor")
    return run


def run_bench(args: argparse.Namespace) -> int:
    """`soundmond bench`: exit 0 with the report written, 2 on a configuration error or when the workbench (or a
    library it needs) is not installed, 3 when models or audio are missing (the message says which)."""
    run = run_quick_report if args.quick else run_batch_report if args.batch else workbench_run(args)
    if isinstance(run, str):
        print(f"soundmond bench: {run}", file=sys.stderr)
        return ExitCode.USAGE
    if args.batch and (problem := batch_refusal()) is not None:
        print(f"soundmond bench: {problem}", file=sys.stderr)
        return ExitCode.USAGE
    if (args.quick or args.batch) and (refused := refusal(args.config)) is not None:
        return refused
    setup_logging("INFO")
    tmp = Path(tempfile.mkdtemp(prefix="soundmond-bench-"))
    try:
        report, text, stem = run(args, tmp)
    except ConfigError as exc:
        print(f"soundmond bench: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except (BenchError, ModelFolderError, HeadError, AudioError) as exc:
        print(f"soundmond bench: {exc}", file=sys.stderr)
        return ExitCode.MODELS
    except ClusterError as exc:
        print(f"soundmond bench: {exc}", file=sys.stderr)
        return ExitCode.USAGE if exc.usage else ExitCode.FATAL
    finally:
        if args.keep_tmp:
            logger.info("scratch files kept in %s", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    j, md = write_report(report, text, args.out, stem)
    print(text)
    print(f"\nwritten: {j} and {md}", file=sys.stderr)
    return ExitCode.OK
