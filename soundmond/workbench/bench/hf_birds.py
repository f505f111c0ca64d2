"""`soundmond bench --hf-birds`: the daemon's peak RSS with a Hugging Face bird model (`models.birds.family: hf`) the
size of the seed study's Wav2Vec2-base classifier, beside YAMNet, fp32 and int8, as a sensor runs it.

The model: a Wav2Vec2-base-shaped audio classifier (hidden 768, 12 layers, 12 heads, intermediate 3072; 50 made-up
labels like `dima806/bird_sounds_classification`) with RANDOM weights (`export.hf_model.make_random_checkpoint`:
same weights and compute as the real model, meaningless predictions), exported with `python -m export hf` (and
`--int8`) once and cached by the exporter's source checksum in `.cache/bench-models/hf-wav2vec2-<size>-<hash>/`.
`--hf-size tiny` (hidden 32) checks the plumbing in seconds.

Each configuration is a fresh `soundmond run --source` process, sensor-like (the export extra made unimportable:
`soundmond.speed.processes.bench_daemon`, as every daemon row of the benchmark), on replayed corpus audio with the
default threads (1 per model, side by side); the head is the shipped YAMNet tagger-only head (an hf bird model gives
no BirdNET embedding). YAMNet + BirdNET is measured in the same run for comparison. Report: `bench-hf-birds.json` and
`.md` (the daemon table of every report, and the hf model's size and RSS beside BirdNET's).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from soundmond.models.sidecar import ModelFolderError, read_sidecar, verify_folder
from soundmond.speed.audio import source_dir
from soundmond.speed.common import DEFAULT_CORPUS, BenchError
from soundmond.speed.inprocess import PipelineSpec, find_model_dirs
from soundmond.speed.measure import machine_info
from soundmond.speed.processes import bench_daemon
from soundmond.speed.report import header_lines, pipeline_and_daemon_lines, table
from soundmond.workbench.bench.artefacts import ensure_checkpoint, run_logged, source_hash
from soundmond.workbench.bench.audio import pipeline_files
from soundmond.workbench.bench.common import BENCH_CACHE, SIDE_BY_SIDE_SUFFIX

logger = logging.getLogger("soundmond.workbench.bench")  # the package's one logger

HF_EXPORT_SOURCES = ("export/hf_model.py", "export/common.py", "export/ast_model.py", "soundmond/models/sidecar.py",
                     "soundmond/models/hf_features.py")
HF_LABELS = 50  # as the seed study's model
QUANTIZATIONS = ("fp32", "int8")
SIZES = {"base": "Wav2Vec2-base-sized (hidden 768, 12 layers, 12 heads, intermediate 3072)",
         "tiny": "tiny (hidden 32, 2 layers; plumbing only)"}


def ensure_hf_bird_models(size: str, cache: Path = BENCH_CACHE) -> dict[str, Path]:
    """The random Wav2Vec2 bird classifier of `size` (base / tiny, seed 0, 50 labels) exported fp32 and int8 with
    `python -m export hf`, made once and cached by the exporter's source checksum: {"fp32": folder, "int8": folder}."""
    key = source_hash(HF_EXPORT_SOURCES, size, "seed0", str(HF_LABELS))
    root = cache / f"hf-wav2vec2-{size}-{key}"
    checkpoint = ensure_checkpoint(root, "import sys; from export.hf_model import make_random_checkpoint; "
                                   "make_random_checkpoint(sys.argv[1], 'wav2vec2', size=sys.argv[2], "
                                   f"labels=[f'Species {{i:02d}}' for i in range({HF_LABELS})])",
                                   size, f"random {size} Wav2Vec2 bird checkpoint")
    folders = {}
    for quant in QUANTIZATIONS:
        out = root / quant
        try:
            verify_folder(out, "hf")
        except ModelFolderError:
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, "-m", "export", "hf", "--model", str(checkpoint), "--out", str(out), "--force"]
            logger.info("exporting the %s Wav2Vec2 bird model (%s); cached in %s", size, quant, out)
            run_logged(cmd + (["--int8"] if quant == "int8" else []), f"hf Wav2Vec2 {size} {quant} export")
        folders[quant] = out
    return folders


def hf_specs(yamnet: Path, birdnet: Path | None, folders: dict[str, Path], size: str
             ) -> list[tuple[str, PipelineSpec]]:
    """(bird model key, configuration): YAMNet + BirdNET (when there is a BirdNET folder), then YAMNet + the hf model
    fp32 and int8, with the daemon's default threads (1 per model, side by side)."""
    specs = []
    if birdnet is not None:
        specs.append(("birdnet", PipelineSpec("YAMNet + BirdNET + head" + SIDE_BY_SIDE_SUFFIX, "yamnet", yamnet,
                                              birdnet, 1, side_by_side=True)))
    for quant, folder in folders.items():
        specs.append((f"hf {quant}", PipelineSpec(
            f"YAMNet + hf Wav2Vec2-{size} {quant} + tagger-only head" + SIDE_BY_SIDE_SUFFIX, "yamnet", yamnet, folder,
            1, side_by_side=True, sections={"models": {"birds": {"family": "hf"}}})))
    return specs


def run_hf_birds(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    dirs = find_model_dirs(args.models)
    if "yamnet" not in dirs:
        raise BenchError("--hf-birds needs a yamnet/ folder in --models")
    folders = ensure_hf_bird_models(args.hf_size)
    files = pipeline_files(args.corpus, args.pipeline_files)
    if not files:
        raise BenchError("--hf-birds: no audio to replay (give --corpus a folder of recordings)")
    src = source_dir(files, tmp / "daemon-audio")
    report: dict[str, Any] = {"mode": "hf-birds", "machine": machine_info(),
                              "audio": {"source": str(args.corpus or DEFAULT_CORPUS), "files": len(files),
                                        "needs": f"the shared corpus at {DEFAULT_CORPUS} (else the test fixtures)"}}
    sizes = {"birdnet": _model_mb(dirs.get("birdnet"))}
    sizes |= {f"hf {quant}": _model_mb(folder) for quant, folder in folders.items()}
    report["hf_birds"] = {
        "model": f"random {SIZES[args.hf_size]} Wav2Vec2ForSequenceClassification, {HF_LABELS} labels (RANDOM "
                 "weights: the real model's size and compute, meaningless predictions)",
        "size": args.hf_size, "folders": {k: str(v) for k, v in folders.items()}, "model_mb": sizes,
        "quantization": {k: read_sidecar(v).quantization for k, v in folders.items()},
    }
    report["daemon"] = []
    for key, spec in hf_specs(dirs["yamnet"], dirs.get("birdnet"), folders, args.hf_size):
        logger.info("daemon process: %s", spec.name)
        row = bench_daemon(spec, src, tmp, sensor_like=True)[0]
        report["daemon"].append({**row, "bird_model": key, "bird_model_mb": sizes.get(key)})
    failed = [d["config"] for d in report["daemon"] if d.get("returncode") != 0]
    if failed:
        tail = next(d.get("log_tail", "") for d in report["daemon"] if d.get("returncode") != 0)
        raise BenchError(f"--hf-birds: the daemon failed for {', '.join(failed)}:\n{tail}")
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def _model_mb(folder: Path | None) -> float | None:
    if folder is None:
        return None
    return round(sum(p.stat().st_size for p in folder.glob("*.onnx")) / 1e6, 1)


def hf_birds_markdown(report: dict[str, Any]) -> str:
    """`bench-hf-birds.md`: the model, its size and the daemon's peak RSS per configuration."""
    hf = report["hf_birds"]
    lines = header_lines(report) + ["## hf bird model: the daemon's peak RSS", "", f"Model: {hf['model']}.", ""]
    birdnet = next((d.get("peak_rss_mb") for d in report["daemon"] if d["bird_model"] == "birdnet"), None)
    rows = []
    for d in report["daemon"]:
        peak = d.get("peak_rss_mb")
        delta = (round(peak - birdnet, 1) if peak is not None and birdnet is not None and d["bird_model"] != "birdnet"
                 else None)
        rows.append([d["config"], d["bird_model_mb"], peak, delta, d.get("start_to_running_s"), d.get("wall_rtf")])
    lines += table(["configuration (sensor-like `soundmond run --source`)", "bird model MB", "peak RSS MB",
                    "vs YAMNet + BirdNET MB", "start -> models loaded s", "wall RTF"], rows)
    return "\n".join(lines + pipeline_and_daemon_lines(report))
