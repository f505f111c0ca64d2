"""The numpy front-ends of Hugging Face audio classifiers against transformers' own extractors, on real audio."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from soundmond.capture.audio import find_audio_files, load_audio
from soundmond.models.features import ASTFeatures
from soundmond.models.hf_features import (
    WaveformFeatures,
    WhisperFeatures,
    ast_features_dict,
    features_from_settings,
    slaney_mel_filters,
)

os.environ.setdefault("USE_TF", "0")
transformers = pytest.importorskip("transformers")

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "audio"


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Real recordings (the corpus files copied as fixtures) at 16 kHz, plus a 3-s excerpt (shorter than a clip)."""
    files = find_audio_files(FIXTURES)
    assert len(files) >= 5
    samples = [load_audio(path, 16000)[0] for path in files[:5]]
    return [*samples, samples[0][16000:64000]]


def test_waveform_normalisation_is_transformers_exactly(clips: list[np.ndarray]) -> None:
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)
    ours = WaveformFeatures(do_normalize=True)
    for clip in clips:
        ref = extractor(clip, sampling_rate=16000, return_tensors="np")["input_values"][0]
        got = ours(clip)
        assert got.dtype == np.float32 and got.shape == clip.shape
        assert np.max(np.abs(ref - got)) <= 1e-5
        assert abs(float(got.mean())) < 1e-3 and abs(float(got.std()) - 1.0) < 1e-2
    raw = WaveformFeatures(do_normalize=False)(clips[0])
    assert np.array_equal(raw, clips[0])


def test_slaney_mel_filters_equal_transformers() -> None:
    from transformers.audio_utils import mel_filter_bank

    for mels in (80, 128, 40):
        ref = mel_filter_bank(
            num_frequency_bins=201,
            num_mel_filters=mels,
            min_frequency=0.0,
            max_frequency=8000.0,
            sampling_rate=16000,
            norm="slaney",
            mel_scale="slaney",
        )
        np.testing.assert_allclose(slaney_mel_filters(201, mels, 0.0, 8000.0, 16000), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("feature_size", "chunk_length"), [(80, 30), (128, 30), (40, 5)])
def test_whisper_log_mel_matches_transformers(
    clips: list[np.ndarray], feature_size: int, chunk_length: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """To 1e-5 against transformers' numpy path (what WhisperFeatureExtractor computes without torch, as soundmond
    runs); within 1e-4 of its torch path, whose float32 STFT is itself that far from the float64 result on quiet
    recordings (measured: up to 5.6e-5 on the Jura night and spinetail fixtures)."""
    from transformers.models.whisper import feature_extraction_whisper

    extractor = transformers.WhisperFeatureExtractor(feature_size=feature_size, chunk_length=chunk_length)
    ours = WhisperFeatures(feature_size=feature_size, chunk_length=chunk_length)
    with_torch = [extractor(clip, sampling_rate=16000, return_tensors="np")["input_features"][0] for clip in clips]
    monkeypatch.setattr(feature_extraction_whisper, "is_torch_available", lambda: False)
    for clip, torch_ref in zip(clips, with_torch, strict=True):
        ref = extractor(clip, sampling_rate=16000, return_tensors="np")["input_features"][0]
        got = ours(clip)
        assert got.shape == ref.shape == (feature_size, chunk_length * 100)
        assert np.max(np.abs(ref - got)) <= 1e-5
        assert np.max(np.abs(torch_ref - got)) <= 1e-4


def test_ast_fbank_from_hf_settings_matches_transformers(clips: list[np.ndarray]) -> None:
    extractor = transformers.ASTFeatureExtractor(max_length=300)
    features = features_from_settings(ast_features_dict(ASTFeatures(max_length=300)))
    assert isinstance(features, ASTFeatures)
    for clip in clips[:3]:
        ref = extractor(clip, sampling_rate=16000, return_tensors="np")["input_values"][0]
        assert np.max(np.abs(ref - features(clip))) <= 1e-5


def test_settings_round_trip_and_unknown_kind() -> None:
    for features in (WaveformFeatures(do_normalize=False), WhisperFeatures(feature_size=40, chunk_length=5)):
        again = features_from_settings(features.as_dict())
        assert again == features
    with pytest.raises(ValueError, match="unknown feature kind 'mfcc'"):
        features_from_settings({"kind": "mfcc"})
