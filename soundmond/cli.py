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
import io
import json
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from soundmond import __version__
from soundmond.config import ConfigError, LoadedConfig, load_config
from soundmond.logs import setup_logging
from soundmond.outputs import records

logger = logging.getLogger("soundmond")

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_MODELS = 3
EXIT_DEVICE = 4
EXIT_FATAL = 5

EXIT_CODES = """\
exit codes:
  0  success
  1  some inputs could not be analysed (each named on stderr); the rest was processed
  2  bad usage or invalid configuration (each problem as `key.path: problem (line N) - how to fix`)
  3  a model folder or head is missing, damaged or does not match the configuration
  4  no usable audio input device (see `soundmond devices`)
  5  fatal runtime error (e.g. the store cannot be written)
"""


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


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="soundmond",
        description="Listens to the soundscape: natural vs industrial shares, bird species, alerts, over MQTT.",
        epilog="examples:\n  soundmond run --config /etc/soundmond/config.yaml\n"
               "  soundmond analyze recordings/ --summary > windows.jsonl\n"
               "  soundmond check-config config.yaml\n\n" + EXIT_CODES,
        formatter_class=raw,
    )
    parser.add_argument("--version", action="version", version=f"soundmond {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog=f"example:\n  {example}\n\n{EXIT_CODES}", formatter_class=raw)
        return p

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

    from soundmond.workbench.bench import add_bench_arguments, run_bench

    p = add("bench", "measure models and pipeline on this machine: ms per window, RTF, RSS, load time, throughput",
            "soundmond bench --quick --config /etc/soundmond/config.yaml")
    add_bench_arguments(p)
    p.set_defaults(func=run_bench)

    try:
        from soundmond.outputs.listen import add_listen_arguments, run_listen
    except ImportError:
        pass
    else:
        p = add("listen", "print alerts and soundscape updates from one or many stations (MQTT subscriber)",
                "soundmond listen --host broker.local --topic 'soundmond/+/alerts' --json")
        p.add_argument("--config", type=Path, default=None, help="config file (broker settings from its mqtt section)")
        add_listen_arguments(p)
        p.set_defaults(func=run_listen)

    from soundmond.workbench.train_head import add_train_head_arguments, run_train_head

    p = add("train-head", "train the natural / industrial / other head on labelled audio (CSV or ESC-50 checkout)",
            "soundmond train-head --labels ESC-50-master --out heads/esc50.onnx --features both")
    add_train_head_arguments(p)
    p.set_defaults(func=run_train_head)

    from soundmond.workbench.evaluate import add_evaluate_arguments, run_evaluate

    p = add("evaluate", "score BirdNET species and the head's groups against a labels CSV; report + plots + JSON",
            "soundmond evaluate --labels ../shared/data/corpus/labels.csv --audio-root ../shared/data/corpus "
            "--out eval-report")
    add_evaluate_arguments(p)
    p.set_defaults(func=run_evaluate)

    from soundmond.workbench.collect import add_collect_arguments, run_collect

    p = add("collect", "download labelled recordings from Xeno-canto (API v3; key in XC_API_KEY)",
            "XC_API_KEY=... soundmond collect xeno-canto --species 'Turdus merula,Parus major' --per-species 5 "
            "--out xc")
    add_collect_arguments(p)
    p.set_defaults(func=run_collect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
