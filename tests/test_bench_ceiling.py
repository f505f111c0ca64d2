"""The bench says which AST speed-up targets the CPU's GEMM probe rules out (issue 21: "on a CPU without VNNI the
bench says which targets its GEMM probe rules out")."""

from __future__ import annotations

from typing import Any

import pytest

from soundmond.workbench.bench.common import TARGETS
from soundmond.workbench.bench.report import ceiling_note, check_targets, gemm_ceilings


def report(notebook_ms: float, fp32_rate: float, int8_rate: float) -> dict[str, Any]:
    """A full bench report's AST rows and probe: the notebook path and the exports with their FLOPs per window
    (the full AST: 1024 frames ~ 2x the arithmetic of 512) and measured speed-ups."""
    def row(key: str, gflop: float, ms: float) -> dict[str, Any]:
        return {"key": key, "gflop_per_window": gflop, "ms": {"median": ms},
                "speedup_vs_baseline": round(notebook_ms / ms, 2)}
    return {
        "gemm": {"fp32_gflop_per_s": fp32_rate, "int8_gop_per_s": int8_rate},
        "ast": {"rows": [row("notebook", 260.0, notebook_ms), row("fp32-1024", 260.0, 2210.0),
                         row("int8-1024", 260.0, 1000.0), row("int8-512", 116.0, 454.0),
                         row("int8att-512", 116.0, 400.0)]},
    }


@pytest.mark.parametrize(
    ("fp32_rate", "int8_rate", "fp32_out_of_reach", "int8_out_of_reach"),
    [
        # the VNNI EPYC: 174 GFLOP/s fp32, 532 GOP/s int8 - the probe leaves room for both targets
        pytest.param(174.0, 532.0, False, False, id="vnni-both-reachable"),
        # a first-generation EPYC: int8 no faster than fp32 (0.96x) - 8x is out of reach, 1.8x still reachable
        pytest.param(174.0, 167.0, False, True, id="no-vnni-int8-ruled-out"),
        # a CPU whose fp32 products already run the notebook path at their rate: 1.8x in fp32 is out of reach
        pytest.param(88.0, 532.0, True, False, id="notebook-at-the-fp32-rate"),
    ],
)
def test_the_gemm_probe_says_which_ast_targets_it_rules_out(
    fp32_rate: float, int8_rate: float, fp32_out_of_reach: bool, int8_out_of_reach: bool
) -> None:
    r = report(2977.0, fp32_rate, int8_rate)
    ceilings = gemm_ceilings(r)
    assert ceilings["fp32"] == pytest.approx(2.977 / (260.0 / fp32_rate), abs=0.01)
    assert ceilings["int8"] == pytest.approx(2.977 / (116.0 / int8_rate), abs=0.01)  # the best int8 variant
    notes = {t["target"]: t["note"] for t in check_targets(r)}
    fp32_note = notes["AST ONNX fp32 (1024) speed-up vs notebook path, x"]
    int8_note = notes["AST best int8 speed-up vs notebook path, x"]
    assert fp32_note.startswith("ruled out") is fp32_out_of_reach
    assert int8_note.startswith("ruled out") is int8_out_of_reach
    assert (ceilings["fp32"] < TARGETS["ast_onnx_fp32_speedup_min"]) is fp32_out_of_reach


def test_no_probe_no_note() -> None:
    r = report(2977.0, 174.0, 532.0)
    del r["gemm"]
    assert gemm_ceilings(r) == {}
    assert ceiling_note(None, 8.0) == ""
    assert all(t["note"] == "" for t in check_targets(r))
