"""What the commands share: loading the config with logging set up, and printing a config that does not load."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soundmond.config import ConfigError, LoadedConfig, load_config
from soundmond.errors import ExitCode
from soundmond.logs import setup_logging


def load_with_logging(config: Path | None, verbose: bool = False) -> LoadedConfig:
    """The config (`ConfigError` if it does not load), with logging at its level (DEBUG with `verbose`)."""
    loaded = load_config(config)
    setup_logging("DEBUG" if verbose else loaded.config.logging.level)
    return loaded


def report_config_error(exc: ConfigError) -> ExitCode:
    """Every problem of a config that does not load, on stderr, as check-config prints them on stdout."""
    for problem in exc.problems:
        print(str(problem), file=sys.stderr)
    return ExitCode.USAGE


def add_config_argument(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--config", type=Path, default=None, help=help_text)
