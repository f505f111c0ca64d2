"""Per-window features of labelled clips, as the daemon computes them, cached on disk.

`clip_features`: each clip is decoded at its own rate, cut into 5-s windows every 5 s (a tail shorter than a window is
dropped; a clip shorter than one window is zero-padded), and every window is resampled to each model's rate, as the
daemon's analyzer does. Per window: YAMNet's frame outputs (`YamnetTagger.frame_outputs`) pooled with the mean (what
the daemon's tagger gives with the default `pooling: mean`) and with the max, and BirdNET's embedding
(`BirdnetModel.detect(...).embedding`, mean over its 3-s chunks, as the daemon gives it). Cached per (file sha256,
model sha256, windowing) as .npz, so re-runs take seconds. `build_dataset` stacks them into a `Dataset`.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from soundmond.capture.audio import load_audio, resample
from soundmond.config import BIRDNET_CHUNK_S
from soundmond.identity import file_sha256
from soundmond.models.birds import BirdnetModel
from soundmond.models.hf import HfTagger
from soundmond.models.taggers import AstTagger, YamnetTagger
from soundmond.progress import show_progress
from soundmond.workbench.corpus import Clip

WINDOW_S = 5.0
HOP_S = 5.0
TrainingTagger = YamnetTagger | AstTagger | HfTagger  # the taggers a head is trained on
FEATURE_CACHE_VERSION = 2  # bump when the windowing or the stored features change

# Per-window feature blocks computed for training. The first three are what the daemon supplies to a head
# (`head.FEATURE_PARTS`); the `_max` ones are compared only.
BLOCKS: tuple[str, ...] = ("probabilities", "embedding", "birdnet_embedding", "probabilities_max", "embedding_max")


def cut_windows(
    samples: npt.NDArray[np.float32], rate_hz: int, window_s: float = WINDOW_S, hop_s: float = HOP_S
) -> list[npt.NDArray[np.float32]]:
    """Windows of `window_s` every `hop_s` (full windows only; a clip shorter than one window is zero-padded)."""
    win = int(round(window_s * rate_hz))
    hop = int(round(hop_s * rate_hz))
    if samples.size < win:
        return [np.pad(samples, (0, win - samples.size)).astype(np.float32)]
    return [samples[s : s + win] for s in range(0, samples.size - win + 1, hop)]


ClipFeatures = dict[str, npt.NDArray[np.float32]]  # block name -> [windows, dim]


def cached_features(
    cache_dir: Path | None, key_parts: str, compute: Callable[[], ClipFeatures]
) -> ClipFeatures:
    """`compute()`, stored as .npz in `cache_dir` under a hash of `key_parts` and the windowing (None: no cache)."""
    if cache_dir is None:
        return compute()
    key = hashlib.sha256(f"{key_parts}|{WINDOW_S}|{HOP_S}|{FEATURE_CACHE_VERSION}".encode()).hexdigest()[:32]
    cache_file = cache_dir / f"{key}.npz"
    if cache_file.is_file():
        with np.load(cache_file) as cached:
            return {k: cached[k] for k in cached.files}
    features = compute()
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(cache_file.stem + ".tmp.npz")
    arrays: dict[str, Any] = dict(features)
    np.savez(tmp, **arrays)
    tmp.replace(cache_file)
    return features


def clip_features(
    tagger: TrainingTagger, birds: BirdnetModel | None, path: Path, cache_dir: Path | None
) -> ClipFeatures:
    """Every feature block for every window of one clip (see module docstring), cached per model.

    YAMNet gives every block from its frame outputs; a tagger without them (AST: one output per window) gives
    `probabilities` and `embedding` through `tag`, as the daemon's analyzer does.
    """
    file_sha = file_sha256(path)
    windows: list[npt.NDArray[np.float32]] | None = None
    rate = 0

    def native_windows() -> tuple[list[npt.NDArray[np.float32]], int]:
        nonlocal windows, rate
        if windows is None:
            samples, rate = load_audio(path)
            windows = cut_windows(samples, rate)
        return windows, rate

    def yamnet() -> ClipFeatures:
        assert isinstance(tagger, YamnetTagger)
        wins, r = native_windows()
        frames = [tagger.frame_outputs(resample(w, r, tagger.sample_rate_hz)) for w in wins]
        return {
            "probabilities": np.stack([p.mean(axis=0) for p, _ in frames]).astype(np.float32),
            "probabilities_max": np.stack([p.max(axis=0) for p, _ in frames]).astype(np.float32),
            "embedding": np.stack([e.mean(axis=0) for _, e in frames]).astype(np.float32),
            "embedding_max": np.stack([e.max(axis=0) for _, e in frames]).astype(np.float32),
        }

    def tagged() -> ClipFeatures:
        wins, r = native_windows()
        outs = [tagger.tag(resample(w, r, tagger.sample_rate_hz)) for w in wins]
        return {
            "probabilities": np.stack([o.probabilities for o in outs]).astype(np.float32),
            "embedding": np.stack([o.embedding for o in outs]).astype(np.float32),
        }

    if isinstance(tagger, YamnetTagger):
        features = dict(cached_features(cache_dir, f"yamnet|{file_sha}|{tagger.model_sha256}", yamnet))
    else:
        features = dict(cached_features(cache_dir, f"tag|{file_sha}|{tagger.model_sha256}", tagged))
    if birds is not None:

        def birdnet() -> ClipFeatures:
            wins, r = native_windows()
            outs = [birds.detect(resample(w, r, birds.sample_rate_hz), start_unix_s=0.0) for w in wins]
            if any(o.embedding is None for o in outs):  # pragma: no cover - BirdnetModel always fills it
                raise RuntimeError("BirdNET returned no embedding")
            return {"birdnet_embedding": np.stack([o.embedding for o in outs if o.embedding is not None])}

        overlap = BIRDNET_CHUNK_S - birds.stride_s  # the window's chunks overlap by this (the key kept as before)
        features.update(cached_features(cache_dir, f"birdnet|{file_sha}|{birds.model_sha256}|{overlap}", birdnet))
    return features


@dataclass(frozen=True)
class Dataset:
    blocks: dict[str, npt.NDArray[np.float32]]  # block name -> [windows, dim]
    y: npt.NDArray[np.str_]
    groups: npt.NDArray[np.str_]  # source recording per window (the CV grouping)
    sessions: npt.NDArray[np.str_]  # stricter grouping per window (secondary figure)
    clip: npt.NDArray[np.int64]  # index into `clips` per window
    clips: list[Clip]

    def features(self, kind: str) -> npt.NDArray[np.float64]:
        """The blocks of `kind` concatenated, as float64 (what `Head.predict_proba` feeds the model)."""
        parts = kind.split("+")
        missing = [p for p in parts if p not in self.blocks]
        if missing:
            raise KeyError(f"feature block(s) {missing} were not computed (BirdNET folder not given?)")
        return np.concatenate([self.blocks[p] for p in parts], axis=1).astype(np.float64)


def build_dataset(
    clips: Sequence[Clip],
    tagger: TrainingTagger,
    birds: BirdnetModel | None,
    cache_dir: Path | None,
    progress: bool = True,
) -> Dataset:
    blocks: dict[str, list[npt.NDArray[np.float32]]] = {}
    ys: list[str] = []
    groups: list[str] = []
    sessions: list[str] = []
    clip_idx: list[int] = []
    desc = "tagger + BirdNET features" if birds is not None else "tagger features"
    for i, clip in enumerate(tqdm(clips, desc=desc, unit="clip", file=sys.stderr, disable=not show_progress(progress))):
        feats = clip_features(tagger, birds, clip.path, cache_dir)
        sizes = {v.shape[0] for v in feats.values()}
        if len(sizes) != 1:
            raise RuntimeError(f"{clip.file}: feature blocks disagree on the window count ({sizes})")
        n = sizes.pop()
        for name, value in feats.items():
            blocks.setdefault(name, []).append(value)
        ys += [clip.group] * n
        groups += [clip.source] * n
        sessions += [clip.session or clip.source] * n
        clip_idx += [i] * n
    return Dataset(
        {k: np.concatenate(v).astype(np.float32) for k, v in blocks.items()},
        np.array(ys),
        np.array(groups),
        np.array(sessions),
        np.array(clip_idx, dtype=np.int64),
        list(clips),
    )


def window_starts(clip_index: npt.NDArray[np.int64]) -> list[float]:
    """The start (s) of every window within its clip, given each window's clip index (windows in clip order)."""
    starts: list[float] = []
    seen: dict[int, int] = {}
    for c in clip_index:
        n = seen.get(int(c), 0)
        starts.append(n * HOP_S)
        seen[int(c)] = n + 1
    return starts


__all__ = ["BLOCKS", "HOP_S", "WINDOW_S", "ClipFeatures", "Dataset", "build_dataset", "cached_features",
           "clip_features", "cut_windows", "window_starts"]
