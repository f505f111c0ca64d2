"""Tiny random Hugging Face audio classifiers for the tests, exported once per session (fixtures in conftest.py).

Each checkpoint is built from its transformers config (hidden 32, 2 layers, made-up bird labels), saved with
save_pretrained and exported through the same code a hub id takes after download (`export.hf_model.run`); the parity
check inside the export compares transformers' extractor + PyTorch with soundmond's numpy features + ONNX on real
recordings (`check_audio_folder`: a bird chorus and 5 s of a night soundscape, three model clips in all).

torch, transformers and optimum are imported only when a fixture needs them (the export extra).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from soundmond.head.meta import HEAD_CLASSES, HeadMeta
from soundmond.head.save import save_head

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "audio"
ARCHITECTURES = ("wav2vec2", "hubert", "wavlm", "audio-spectrogram-transformer", "whisper")
BIRD_CHORUS = "oss_birds_10s.flac"
NIGHT = "maad_jura_forest_night_20190522_0000.flac"
NIGHT_CUT = "maad_jura_forest_night_5s.flac"  # its first 5 s: one model clip of real soundscape


def export_args(model: Path | str, out: Path, check_audio: Path | None, **changes: object) -> argparse.Namespace:
    """`python -m export hf`'s arguments."""
    values: dict[str, object] = dict(
        model=str(model), revision=None, role="birds", int8=False, licence=None, clip_s=None, out=out, force=False,
        check_audio=check_audio,
    )
    values.update(changes)
    return argparse.Namespace(**values)


def check_audio_folder(folder: Path) -> Path:
    """The parity recordings: the 10-s bird chorus and the first 5 s of the night soundscape."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / BIRD_CHORUS).write_bytes((FIXTURES / BIRD_CHORUS).read_bytes())
    samples, rate = sf.read(FIXTURES / NIGHT, dtype="float32", always_2d=False)
    sf.write(folder / NIGHT_CUT, samples[: 5 * rate], rate)
    return folder


def make_checkpoints(root: Path, architectures: Sequence[str] = ARCHITECTURES,
                     labels: Sequence[str] | None = None) -> dict[str, Path]:
    os.environ.setdefault("USE_TF", "0")
    from export import hf_model

    extra = {} if labels is None else {"labels": labels}
    return {arch: hf_model.make_random_checkpoint(root / arch, arch, **extra) for arch in architectures}


def export(checkpoint: Path, out: Path, check_audio: Path | None, **changes: object) -> Path:
    from export import hf_model

    return hf_model.run(export_args(checkpoint, out, check_audio, **changes))


def random_hf_head(path: Path, label_count: int, trained_on: dict[str, str] | None = None) -> Path:
    """A head for an hf tagger of `label_count` labels on its probabilities (StandardScaler + LogisticRegression
    fitted on random numbers: meaningless predictions, a real head file), recording `trained_on` (file -> content
    sha256) as its training files."""
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.random((60, label_count))
    y = np.array(HEAD_CLASSES * 20)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=200)).fit(x, y)
    meta = HeadMeta(
        tagger_family="hf", tagger_label_count=label_count, features="probabilities", feature_dim=label_count,
        classes=list(HEAD_CLASSES), trained_on="random numbers (test head)", training_data_sha256="-",
        sklearn_version=sklearn.__version__, training_files_sha256=dict(trained_on or {}),
    )
    return save_head(path, model, meta).onnx


def load_labels(folder: Path) -> list[str]:
    """An exported folder's labels (`labels.txt`)."""
    return (folder / "labels.txt").read_text().splitlines()
