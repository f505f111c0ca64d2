"""The AudioSet ontology's branches over a tagger's labels, and the no-training ontology rule (a baseline).

The ontology (`ontology.json`, AudioSet ontology v1 by Google Inc., CC BY-SA 4.0; beside the project checkout in
../shared/data/audioset-ontology/, not shipped in the package) names every class of YAMNet (521) and the AudioSet AST
(527) by its display name and places it under branches: "Natural sounds" > "Thunderstorm", "Animal" > "Wild animals" >
"Bird", "Sounds of things" > "Vehicle" > ... A label belongs to a branch when it is the branch or a descendant of it.

`ontology_rule` decides natural vs industrial with no training: the tagger's summed probabilities of the labels under
`NATURAL_BRANCHES` (minus `NATURAL_EXCLUDED`: pets and livestock) against those under `INDUSTRIAL_BRANCHES`. It never
says "other"; it is reported beside the trained head under the source-held-out CV, as what the tagger alone knows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from soundmond.head.meta import HEAD_CLASSES
from soundmond.workbench.crossval import TrainError

NATURAL_BRANCHES: tuple[str, ...] = ("Natural sounds", "Animal")
NATURAL_EXCLUDED: tuple[str, ...] = ("Domestic animals, pets", "Livestock, farm animals, working animals")
INDUSTRIAL_BRANCHES: tuple[str, ...] = ("Vehicle", "Engine", "Mechanisms", "Tools", "Alarm")


class Ontology:
    """The ontology's classes by name, with their descendants."""

    def __init__(self, path: Path) -> None:
        try:
            nodes = json.loads(path.read_text(encoding="utf-8"))
            self.by_id = {n["id"]: n for n in nodes}
            self.id_by_name = {n["name"]: n["id"] for n in nodes}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TrainError(f"{path}: not a readable AudioSet ontology.json ({exc})",
                             "pass --ontology with the file from github.com/audioset/ontology") from exc
        self.path = path

    def descendants(self, name: str) -> set[str]:
        """The names of `name` and every class below it."""
        if name not in self.id_by_name:
            raise TrainError(f"{self.path}: no class named {name!r}")
        seen: set[str] = set()
        stack = [self.id_by_name[name]]
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack += self.by_id[node].get("child_ids", [])
        return {self.by_id[n]["name"] for n in seen}

    def mask(
        self, labels: Sequence[str], branches: Sequence[str], exclude: Sequence[str] = ()
    ) -> npt.NDArray[np.bool_]:
        """Which of the tagger's `labels` are under one of `branches` and under none of `exclude`."""
        inside = set().union(*(self.descendants(b) for b in branches))
        outside = set().union(*(self.descendants(b) for b in exclude)) if exclude else set()
        return np.array([label in inside and label not in outside for label in labels])


def ontology_rule(
    ontology: Ontology, labels: Sequence[str], probabilities: npt.NDArray[np.floating]
) -> tuple[npt.NDArray[np.float64], dict[str, int]]:
    """[n, 3] probabilities (`HEAD_CLASSES` order) of the rule on tagger probabilities [n, len(labels)]: natural and
    industrial shares of the two branch sums (other 0), and how many labels each side holds."""
    natural = ontology.mask(labels, NATURAL_BRANCHES, NATURAL_EXCLUDED)
    industrial = ontology.mask(labels, INDUSTRIAL_BRANCHES)
    if not natural.any() or not industrial.any():
        raise TrainError(f"the tagger's labels are not AudioSet class names ({natural.sum()} natural, "
                         f"{industrial.sum()} industrial found)")
    p = np.asarray(probabilities, dtype=np.float64)
    sums = {"natural": p[:, natural].sum(axis=1), "industrial": p[:, industrial].sum(axis=1)}
    total = sums["natural"] + sums["industrial"] + 1e-12
    proba = np.zeros((p.shape[0], len(HEAD_CLASSES)))
    for g in ("natural", "industrial"):
        proba[:, HEAD_CLASSES.index(g)] = sums[g] / total
    ties = sums["natural"] == sums["industrial"]  # 0 = 0: the rule says natural, as ">=" does
    proba[ties, HEAD_CLASSES.index("natural")] = 1.0
    proba[ties, HEAD_CLASSES.index("industrial")] = 0.0
    return proba, {"natural_labels": int(natural.sum()), "industrial_labels": int(industrial.sum())}


__all__ = ["INDUSTRIAL_BRANCHES", "NATURAL_BRANCHES", "NATURAL_EXCLUDED", "Ontology", "ontology_rule"]
