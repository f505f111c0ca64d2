"""The full benchmark's figures beyond the quick run's (`soundmond.speed.measure`): a faster variant's agreement with
its original, a report row by key, growth over a soak."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from soundmond.models.sessions import sigmoid
from soundmond.speed.common import BenchError

# --- agreement of a faster variant with its fp32 original ----------------------------------------------------------


def agreement(
    reference: npt.NDArray[np.floating], candidate: npt.NDArray[np.floating], *, probabilities: bool = False
) -> dict[str, float | int]:
    """[items, classes] outputs of the original vs a variant: top-1 agreement, top-5 agreement (same top-5 set),
    max |probability difference| (sigmoid of logits unless `probabilities`) and max |output difference|."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise BenchError(f"output shapes differ: {ref.shape} vs {cand.shape}")
    top_r = np.argsort(-ref, axis=1)[:, :5]
    top_c = np.argsort(-cand, axis=1)[:, :5]
    p_r = ref if probabilities else sigmoid(ref)
    p_c = cand if probabilities else sigmoid(cand)
    return {
        "items": int(ref.shape[0]),
        "top1": round(float(np.mean(top_r[:, 0] == top_c[:, 0])), 4),
        "top5": round(float(np.mean([set(a) == set(b) for a, b in zip(top_r, top_c, strict=True)])), 4),
        "max_prob_diff": float(f"{float(np.max(np.abs(p_r - p_c))):.3g}"),
        "max_output_diff": float(f"{float(np.max(np.abs(ref - cand))):.3g}"),
    }


# --- report rows ---------------------------------------------------------------------------------------------------


def find_row(rows: Sequence[dict[str, Any]], key: str, value: Any) -> dict[str, Any]:
    """The first of `rows` whose `key` is `value` (KeyError if none)."""
    for r in rows:
        if r.get(key) == value:
            return r
    raise KeyError(value)


# --- growth over a soak ---------------------------------------------------------------------------------------------


def growth(series: Sequence[float], times: Sequence[float], warmup_s: float) -> dict[str, Any]:
    """Growth after warm-up: median of the last 10 % of samples over the median of the first 10 % after warm-up."""
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(series, dtype=np.float64)
    keep = t >= warmup_s
    if keep.sum() < 10:
        keep = t >= t[len(t) // 5] if len(t) else keep
    v = v[keep]
    if v.size < 2:
        return {"samples": int(v.size), "growth": None}
    k = max(1, v.size // 10)
    first, last = float(np.median(v[:k])), float(np.median(v[-k:]))
    return {"samples": int(v.size), "after_warmup": round(first, 1), "end": round(last, 1),
            "max_after_warmup": round(float(v.max()), 1),
            "growth": round(last / first - 1.0, 4) if first else None,
            "max_growth": round(float(v.max()) / first - 1.0, 4) if first else None}
