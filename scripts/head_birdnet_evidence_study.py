#!/usr/bin/env python3
"""Issue 15's next lever, measured: does BirdNET's own evidence lift the natural-vs-industrial call above the
ontology-prior head's source-held-out figure (per 5-s window: 0.903 with the free correction of 2026-12-06, 0.911
with the "other"-only correction shipped since 2026-12-07)?

The shipped head reads the tagger alone. Most natural windows it calls industrial are windows the tagger hears as
vehicles or engines (sea waves as boats, wind as aircraft, distant traffic in forest soundscapes) while a bird calls in
them; most industrial windows it misses are DCASE machines the tagger hears as wind or water. This adds, to the
head's out-of-fold log-probabilities (the nested source-held-out predictions `train_default_head.py` reports):
`10 * beta * max bird-species confidence` on the natural side and `10 * gamma * max(Engine, Power tools, Siren,
Fireworks, Gun)` on the industrial side (BirdNET V2.4's confidences over the window's 3-s chunks), either plainly or
gated (the head alone decides "other"; BirdNET only moves a window between natural and industrial).

beta and gamma are NOT chosen out of fold here: the table is optimistic by that choice (a scouting study, not a
headline figure).

    python scripts/head_birdnet_evidence_study.py --model models/yamnet --birdnet models/birdnet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from soundmond.capture.audio import load_audio, resample  # noqa: E402
from soundmond.head.meta import HEAD_CLASSES  # noqa: E402
from soundmond.workbench.corpus import read_corpus  # noqa: E402
from soundmond.workbench.crossval import evaluate  # noqa: E402
from soundmond.workbench.dataset import build_dataset, cut_windows  # noqa: E402
from soundmond.workbench.ontology import Ontology  # noqa: E402
from soundmond.workbench.prior_head import OntologyMatrices, nested_source_held_out  # noqa: E402
from soundmond.workbench.prior_training import fold_names  # noqa: E402
from soundmond.workbench.training import load_training_models  # noqa: E402

NON_SPECIES = ("Dog", "Engine", "Environmental", "Fireworks", "Gun", "Human non-vocal", "Human vocal",
               "Human whistle", "Noise", "Power tools", "Siren")
INDUSTRIAL = ("Engine", "Power tools", "Siren", "Fireworks", "Gun")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "data" / "corpus")
    parser.add_argument("--ontology", type=Path,
                        default=REPO.parent / "shared" / "data" / "audioset-ontology" / "ontology.json")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "yamnet")
    parser.add_argument("--birdnet", type=Path, default=REPO / "models" / "birdnet")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "head-features")
    args = parser.parse_args()
    clips = read_corpus(args.corpus)
    tagger, birds = load_training_models(args.model, args.birdnet)
    assert birds is not None
    data = build_dataset(clips, tagger, birds, args.cache, progress=False)
    names = [line.split("_")[0] for line in (args.birdnet / "labels.txt").read_text().splitlines()]
    species = np.array([n not in NON_SPECIES for n in names])
    industrial = [names.index(n) for n in INDUSTRIAL]
    bird_max, machine_max = [], []
    for clip in clips:  # the same windows, in the same order, as build_dataset
        samples, rate = load_audio(clip.path)
        for window in cut_windows(samples, rate):
            logits, _ = birds.chunk_outputs(resample(window, rate, birds.sample_rate_hz))
            confidence = (1.0 / (1.0 + np.exp(-birds.logit_scale * logits))).max(axis=0)
            bird_max.append(confidence[species].max())
            machine_max.append(confidence[industrial].max())
    b, m = np.array(bird_max), np.array(machine_max)
    if b.size != data.y.size:
        raise SystemExit(f"window count differs: {b.size} vs {data.y.size}")
    matrices = OntologyMatrices.build(Ontology(args.ontology), list(tagger.labels))
    p, y = data.features("probabilities"), data.y
    splits, _, fold = fold_names(data)
    oof, _ = nested_source_held_out(matrices, p, y, fold, splits)
    nat, ind, oth = (HEAD_CLASSES.index(g) for g in ("natural", "industrial", "other"))

    def scored(beta: float, gamma: float, gated: bool) -> str:
        logp = np.log(oof + 1e-9)
        logp[:, nat] += 10 * beta * b
        logp[:, ind] += 10 * gamma * m
        if gated:
            logp[oof.argmax(axis=1) == oth, oth] = np.inf
        proba = np.eye(3)[logp.argmax(axis=1)]
        e = evaluate(y, proba)
        recall = " ".join(f"{k} {v['recall']:.2f}" for k, v in e["per_class"].items())
        return (f"{'gated' if gated else 'plain':5s} beta {beta:<4g} gamma {gamma:<4g} natural vs industrial "
                f"{e['natural_vs_industrial']['balanced_accuracy']:.3f}  3-class {e['balanced_accuracy_3class']:.3f}"
                f"  recall {recall}")

    for gated in (False, True):
        for beta in (0.0, 1.0, 2.0, 3.0):
            for gamma in (0.0, 0.5):
                print(scored(beta, gamma, gated))
    return 0


if __name__ == "__main__":
    sys.exit(main())
