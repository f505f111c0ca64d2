"""Logging for the `soundmond` commands: one format, on stderr (stdout is for machine-readable output)."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str | int) -> None:
    """Log at `level` ("DEBUG", "INFO", ... or a logging constant) to stderr, replacing earlier handlers."""
    logging.basicConfig(
        level=getattr(logging, level) if isinstance(level, str) else level,
        format=LOG_FORMAT,
        stream=sys.stderr,
        force=True,
    )
