"""The exit codes every soundmond command shares, and the base of the errors a user can act on.

`ExitCode` is the one definition of what a command's exit status means (`soundmond --help` lists them; workbench
commands use the same numbers). `HintedError` carries the problem and how to fix it, so every layer prints the same
`problem - hint` line instead of inventing its own wording.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # success
    PARTIAL = 1  # some inputs could not be processed (each named on stderr); the rest was
    USAGE = 2  # bad usage or an invalid configuration (every problem listed with its key and how to fix it)
    MODELS = 3  # a model folder or head is missing, damaged or does not match the configuration
    DEVICE = 4  # no usable audio input device
    FATAL = 5  # a fatal runtime error (the store cannot be written, a stage thread died): systemd restarts


EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  some inputs could not be analysed (each named on stderr); the rest was processed
  2  bad usage or invalid configuration (each problem as `key.path: problem (line N) - how to fix`)
  3  a model folder or head is missing, damaged or does not match the configuration
  4  no usable audio input device (see `soundmond devices`)
  5  fatal runtime error (e.g. the store cannot be written)
"""


class HintedError(Exception):
    """An error a user can act on: `problem` says what is wrong, `hint` (may be empty) how to fix it.

    `where` (a path, a device, ...) is prefixed when given. `str(err)` is `where: problem - hint`."""

    def __init__(self, problem: str, hint: str = "", *, where: object = None) -> None:
        self.problem = problem
        self.hint = hint
        self.where = where
        msg = f"{where}: {problem}" if where is not None and str(where) else problem
        if hint:
            msg += f" - {hint}"
        super().__init__(msg)
