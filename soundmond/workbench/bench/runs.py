"""`soundmond bench`: its arguments and the three runs (`--quick` on a sensor, the full comparison, `--soak`)."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from soundmond.workbench.bench.artefacts import _embedding_size, bench_head, ensure_ast_models, find_model_dirs
from soundmond.workbench.bench.audio import (
    _synthetic_files,
    audio_folder,
    corpus_files,
    load_windows,
    pick_files,
    pipeline_files,
    source_dir,
)
from soundmond.workbench.bench.common import (
    BENCH_CACHE,
    DEFAULT_CORPUS,
    MARGIN_RTF,
    SIDE_BY_SIDE_SUFFIX,
    TARGETS,
    WINDOW_S,
    BenchError,
)
from soundmond.workbench.bench.measure import Variant, _rows, _timed, machine_info, time_interleaved
from soundmond.workbench.bench.models import (
    _birds_runner,
    _tag_runner,
    bench_ast,
    bench_birdnet,
    bench_gemm,
    bench_yamnet,
)
from soundmond.workbench.bench.pipeline import PipelineSpec, bench_pipeline, bench_shared_audio
from soundmond.workbench.bench.processes import bench_daemon, bench_throughput, run_soak
from soundmond.workbench.bench.report import check_targets, collect_levers, markdown, write_report
from soundmond.workbench.bench.startup import keep_up_advice

logger = logging.getLogger("soundmond.workbench.bench")  # the package's one logger, named as before the split


def run_full(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    dirs = find_model_dirs(args.models)
    if "yamnet" not in dirs:
        raise BenchError("the full benchmark needs a yamnet/ folder in --models")
    yamnet, birdnet = dirs["yamnet"], dirs["birdnet"]
    try:
        import ai_edge_litert  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise BenchError(f"the full benchmark needs the export extra ({exc.name} is missing): pip install "
                         "'soundmond[export]', or run `soundmond bench --quick` on a sensor") from exc
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

    from soundmond.models.sidecar import read_sidecar

    ast_side = read_sidecar(ast["int8-512"])
    head = bench_head(BENCH_CACHE, "ast", ast_side.label_count, _embedding_size(ast_side))
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
    report["levers"] = collect_levers(report)
    report["target_checks"] = check_targets(report)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def run_quick(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The configured models only (numpy + onnxruntime): load time, ms per window at 1 / 2 threads, pipeline RTF,
    daemon peak RSS; whether this machine keeps up with a margin, and suggested settings."""
    from soundmond.config import load_config
    from soundmond.models.birds import BirdnetModel
    from soundmond.models.sidecar import read_sidecar
    from soundmond.models.taggers import load_tagger

    loaded = load_config(args.config)
    cfg = loaded.config
    report: dict[str, Any] = {"mode": "quick", "machine": machine_info(), "config": str(loaded.path or "defaults")}
    tagger_path = loaded.resolve(cfg.models.tagger.path)
    birds_path = loaded.resolve(cfg.models.birds.path) if cfg.models.birds.enabled else None
    head_path = loaded.resolve(cfg.models.head.path) if cfg.models.head.path else None
    audio = load_windows(args.corpus, args.windows)
    report["audio"] = {"source": audio.source, "windows": audio.files}
    cores = os.cpu_count() or 1
    choices = sorted({1, min(2, cores), cfg.models.tagger.threads})
    variants = []
    for t in choices:
        tcfg = cfg.models.tagger.model_copy(update={"threads": t, "path": tagger_path})
        tagger, load_s = _timed(functools.partial(load_tagger, tagger_path, tcfg))
        variants.append(Variant(f"tagger {cfg.models.tagger.family} ({tagger_path.name}), {t} thread(s)",
                                _tag_runner(tagger, audio.at16k), load_s,
                                {"model": "tagger", "threads": t}))
        if birds_path is not None:
            bcfg = cfg.models.birds.model_copy(update={"threads": t, "path": birds_path})
            birds, load_b = _timed(functools.partial(BirdnetModel, birds_path, bcfg))
            variants.append(Variant(f"BirdNET ({birds_path.name}), {t} thread(s)",
                                    _birds_runner(birds, audio.at48k), load_b,
                                    {"model": "birds", "threads": t}))
    if args.models is not None:  # alternative taggers to choose from
        for key, folder in find_model_dirs(args.models).items():
            if not key.startswith("tagger:") or folder.resolve() == tagger_path.resolve():
                continue
            family = read_sidecar(folder).family
            tcfg = cfg.models.tagger.model_copy(update={"family": family, "path": folder})
            alt, load_a = _timed(functools.partial(load_tagger, folder, tcfg))
            variants.append(Variant(f"alternative tagger {family} ({folder.name}), {tcfg.threads} thread(s)",
                                    _tag_runner(alt, audio.at16k), load_a,
                                    {"model": "alternative", "threads": tcfg.threads, "path": str(folder)}))
    times, _ = time_interleaved(variants, len(audio.at16k), args.repeats)
    report["models"] = _rows(times, variants, None, "5-s window", WINDOW_S)
    files = audio.paths or _synthetic_files(tmp, 2)
    sbs = " each, side by side" if cfg.models.side_by_side and birds_path is not None else ""
    specs = [PipelineSpec(f"configured, {t} thread(s){sbs}", cfg.models.tagger.family, tagger_path, birds_path, t,
                          head_path, cfg.windows.min_rms_dbfs, side_by_side=cfg.models.side_by_side) for t in choices]
    try:
        report["pipeline"] = bench_pipeline(specs, files, tmp, repeats=1)
    except Exception as exc:  # e.g. no head for this tagger: say so, the model figures still stand
        logger.exception("the pipeline could not be built")
        report["pipeline"] = []
        report["pipeline_error"] = f"{type(exc).__name__}: {exc}"
    configured = next((s for s in specs if s.threads == cfg.models.tagger.threads), specs[0])
    report["daemon"] = [bench_daemon(configured, source_dir(files, tmp / "daemon-audio"), tmp)[0]]
    report["verdict"] = quick_verdict(report, cfg)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def quick_verdict(report: dict[str, Any], cfg: Any) -> dict[str, Any]:
    pipe = report.get("pipeline") or []
    suggestions = []
    if pipe:
        conf = next((r for r in pipe if r["threads"] == cfg.models.tagger.threads), pipe[0])
        rtf = float(conf["rtf"])
        best = min(pipe, key=lambda r: r["rtf"])
        if best["threads"] != conf["threads"] and best["rtf"] < 0.9 * rtf:
            suggestions.append(f"models.tagger.threads / models.birds.threads: {best['threads']} (pipeline RTF "
                               f"{rtf:.3f} -> {best['rtf']:.3f})")
    else:
        rows = [r for r in report["models"]
                if r["threads"] == cfg.models.tagger.threads and r["model"] != "alternative"]
        rtf = sum(float(r["rtf"]) for r in rows)
    tagger_ms = [float(r["ms"]["median"]) for r in report["models"]
                 if r["model"] == "tagger" and r["threads"] == cfg.models.tagger.threads]
    for r in report["models"]:
        if r["model"] == "alternative" and tagger_ms and float(r["ms"]["median"]) < 0.8 * tagger_ms[0]:
            suggestions.append(f"tagger {r['path']}: {r['ms']['median']:.0f} ms per window vs {tagger_ms[0]:.0f} ms "
                               "(check its accuracy before switching)")
    hop_share = rtf * cfg.windows.length_s / cfg.windows.hop_s
    if hop_share <= MARGIN_RTF:
        text = f"keeps up: RTF {rtf:.3f}, a {1 / hop_share:.1f}x margin over real time"
    elif hop_share <= 1.0:
        text = f"keeps up with little margin: RTF {rtf:.3f} ({1 / hop_share:.1f}x)"
        suggestions.append(keep_up_advice(hop_share, cfg))
    else:
        text = f"CANNOT keep up: RTF {rtf:.3f} (windows would be dropped from live audio)"
        suggestions.append(keep_up_advice(hop_share, cfg))
    return {"rtf": round(rtf, 4), "share_of_real_time": round(hop_share, 4), "keeps_up": hop_share <= 1.0,
            "margin_ok": hop_share <= MARGIN_RTF, "text": text, "suggestions": suggestions}


# --- command line ---------------------------------------------------------------------------------------------------


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="only the configured models (numpy + onnxruntime; for a sensor): keeps up? which settings?")
    mode.add_argument("--soak", action="store_true",
                      help="replay >= --soak-seconds of audio through `soundmond run`; RSS and open fds over time")
    p.add_argument("--config", type=Path, default=None, help="--quick: the daemon config whose models are measured")
    p.add_argument("--out", type=Path, default=Path("reports/bench"), help="report folder (default reports/bench)")
    p.add_argument("--corpus", type=Path, default=None,
                   help=f"real audio (default {DEFAULT_CORPUS}; without it the test fixtures)")
    p.add_argument("--models", type=Path, default=None,
                   help="folder of model folders (yamnet/, birdnet/; --quick: alternatives to time); default models/ "
                        "or .cache/test-models/")
    p.add_argument("--ast-size", choices=("full", "tiny"), default="full",
                   help="random AST checkpoint size (full = the real architecture; tiny for CI)")
    p.add_argument("--threads", type=int, default=2, help="threads per session in the per-model comparisons")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the windows (after one warm-up pass)")
    p.add_argument("--windows", type=int, default=8, help="5-s windows timed per model")
    p.add_argument("--agree-windows", type=int, default=24, help="5-s windows for the agreement figures")
    p.add_argument("--pipeline-files", type=int, default=16, help="corpus files replayed for the pipeline/daemon runs")
    p.add_argument("--throughput-files", type=int, default=60, help="corpus files replayed for batch throughput")
    p.add_argument("--gate-dbfs", type=float, default=-35.0, help="RMS gate level for the gate lever")
    p.add_argument("--soak-seconds", type=float, default=3600.0, help="--soak: audio replayed at least (s)")
    p.add_argument("--soak-tagger", choices=("yamnet", "ast"), default="yamnet",
                   help="--soak: YAMNet + BirdNET (1 thread each, side by side), or the AST int8-512 + BirdNET "
                        "(2 threads, one after the other; needs the cached AST exports)")
    p.add_argument("--short", action="store_true",
                   help="CI: one daemon process per target configuration, throughput of YAMNet + BirdNET only")
    p.add_argument("--keep-tmp", action="store_true", help="keep the scratch folder (configs, daemon logs, stores)")


def run_soak_command(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    dirs = find_model_dirs(args.models)
    files = corpus_files(audio_folder(args.corpus)[0])
    if args.soak_tagger == "ast":
        from soundmond.models.sidecar import read_sidecar

        _, ast = ensure_ast_models(args.ast_size)
        side = read_sidecar(ast["int8-512"])
        head = bench_head(BENCH_CACHE, "ast", side.label_count, _embedding_size(side))
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


def run_bench(args: argparse.Namespace) -> int:
    """`soundmond bench`: exit 0 with the report written, 2 on a configuration error, 3 when models or tools are
    missing (the message says which)."""
    from soundmond.config import ConfigError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    tmp = Path(tempfile.mkdtemp(prefix="soundmond-bench-"))
    try:
        if args.quick:
            report, stem = run_quick(args, tmp), "bench-quick"
        elif args.soak:
            report, stem = run_soak_command(args, tmp), "soak"
        else:
            report, stem = run_full(args, tmp), "bench"
    except ConfigError as exc:
        print(f"soundmond bench: {exc}", file=sys.stderr)
        return 2
    except BenchError as exc:
        print(f"soundmond bench: {exc}", file=sys.stderr)
        return 3
    finally:
        if args.keep_tmp:
            logger.info("scratch files kept in %s", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    j, md = write_report(report, args.out, stem)
    print(markdown(report))
    print(f"\nwritten: {j} and {md}", file=sys.stderr)
    return 0
