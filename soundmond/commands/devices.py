"""`soundmond devices`: the audio input devices PortAudio sees, one per line (or JSON lines with `--json`)."""

from __future__ import annotations

import argparse
import io
import json
import sys

from soundmond.capture.mic import CaptureError, list_input_devices
from soundmond.errors import ExitCode


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per device")


def run(args: argparse.Namespace) -> int:
    try:
        devices = list_input_devices()
    except CaptureError as exc:  # PortAudio missing or failing
        print(f"soundmond devices: {exc}", file=sys.stderr)
        return ExitCode.DEVICE
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
        print("soundmond devices: no input device found - plug in a microphone, check that the audio server "
              "(PulseAudio, PipeWire) runs and that this user may use it (group audio)", file=sys.stderr)
        return ExitCode.DEVICE
    return ExitCode.OK
