"""The full comparison and the soak of `soundmond bench` (its arguments and `--quick`: `soundmond.speed`)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from soundmond.models.sidecar import read_sidecar
from soundmond.speed.audio import audio_folder, corpus_files, load_windows, pick_files, source_dir
from soundmond.speed.common import DEFAULT_CORPUS, BenchError
from soundmond.speed.inprocess import PipelineSpec, bench_pipeline, find_model_dirs
from soundmond.speed.measure import machine_info
from soundmond.speed.processes import bench_daemon
from soundmond.workbench.bench.artefacts import bench_head, embedding_size, ensure_ast_models
from soundmond.workbench.bench.audio import pipeline_files
from soundmond.workbench.bench.budget import run_budget
from soundmond.workbench.bench.common import BENCH_CACHE, SIDE_BY_SIDE_SUFFIX, TARGETS
from soundmond.workbench.bench.hf_birds import hf_birds_markdown, run_hf_birds
from soundmond.workbench.bench.models import bench_ast, bench_birdnet, bench_gemm, bench_yamnet
from soundmond.workbench.bench.processes import bench_throughput, run_soak
from soundmond.workbench.bench.report import check_targets, collect_levers, markdown
from soundmond.workbench.bench.shared_audio import bench_shared_audio

logger = logging.getLogger("soundmond.workbench.bench")  # the package's one logger, named as before the split


def run_full(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    dirs = find_model_dirs(args.models)
    if "yamnet" not in dirs:
        raise BenchError("the full benchmark needs a yamnet/ folder in --models")
    yamnet, birdnet = dirs["yamnet"], dirs["birdnet"]
    report: dict[str, Any] = {"mode": "full", "machine": machine_info(), "targets": TARGETS}
    checkpoint, ast = ensure_ast_models(args.ast_size)
    audio = load_windows(args.corpus, args.windows)
    agree = load_windows(args.corpus, args.agree_windows)
    report["audio"] = {"source": audio.source, "timing_windows": audio.files, "agreement_windows": len(agree.files),
                       "needs": f"the shared corpus at {DEFAULT_CORPUS} (else the test fixtures are used)"}
    report["settings"] = {"threads": args.threads, "repeats": args.repeats, "ast_size": args.ast_size,
                          "short": args.short,
                          "models": {"yamnet": str(yamnet), "birdnet": str(birdnet),
                                     **{k: str(v) for k, v in ast.items()}}}
    logger.info("AST: notebook path vs ONNX variants (%d windows x %d repeats)", len(audio.files), args.repeats)
    report["ast"] = bench_ast(checkpoint, ast, audio, agree, threads=args.threads, repeats=args.repeats,
                              size=args.ast_size)
    report["gemm"] = bench_gemm(args.threads)
    logger.info("BirdNET: ONNX vs TFLite")
    report["birdnet"] = bench_birdnet(birdnet, audio, agree, threads=args.threads, repeats=args.repeats)
    logger.info("YAMNet: ONNX vs TFLite")
    report["yamnet"] = bench_yamnet(yamnet, audio, agree, threads=args.threads, repeats=args.repeats)

    ast_side = read_sidecar(ast["int8-512"])
    head = bench_head(BENCH_CACHE, "ast", ast_side.label_count, embedding_size(ast_side))
    specs = []
    for t in (1, 2):
        sfx = ", 1 thread" if t == 1 else ", 2 threads"
        specs.append(PipelineSpec("AST int8-512 + BirdNET + head" + sfx, "ast", ast["int8-512"], birdnet, t, head))
        specs.append(PipelineSpec("AST fp32-1024 + BirdNET + head" + sfx, "ast", ast["fp32-1024"], birdnet, t, head))
        specs.append(PipelineSpec("YAMNet + BirdNET + head" + sfx, "yamnet", yamnet, birdnet, t))
    sbs = SIDE_BY_SIDE_SUFFIX
    specs.append(PipelineSpec("AST int8-512 + BirdNET + head" + sbs, "ast", ast["int8-512"], birdnet, 1, head,
                              side_by_side=True))
    specs.append(PipelineSpec("AST fp32-1024 + BirdNET + head" + sbs, "ast", ast["fp32-1024"], birdnet, 1, head,
                              side_by_side=True))
    specs.append(PipelineSpec("YAMNet + BirdNET + head" + sbs, "yamnet", yamnet, birdnet, 1, side_by_side=True))
    specs.append(PipelineSpec("AST int8-512 + BirdNET + head, 2 threads, RMS gate", "ast", ast["int8-512"], birdnet,
                              2, head, args.gate_dbfs))
    specs.append(PipelineSpec("YAMNet + BirdNET + head, 2 threads, RMS gate", "yamnet", yamnet, birdnet, 2, None,
                              args.gate_dbfs))
    files = pipeline_files(args.corpus, args.pipeline_files)
    logger.info("pipeline: %d configurations on %d files", len(specs), len(files))
    report["pipeline"] = bench_pipeline(specs, files, tmp, repeats=1)
    report["pipeline_note"] = ("in process, as the daemon builds it (build_session: models + head + aggregation + "
                               "alert rules) plus one synchronous store transaction per window; decoding excluded. "
                               "RTF = compute s per s of window audio, as the daemon counts it (a short file's tail "
                               "window overlaps the one before; live audio has no overlap)")
    report["shared_audio"] = bench_shared_audio(files, args.repeats)
    logger.info("daemon processes: peak RSS, load time")
    src = source_dir(files, tmp / "daemon-audio")
    report["daemon"] = []
    for s in specs:  # one after the other on 2 threads, and side by side on 1 thread each (AST fp32: that one only)
        fp32 = s.name.startswith("AST fp32")
        wanted = s.side_by_side or (s.threads == 2 and not fp32)
        if wanted and s.min_rms_dbfs is None and not (args.short and fp32):
            report["daemon"].append(bench_daemon(s, src, tmp, sensor_like=True)[0])
            report["daemon"].append(bench_daemon(s, src, tmp, sensor_like=False)[0])
    tfiles = pick_files(corpus_files(audio_folder(args.corpus)[0]), args.throughput_files)
    report["throughput"] = []
    cores = os.cpu_count() or 1
    for s in specs:
        if (s.min_rms_dbfs is None and not s.side_by_side and not s.name.startswith("AST fp32")
                and not (args.short and s.family == "ast")):
            if s.threads == min(2, cores):
                logger.info("throughput: %s, 1 worker", s.name)
                report["throughput"].append(bench_throughput(s, tfiles, tmp, 1))
            if s.threads == 1 and cores > 1:
                logger.info("throughput: %s, %d workers", s.name, cores)
                report["throughput"].append(bench_throughput(s, tfiles, tmp, cores))
    logger.info("budget: this turn's features as the daemon, and one core")
    report["budget"] = run_budget(args, tmp, ast["int8-512"], head)
    report["levers"] = collect_levers(report)
    report["target_checks"] = check_targets(report)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def run_soak_command(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    dirs = find_model_dirs(args.models)
    files = corpus_files(audio_folder(args.corpus)[0])
    if args.soak_tagger == "ast":
        _, ast = ensure_ast_models(args.ast_size)
        side = read_sidecar(ast["int8-512"])
        head = bench_head(BENCH_CACHE, "ast", side.label_count, embedding_size(side))
        # the AST's own best configuration (it dominates a window: 2 threads one model after the other beat 1 thread
        # each side by side); the YAMNet soak covers the side-by-side worker thread
        spec = PipelineSpec("AST int8-512 + BirdNET + head, 2 threads", "ast", ast["int8-512"], dirs["birdnet"], 2,
                            head, side_by_side=False)
    else:  # the default configuration: 1 thread per model, side by side (its worker thread is soaked too)
        spec = PipelineSpec("YAMNet + BirdNET + head" + SIDE_BY_SIDE_SUFFIX, "yamnet", dirs["yamnet"], dirs["birdnet"],
                            1, side_by_side=True)
    report: dict[str, Any] = {"mode": "soak", "machine": machine_info(),
                              "audio": {"source": audio_folder(args.corpus)[0]}}
    report.update(run_soak(spec, files, tmp, min_audio_s=args.soak_seconds,
                           warmup_s=min(60.0, args.soak_seconds / 60)))
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def run_budget_command(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """`--budget`: the budget and one-core sections alone (`soundmond.workbench.bench.budget`)."""
    _, ast = ensure_ast_models(args.ast_size, variants=("int8-512",))
    side = read_sidecar(ast["int8-512"])
    head = bench_head(BENCH_CACHE, "ast", side.label_count, embedding_size(side))
    report: dict[str, Any] = {"mode": "budget", "machine": machine_info(), "targets": TARGETS,
                              "audio": {"source": audio_folder(args.corpus)[0]}}
    report["budget"] = run_budget(args, tmp, ast["int8-512"], head)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def run_workbench(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, Any], str, str]:
    """The full run, the soak with `args.soak`, the hf bird model's RSS with `args.hf_birds`, the budget with
    `args.budget`: (the report, its markdown, the file stem of the report)."""
    if args.soak:
        report = run_soak_command(args, tmp)
        return report, markdown(report), "soak"
    if getattr(args, "hf_birds", False):
        report = run_hf_birds(args, tmp)
        return report, hf_birds_markdown(report), "bench-hf-birds"
    if getattr(args, "budget", False):
        report = run_budget_command(args, tmp)
        return report, markdown(report), "bench-budget"
    report = run_full(args, tmp)
    return report, markdown(report), "bench"
