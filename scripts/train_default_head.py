#!/usr/bin/env python3
"""Train the shipped natural / industrial / other head (`soundmond/heads/yamnet.skops`) on the real corpus.

Reproduce (from the repository root, with the corpus beside the checkout at ../shared/data/corpus):

    python -m export yamnet --out .cache/models/yamnet          # the YAMNet model folder (once)
    python scripts/train_default_head.py --model .cache/models/yamnet

Every clip of the corpus is cut into 5-s windows (hop 5 s), tagged by the daemon's own `YamnetTagger`, and each
candidate (features: probabilities / embedding / both x models: logistic regression at three C, random forest) is
scored with grouped stratified 5-fold CV (clips of one source recording stay in one fold). The best one is fitted
on every window and written to `soundmond/heads/yamnet.skops`, with `yamnet.json` beside it (metrics, comparison,
the exact command). Tagger outputs are cached per (file sha256, model sha256) in `--cache` (default
`.cache/head-features`), so a re-run takes seconds. Fixed seeds: two runs give the same head and metrics.

Output: a progress bar and logs on stderr, the metrics as JSON on stdout.
Exit codes: 0 trained (and the target met), 1 trained but natural-vs-industrial balanced accuracy < 0.95,
2 corpus or model folder missing / unusable.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from soundmond.sidecar import ModelFolderError  # noqa: E402
from soundmond.training import CorpusError, train_head  # noqa: E402

TARGET = 0.95


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "data" / "corpus")
    parser.add_argument("--model", type=Path, default=REPO / ".cache" / "models" / "yamnet", help="YAMNet folder")
    parser.add_argument("--out", type=Path, default=REPO / "soundmond" / "heads" / "yamnet.skops")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "head-features")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    command = "python scripts/train_default_head.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    if not (args.corpus / "labels.csv").is_file():
        print(
            f"train_default_head: corpus not found at {args.corpus} (expected labels.csv there); "
            "it lives beside the project checkout as ../shared/data/corpus, or pass --corpus DIR",
            file=sys.stderr,
        )
        return 2
    try:
        report = train_head(
            args.corpus,
            args.model,
            args.out,
            None if args.no_cache else args.cache,
            command=command,
            progress=not args.no_progress,
        )
    except (CorpusError, ModelFolderError) as exc:
        print(f"train_default_head: {exc}", file=sys.stderr)
        return 2
    json.dump(report, sys.stdout, indent=2)
    print()
    score = report["cv"]["natural_vs_industrial"]["balanced_accuracy"]
    if score < TARGET:
        print(f"train_default_head: natural vs industrial {score:.3f} < target {TARGET}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
