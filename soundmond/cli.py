"""The `soundmond` command: a thin dispatcher. It parses, then imports only the module of the command it runs
(`COMMANDS`: soundmond.commands.* for run, analyze, check-config, devices, export, import and clips; soundmond.speed
for bench; soundmond.outputs.listen; soundmond.workbench.* for train-head, evaluate, report and collect).

Machine-readable output goes to stdout, logs and progress to stderr. Exit codes (`soundmond.errors.ExitCode`, also
in `--help`; train-head, evaluate, collect and bench say in their `--help` which of them they use):
  0  success
  1  some inputs could not be analysed (each named on stderr); everything else was processed
  2  bad usage or an invalid configuration (every problem listed as `key.path: problem (line N) - how to fix`)
  3  a model folder or head is missing, damaged or does not match the configuration
  4  no usable audio input device (run `soundmond devices`)
  5  a fatal runtime error (the store cannot be written, ...): systemd restarts the service
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from soundmond import __version__
from soundmond.errors import EXIT_CODES_HELP, ExitCode


@dataclass(frozen=True)
class Command:
    """A command; its module is imported only when it is the one run: `module.<add>(parser)` adds its arguments,
    `module.<run>(args)` runs it."""

    module: str
    add: str
    run: str
    help: str
    example: str


# Every command, in the order `soundmond --help` lists them. Their modules are imported only when chosen, so building
# the parser imports no workbench module and none of their libraries.
COMMANDS: dict[str, Command] = {
    "run": Command(
        "soundmond.commands.run", "add_arguments", "run",
        "run the daemon on the configured source (microphone or recordings)",
        "soundmond run --config /etc/soundmond/config.yaml"),
    "analyze": Command(
        "soundmond.commands.analyze", "add_arguments", "run",
        "analyse recordings and print one record per window (JSON lines or CSV) on stdout",
        "soundmond analyze field/20260501_053000.WAV --summary > windows.jsonl"),
    "check-config": Command(
        "soundmond.commands.check_config", "add_arguments", "run",
        "check a config file and what it points at, as `run` would before it starts; prints "
        "`key.path: problem (line N) - how to fix`",
        "soundmond check-config /etc/soundmond/config.yaml"),
    "devices": Command(
        "soundmond.commands.devices", "add_arguments", "run",
        "list audio input devices with their index, default rate and channels",
        "soundmond devices --json"),
    "export": Command(
        "soundmond.commands.export", "add_arguments", "run",
        "write one table of a store (windows, detections, alerts, aggregates, evidence) as CSV, JSON lines or Parquet "
        "(docs/store.md describes the columns)",
        "soundmond export --store var/soundmond.db --what detections --since 2026-05-01 --format csv > det.csv"),
    "import": Command(
        "soundmond.commands.import_dataset", "add_arguments", "run",
        "load a Parquet dataset (`analyze --format parquet`) into a store, idempotently, for export, report and "
        "the daemon",
        "soundmond import season-2026 --store var/soundmond.db"),
    "clips": Command(
        "soundmond.commands.clips", "add_arguments", "run",
        "list the evidence clips a store holds (by species, alert type, time) or copy them out, checked by SHA-256",
        "soundmond clips --config /etc/soundmond/config.yaml --species 'Turdus merula' --since 2026-05-01 "
        "--copy-to blackbirds"),
    "bench": Command(
        "soundmond.speed", "add_bench_arguments", "run_bench",
        "measure models and pipeline on this machine: ms per window, RTF, RSS, load time, throughput",
        "soundmond bench --quick --config /etc/soundmond/config.yaml\n"
        "  soundmond bench --budget --one-core-cpu 1   # RTF and peak RSS with every feature on, and on one core"),
    "listen": Command(
        "soundmond.outputs.listen", "add_listen_arguments", "run_listen",
        "print alerts and soundscape updates from one or many stations (MQTT subscriber)",
        "soundmond listen --host broker.local --topic 'soundmond/+/alerts' --json"),
    "train-head": Command(
        "soundmond.workbench.train_head", "add_train_head_arguments", "run_train_head",
        "train the natural / industrial / other head on labelled audio (CSV or ESC-50 checkout)",
        "soundmond train-head --labels ESC-50-master --out heads/esc50.onnx --features both"),
    "evaluate": Command(
        "soundmond.workbench.evaluate", "add_evaluate_arguments", "run_evaluate",
        "score the bird model's species (BirdNET or hf) and the head's groups against a labels CSV; report + plots",
        "soundmond evaluate --labels ../shared/data/corpus/labels.csv --audio-root ../shared/data/corpus "
        "--out eval-report\n"
        "  soundmond evaluate --labels labels.csv --birds models/dima806 --species-map species.yaml --no-groups "
        "--out eval-dima806"),  # an hf bird model from `python -m export hf`
    "report": Command(
        "soundmond.workbench.station_report.command", "add_report_arguments", "run_report",
        "a static HTML report of one station's day or range from its store: shares, species, alerts, health",
        "soundmond report --store /var/lib/soundmond/soundmond.db --day 2026-05-01 --out report-2026-05-01"),
    "collect": Command(
        "soundmond.workbench.collect", "add_collect_arguments", "run_collect",
        "download labelled recordings: Xeno-canto (API v3; key in XC_API_KEY) or the ESC-50 archive",
        "XC_API_KEY=... soundmond collect xeno-canto --species 'Turdus merula,Parus major' --per-species 5 "
        "--out xc\n  soundmond collect esc50 --out data/ESC-50"),
}

# The libraries of the `workbench` extra (import name -> distribution), which `pip install .` does not install.
WORKBENCH_LIBRARIES = {"sklearn": "scikit-learn", "scipy": "scipy", "skops": "skops", "onnx": "onnx",
                       "matplotlib": "matplotlib", "httpx": "httpx"}


class MissingExtra(Exception):
    """A command needs a library of the `workbench` extra that is not installed."""

    def __init__(self, command: str, module: str) -> None:
        dist = WORKBENCH_LIBRARIES[module]
        named = dist if dist == module else f"{dist} (module {module})"
        super().__init__(f"soundmond {command}: needs {named}, which is not installed: "
                         "pip install 'soundmond[workbench]'")


def missing_workbench_library(exc: ImportError) -> str | None:
    """The workbench library whose absence raised `exc`, if that is what it is."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    return name if isinstance(exc, ModuleNotFoundError) and name in WORKBENCH_LIBRARIES else None


def chosen_command(argv: Sequence[str]) -> str | None:
    """The command named on the command line (the top-level parser has only flags: the first other word)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `soundmond` parser: every command with its help; `command`, if it is one of `COMMANDS`, gets its
    arguments from its module (imported here, the only one). Raises `MissingExtra` when that module needs a workbench
    library that is not installed."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="soundmond",
        description="Listens to the soundscape: natural vs industrial shares, bird species, alerts, over MQTT.",
        epilog="examples:\n  soundmond run --config /etc/soundmond/config.yaml\n"
               "  soundmond analyze recordings/ --summary > windows.jsonl\n"
               "  soundmond check-config config.yaml\n\n" + EXIT_CODES_HELP,
        formatter_class=raw,
    )
    parser.add_argument("--version", action="version", version=f"soundmond {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text,
                              epilog=f"example{'s' * (chr(10) in example)}:\n  {example}\n\n{EXIT_CODES_HELP}",
                              formatter_class=raw)

    for name, lazy in COMMANDS.items():
        p = add(name, lazy.help, lazy.example)
        if name == command:
            try:
                module = importlib.import_module(lazy.module)
            except ImportError as exc:
                missing = missing_workbench_library(exc)
                if missing is None:
                    raise
                raise MissingExtra(name, missing) from exc
            getattr(module, lazy.add)(p)
            p.set_defaults(func=getattr(module, lazy.run))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = chosen_command(argv)
    try:
        args = build_parser(command).parse_args(argv)
        return int(args.func(args))
    except MissingExtra as exc:
        print(exc, file=sys.stderr)
        return ExitCode.USAGE
    except ImportError as exc:  # a library the command imports only when it needs it (skops, onnx, ...)
        missing = missing_workbench_library(exc)
        if missing is None:
            raise
        print(MissingExtra(command or "", missing), file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
