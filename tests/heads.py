"""A head that needs BirdNET's embedding, for the loader's and check-config's refusals (the shipped heads use the
tagger's probabilities only since the ontology-prior heads of issue 15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from soundmond.head.meta import HEAD_CLASSES, HeadMeta
from soundmond.head.save import save_head

BIRD_FEATURES = "probabilities+embedding+birdnet_embedding"
BIRD_DIM = 521 + 1024 + 1024  # YAMNet's probabilities and embedding, BirdNET's embedding


def bird_head(path: Path) -> Path:
    """An ONNX head (with its .skops) for YAMNet that needs BirdNET's embedding, fitted on random rows."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, BIRD_DIM))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)).fit(x, np.array(HEAD_CLASSES * 10))
    meta = HeadMeta(tagger_family="yamnet", tagger_label_count=521, features=BIRD_FEATURES, feature_dim=BIRD_DIM,
                    classes=list(HEAD_CLASSES), trained_on="test: random rows", training_data_sha256="0" * 64)
    return save_head(path, model, meta).onnx
