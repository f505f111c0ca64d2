#!/usr/bin/env python3
"""Why issue 15's figures (0.904 for a logistic regression on YAMNet + BirdNET, 0.945 for the ontology rule) differ
from the source-held-out figures in the shipped heads' reports (0.825 and 0.934): the unit and the decision.

The reports score every 5-s window and take the 3-class head's own decision (a natural or industrial window called
"other" is wrong). This prints, under the same source-held-out folds (`crossval.source_held_out_splits`), the
previous recipe (logistic regression C=0.1 on YAMNet probabilities + embedding + BirdNET's embedding) and the rule
scored per window and per clip (the clip's windows' features averaged, one prediction per clip), each with the 3-class
decision and the binary one (natural vs industrial probability only), and the rule with and without pets and
livestock on the natural side.

    python scripts/head_protocol_study.py --model .cache/models/yamnet --birdnet .cache/models/birdnet

Output: one line per variant on stdout (natural-vs-industrial balanced accuracy, 3-class decision and binary).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from soundmond.head.meta import HEAD_CLASSES  # noqa: E402
from soundmond.workbench.corpus import read_corpus  # noqa: E402
from soundmond.workbench.crossval import candidate_models, evaluate, out_of_fold, per_clip  # noqa: E402
from soundmond.workbench.dataset import build_dataset  # noqa: E402
from soundmond.workbench.ontology import INDUSTRIAL_BRANCHES, NATURAL_BRANCHES, NATURAL_EXCLUDED, Ontology  # noqa: E402
from soundmond.workbench.prior_training import fold_names  # noqa: E402
from soundmond.workbench.training import load_training_models  # noqa: E402


def line(name: str, y: np.ndarray, proba: np.ndarray) -> str:
    ni = evaluate(y, proba)["natural_vs_industrial"]
    return f"{name:58s} 3-class decision {ni['balanced_accuracy']:.3f}   binary {ni['binary_balanced_accuracy']:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "data" / "corpus")
    parser.add_argument("--ontology", type=Path,
                        default=REPO.parent / "shared" / "data" / "audioset-ontology" / "ontology.json")
    parser.add_argument("--model", type=Path, default=REPO / ".cache" / "models" / "yamnet")
    parser.add_argument("--birdnet", type=Path, default=REPO / ".cache" / "models" / "birdnet")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "head-features")
    args = parser.parse_args()
    clips = read_corpus(args.corpus)
    tagger, birds = load_training_models(args.model, args.birdnet)
    data = build_dataset(clips, tagger, birds, args.cache, progress=False)
    splits, names, fold = fold_names(data)
    n = len(data.clips)
    clip_y = np.array([c.group for c in data.clips])
    clip_fold = np.empty(n, dtype=object)
    clip_fold[data.clip] = fold
    clip_splits = [(np.flatnonzero(clip_fold != f), np.flatnonzero(clip_fold == f)) for f in names]

    logreg = candidate_models()["logreg_C0.1"]
    x = data.features("probabilities+embedding+birdnet_embedding")
    print(line("logreg C0.1, YAMNet + BirdNET, per window", data.y, out_of_fold(x, data.y, splits, logreg)))
    print(line("logreg C0.1, YAMNet + BirdNET, per clip (clip-mean features)", clip_y,
               out_of_fold(per_clip(data, x), clip_y, clip_splits, logreg)))
    ontology = Ontology(args.ontology)
    p = data.features("probabilities")
    industrial = ontology.mask(tagger.labels, INDUSTRIAL_BRANCHES)
    for label, exclude in (("minus pets and livestock", NATURAL_EXCLUDED), ("with pets and livestock", ())):
        natural = ontology.mask(tagger.labels, NATURAL_BRANCHES, exclude)
        for unit, probs, y in (("per window", p, data.y), ("per clip", per_clip(data, p), clip_y)):
            nat, ind = probs[:, natural].sum(axis=1), probs[:, industrial].sum(axis=1)
            proba = np.zeros((y.size, len(HEAD_CLASSES)))
            proba[:, HEAD_CLASSES.index("natural")] = nat >= ind
            proba[:, HEAD_CLASSES.index("industrial")] = nat < ind
            print(line(f"ontology rule {label}, {unit}", y, proba))
    return 0


if __name__ == "__main__":
    sys.exit(main())
