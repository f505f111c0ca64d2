"""What every exporter shares: atomic output folders, real check audio, parity figures, tool versions."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from soundmond.capture.audio import find_audio_files, load_audio
from soundmond.errors import ExitCode
from soundmond.identity import file_sha256
from soundmond.models.sessions import sigmoid
from soundmond.models.sidecar import Parity

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECK_AUDIO = REPO_ROOT / "tests" / "fixtures" / "audio"

# Exit codes of `python -m export` (documented in `--help` and the README), soundmond's own numbers (`ExitCode`).
EXIT_OK = ExitCode.OK
EXIT_FAILED = ExitCode.PARTIAL  # 1: the export ran but missed its parity target: nothing written
EXIT_USAGE = ExitCode.USAGE  # 2: bad arguments, unreachable hub / unknown id, wrong input file: nothing written


class ExportError(Exception):
    """An export that cannot go on; the message is one line a user can act on."""

    exit_code = EXIT_USAGE


class ParityError(ExportError):
    """The ONNX model does not reproduce the original closely enough."""

    exit_code = EXIT_FAILED


@contextlib.contextmanager
def atomic_output_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it is renamed to `out`, on any failure removed.

    An interrupted export therefore never leaves a half-written model folder where the daemon looks.
    """
    out = Path(out)
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700; the daemon may run as another user and must read the folder
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file in `folder` (the sidecar itself excluded)."""
    return {
        p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != "model.json"
    }


def tool_versions(*packages: str) -> dict[str, str]:
    versions = {}
    for name in ("soundmond", "numpy", "onnx", "onnxruntime", *packages):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def utc_now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class CheckClip:
    name: str
    samples: npt.NDArray[np.float32]
    sample_rate_hz: int


def load_check_audio(folder: Path | None, sample_rate_hz: int) -> list[CheckClip]:
    """Every audio file of `folder` (default: the project's fixtures), mono at `sample_rate_hz`."""
    folder = Path(folder) if folder is not None else DEFAULT_CHECK_AUDIO
    files = find_audio_files(folder)
    if not files:
        raise ExportError(f"--check-audio {folder}: no audio files (wav, flac, mp3, ogg) found there")
    clips = []
    for path in files:
        samples, rate = load_audio(path, sample_rate_hz)
        clips.append(CheckClip(path.name, samples, rate))
    return clips


def chunk_clip(samples: npt.NDArray[np.float32], chunk: int, hop: int | None = None) -> npt.NDArray[np.float32]:
    """Cut a clip into [n, chunk] chunks every `hop` samples, zero-padding the last one."""
    hop = hop or chunk
    if samples.size < chunk:
        samples = np.pad(samples, (0, chunk - samples.size))
    starts = range(0, samples.size - chunk + 1, hop)
    return np.stack([samples[s : s + chunk] for s in starts]).astype(np.float32)


def parity_figures(
    reference: npt.NDArray[np.floating],
    candidate: npt.NDArray[np.floating],
    *,
    reference_name: str,
    audio_files: Sequence[str],
    outputs_are_probabilities: bool = False,
    target_max_abs_logit_diff: float | None = None,
) -> Parity:
    """Compare [chunks, classes] outputs of the original and the ONNX model."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ParityError(f"output shapes differ: original {ref.shape}, ONNX {cand.shape}")
    if not np.isfinite(cand).all():
        raise ParityError("the ONNX model produced NaN or infinite outputs on real audio")
    top5_ref = np.argsort(-ref, axis=1)[:, :5]
    top5_cand = np.argsort(-cand, axis=1)[:, :5]
    same_top5 = [set(a) == set(b) for a, b in zip(top5_ref, top5_cand, strict=True)]
    probs_ref = ref if outputs_are_probabilities else sigmoid(ref)
    probs_cand = cand if outputs_are_probabilities else sigmoid(cand)
    return Parity(
        reference=reference_name,
        audio_files=list(audio_files),
        chunks=int(ref.shape[0]),
        max_abs_logit_diff=float(np.max(np.abs(ref - cand))),
        max_sigmoid_diff=float(np.max(np.abs(probs_ref - probs_cand))),
        top1_agreement=float(np.mean(top5_ref[:, 0] == top5_cand[:, 0])),
        top5_agreement=float(np.mean(same_top5)),
        target_max_abs_logit_diff=target_max_abs_logit_diff,
    )


def require_parity(parity: Parity, what: str) -> None:
    """fp32 target: max abs difference within the target and identical top-5 on every chunk."""
    target = parity.target_max_abs_logit_diff
    if target is not None and parity.max_abs_logit_diff > target:
        raise ParityError(
            f"{what}: max abs output difference {parity.max_abs_logit_diff:.3g} vs {parity.reference} "
            f"exceeds the target {target:g} on {parity.chunks} chunks; nothing written"
        )
    if target is not None and parity.top5_agreement < 1.0:
        raise ParityError(
            f"{what}: top-5 differs from {parity.reference} on "
            f"{round((1 - parity.top5_agreement) * parity.chunks)} of {parity.chunks} chunks; nothing written"
        )
