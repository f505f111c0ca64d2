"""`soundmond bench --quick` (a sensor: numpy + onnxruntime): the configured models' load time and milliseconds per
window at 1 and 2 threads, the whole pipeline's RTF, the peak RSS of a real `soundmond run` process, and a verdict
(keeps up with a margin / with little margin / cannot keep up) with suggested settings."""

from __future__ import annotations

import argparse
import functools
import logging
import os
from pathlib import Path
from typing import Any

from soundmond.config import Config, FileSourceConfig, load_config
from soundmond.models.birds import BirdnetModel
from soundmond.models.sidecar import read_sidecar
from soundmond.models.taggers import load_tagger
from soundmond.speed.audio import load_windows, source_dir, synthetic_files
from soundmond.speed.common import MARGIN_RTF, WINDOW_S
from soundmond.speed.inprocess import (
    PipelineSpec,
    bench_pipeline,
    find_model_dirs,
    grid_birds_runner,
    grid_chunks,
    tag_runner,
)
from soundmond.speed.measure import Variant, machine_info, time_interleaved, timed, timing_rows
from soundmond.speed.processes import bench_daemon
from soundmond.speed.startup import keep_up_advice

logger = logging.getLogger(__name__)


def run_quick(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The configured models only (numpy + onnxruntime): load time, ms per window at 1 / 2 threads, pipeline RTF,
    daemon peak RSS; whether this machine keeps up with a margin, and suggested settings."""
    loaded = load_config(args.config)
    cfg = loaded.config
    report: dict[str, Any] = {"mode": "quick", "machine": machine_info(), "config": str(loaded.path or "defaults")}
    tagger_path = loaded.resolve(cfg.models.tagger.path)
    birds_path = loaded.resolve(cfg.models.birds.path) if cfg.models.birds.enabled else None
    head_path = loaded.resolve(cfg.models.head.path) if cfg.models.head.path else None
    recordings = loaded.resolve(cfg.source.path) if isinstance(cfg.source, FileSourceConfig) else None
    audio = load_windows(args.corpus, args.windows, recordings)
    report["audio"] = {"source": audio.source, "windows": audio.files}
    cores = os.cpu_count() or 1
    choices = sorted({1, min(2, cores), cfg.models.tagger.threads})
    variants = []
    for t in choices:
        tcfg = cfg.models.tagger.model_copy(update={"threads": t, "path": tagger_path})
        tagger, load_s = timed(functools.partial(load_tagger, tagger_path, tcfg))
        variants.append(Variant(f"tagger {cfg.models.tagger.family} ({tagger_path.name}), {t} thread(s)",
                                tag_runner(tagger, audio.at16k), load_s,
                                {"model": "tagger", "threads": t}))
        if birds_path is not None:
            bcfg = cfg.models.birds.model_copy(update={"threads": t, "path": birds_path})
            birds, load_b = timed(functools.partial(BirdnetModel, birds_path, bcfg))
            chunks = grid_chunks(birds, audio.at48k, cfg.windows.hop_s)
            per_window = sum(map(len, chunks)) / max(1, len(chunks))
            variants.append(Variant(f"BirdNET ({birds_path.name}), {t} thread(s), stride {bcfg.stride_s:g} s: "
                                    f"{per_window:.2f} chunks per window", grid_birds_runner(birds, chunks), load_b,
                                    {"model": "birds", "threads": t, "stride_s": bcfg.stride_s,
                                     "chunks_per_window": round(per_window, 3)}))
    if args.models is not None:  # alternative taggers to choose from
        for key, folder in find_model_dirs(args.models).items():
            if not key.startswith("tagger:") or folder.resolve() == tagger_path.resolve():
                continue
            family = read_sidecar(folder).family
            tcfg = cfg.models.tagger.model_copy(update={"family": family, "path": folder})
            alt, load_a = timed(functools.partial(load_tagger, folder, tcfg))
            variants.append(Variant(f"alternative tagger {family} ({folder.name}), {tcfg.threads} thread(s)",
                                    tag_runner(alt, audio.at16k), load_a,
                                    {"model": "alternative", "threads": tcfg.threads, "path": str(folder)}))
    times, _ = time_interleaved(variants, len(audio.at16k), args.repeats)
    report["models"] = timing_rows(times, variants, None, "5-s window", WINDOW_S)
    report["birds_stride"] = stride_cost(report["models"], cfg)
    files = audio.paths or synthetic_files(tmp, 2)
    sbs = " each, side by side" if cfg.models.side_by_side and birds_path is not None else ""
    station = station_sections(cfg)
    sbs += f", stride {cfg.models.birds.stride_s:g} s" if birds_path is not None else ""
    sbs += ", indices " + ("on" if cfg.indices.enabled else "off")
    sbs += ", evidence clips " + ("on" if cfg.evidence.enabled else "off")
    specs = [PipelineSpec(f"configured, {t} thread(s){sbs}", cfg.models.tagger.family, tagger_path, birds_path, t,
                          head_path, cfg.windows.min_rms_dbfs, side_by_side=cfg.models.side_by_side,
                          sections=station) for t in choices]
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


def station_sections(cfg: Config) -> dict[str, Any]:
    """What of the station's configuration changes the daemon's cost and memory, for the bench's daemon: the bird
    stride and thresholds, the quiet floor, acoustic indices, evidence clips (written beside the bench's store) and
    speech privacy."""
    birds = cfg.models.birds
    return {
        "models": {"birds": {"stride_s": birds.stride_s, "sensitivity": birds.sensitivity,
                             "min_confidence": birds.min_confidence}},
        "windows": {"quiet_below_dbfs": cfg.windows.quiet_below_dbfs},
        "indices": cfg.indices.model_dump(mode="json"),
        "evidence": cfg.evidence.model_dump(mode="json"),
        "privacy": cfg.privacy.model_dump(mode="json"),
    }


def stride_cost(models: list[dict[str, Any]], cfg: Config) -> dict[str, Any] | None:
    """What the configured `models.birds.stride_s` costs per window at the configured threads: chunks (hop / stride
    on a stream), milliseconds, and a sentence for the report."""
    rows = [r for r in models if r["model"] == "birds" and r["threads"] == cfg.models.birds.threads] or [
        r for r in models if r["model"] == "birds"]
    if not rows:
        return None
    r = rows[0]
    per_window, ms = float(r["chunks_per_window"]), float(r["ms"]["median"])
    per_chunk = ms / per_window if per_window else 0.0
    text = (f"BirdNET at models.birds.stride_s {r['stride_s']:g} s: {per_window:.2f} chunks per "
            f"{cfg.windows.hop_s:g}-s hop, {ms:.0f} ms per window ({per_chunk:.0f} ms per chunk, {r['threads']} "
            "thread(s)); each halving of the stride doubles it")
    return {"stride_s": r["stride_s"], "chunks_per_window": per_window, "ms_per_window": round(ms, 1),
            "ms_per_chunk": round(per_chunk, 1), "threads": r["threads"], "text": text}


def quick_verdict(report: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """Keeps up (with a margin)? From the configured pipeline's RTF (else the models' own), plus suggested settings:
    a better thread count, a faster alternative tagger, and `keep_up_advice` when the margin is thin."""
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
