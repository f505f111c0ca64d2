"""`soundmond check-config`: the config's problems, then the preflight's (`soundmond.preflight`), each on stdout as
`key.path: problem (line N) - how to fix`, warnings on stderr; exit 0 or the code `run` would give."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soundmond.config import ConfigError, load_config
from soundmond.errors import ExitCode
from soundmond.logs import setup_logging
from soundmond.preflight import preflight


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", type=Path, default=None)
    p.add_argument("--quick", action="store_true",
                   help="skip the model folders and the head (checksums, tagger match, species names)")


def run(args: argparse.Namespace) -> int:
    setup_logging("WARNING")  # the problems are this command's output; the loaders' INFO lines are not
    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(str(problem))
        return ExitCode.USAGE
    result = preflight(loaded, quick=args.quick)
    for warning in result.warnings:
        print(str(warning), file=sys.stderr)
    if (refused := result.refused(sys.stdout)) is not None:
        return refused
    print(f"ok: {loaded.path or 'built-in defaults (no config file found)'}")
    return ExitCode.OK
