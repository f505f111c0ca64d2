"""The audio hash (`soundmond.workbench.audio_hash.audio_sha256`): the same samples in FLAC and WAV hash the same, other
audio does not; and head metadata without audio hashes still loads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundmond.head.meta import HEAD_CLASSES, HeadMeta, meta_dict
from soundmond.identity import file_sha256
from soundmond.workbench.audio_hash import audio_sha256


def _samples(seed: int = 1, n: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * 3000).clip(-32768, 32767).astype(np.int16)


def test_flac_and_wav_of_the_same_samples_hash_the_same(tmp_path: Path) -> None:
    x = _samples()
    sf.write(tmp_path / "a.flac", x, 16000, subtype="PCM_16")
    sf.write(tmp_path / "a.wav", x, 16000, subtype="PCM_16")
    assert file_sha256(tmp_path / "a.flac") != file_sha256(tmp_path / "a.wav")  # other bytes ...
    assert audio_sha256(tmp_path / "a.flac") == audio_sha256(tmp_path / "a.wav")  # ... the same audio
    assert len(audio_sha256(tmp_path / "a.wav")) == 64


def test_other_audio_hashes_differently(tmp_path: Path) -> None:
    x = _samples()
    sf.write(tmp_path / "a.wav", x, 16000, subtype="PCM_16")
    y = x.copy()
    y[5000] += 1  # one sample one step off
    sf.write(tmp_path / "one_step.wav", y, 16000, subtype="PCM_16")
    sf.write(tmp_path / "rate.wav", x, 22050, subtype="PCM_16")  # same samples, another sample rate
    sf.write(tmp_path / "cut.wav", x[:-1], 16000, subtype="PCM_16")
    sf.write(tmp_path / "stereo.wav", np.stack([x, x], axis=1), 16000, subtype="PCM_16")  # both channels = mono
    hashes = {p.name: audio_sha256(p) for p in sorted(tmp_path.iterdir())}
    assert len(set(hashes.values())) == len(hashes) == 5, hashes


def test_the_hash_is_the_documented_one(tmp_path: Path) -> None:
    """sha256 of the version line, "rate:channels\\n" and the int32 samples (16-bit s -> s << 16), little-endian."""
    x = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    sf.write(tmp_path / "a.wav", x, 8000, subtype="PCM_16")
    expected = hashlib.sha256(b"soundmond-audio-sha256-v1\n" + b"8000:1\n"
                              + (x.astype("<i4") << 16).astype("<i4").tobytes()).hexdigest()
    assert audio_sha256(tmp_path / "a.wav") == expected


def test_undecodable_file_raises(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(sf.LibsndfileError):
        audio_sha256(bad)


def test_head_meta_without_audio_hashes_loads_and_stores_as_before(tmp_path: Path) -> None:
    old = {"tagger_family": "yamnet", "tagger_label_count": 521, "features": "probabilities", "feature_dim": 521,
           "classes": HEAD_CLASSES, "trained_on": "x", "training_data_sha256": "0" * 64,
           "training_files_sha256": {"a.flac": "1" * 64}}
    meta = HeadMeta.from_dict(tmp_path / "h.onnx", old)
    assert meta.training_audio_sha256 == {}
    assert "training_audio_sha256" not in meta_dict(meta)  # an old head converts to the same bytes as before
    new = HeadMeta.from_dict(tmp_path / "h.onnx", {**old, "training_audio_sha256": {"a.flac": "2" * 64}})
    assert meta_dict(new)["training_audio_sha256"] == {"a.flac": "2" * 64}
