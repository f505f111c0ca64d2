"""Logging for the `soundmond` commands: one format, on stderr (stdout is for machine-readable output)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StderrHandler(logging.StreamHandler):
    """Writes each record to `sys.stderr` as it is when the record is emitted, not to the stream that was stderr when
    logging was set up (which may be closed since: a replaced or captured stderr)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler assigns it; stderr is always looked up
        pass


def setup_logging(level: str | int) -> None:
    """Log at `level` ("DEBUG", "INFO", ... or a logging constant) to stderr, replacing earlier handlers."""
    logging.basicConfig(
        level=getattr(logging, level) if isinstance(level, str) else level,
        format=LOG_FORMAT,
        handlers=[StderrHandler()],
        force=True,
    )
