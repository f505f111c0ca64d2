"""The bird chunk grid study: which stride, sensitivity and min_confidence should soundmond's BirdNET stage default to?

`python -m soundmond.workbench.bench.bird_grid --out reports/bird-grid` (workstation, `../shared` beside the checkout)
measures on the corpus (`labels.csv`: `species` = scientific name, BirdNET V2.4 spelling):

- **recall per species file**: the share of species files (rows with `species` that BirdNET V2.4 knows) in which the
  labelled species is kept in at least one chunk of the file;
- **false detections on non-bird clips** (rows without `species` whose category is not a bird one, see
  `BIRD_CATEGORIES`): every (chunk, species) kept, per hour of non-bird audio; the distinct (clip, species) pairs per
  hour; and the clips with at least one. "Species" is what the daemon reports as a species: every BirdNET class but
  the non-species sound classes (Engine, Dog, Human vocal, ...: `BIRDNET_SOUND_CLASSES_V24`), frogs and insects with
  a species name included, as `models.birds` reports them by default;
- **cost**: BirdNET chunks per hour of the studied audio and the measured model time per hour, both as ratios to
  stride 3 s (and the stream's nominal 3600 / stride chunks per hour, the figure for a continuous microphone: the
  corpus's 5-6 s clips lose chunks at their ends).

for every stride (3-s chunks every stride seconds from the start of the file, the last partial chunk as birdnetlib's
`RecordingBase.process_audio_data` makes it: a chunk of at least 1.5 s is zero-padded to 3 s, a shorter one ends the
file: `split_starts`), every sensitivity and every min_confidence rule:

- `0.25`, `0.1`: a (chunk, species) is kept when its confidence reaches the threshold;
- `0.1+pass` (the per-species second pass): a (chunk, species) at >= 0.1 is kept only when the same species also
  reaches 0.25 in some chunk of the same file (the corpus's files are all under an hour: for a station, "file" reads
  "hour"). It can only add detections of species already confirmed at 0.25, so per-file recall and the clips with a
  false detection equal the `0.25` row by construction; what it changes is how many detections (chunks) are reported.

Sensitivity is BirdNET-Analyzer's and birdnetlib's: confidence = sigmoid(scale * logit) with
scale = clip(1 - (sensitivity - 1), 0.5, 1.5), so sensitivity 1.25 (scale 0.75) flattens the sigmoid and raises
every confidence below 0.5. (soundmond 0.1's `models.birds.sensitivity` multiplies the logit directly: its 1.25 is
BirdNET's 0.75; `--sensitivities` includes 0.75 by default to show that reading too.)

Efficiency: BirdNET runs once per file on the 0.5-s grid (`BASE_STRIDE_S`); every studied stride's chunks are a subset
of it (checked per file: `grid_rows` raises if a chunk is missing), and logits are kept, so a sensitivity is a
re-scaling. Each chunk is its own timed ONNX Runtime call (batch 1, as the daemon runs it), on soundmond's own BirdNET
session (`BirdnetModel`), audio decoded and resampled to 48 kHz by `soundmond.capture.audio.load_audio`. A stride's
model time is the sum of its chunks' measured times: every stride is measured in the same run on the same calls, so the
ratios hold on a loaded machine (absolute ms carry the load, recorded as the load average).

Outputs: the markdown table on stdout, progress on stderr, and with `--out DIR`: `bird_grid.json` (every figure, per
file maxima) and `bird_grid.md`. Exit codes: 0 done, 2 bad usage (corpus, labels, option values), 3 model folder.

Example (the whole corpus: 3116 chunks, 5-6 min on the shared 2-core EPYC at a load average of 8-14):
    nice -n 10 python -m soundmond.workbench.bench.bird_grid --corpus ../shared/data/corpus \\
        --model models/birdnet --out reports/bird-grid
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from soundmond.capture.audio import AudioError, load_audio
from soundmond.config import BirdConfig, ConfigError
from soundmond.errors import ExitCode, HintedError
from soundmond.models.birds import BirdnetModel, logit_scale
from soundmond.models.sessions import BIRDNET_CHUNK_SAMPLES, BIRDNET_SAMPLE_RATE_HZ, sigmoid
from soundmond.models.sidecar import ModelFolderError
from soundmond.workbench.labels import LabelsError, read_label_rows

logger = logging.getLogger(__name__)

BASE_STRIDE_S = 0.5  # BirdNET runs once per file on this grid; every studied stride must be a multiple of it
STRIDES_S = (3.0, 2.0, 1.5, 1.0)
SENSITIVITIES = (1.0, 1.25, 0.75)  # BirdNET-Analyzer's meaning (0.75 = soundmond 0.1's literal 1.25)
HIGH_CONFIDENCE = 0.25
LOW_CONFIDENCE = 0.1
RULES = ("0.25", "0.1", "0.1+pass")
CHUNK_S = 3.0
MIN_CHUNK_S = 1.5  # birdnetlib: a last chunk shorter than this ends the file; a longer one is zero-padded to 3 s
# Categories of labels.csv whose clips hold birds even without a labelled species: neither species files nor non-bird.
BIRD_CATEGORIES = frozenset(
    {"bird", "bird_soundscape", "forest_soundscape_birds", "chirping_birds", "crow", "hen", "rooster"}
)


class StudyError(HintedError):
    """The study cannot run as asked (corpus, labels, options)."""


# --- the grid -------------------------------------------------------------------------------------------------------


def split_starts(n_samples: int, rate_hz: int, stride_s: float) -> list[int]:
    """Chunk starts (samples) of birdnetlib's `process_audio_data` with overlap 3 - stride_s: starts every
    int(stride_s * rate) samples from 0; the loop stops at the first chunk shorter than int(1.5 * rate) samples (a
    shorter-than-3-s chunk that passes is zero-padded to 3 s: `chunk_at`). A file shorter than 1.5 s has no chunk."""
    step = int(stride_s * rate_hz)
    if step <= 0:
        raise ValueError(f"stride {stride_s} s is not positive")
    chunk, minimum = int(CHUNK_S * rate_hz), int(MIN_CHUNK_S * rate_hz)
    starts = []
    for start in range(0, n_samples, step):
        if len(range(start, min(start + chunk, n_samples))) < minimum:
            break
        starts.append(start)
    return starts


def chunk_at(wave: npt.NDArray[np.float32], start: int) -> npt.NDArray[np.float32]:
    """The 3-s chunk at `start`, zero-padded at the end as birdnetlib pads the last partial chunk."""
    piece = wave[start : start + BIRDNET_CHUNK_SAMPLES]
    if piece.size < BIRDNET_CHUNK_SAMPLES:
        piece = np.pad(piece, (0, BIRDNET_CHUNK_SAMPLES - piece.size))
    return np.ascontiguousarray(piece, dtype=np.float32)


def grid_rows(base_starts: Sequence[int], starts: Sequence[int]) -> list[int]:
    """Indices in the base grid of a stride's chunks; raises when one is not in the base grid (they must nest)."""
    where = {s: i for i, s in enumerate(base_starts)}
    missing = [s for s in starts if s not in where]
    if missing:
        raise ValueError(f"chunks at samples {missing[:5]} are not on the {BASE_STRIDE_S}-s base grid")
    return [where[s] for s in starts]


# --- the corpus -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyClip:
    file: str  # as in labels.csv
    path: Path
    kind: str  # "species" or "nonbird"
    species: str = ""  # labelled scientific name (species files)
    target: int | None = None  # its BirdNET class index (None: BirdNET does not know it)


def select_clips(corpus: Path, scientific_names: Sequence[str], only: Sequence[str] = ()) -> list[StudyClip]:
    """Species files and non-bird clips of the corpus (or only the files named in `only`, as in labels.csv)."""
    labels = corpus / "labels.csv"
    try:
        rows = read_label_rows(labels, corpus, one_of=("species",))
    except LabelsError as exc:
        raise StudyError(exc.problem, exc.hint or "pass --corpus DIR (the folder holding labels.csv)") from exc
    index = {name.casefold(): i for i, name in enumerate(scientific_names)}
    clips = []
    for row in rows:
        if only and row.file not in only:
            continue
        species = (row.columns.get("species") or "").strip()
        if species:
            clip = StudyClip(row.file, row.path, "species", species, index.get(species.casefold()))
        elif row.category not in BIRD_CATEGORIES:
            clip = StudyClip(row.file, row.path, "nonbird")
        else:
            continue
        if not row.audio_exists:
            raise StudyError(f"{row.where}: audio file missing", "restore the corpus or fix labels.csv")
        clips.append(clip)
    unknown = sorted(set(only) - {c.file for c in clips})
    if unknown:
        raise StudyError(f"--only: {', '.join(unknown)} not in {labels} as a species or non-bird clip",
                         "name files as labels.csv's `file` column does")
    if not clips:
        raise StudyError(f"{labels}: no species or non-bird clips", "check the corpus")
    return clips


# --- one BirdNET pass per file ---------------------------------------------------------------------------------------


@dataclass
class FileChunks:
    """One file's base-grid chunks: their starts, measured model times and the logits the study can ever keep."""

    clip: StudyClip
    n_samples: int
    starts: list[int]
    ms: npt.NDArray[np.float64]  # per base chunk
    # sparse logits >= `floor` on species classes: (chunk row, class, logit); nothing below can pass any setting
    rows: npt.NDArray[np.int32]
    classes: npt.NDArray[np.int32]
    logits: npt.NDArray[np.float32]

    @property
    def hours(self) -> float:
        return self.n_samples / BIRDNET_SAMPLE_RATE_HZ / 3600.0


def logit_floor(sensitivities: Iterable[float]) -> float:
    """The lowest logit any setting can keep: logit(LOW_CONFIDENCE) / the largest scale (a margin of 0.01 for the
    float32 sigmoid's rounding)."""
    low = float(np.log(LOW_CONFIDENCE / (1.0 - LOW_CONFIDENCE)))
    return low / min(logit_scale(s) for s in sensitivities) - 0.01


def run_file(model: BirdnetModel, clip: StudyClip, floor: float) -> FileChunks:
    wave, _ = load_audio(clip.path, BIRDNET_SAMPLE_RATE_HZ)
    starts = split_starts(wave.size, BIRDNET_SAMPLE_RATE_HZ, BASE_STRIDE_S)
    species = ~model.sound_class_mask
    ms = np.zeros(len(starts))
    rows, classes, values = [], [], []
    for i, start in enumerate(starts):
        chunk = chunk_at(wave, start)
        t0 = time.perf_counter()
        logits, _ = model.chunk_outputs(chunk)  # exactly one 3-s chunk: the daemon's path, one ONNX Runtime call
        ms[i] = (time.perf_counter() - t0) * 1000.0
        row = logits.reshape(-1)
        keep = np.flatnonzero(species & (row >= floor))
        rows.append(np.full(keep.size, i, np.int32))
        classes.append(keep.astype(np.int32))
        values.append(row[keep])
    return FileChunks(clip, int(wave.size), starts, ms, np.concatenate([np.zeros(0, np.int32), *rows]),
                      np.concatenate([np.zeros(0, np.int32), *classes]),
                      np.concatenate([np.zeros(0, np.float32), *values]))


# --- the table ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridRow:
    stride_s: float
    sensitivity: float  # BirdNET-Analyzer's meaning
    logit_scale: float
    rule: str  # RULES
    species_files: int  # species files BirdNET knows (the recall's denominator)
    recalled: int
    recall: float
    hits_per_h: float  # chunks with the labelled species kept, per hour of species-file audio
    nonbird_clips: int
    false_clips: int  # non-bird clips with any species kept
    false_per_h: float  # (chunk, species) kept on non-bird clips per hour of non-bird audio
    false_species_per_h: float  # distinct (clip, species) per hour of non-bird audio
    chunks: int
    chunks_per_h: float  # on the studied audio (the corpus's clips end every 5-10 s)
    stream_chunks_per_h: float  # 3600 / stride: a continuous stream
    chunks_ratio: float  # chunks / chunks at the reference stride (exact: integer counts)
    ms_per_h: float
    ms_ratio: float  # measured model time / at the reference stride


def kept_mask(conf: npt.NDArray[np.float32], classes: npt.NDArray[np.int32], rule: str) -> npt.NDArray[np.bool_]:
    """Which (chunk, species) entries of one file's grid a rule keeps (entries given by their confidences)."""
    if rule == "0.25":
        return conf >= HIGH_CONFIDENCE
    low = conf >= LOW_CONFIDENCE
    if rule == "0.1":
        return low
    confirmed = np.unique(classes[conf >= HIGH_CONFIDENCE])
    return low & np.isin(classes, confirmed)


def study_rows(files: Sequence[FileChunks], strides: Sequence[float], sensitivities: Sequence[float],
               reference_stride: float) -> list[GridRow]:
    """Every (stride, sensitivity, rule) row from the base-grid chunks of `files`."""
    grids = {}
    for stride in strides:
        grids[stride] = [grid_rows(f.starts, split_starts(f.n_samples, BIRDNET_SAMPLE_RATE_HZ, stride))
                         for f in files]
    hours = sum(f.hours for f in files)
    species_files = [i for i, f in enumerate(files) if f.clip.kind == "species" and f.clip.target is not None]
    nonbird = [i for i, f in enumerate(files) if f.clip.kind == "nonbird"]
    species_hours = sum(files[i].hours for i in species_files)
    nonbird_hours = sum(files[i].hours for i in nonbird)
    cost = {s: (sum(len(g) for g in grids[s]), sum(float(f.ms[g].sum()) for f, g in zip(files, grids[s], strict=True)))
            for s in strides}
    ref_chunks, ref_ms = cost[reference_stride]
    out = []
    for stride in strides:
        chunks, ms = cost[stride]
        for sensitivity in sensitivities:
            scale = logit_scale(sensitivity)
            for rule in RULES:
                recalled = hits = false = false_species = false_clips = 0
                for i, f in enumerate(files):
                    in_grid = np.isin(f.rows, grids[stride][i])
                    classes = f.classes[in_grid]
                    kept = kept_mask(sigmoid(scale * f.logits[in_grid]), classes, rule)
                    if i in species_files:
                        n = int((kept & (classes == f.clip.target)).sum())
                        hits += n
                        recalled += n > 0
                    elif f.clip.kind == "nonbird":
                        false += int(kept.sum())
                        false_species += int(np.unique(classes[kept]).size)
                        false_clips += bool(kept.any())
                out.append(GridRow(
                    stride, sensitivity, scale, rule, len(species_files), recalled,
                    recalled / len(species_files) if species_files else float("nan"),
                    hits / species_hours if species_hours else float("nan"),
                    len(nonbird), false_clips,
                    false / nonbird_hours if nonbird_hours else float("nan"),
                    false_species / nonbird_hours if nonbird_hours else float("nan"),
                    chunks, chunks / hours, 3600.0 / stride,
                    chunks / ref_chunks if ref_chunks else float("nan"),
                    ms / hours, ms / ref_ms if ref_ms else float("nan"),
                ))
    return out


def false_species_top(files: Sequence[FileChunks], stride: float, sensitivity: float, rule: str,
                      names: Sequence[str], k: int = 10) -> list[tuple[str, int]]:
    """The species most often kept on non-bird clips at one setting: (name, distinct clips)."""
    counts: dict[str, int] = {}
    for f in files:
        if f.clip.kind != "nonbird":
            continue
        in_grid = np.isin(f.rows, grid_rows(f.starts, split_starts(f.n_samples, BIRDNET_SAMPLE_RATE_HZ, stride)))
        classes = f.classes[in_grid]
        kept = kept_mask(sigmoid(logit_scale(sensitivity) * f.logits[in_grid]), classes, rule)
        for c in np.unique(classes[kept]):
            counts[names[int(c)]] = counts.get(names[int(c)], 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def target_maxima(f: FileChunks, strides: Sequence[float]) -> dict[str, float]:
    """A species file's highest confidence (sensitivity 1) of its labelled species per stride (0: below the floor)."""
    out = {}
    for stride in strides:
        sel = np.isin(f.rows, grid_rows(f.starts, split_starts(f.n_samples, BIRDNET_SAMPLE_RATE_HZ, stride)))
        sel &= f.classes == f.clip.target
        out[f"{stride:g}"] = round(float(sigmoid(f.logits[sel]).max()), 4) if sel.any() else 0.0
    return out


# --- report ---------------------------------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def markdown_table(rows: Sequence[GridRow]) -> str:
    head = ("| stride s | sensitivity (logit x) | min_confidence | recall | labelled det/h | false det/h | "
            "false species/h | false clips | chunks/h corpus | chunks/h stream | chunks ratio | model ms/h | "
            "ms ratio |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r.stride_s:g} | {r.sensitivity:g} (x{r.logit_scale:g}) | {r.rule} | "
            f"{r.recall:.3f} ({r.recalled}/{r.species_files}) | {r.hits_per_h:.0f} | {r.false_per_h:.0f} | "
            f"{r.false_species_per_h:.0f} | "
            f"{r.false_clips}/{r.nonbird_clips} | {r.chunks_per_h:.0f} | {r.stream_chunks_per_h:.0f} | "
            f"{r.chunks_ratio:.3f} | {r.ms_per_h:.0f} | {r.ms_ratio:.3f} |"
        )
    return "\n".join(lines) + "\n"


def markdown_report(report: dict[str, Any], rows: Sequence[GridRow]) -> str:
    meta = report["run"]
    lines = [
        "# Bird chunk grid study",
        "",
        f"- date (UTC): {meta['started_utc']} to {meta['finished_utc']}",
        f"- command: `{meta['command']}`",
        f"- CPU: {meta['cpu']} ({meta['cores']} cores; BirdNET on {meta['threads']} thread(s), one chunk per call); "
        f"load average at start {meta['load_start']}, at end {meta['load_end']}",
        f"- model: {meta['model']} (sha256 {str(meta['model_sha256'])[:12]}...)",
        f"- corpus: {meta['corpus']}: {meta['species_files']} species files ({meta['species_hours_min']:.1f} min; "
        f"not a BirdNET V2.4 class, left out: {', '.join(meta['unknown_species']) or 'none'}), "
        f"{meta['nonbird_clips']} non-bird clips ({meta['nonbird_hours_min']:.1f} min)",
        f"- BirdNET chunks run: {meta['base_chunks']} on the {BASE_STRIDE_S:g}-s grid in {meta['model_s']:.0f} s "
        f"of model time; every stride's chunks are a subset of that grid (checked per file)",
        "",
        markdown_table(rows),
        "Columns: recall = species files whose labelled species is kept in >= 1 chunk; labelled det/h = chunks "
        "with the labelled species kept per hour of species-file audio; false det/h = (chunk, species) "
        "kept on non-bird clips per hour of non-bird audio; false species/h = distinct (clip, species) per hour; "
        "false clips = non-bird clips with any species kept; chunks/h corpus = chunks per hour of the studied clips "
        "(5-10-s clips lose chunks at their ends), chunks/h stream = 3600 / stride; ratios are to stride "
        f"{meta['reference_stride']:g} s; model ms/h = the summed measured time of the stride's chunks per hour of "
        "studied audio. Sensitivity is BirdNET-Analyzer's (logit x = the sigmoid's scale). `0.1+pass`: >= 0.1, "
        "kept only for species that reach 0.25 in the same file.",
        "",
        "Species files recalled at one stride and not at the reference stride (sensitivity 1, min_confidence "
        "0.25; the labelled species' highest confidence per stride):",
        "",
        *flip_lines(report["species_files"], meta["reference_stride"]),
        "",
        "Species most often kept on non-bird clips (distinct clips), stride "
        f"{meta['reference_stride']:g} s, sensitivity 1, min_confidence 0.25: "
        + (", ".join(f"{n} ({c})" for n, c in report["false_species_top"]) or "none"),
        "",
        "",
    ]
    return "\n".join(lines)


def flip_lines(species_files: Sequence[dict[str, Any]], reference: float) -> list[str]:
    """One line per stride: the files whose recall (sensitivity 1, 0.25) differs from the reference stride's."""
    ref = f"{reference:g}"
    lines = []
    strides = sorted({s for f in species_files for s in f["max_confidence_by_stride"]} - {ref}, key=float,
                     reverse=True)
    for stride in strides:
        gained, lost = [], []
        for f in species_files:
            conf = f["max_confidence_by_stride"]
            if not conf:
                continue
            name = f"{f['species']} ({conf[ref]:.2f} -> {conf[stride]:.2f})"
            if conf[stride] >= HIGH_CONFIDENCE > conf[ref]:
                gained.append(name)
            elif conf[ref] >= HIGH_CONFIDENCE > conf[stride]:
                lost.append(name)
        lines.append(f"- stride {stride} s: gained {', '.join(gained) or 'none'}; lost {', '.join(lost) or 'none'}")
    return lines


# --- command --------------------------------------------------------------------------------------------------------


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise StudyError(f"{what} {text!r} is not a comma-separated list of numbers", f"e.g. {what} 3,2,1.5,1") from exc
    if not values:
        raise StudyError(f"{what} is empty", f"e.g. {what} 3,2,1.5,1")
    return values


def check_strides(strides: Sequence[float]) -> None:
    for s in strides:
        steps = s / BASE_STRIDE_S
        if not 0 < s <= CHUNK_S or abs(steps - round(steps)) > 1e-9:
            raise StudyError(f"--strides: {s:g} s is not a multiple of {BASE_STRIDE_S:g} s in (0, 3]",
                             f"use strides on the {BASE_STRIDE_S:g}-s base grid, e.g. 3,2,1.5,1")


def add_arguments(p: argparse.ArgumentParser) -> None:
    models = os.environ.get("SOUNDMOND_TEST_MODELS")
    p.add_argument("--corpus", type=Path, default=Path("../shared/data/corpus"),
                   help="the corpus folder holding labels.csv (default: ../shared/data/corpus)")
    p.add_argument("--model", type=Path, default=Path(models) / "birdnet" if models else Path("models/birdnet"),
                   help="soundmond's BirdNET folder (default: $SOUNDMOND_TEST_MODELS/birdnet, else models/birdnet)")
    p.add_argument("--out", type=Path, default=None, help="also write bird_grid.json and bird_grid.md here")
    p.add_argument("--strides", default=",".join(f"{s:g}" for s in STRIDES_S),
                   help="strides in seconds, multiples of 0.5 (default: 3,2,1.5,1; the first is the ratios' reference)")
    p.add_argument("--sensitivities", default=",".join(f"{s:g}" for s in SENSITIVITIES),
                   help="BirdNET-Analyzer sensitivities (default: 1,1.25,0.75)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for BirdNET (default 1, the daemon's)")
    p.add_argument("--only", action="append", default=[], metavar="FILE",
                   help="study only this labels.csv file (repeatable); default: every species and non-bird clip")


def run_study(args: argparse.Namespace, argv: Sequence[str]) -> tuple[dict[str, Any], list[GridRow]]:
    strides = parse_floats(args.strides, "--strides")
    check_strides(strides)
    sensitivities = parse_floats(args.sensitivities, "--sensitivities")
    if args.threads < 1:
        raise StudyError(f"--threads {args.threads} is not a positive number", "e.g. --threads 1")
    started = dt.datetime.now(dt.timezone.utc)
    load_start = load_average()
    model = BirdnetModel(args.model, BirdConfig(path=args.model, threads=args.threads))
    clips = select_clips(args.corpus, model.scientific_names, args.only)
    floor = logit_floor(sensitivities)
    files = []
    for n, clip in enumerate(clips, start=1):
        files.append(run_file(model, clip, floor))
        if n % 20 == 0 or n == len(clips):
            logger.info("%d / %d files, %d chunks", n, len(clips), sum(len(f.starts) for f in files))
    rows = study_rows(files, strides, sensitivities, strides[0])
    species = [f for f in files if f.clip.kind == "species"]
    nonbird = [f for f in files if f.clip.kind == "nonbird"]
    report: dict[str, Any] = {
        "run": {
            "started_utc": started.strftime("%Y-%m-%d %H:%M"),
            "finished_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "command": "python -m soundmond.workbench.bench.bird_grid " + " ".join(argv),
            "cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
            "load_start": load_start, "load_end": load_average(),
            "model": str(args.model), "model_sha256": model.model_sha256, "corpus": str(args.corpus),
            "species_files": sum(f.clip.target is not None for f in species),
            "species_hours_min": sum(f.hours for f in species if f.clip.target is not None) * 60,
            "unknown_species": sorted(f.clip.species for f in species if f.clip.target is None),
            "nonbird_clips": len(nonbird), "nonbird_hours_min": sum(f.hours for f in nonbird) * 60,
            "base_chunks": sum(len(f.starts) for f in files),
            "model_s": sum(float(f.ms.sum()) for f in files) / 1000.0,
            "reference_stride": strides[0], "base_stride": BASE_STRIDE_S, "logit_floor": floor,
        },
        "rows": [asdict(r) for r in rows],
        "false_species_top": false_species_top(files, strides[0], 1.0, "0.25", model.labels),
        "species_files": [{"file": f.clip.file, "species": f.clip.species, "known": f.clip.target is not None,
                           "max_confidence_by_stride": target_maxima(f, strides) if f.clip.target is not None else {}}
                          for f in species],
    }
    return report, rows


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m soundmond.workbench.bench.bird_grid",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="example: nice -n 10 python -m soundmond.workbench.bench.bird_grid --corpus ../shared/data/corpus "
               "--model models/birdnet --out reports/bird-grid\n(what each figure means: this module's docstring; "
               "the published run and the chosen defaults: bench/BIRD_GRID.md)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    try:
        report, rows = run_study(args, argv)
    except (StudyError, AudioError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except (ModelFolderError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(ExitCode.MODELS)
    text = markdown_report(report, rows)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bird_grid.json").write_text(json.dumps(report, indent=1) + "\n")
        (args.out / "bird_grid.md").write_text(text)
    sys.stdout.write(text)
    return int(ExitCode.OK)


__all__ = ["BASE_STRIDE_S", "BIRD_CATEGORIES", "GridRow", "StudyClip", "StudyError", "chunk_at", "grid_rows",
           "logit_scale", "main", "select_clips", "split_starts", "study_rows"]

if __name__ == "__main__":  # pragma: no cover - the command
    sys.exit(main())
