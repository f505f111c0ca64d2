"""The files the full benchmark runs: the random AST checkpoint and its four exports (cached by the exporter's source
checksum in `.cache/bench-models/`) and a timing head. Model folders and daemon configs: `soundmond.speed.inprocess`."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from soundmond.head.meta import HEAD_CLASSES, HeadMeta
from soundmond.head.save import save_head
from soundmond.models.sidecar import ModelFolderError, verify_folder
from soundmond.speed.common import REPO, BenchError
from soundmond.workbench.bench.common import AST_EXPORT_SOURCES, AST_VARIANTS, BENCH_CACHE

logger = logging.getLogger("soundmond.workbench.bench")  # the package's one logger, named as before the split


def source_hash(paths: Sequence[str], *extra: str) -> str:
    digest = hashlib.sha256()
    for rel in paths:
        p = REPO / rel
        digest.update(rel.encode())
        digest.update(p.read_bytes() if p.is_file() else b"-")
    for e in extra:
        digest.update(e.encode())
    return digest.hexdigest()[:16]


def run_logged(cmd: Sequence[str], what: str, timeout: float = 1800) -> None:
    t0 = time.perf_counter()
    proc = subprocess.run(list(cmd), cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"{what} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    logger.info("%s done in %.0f s", what, time.perf_counter() - t0)


def ensure_checkpoint(root: Path, code: str, size: str, what: str) -> Path:
    """`root/checkpoint`, made once by `python -c code <folder> <size>` in a child process (torch and transformers
    stay out of the bench's own process) into a temporary folder renamed into place: an interrupted build leaves no
    half checkpoint."""
    checkpoint = root / "checkpoint"
    if not (checkpoint / "config.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        run_logged([sys.executable, "-c", code, str(tmp), size], what)
        tmp.rename(checkpoint)
    return checkpoint


def ensure_ast_models(size: str, cache: Path = BENCH_CACHE, variants: Sequence[str] = AST_VARIANTS
                      ) -> tuple[Path, dict[str, Path]]:
    """A random AST checkpoint of `size` ("full" / "tiny", 1024 frames, seed 0) and its exports (`variants`, default
    all five: fp32 / int8, 1024 / 512 frames; int8 with int8 attention products, 512 frames), made with
    `python -m export ast` once and cached by the exporter's source checksum."""
    key = source_hash(AST_EXPORT_SOURCES, size, "seed0")
    root = cache / f"ast-{size}-{key}"
    checkpoint = ensure_checkpoint(root, "import sys; from export.ast_model import make_random_checkpoint; "
                                   "make_random_checkpoint(sys.argv[1], sys.argv[2], max_length=1024, seed=0)",
                                   size, f"random {size} AST checkpoint")
    folders = {}
    for variant in variants:
        quant, frames = variant.split("-")
        out = root / variant
        try:
            verify_folder(out, "ast")
        except ModelFolderError:
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, "-m", "export", "ast", "--model", str(checkpoint), "--frames", frames,
                   "--out", str(out), "--force"]
            if quant in ("int8", "int8att"):
                cmd += ["--quantize", "int8"]
            if quant == "int8att":
                cmd += ["--attention", "int8"]
            logger.info("exporting the %s AST (%s); cached in %s", size, variant, out)
            run_logged(cmd, f"AST {size} {variant} export")
        folders[variant] = out
    return checkpoint, folders


def embedding_size(sidecar: Any) -> int:
    """The tagger embedding's size from its sidecar (768 where it does not say)."""
    embedding = sidecar.extra.get("embedding")
    return int(embedding["size"]) if isinstance(embedding, dict) else 768


def bench_head(cache: Path, tagger_family: str, label_count: int, embedding_dim: int) -> Path:
    """A head of the shipped head's form (StandardScaler + LogisticRegression on probabilities + tagger embedding +
    BirdNET embedding) for a tagger that has no shipped head (the random AST): fitted on random numbers, for timing
    only (a head's cost depends on its shape, not its weights)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    dim = label_count + embedding_dim + 1024
    path = cache / f"head-{tagger_family}-{label_count}-{embedding_dim}.onnx"
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, dim))
    y = np.array(HEAD_CLASSES * 20)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=200)).fit(x, y)
    import sklearn

    meta = HeadMeta(
        tagger_family=tagger_family, tagger_label_count=label_count,
        features="probabilities+embedding+birdnet_embedding", feature_dim=dim, classes=list(HEAD_CLASSES),
        trained_on="random numbers (benchmark timing head, meaningless predictions)", training_data_sha256="-",
        sklearn_version=sklearn.__version__,
    )
    cache.mkdir(parents=True, exist_ok=True)
    return save_head(path, model, meta).onnx
