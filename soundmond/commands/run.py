"""`soundmond run`: the preflight first (what check-config checks, models included, and `--source`): any problem
refuses the start with the lines and exit code check-config gives, on stderr; then the daemon (`soundmond.pipeline`).
Exit 1 when some recordings could not be decoded (each named on stderr; the others were analysed), as `analyze`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from soundmond.commands.common import (
    add_config_argument,
    load_with_logging,
    report_config_error,
    with_input_failures,
)
from soundmond.config import ConfigError
from soundmond.pipeline import run_daemon
from soundmond.preflight import preflight

logger = logging.getLogger("soundmond")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p, "config file (default: ./config.yaml, /etc/soundmond)")
    p.add_argument("--source", type=Path, default=None,
                   help="replay this file or folder instead of the configured source")
    p.add_argument("--realtime", action="store_true", help="with --source: replay at real-time pace")
    p.add_argument("--reanalyze", action="store_true",
                   help="replay files the store already holds again, replacing their earlier rows (by default they "
                        "are skipped, and a file a crash interrupted resumes where it stopped)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    try:
        loaded = load_with_logging(args.config, args.verbose)
    except ConfigError as exc:
        return report_config_error(exc)
    result = preflight(loaded, source_override=args.source)
    for warning in result.warnings:
        logger.warning("%s", warning)
    if (refused := result.refused()) is not None:
        return refused
    failed: list[tuple[Path, str]] = []  # appended on the capture thread, read once the daemon has returned
    code = run_daemon(loaded, source_override=args.source, realtime=args.realtime, reanalyze=args.reanalyze,
                      on_input_error=lambda path, problem: failed.append((path, problem)))
    return with_input_failures(code, failed, "run")
