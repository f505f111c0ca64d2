"""The `soundmond` command: run, analyze, check-config, devices, listen, train-head, evaluate, collect, bench.

Machine-readable output goes to stdout, logs and progress to stderr. Exit codes of run, analyze, check-config, devices
and listen (also in `--help`; train-head, evaluate, collect and bench document their own in their `--help`):
  0  success
  1  some inputs could not be analysed (each named on stderr); everything else was processed
  2  bad usage or an invalid configuration (every problem listed as `key.path: problem (line N) - how to fix`)
  3  a model folder or head is missing, damaged or does not match the configuration
  4  no usable audio input device (run `soundmond devices`)
  5  a fatal runtime error (the store cannot be written, ...): systemd restarts the service
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import json
import logging
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soundmond import __version__
from soundmond.config import ConfigError, LoadedConfig, load_config
from soundmond.errors import EXIT_CODES_HELP, ExitCode
from soundmond.logs import setup_logging
from soundmond.outputs import records

logger = logging.getLogger("soundmond")

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_MODELS = 3
EXIT_DEVICE = 4
EXIT_FATAL = 5


def _load(args: argparse.Namespace) -> LoadedConfig:
    loaded = load_config(args.config)
    setup_logging("DEBUG" if getattr(args, "verbose", False) else loaded.config.logging.level)
    return loaded


def _report_config_error(exc: ConfigError) -> int:
    """Every problem of a config that does not load, on stderr, as check-config prints them on stdout."""
    for problem in exc.problems:
        print(str(problem), file=sys.stderr)
    return EXIT_USAGE


# ---------------------------------------------------------------- check-config


def cmd_check_config(args: argparse.Namespace) -> int:
    """The config's problems, then the preflight's (`soundmond.preflight`): every line on stdout as
    `key.path: problem (line N) - how to fix`, warnings on stderr; exit 0 or the code `run` would give."""
    from soundmond.preflight import preflight

    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(str(problem))
        return EXIT_USAGE
    result = preflight(loaded, quick=args.quick)
    for warning in result.warnings:
        print(str(warning), file=sys.stderr)
    for problem in result.problems:
        print(str(problem))
    if not result.ok:
        return int(result.exit_code)
    where = loaded.path or "built-in defaults (no config file found)"
    print(f"ok: {where}")
    return EXIT_OK


# ---------------------------------------------------------------- analyze


def cmd_analyze(args: argparse.Namespace) -> int:
    from soundmond.analysis import ModelLoadError, Session, build_session

    try:
        loaded = _load(args)
    except ConfigError as exc:
        return _report_config_error(exc)
    errors: list[tuple[Path, str]] = []
    try:
        session: Session = build_session(loaded)
    except ModelLoadError as exc:
        print(f"soundmond: {exc}", file=sys.stderr)
        return EXIT_MODELS
    from soundmond.capture.files import FileSource

    cfg = loaded.config
    source = FileSource(
        args.paths, cfg.windows.length_s, cfg.windows.hop_s,
        on_error=lambda path, problem: errors.append((path, problem)),
    )
    out = sys.stdout
    writer = csv.DictWriter(out, fieldnames=records.CSV_FIELDS) if args.format == "csv" else None
    if writer:
        writer.writeheader()
    alerts_raised: list[Any] = []
    last_ts = 0.0
    stop = threading.Event()
    for window in source.windows(stop):
        analysis, alerts = session.process(window, now=window.start_unix_s + window.duration_s)
        last_ts = max(last_ts, window.start_unix_s + window.duration_s)
        alerts_raised.extend(alerts)
        rec = records.analyze_record(analysis.result)
        if writer:
            writer.writerow(records.csv_row(rec))
        else:
            out.write(json.dumps(rec) + "\n")
        out.flush()
    session.close()
    if args.summary:
        summary = {
            "summary": session.aggregator.snapshot(last_ts).to_dict() if last_ts else None,
            "alerts": [records.alert_record(a) for a in alerts_raised],
            "files_analysed": source.files_done,
            "files_failed": [{"file": str(p), "problem": m} for p, m in errors],
        }
        if writer:
            print("# " + json.dumps(summary), file=out)
        else:
            out.write(json.dumps(summary) + "\n")
    for path, problem in errors:
        print(f"soundmond analyze: {path}: {problem}", file=sys.stderr)
    if errors:
        return EXIT_PARTIAL
    return EXIT_OK


# ---------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    """The preflight first (what check-config checks, models included): any problem refuses the start with the
    lines and exit code check-config gives, on stderr; then the daemon."""
    from soundmond.pipeline import run_daemon
    from soundmond.preflight import preflight

    try:
        loaded = _load(args)
    except ConfigError as exc:
        return _report_config_error(exc)
    result = preflight(loaded, source_override=args.source)
    for warning in result.warnings:
        logger.warning("%s", warning)
    if not result.ok:
        for problem in result.problems:
            print(str(problem), file=sys.stderr)
        return int(result.exit_code)
    return run_daemon(loaded, source_override=args.source, realtime=args.realtime)


# ---------------------------------------------------------------- devices


def cmd_devices(args: argparse.Namespace) -> int:
    try:
        from soundmond.capture.mic import CaptureError, list_input_devices
    except OSError as exc:  # PortAudio missing
        print(f"soundmond devices: {exc} - install PortAudio (scripts/install-system-deps.sh)", file=sys.stderr)
        return EXIT_DEVICE
    try:
        devices = list_input_devices()
    except CaptureError as exc:
        print(f"soundmond devices: {exc}", file=sys.stderr)
        return EXIT_DEVICE
    if args.json:
        for d in devices:
            print(json.dumps(d))
    else:
        buf = io.StringIO()
        buf.write(f"{'index':>5}  {'rate_hz':>8}  {'ch':>3}  name\n")
        for d in devices:
            rate = int(float(str(d["default_samplerate"])))
            buf.write(f"{d['index']:>5}  {rate:>8}  {d['max_input_channels']:>3}  {d['name']}\n")
        print(buf.getvalue(), end="")
    if not devices:
        print("soundmond devices: no input device found", file=sys.stderr)
        return EXIT_DEVICE
    return EXIT_OK


# ---------------------------------------------------------------- parser


@dataclass(frozen=True)
class LazyCommand:
    """A command whose module is imported only when it is the one run: `module.<add>(parser)` adds its arguments,
    `module.<run>(args)` runs it."""

    module: str
    add: str
    run: str
    help: str
    example: str


# The commands that live outside this file, in the order `soundmond --help` lists them (after run, analyze,
# check-config and devices). Their modules are imported only when chosen, so building the parser imports no
# workbench module and none of their libraries.
LAZY_COMMANDS: dict[str, LazyCommand] = {
    "bench": LazyCommand(
        "soundmond.speed", "add_bench_arguments", "run_bench",
        "measure models and pipeline on this machine: ms per window, RTF, RSS, load time, throughput",
        "soundmond bench --quick --config /etc/soundmond/config.yaml"),
    "listen": LazyCommand(
        "soundmond.outputs.listen", "add_listen_arguments", "run_listen",
        "print alerts and soundscape updates from one or many stations (MQTT subscriber)",
        "soundmond listen --host broker.local --topic 'soundmond/+/alerts' --json"),
    "train-head": LazyCommand(
        "soundmond.workbench.train_head", "add_train_head_arguments", "run_train_head",
        "train the natural / industrial / other head on labelled audio (CSV or ESC-50 checkout)",
        "soundmond train-head --labels ESC-50-master --out heads/esc50.onnx --features both"),
    "evaluate": LazyCommand(
        "soundmond.workbench.evaluate", "add_evaluate_arguments", "run_evaluate",
        "score BirdNET species and the head's groups against a labels CSV; report + plots + JSON",
        "soundmond evaluate --labels ../shared/data/corpus/labels.csv --audio-root ../shared/data/corpus "
        "--out eval-report"),
    "collect": LazyCommand(
        "soundmond.workbench.collect", "add_collect_arguments", "run_collect",
        "download labelled recordings from Xeno-canto (API v3; key in XC_API_KEY)",
        "XC_API_KEY=... soundmond collect xeno-canto --species 'Turdus merula,Parus major' --per-species 5 "
        "--out xc"),
}

# The libraries of the `workbench` extra (import name -> distribution), which `pip install .` does not install.
WORKBENCH_LIBRARIES = {"sklearn": "scikit-learn", "scipy": "scipy", "skops": "skops", "onnx": "onnx",
                       "matplotlib": "matplotlib", "httpx": "httpx", "tqdm": "tqdm"}


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
    """The `soundmond` parser: every command with its help; `command`, if it is one of `LAZY_COMMANDS`, gets its
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
                              epilog=f"example:\n  {example}\n\n{EXIT_CODES_HELP}", formatter_class=raw)

    p = add("run", "run the daemon on the configured source (microphone or recordings)",
            "soundmond run --config /etc/soundmond/config.yaml")
    p.add_argument("--config", type=Path, default=None, help="config file (default: ./config.yaml, /etc/soundmond)")
    p.add_argument("--source", type=Path, default=None,
                   help="replay this file or folder instead of the configured source")
    p.add_argument("--realtime", action="store_true", help="with --source: replay at real-time pace")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_run)

    p = add("analyze", "analyse recordings and print one record per window (JSON lines or CSV) on stdout",
            "soundmond analyze field/20260501_053000.WAV --format csv --summary")
    p.add_argument("paths", nargs="+", type=Path, help="audio files or folders (wav, flac, mp3, ogg, opus)")
    p.add_argument("--config", type=Path, default=None, help="config file (models, windows, alert rules)")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--summary", action="store_true", help="add the aggregate and the alerts at the end")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_analyze)

    p = add("check-config", "check a config file and what it points at, as `run` would before it starts; prints "
            "`key.path: problem (line N) - how to fix`", "soundmond check-config /etc/soundmond/config.yaml")
    p.add_argument("config", nargs="?", type=Path, default=None)
    p.add_argument("--quick", action="store_true",
                   help="skip the model folders and the head (checksums, tagger match, species names)")
    p.set_defaults(func=cmd_check_config)

    p = add("devices", "list audio input devices with their index, default rate and channels",
            "soundmond devices --json")
    p.add_argument("--json", action="store_true", help="one JSON object per device")
    p.set_defaults(func=cmd_devices)

    for name, lazy in LAZY_COMMANDS.items():
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
