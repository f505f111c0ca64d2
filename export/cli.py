"""`python -m export <family> ...` (also `soundmond-export`): upstream model -> verified ONNX model folder."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from pathlib import Path

from export.common import EXIT_OK, EXIT_USAGE, ExportError

logger = logging.getLogger("export")

# family -> module with `add_arguments(parser)` and `run(args) -> Path`
FAMILIES = {
    "ast": "export.ast_model",
    "birdnet": "export.birdnet_model",
    "hf": "export.hf_model",
    "yamnet": "export.yamnet_model",
}

EPILOG = """\
examples:
  python -m export birdnet --out models/birdnet
  python -m export yamnet --tflite ../shared/models/yamnet/yamnet.tflite --out models/yamnet
  python -m export ast --model MIT/ast-finetuned-audioset-10-10-0.4593 --frames 512 --quantize int8 --out models/ast
  python -m export ast --model ./ast-checkout --out models/ast          (a local directory works offline)
  python -m export hf --model dima806/bird_sounds_classification --out models/dima806

Each export writes a folder (model.onnx, labels, model.json) through a temporary folder renamed into place,
after checking the ONNX model against the original runtime on real audio (--check-audio, default: the
project's fixtures). On success the folder path is printed on stdout; logs go to stderr.

exit codes:
  0  exported and verified
  1  the ONNX model missed its parity target (nothing written)
  2  bad arguments, unreachable hub or unknown model id, unexpected input file (nothing written)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description=(
            "Export AST, BirdNET, YAMNet or a Hugging Face audio classifier to a verified ONNX model folder "
            "for soundmond."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="family", required=True, metavar="{ast,birdnet,hf,yamnet}")
    for family, module_name in FAMILIES.items():
        try:
            module = import_module(module_name)
        except ImportError as exc:  # one family's missing dependency must not break the others
            p = sub.add_parser(family, help=f"(unavailable: {exc})")
            p.set_defaults(run=_unavailable(family, exc))
            continue
        p = sub.add_parser(
            family,
            help=module.__doc__.strip().splitlines()[0] if module.__doc__ else family,
            description=module.__doc__,
            epilog=family_epilog(family, module.__doc__),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--out", type=Path, required=True, help="the model folder to write")
        p.add_argument("--force", action="store_true", help="replace an existing folder")
        p.add_argument(
            "--check-audio",
            type=Path,
            default=None,
            help="folder of real recordings for the parity check (default: tests/fixtures/audio)",
        )
        p.add_argument("--no-progress", action="store_true",
                       help="no progress bar (drawn on stderr only when it is a terminal; AST's parity check)")
        module.add_arguments(p)
        runner: Callable[[argparse.Namespace], Path] = module.run
        p.set_defaults(run=runner)
    return parser


def family_epilog(family: str, description: str | None) -> str:
    """`EPILOG` for one family's --help: its own example lines only, none when its description has an examples block
    already (so --help shows examples once)."""
    examples, _, rest = EPILOG.partition("\n\n")
    if description is not None and "\nexamples:\n" in description:
        return rest
    mine = [line for line in examples.splitlines()[1:] if line.strip().startswith(f"python -m export {family} ")]
    return "\n".join(["examples:", *mine]) + "\n\n" + rest if mine else rest


def _unavailable(family: str, exc: ImportError) -> Callable[[argparse.Namespace], Path]:
    def run(args: argparse.Namespace) -> Path:
        raise ExportError(f"the {family} exporter cannot run here: {exc} (pip install -e '.[export]')")

    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    out = getattr(args, "out", None)
    if out is not None and Path(out).exists() and not getattr(args, "force", False):
        # refused before the conversion and its parity check (minutes for the AST), not after them
        print(f"export {args.family}: {out} already exists; pass --force to replace it", file=sys.stderr)
        return EXIT_USAGE
    try:
        folder = args.run(args)
    except ExportError as exc:
        print(f"export {args.family}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"export {args.family}: interrupted; nothing written", file=sys.stderr)
        return 130
    print(folder)
    return EXIT_OK


__all__ = ["main", "build_parser", "EXIT_USAGE"]
