"""The ontology-prior head (soundmond/workbench/prior_head.py): the prior alone is the three-sided ontology rule,
the fitted head folds exactly into the StandardScaler + LogisticRegression the daemon's ONNX head runs, and the
nested source-held-out procedure chooses its parameters on each fold's training part only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import soundmond.workbench.prior_head as prior_head
from soundmond.head.loader import Head
from soundmond.head.meta import HEAD_CLASSES, HeadMeta
from soundmond.head.save import save_head
from soundmond.workbench.prior_head import (
    OntologyMatrices,
    OntologyPriorHead,
    PriorParams,
    nested_source_held_out,
)

LABELS = 8  # labels 0-1 natural, 2-3 industrial, 4 other, 5-7 on no side


def matrices() -> OntologyMatrices:
    side = {"natural": [0, 1], "industrial": [2, 3], "other": [4]}
    sides = np.zeros((LABELS, 3))
    for k, c in enumerate(HEAD_CLASSES):
        sides[side[c], k] = 1.0
    branches = np.zeros((LABELS, 4))
    branches[[0, 1], 0] = branches[[2, 3], 1] = branches[4, 2] = branches[[5, 6, 7], 3] = 1.0
    return OntologyMatrices(sides, branches, ("nat", "ind", "oth", "rest"))


def windows(n: int, seed: int = 0) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.str_]]:
    """Tagger-like probabilities: each window's own side is strong, with noise on every label."""
    rng = np.random.default_rng(seed)
    y = np.array([HEAD_CLASSES[i % 3] for i in range(n)])
    p = rng.uniform(0, 0.2, size=(n, LABELS))
    for i, g in enumerate(y):
        p[i, {"natural": [0, 1], "industrial": [2, 3], "other": [4]}[g]] += rng.uniform(0.3, 0.8)
    return p, y


def test_a_heavily_regularised_head_is_the_three_sided_rule() -> None:
    p, y = windows(60)
    head = OntologyPriorHead(matrices(), PriorParams(a=10.0, w_other=0.5, lam=1e6)).fit(p, y)
    assert np.abs(head.coef_).max() < 1e-3  # the correction stays at 0
    sums = p @ matrices().sides * np.array([1.0 if c != "other" else 0.5 for c in HEAD_CLASSES])
    assert (head.predict_proba(p).argmax(axis=1) == sums.argmax(axis=1)).all()


def test_the_correction_never_moves_natural_against_industrial() -> None:
    """Between natural and industrial the fitted head always says what the rule says: its correction moves "other"
    only, so log(P(natural) / P(industrial)) is exactly a * (S_natural - S_industrial), however far it learns."""
    p, y = windows(90)
    params = PriorParams(a=10.0, w_other=0.5, lam=0.01)
    head = OntologyPriorHead(matrices(), params).fit(p, y)
    assert np.abs(head.coef_[:, HEAD_CLASSES.index("other")]).max() > 0.1  # it learnt something
    n, i = HEAD_CLASSES.index("natural"), HEAD_CLASSES.index("industrial")
    assert np.all(head.coef_[:, [n, i]] == 0)
    proba = head.predict_proba(p)
    sums = p @ matrices().sides
    assert np.log(proba[:, n] / proba[:, i]) == pytest.approx(params.a * (sums[:, n] - sums[:, i]), abs=1e-9)


def test_the_fitted_head_folds_into_the_onnx_head(tmp_path: Path) -> None:
    p, y = windows(90)
    head = OntologyPriorHead(matrices(), PriorParams(a=10.0, w_other=0.5, lam=0.1)).fit(p, y)
    assert np.abs(head.coef_).max() > 0.01  # a real correction, not the bare prior
    pipeline = head.to_pipeline(p, y)
    assert np.abs(pipeline.predict_proba(p) - head.predict_proba(p)).max() < 1e-12
    meta = HeadMeta(tagger_family="yamnet", tagger_label_count=LABELS, features="probabilities",
                    feature_dim=LABELS, classes=list(HEAD_CLASSES), trained_on="test", training_data_sha256="0" * 64)
    files = save_head(tmp_path / "prior.onnx", pipeline, meta, features=p)
    loaded = Head.load(files.onnx)
    assert np.abs(loaded.predict_proba(p) - head.predict_proba(p)).max() < 1e-6  # float32 input in the daemon


def test_nested_choice_sees_only_the_training_part(monkeypatch: pytest.MonkeyPatch) -> None:
    p, y = windows(90, seed=1)
    fold = np.repeat(np.array(["a", "b", "c"], dtype=object), 30)  # every fold holds all three groups
    splits = [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in ("a", "b", "c")]
    seen: list[set[str]] = []
    real_choose = prior_head.choose

    def spy(m: OntologyMatrices, pp: Any, yy: Any, ff: Any, grid: Any = prior_head.GRID) -> Any:
        seen.append(set(ff))
        return real_choose(m, pp, yy, ff, grid)

    monkeypatch.setattr(prior_head, "choose", spy)
    grid = (PriorParams(10.0, 0.5, 1000.0), PriorParams(10.0, 0.5, 1.0))
    oof, chosen = nested_source_held_out(matrices(), p, y, fold, splits, grid)
    assert seen == [{"b", "c"}, {"a", "c"}, {"a", "b"}]  # never the held-out fold
    assert len(chosen) == 3 and {c.split(", T=")[0] for c in chosen} <= {g.text() for g in grid}
    assert all(0.5 <= float(c.split(", T=")[1]) <= 20 for c in chosen)  # a temperature fitted in every fold
    assert np.allclose(oof.sum(axis=1), 1.0)  # every window predicted once, out of its fold
    assert (np.array(HEAD_CLASSES)[oof.argmax(axis=1)] == y).mean() > 0.9


def test_the_temperature_changes_no_decision_and_is_fitted_out_of_fold() -> None:
    """Dividing the logits by T keeps every decision and the folded ONNX form; `calibrate` picks the T whose
    leave-one-source-out predictions have the lowest log loss (an overconfident head on noisy windows: T > 1)."""
    p, y = windows(90, seed=2)
    flip = np.arange(90) % 9 == 0  # every ninth window's label is wrong: a head that is always sure pays for it
    y = np.where(flip, np.roll(y, 1), y)
    params = PriorParams(a=40.0, w_other=0.5, lam=1.0)
    cold = OntologyPriorHead(matrices(), params).fit(p, y)
    warm = OntologyPriorHead(matrices(), params, temperature=4.0).fit(p, y)
    assert (cold.predict_proba(p).argmax(axis=1) == warm.predict_proba(p).argmax(axis=1)).all()
    assert warm.predict_proba(p).max(axis=1).mean() < cold.predict_proba(p).max(axis=1).mean()
    assert np.abs(warm.to_pipeline(p, y).predict_proba(p) - warm.predict_proba(p)).max() < 1e-12
    fold = np.repeat(np.array(["a", "b", "c"], dtype=object), 30)
    chosen, _, oof = prior_head.choose(matrices(), p, y, fold, (params,))
    assert chosen == params and np.array_equal(oof, prior_head.oof_proba(
        p, y, prior_head.leave_one_fold_out(fold, np.arange(90)), prior_head.prior_factory(matrices(), params)))
    t = prior_head.calibrate(oof, y)
    assert 1.0 < t <= 20.0
    onehot = y[:, None] == np.array(HEAD_CLASSES)[None, :]

    def log_loss(temperature: float) -> float:
        return -float(np.mean(np.log(prior_head.tempered(oof, temperature)[onehot])))

    assert log_loss(t) < min(log_loss(1.0), log_loss(t * 1.5), log_loss(t / 1.5))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        OntologyPriorHead(matrices(), params, temperature=0.0)
