"""Issue 21's budget and one-core figures (`soundmond bench --budget`, and a section of the full run).

- Budget: the shipped configuration (`--config`, default the repository's config.yaml: its tagger, BirdNET, head,
  threads, side by side) with this turn's features on - the stream-aligned BirdNET grid at the config's stride, the
  quiet floor, acoustic indices, evidence clips (forced on: the shipped config has them off; written beside the
  bench's store) and speech privacy as configured - and the AST int8-512 + BirdNET + head configuration with the same
  features (2 threads, one model after the other: its best configuration). Each runs as the real daemon
  (`soundmond run --source` replaying corpus audio, sensor-like): its RTF (the daemon's own count, compute per
  second of window audio, and the wall RTF) and peak RSS against `TARGETS`.
- One core: the same two daemons pinned to one core (`--one-core-cpu`, default the highest CPU allowed) with one
  thread per model (intra-op threads 1), and their models timed per window in a process pinned to that core
  (`pinned_models`). The core's CPU (family, model, SIMD flags) is read from /proc/cpuinfo; each process's threads'
  allowed CPUs are read from /proc while it runs.

The features each row names are read back from the config file the daemon ran with."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from soundmond.config import LoadedConfig, load_config
from soundmond.speed.audio import source_dir
from soundmond.speed.common import REPO, BenchError
from soundmond.speed.inprocess import PipelineSpec, find_model_dirs
from soundmond.speed.quick import station_sections
from soundmond.speed.report import ms_cell, table
from soundmond.workbench.bench.audio import pipeline_files
from soundmond.workbench.bench.common import TARGETS
from soundmond.workbench.bench.pinning import core_info, core_text, default_core, features_text, run_daemon

logger = logging.getLogger("soundmond.workbench.bench")  # the package's one logger

SHIPPED_CONFIG = REPO / "config.yaml"
FAMILY_NAMES = {"yamnet": "YAMNet", "ast": "AST", "hf": "hf tagger"}


def model_folder(loaded: LoadedConfig, configured: Path, dirs: dict[str, Path], family: str,
                 models_given: bool) -> Path:
    """The config's model folder where it exists and `--models` was not given, else `--models`' folder of `family`."""
    path = loaded.resolve(configured)
    if not models_given and path.is_dir():
        return path
    if family not in dirs:
        raise BenchError(f"no {family} model folder: the config's {configured} is missing and --models has none")
    return dirs[family]


def budget_specs(loaded: LoadedConfig, dirs: dict[str, Path], models_given: bool, ast_int8: Path, ast_head: Path
                 ) -> tuple[PipelineSpec, PipelineSpec]:
    """(the shipped configuration, AST int8-512 + BirdNET + head on 2 threads), both with the config's stride, quiet
    floor, indices and privacy, and evidence clips on."""
    cfg = loaded.config
    sections = station_sections(cfg)
    sections["evidence"] = {**sections["evidence"], "enabled": True}
    birds = (model_folder(loaded, cfg.models.birds.path, dirs, "birdnet", models_given)
             if cfg.models.birds.enabled else None)
    family = cfg.models.tagger.family
    tagger = model_folder(loaded, cfg.models.tagger.path, dirs, family, models_given)
    head = loaded.resolve(cfg.models.head.path) if cfg.models.head.path else None
    threads = cfg.models.tagger.threads
    how = (f"{threads} thread each, side by side" if cfg.models.side_by_side and birds is not None
           else f"{threads} thread(s)")
    name = f"shipped: {FAMILY_NAMES.get(family, family)}{' + BirdNET' if birds else ''}"
    shipped = PipelineSpec(f"{name} + head, {how}", family, tagger, birds, threads, head, cfg.windows.min_rms_dbfs,
                           side_by_side=cfg.models.side_by_side, sections=sections)
    if birds is None:
        raise BenchError("the AST budget configuration needs BirdNET: models.birds.enabled is false in the config")
    ast = PipelineSpec("AST int8-512 + BirdNET + head, 2 threads", "ast", ast_int8, birds, 2, ast_head,
                       cfg.windows.min_rms_dbfs, side_by_side=False, sections=sections)
    return shipped, ast


def one_core(spec: PipelineSpec) -> PipelineSpec:
    """`spec` with one thread per model (side by side as it was: on one core its two threads take turns)."""
    return dataclasses.replace(spec, name=f"{spec.name.split(', ')[0]}, 1 thread per model"
                               + (", side by side" if spec.side_by_side else ""), threads=1)


def pinned_models(spec: PipelineSpec, work: Path, core: int, args: argparse.Namespace) -> dict[str, Any]:
    """`pinned_models` in a child process pinned to `core`: ms per window of each model of `spec`'s daemon config."""
    work.mkdir(parents=True, exist_ok=True)
    config = spec.config(work / "config.yaml", work / "store.db")
    out = work / "models.json"
    cmd = [sys.executable, "-m", "soundmond.workbench.bench.pinned_models", "--config", str(config), "--out", str(out),
           "--windows", str(args.windows), "--repeats", str(args.repeats)]
    if args.corpus is not None:
        cmd += ["--corpus", str(args.corpus.resolve())]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=3600,
                          preexec_fn=functools.partial(os.sched_setaffinity, 0, frozenset({core})))
    if proc.returncode != 0:
        raise BenchError(f"timing the models of '{spec.name}' on core {core} failed ({proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["pinned_as_asked"] = result["affinity"]["thread_cpu_sets"] == [[core]]
    return result


def budget_targets(daemons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """RTF (the daemon's own count) and peak RSS of the two budget daemons against issue 21's limits."""
    out = []
    for d, rtf_key, rss_key in zip(daemons, ("pipeline_rtf_yamnet_max", "pipeline_rtf_ast_max"),
                                   ("daemon_peak_rss_yamnet_mb_max", "daemon_peak_rss_ast_mb_max"), strict=True):
        for what, value, key in (("daemon RTF", d.get("analysis_rtf"), rtf_key),
                                 ("daemon peak RSS MB", d.get("peak_rss_mb"), rss_key)):
            limit = TARGETS[key]
            out.append({"target": f"{what}, {d['config']} (this turn's features on, sensor-like)", "value": value,
                        "limit": limit, "met": None if value is None else value <= limit})
    return out


def run_budget(args: argparse.Namespace, tmp: Path, ast_int8: Path, ast_head: Path) -> dict[str, Any]:
    """The budget daemons (2 cores as the machine has them) and the one-core daemons and model timings."""
    config = args.config or SHIPPED_CONFIG
    loaded = load_config(config)
    dirs = find_model_dirs(args.models)
    shipped, ast = budget_specs(loaded, dirs, args.models is not None, ast_int8, ast_head)
    files = pipeline_files(args.corpus, args.pipeline_files)
    if not files:
        raise BenchError("no audio files for the budget daemons: pass --corpus DIR")
    src = source_dir(files, tmp / "budget-audio")
    if not hasattr(os, "sched_setaffinity"):
        raise BenchError("the one-core figures pin processes with sched_setaffinity, which this OS lacks - run "
                         "`soundmond bench --budget` on Linux")
    core = default_core() if args.one_core_cpu is None else args.one_core_cpu
    if core not in os.sched_getaffinity(0):
        raise BenchError(f"--one-core-cpu {core}: this process may not run there (allowed: "
                         f"{sorted(os.sched_getaffinity(0))}) - pick one of those")
    report: dict[str, Any] = {"config": str(loaded.path or config), "files": len(files), "daemons": [],
                              "one_core": {"core": core, "cpu": core_info(core), "runs": []}}
    for k, spec in enumerate((shipped, ast)):
        logger.info("budget: %s as the daemon", spec.name)
        report["daemons"].append(run_daemon(spec, src, tmp / f"budget-{k}"))
    for k, spec in enumerate((one_core(shipped), one_core(ast))):
        logger.info("one core (%d): %s", core, spec.name)
        daemon = run_daemon(spec, src, tmp / f"one-core-{k}", cpus=frozenset({core}))
        models = pinned_models(spec, tmp / f"one-core-models-{k}", core, args)
        report["one_core"]["runs"].append({"config": spec.name, "daemon": daemon, "models": models})
    report["targets"] = budget_targets(report["daemons"])
    return report


def _ms(models: dict[str, Any], key: str) -> str:
    rows = [r for r in models["rows"] if r["model"] == key]
    return ms_cell(rows[0]["ms"]) if rows else "-"


def _evidence_cell(effects: dict[str, Any]) -> str:
    """"32 / 3 (per_species_hour 3)": clips written / skipped, and why they were skipped."""
    counts = effects.get("evidence", {})
    why = ", ".join(f"{k} {v}" for k, v in sorted(effects.get("evidence_skipped", {}).items()))
    return f"{counts.get('written', 0)} / {counts.get('skipped', 0)}" + (f" ({why})" if why else "")


def budget_markdown(b: dict[str, Any]) -> list[str]:
    """The budget and one-core sections of a report."""
    lines = ["## Budget: this turn's features on, as the daemon (issue 21)", "",
             f"`soundmond run --source` (sensor-like, fresh process each) replaying {b['files']} corpus files; "
             f"configuration from {b['config']}, evidence clips forced on. Features as read back from the config "
             "each daemon ran with:", ""]
    lines += [f"- {d['config']}: {features_text(d['features'])}" for d in b["daemons"]] + [""]
    models = sorted({m for d in b["daemons"] for m in d["features"].get("models", {}).values()})
    lines += ["Model folders: " + "; ".join(models), ""]
    lines += table(["configuration", "daemon RTF (compute)", "wall RTF", "peak RSS MB", "windows", "quiet windows",
                    "windows with indices", "evidence clips written / skipped (why)", "load avg before -> after",
                    "exit"],
                   [[d["config"], d.get("analysis_rtf"), d.get("wall_rtf"), d.get("peak_rss_mb"), d.get("windows"),
                     d["effects"].get("quiet_windows"), d["effects"].get("windows_with_indices"),
                     _evidence_cell(d["effects"]),
                     f"{d['loadavg_before'][0]} -> {d['loadavg_after'][0]}", d.get("returncode")]
                    for d in b["daemons"]])
    lines += table(["target", "measured", "limit", "met"],
                   [[t["target"], t["value"], t["limit"], {True: "yes", False: "NO", None: "-"}[t["met"]]]
                    for t in b["targets"]])
    oc = b["one_core"]
    lines += ["## One core", "",
              f"Pinned to {core_text(oc['cpu'])} (sched_setaffinity before the process starts; every thread's "
              "Cpus_allowed_list read from /proc while it ran). One thread per model (intra-op threads 1); the "
              "daemon and, separately, its models timed per 5-s window in a process pinned the same way.", ""]
    lines += table(["configuration", "daemon RTF (compute)", "wall RTF", "daemon peak RSS MB", "tagger ms/window",
                    "BirdNET ms/window", "head ms", "indices ms", "whole analysis ms/window",
                    "threads' CPUs (daemon / models)", "load avg before -> after"],
                   [[r["config"], r["daemon"].get("analysis_rtf"), r["daemon"].get("wall_rtf"),
                     r["daemon"].get("peak_rss_mb"), _ms(r["models"], "tagger"), _ms(r["models"], "birds"),
                     _ms(r["models"], "head"), _ms(r["models"], "indices"), _ms(r["models"], "window"),
                     f"{r['daemon']['affinity']['thread_cpu_sets']} / {r['models']['affinity']['thread_cpu_sets']}",
                     f"{r['daemon']['loadavg_before'][0]} -> {r['daemon']['loadavg_after'][0]}"]
                    for r in oc["runs"]])
    birds = [row for r in oc["runs"] for row in r["models"]["rows"] if row["model"] == "birds"]
    if birds:
        lines += [f"BirdNET at stride {birds[0]['stride_s']:g} s: {birds[0]['chunks_per_window']} chunks per window "
                  "(the stream grid over consecutive windows).", ""]
    return lines
