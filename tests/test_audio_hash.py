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
    sf.write(tmp_path / "a24.flac", x.astype(np.int32) << 16, 16000, subtype="PCM_24")  # the same samples in 24 bits
    sf.write(tmp_path / "f32.wav", x / np.float32(32768), 16000, subtype="FLOAT")  # ... and as 32-bit floats
    assert file_sha256(tmp_path / "a.flac") != file_sha256(tmp_path / "a.wav")  # other bytes ...
    hashes = {audio_sha256(tmp_path / n) for n in ("a.flac", "a.wav", "a24.flac", "f32.wav")}
    assert len(hashes) == 1  # ... the same audio
    assert len(audio_sha256(tmp_path / "a.wav")) == 64


def test_float_files_hash_their_samples(tmp_path: Path) -> None:
    """Different float WAVs hash differently (v1 decoded them as int32, which libsndfile does not scale for float
    files: every one read as zeros and they all hashed alike, so evaluate called unseen clips in-sample)."""
    rng = np.random.default_rng(3)
    for k in range(3):
        sf.write(tmp_path / f"noise{k}.wav", (rng.standard_normal(16000) * 0.3).astype(np.float32), 16000,
                 subtype="FLOAT")
    sf.write(tmp_path / "zeros.wav", np.zeros(16000, np.int16), 16000, subtype="PCM_16")
    hashes = {audio_sha256(p) for p in tmp_path.iterdir()}
    assert len(hashes) == 4


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
    """sha256 of the version line, "rate:channels\\n" and the float64 samples (16-bit s -> s / 32768), little-endian."""
    x = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    sf.write(tmp_path / "a.wav", x, 8000, subtype="PCM_16")
    expected = hashlib.sha256(b"soundmond-audio-sha256-v2\n" + b"8000:1\n"
                              + (x.astype("<f8") / 32768.0).astype("<f8").tobytes()).hexdigest()
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
