"""What the commands share: loading the config with logging set up, printing a config that does not load, and the
exit code once the recordings that could not be decoded are known."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from soundmond.config import DEFAULT_CONFIG_PATHS, ConfigError, LoadedConfig, load_config
from soundmond.errors import ExitCode
from soundmond.logs import setup_logging

logger = logging.getLogger("soundmond")


def load_with_logging(config: Path | None, verbose: bool = False) -> LoadedConfig:
    """The config (`ConfigError` if it does not load), with logging at its level (DEBUG with `verbose`)."""
    loaded = load_config(config)
    setup_logging("DEBUG" if verbose else loaded.config.logging.level)
    if loaded.path is None:
        logger.warning("no config file (%s): using the built-in defaults; give one with --config",
                       ", ".join(str(p) for p in DEFAULT_CONFIG_PATHS))
    return loaded


def report_config_error(exc: ConfigError) -> ExitCode:
    """Every problem of a config that does not load, on stderr, as check-config prints them on stdout."""
    for problem in exc.problems:
        print(str(problem), file=sys.stderr)
    return ExitCode.USAGE


def add_config_argument(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--config", type=Path, default=None, help=help_text)


def with_input_failures(code: int, failed: list[tuple[Path, str]], command: str) -> int:
    """The exit code of `soundmond <command>` (run, analyze) once the recordings that could not be decoded are known:
    each named on stderr and exit 1 when the command otherwise succeeded; a worse code stays."""
    for path, problem in failed:
        print(f"soundmond {command}: {path}: {problem}", file=sys.stderr)
    if failed and code == ExitCode.OK:
        print(f"soundmond {command}: {len(failed)} input(s) could not be analysed; the rest was processed",
              file=sys.stderr)
        return ExitCode.PARTIAL
    return code
