"""`soundmond bench --budget` (issue 21's budget and one-core figures): the plumbing, on the test models (the tiny AST
stands in for the int8-512 export) and one 10-s recording. No timing is asserted (the machine is shared): only that
real figures come back from real `soundmond run` processes, land in the report, and that the pinned processes'
threads really could run on one CPU only."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from soundmond.models.sidecar import read_sidecar
from soundmond.speed import add_bench_arguments
from soundmond.speed.common import REPO, BenchError
from soundmond.speed.measure import machine_info
from soundmond.workbench.bench.artefacts import bench_head, embedding_size
from soundmond.workbench.bench.budget import run_budget
from soundmond.workbench.bench.common import BENCH_CACHE
from soundmond.workbench.bench.pinning import core_info, core_text, cpu_list, default_core
from soundmond.workbench.bench.report import markdown

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14
cpu family\t: 25
model\t\t: 17
stepping\t: 1
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16

processor\t: 1
model name\t: AMD EPYC 9R14
cpu family\t: 25
model\t\t: 17
stepping\t: 1
flags\t\t: fpu sse2 avx2 fma
"""


def test_cpu_lists_and_a_cores_cpu() -> None:
    assert cpu_list("0-1,3") == {0, 1, 3} and cpu_list("2\n") == {2} and cpu_list("") == set()
    one = core_info(1, CPUINFO)
    assert (one["model_name"], one["cpu_family"], one["model"], one["stepping"]) == ("AMD EPYC 9R14", "25", "17", "1")
    assert one["simd"] == ["avx2", "fma"]  # core 1's own flags, not core 0's
    assert core_info(0, CPUINFO)["simd"] == ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]
    assert core_text(one) == "core 1: AMD EPYC 9R14 (cpu family 25, model 17, stepping 1); SIMD avx2, fma"
    assert core_info(7, CPUINFO) == {"core": 7}


def bench_args(tmp_path: Path, models: Path, corpus: Path, **more: object) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_bench_arguments(p)
    args = p.parse_args(["--budget", "--models", str(models), "--corpus", str(corpus), "--pipeline-files", "1",
                         "--windows", "1", "--repeats", "1", "--out", str(tmp_path / "out")])
    for key, value in more.items():
        setattr(args, key, value)
    return args


@pytest.fixture
def inputs(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, fixture_audio: Path) -> tuple[Path, Path]:
    """A --models folder (yamnet/, birdnet/) and a corpus of one 10-s recording (2 windows)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "yamnet").symlink_to(yamnet_dir)
    (models / "birdnet").symlink_to(birdnet_dir)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "forest.flac").symlink_to(fixture_audio / "maad_jura_forest_20190522_0600.flac")
    return models, corpus


@pytest.mark.slow
def test_budget_and_one_core_figures_from_real_daemons(tmp_path: Path, inputs: tuple[Path, Path],
                                                       ast_tiny_dir: Path) -> None:
    pytest.importorskip("sklearn")
    models, corpus = inputs
    side = read_sidecar(ast_tiny_dir)
    head = bench_head(BENCH_CACHE, "ast", side.label_count, embedding_size(side))  # cached as the bench caches it
    core = default_core()
    budget = run_budget(bench_args(tmp_path, models, corpus), tmp_path / "work", ast_tiny_dir, head)

    assert budget["config"] == str(REPO / "config.yaml")  # the shipped configuration
    assert [d["config"] for d in budget["daemons"]] == [
        "shipped: YAMNet + BirdNET + head, 1 thread each, side by side", "AST int8-512 + BirdNET + head, 2 threads"]
    allowed = sorted(os.sched_getaffinity(0))
    for d in budget["daemons"]:
        assert d["returncode"] == 0, d.get("log_tail")
        assert d["windows"] == 2 and d["peak_rss_mb"] > 50 and d["analysis_rtf"] > 0 and d["wall_rtf"] > 0
        f = d["features"]  # read back from the config file the daemon ran with
        assert (f["birds_stride_s"], f["quiet_below_dbfs"], f["indices"], f["evidence"], f["privacy"]) == (
            3.0, -75.0, True, True, True)
        assert d["effects"]["windows_with_indices"] == 2  # the indices really ran
        assert set(f["models"]) == {"tagger", "birds"} and all("sha256:" in m for m in f["models"].values())
        assert d["affinity"]["cpus_allowed"] == allowed and d["affinity"]["samples"] > 0  # not pinned
    assert budget["daemons"][0]["features"]["side_by_side"] is True
    assert budget["daemons"][1]["features"]["tagger"] == "ast"
    assert budget["daemons"][1]["features"]["tagger_threads"] == 2
    assert [t["limit"] for t in budget["targets"]] == [0.03, 300.0, 0.08, 450.0]
    assert all(isinstance(t["value"], float) and isinstance(t["met"], bool) for t in budget["targets"])

    oc = budget["one_core"]
    assert oc["core"] == core and oc["cpu"]["core"] == core
    assert [r["config"] for r in oc["runs"]] == ["shipped: YAMNet + BirdNET + head, 1 thread per model, side by side",
                                                 "AST int8-512 + BirdNET + head, 1 thread per model"]
    for r in oc["runs"]:
        d = r["daemon"]
        assert d["returncode"] == 0, d.get("log_tail")
        assert d["features"]["tagger_threads"] == d["features"]["birds_threads"] == 1
        assert d["peak_rss_mb"] > 50 and d["analysis_rtf"] > 0 and d["windows"] == 2
        # every thread the daemon ran (models, store writer, evidence...) could run on the one core only
        aff = d["affinity"]
        assert aff["pinned_as_asked"] and aff["thread_cpu_sets"] == [[core]] and aff["threads_max"] >= 3
        m = r["models"]
        assert m["pinned_as_asked"] and m["affinity"]["sched_getaffinity"] == [core]
        # every thread the timing child had when it read them could run on the one core only (how many it has at that
        # moment depends on whether the side-by-side worker is still alive: CI saw 1, a quiet run 2)
        assert m["affinity"]["thread_cpu_sets"] == [[core]] and m["affinity"]["threads"] >= 1
        ms = {row["model"]: row["ms"]["median"] for row in m["rows"]}
        assert set(ms) == {"tagger", "birds", "head", "indices", "window"} and all(v > 0 for v in ms.values())
        assert m["peak_rss_mb"] > 50

    report = {"mode": "budget", "machine": machine_info(), "audio": {"source": str(corpus)}, "budget": budget}
    md = markdown(report)
    for heading in ("## Budget: this turn's features on, as the daemon (issue 21)", "## One core"):
        assert heading in md
    assert core_text(oc["cpu"]) in md
    assert "BirdNET stride 3 s, quiet floor -75 dBFS, indices on, evidence clips on" in md
    for d in budget["daemons"] + [r["daemon"] for r in oc["runs"]]:
        assert f"| {d['analysis_rtf']} | {d['wall_rtf']} | {d['peak_rss_mb']} |" in md


def test_a_core_this_process_may_not_use_is_refused(tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    models, corpus = inputs
    outside = max(os.sched_getaffinity(0)) + 1
    with pytest.raises(BenchError, match=f"--one-core-cpu {outside}: this process may not run there"):
        run_budget(bench_args(tmp_path, models, corpus, one_core_cpu=outside), tmp_path / "work", tmp_path, tmp_path)
