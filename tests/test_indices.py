"""Acoustic indices (`soundmond.soundscape.indices`): equal to scikit-maad's on corpus recordings with the same
parameters, and computed by the analyzer on every window with real audio.

Tolerance against maad: a relative difference of at most 1e-9 (absolute 1e-12 near zero) on float64 samples. Both
sides compute the same float64 arithmetic in a different order; the differences measured on the recordings below are
under 4e-15. scikit-maad is a test-only dependency (the `dev` extra).
"""

from __future__ import annotations

import math
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundmond.analysis import Analyzer
from soundmond.capture.files import FileSource
from soundmond.config import ConfigError, parse_config
from soundmond.data import INDEX_NAMES, AcousticIndices, AudioWindow
from soundmond.soundscape import indices

REL_TOL = 1e-9
ABS_TOL = 1e-12
CALIBRATION_DB = 121.5

# corpus recordings at every sample rate it holds (maad's own Jura soundscapes among them), natural and industrial
CORPUS_FILES = (
    "audio/natural/maad_jura_forest_20190522_0515.flac",  # 22 kHz, before dawn
    "audio/natural/maad_jura_forest_20190522_0900.flac",  # 22 kHz
    "audio/industrial/dcase2020t2_machine_normal_id_00_00000000.flac",  # 16 kHz: bands cut at 8 kHz
    "audio/industrial/whisp_field_horn.flac",  # 48 kHz
    "audio/industrial/esc50_engine_1-50454-A-44.flac",  # 44.1 kHz
    "audio/natural/bird_xc555073_Cyanocitta_cristata.flac",  # 44.1 kHz focal bird
)


def maad_indices(s: np.ndarray, fs: int, calibration_db: float) -> dict[str, float]:
    """Every index from scikit-maad's own functions, with the parameters `soundmond.soundscape.indices` states."""
    maad = pytest.importorskip("maad")
    from maad import features, sound, spl  # noqa: F401  (maad's subpackages load lazily)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        amp, _, fn, _ = maad.sound.spectrogram(s, fs, window="hann", nperseg=1024, noverlap=512, mode="amplitude")
        power = amp**2
        fmax = indices.top_band_hz(fs, 10000, 1000)
        hf = maad.features.frequency_entropy(power, compatibility="QUT")[0]
        ht = maad.features.temporal_entropy(s, compatibility="QUT", mode="fast", Nt=512)
        leq_chunks = maad.spl.wav2leq(s - s.mean(), fs, gain=0, Vadc=2, dt=1, sensitivity=94 - calibration_db,
                                      dBref=94)  # soundmond's levels are without DC (the indices module's docstring)
        return {
            "ndsi": maad.features.soundscape_index(power, fn, flim_bioPh=(2000, 8000), flim_antroPh=(1000, 2000),
                                                   R_compatible="soundecology")[0],
            "aci": maad.features.acoustic_complexity_index(amp)[2],
            "adi": maad.features.acoustic_diversity_index(amp, fn, fmin=0, fmax=fmax, bin_step=1000,
                                                          dB_threshold=-50),
            "aei": maad.features.acoustic_eveness_index(amp, fn, fmin=0, fmax=fmax, bin_step=1000, dB_threshold=-50),
            "bi": maad.features.bioacoustics_index(amp, fn, flim=(2000, 8000), R_compatible="soundecology"),
            "hf": hf,
            "ht": ht,
            "h": hf * ht,
            "eas": maad.features.spectral_entropy(power, fn)[0],
            "leq_db_spl": 10 * math.log10(float(np.mean(np.power(10.0, leq_chunks / 10)))),
        }


@pytest.mark.shared
@pytest.mark.parametrize("name", CORPUS_FILES)
def test_every_index_equals_scikit_maad_on_corpus_recordings(shared_corpus: Path, name: str) -> None:
    s, fs = sf.read(shared_corpus / name, dtype="float64")
    s = s[: 5 * fs]  # one 5-s window, whole seconds (wav2leq's 1-s chunks cover it exactly)
    ours = indices.compute(s, fs, CALIBRATION_DB)
    assert ours is not None
    ref = maad_indices(s, fs, CALIBRATION_DB)
    for key in ("ndsi", "aci", "adi", "aei", "bi", "hf", "ht", "h", "leq_db_spl"):
        assert getattr(ours, key) == pytest.approx(ref[key], rel=REL_TOL, abs=ABS_TOL), key
    assert ours.hf == pytest.approx(1.0 - ref["eas"], rel=REL_TOL)  # maad's spectral_entropy: EAS = 1 - Hf
    assert ours.leq_dbfs == pytest.approx(ours.leq_db_spl - CALIBRATION_DB, abs=1e-9)
    assert ours.leq_dbfs == pytest.approx(10 * math.log10(np.mean((s - s.mean()) ** 2)), abs=1e-9)
    # the values mean something: entropies in 0..1, NDSI in -1..1, a positive ACI
    assert 0 < ours.hf < 1 and 0 < ours.ht < 1 and -1 <= ours.ndsi <= 1 and ours.aci > 0


@pytest.mark.shared
def test_the_indices_tell_a_dawn_chorus_from_a_machine(shared_corpus: Path) -> None:
    """Not only equal to maad: the bands do their job on real audio (biophony vs a machine's low hum)."""
    def of(name: str) -> AcousticIndices:
        s, fs = sf.read(shared_corpus / name, dtype="float32")
        ix = indices.compute(s[: 5 * fs], fs)
        assert ix is not None
        return ix

    chorus = of("audio/natural/maad_jura_forest_20190522_0700.flac")
    machine = of("audio/industrial/dcase2020t2_machine_normal_id_00_00000000.flac")
    assert chorus.ndsi > 0.9 and machine.ndsi < -0.3  # measured: 0.99 and -0.38
    assert chorus.leq_db_spl is None  # no calibration given


def test_digital_silence_and_short_tails_have_no_indices() -> None:
    assert indices.compute(np.zeros(48000, np.float32), 48000) is None
    assert indices.compute(np.full(48000, 1e-6, np.float32), 48000) is None  # under one 16-bit step
    assert indices.compute(np.full(48000, 0.01, np.float32), 48000) is None  # a DC offset alone: no sound (was junk)
    rng = np.random.default_rng(0)
    assert indices.compute(rng.normal(0, 0.1, 1500).astype(np.float32), 48000) is None  # 1 spectrogram frame
    quiet_noise = indices.compute(rng.normal(0, 1e-4, 48000).astype(np.float32), 48000)  # -80 dBFS: a quiet window
    assert quiet_noise is not None and quiet_noise.leq_dbfs == pytest.approx(-80, abs=0.1)
    on_offset = indices.compute(rng.normal(0, 1e-4, 48000).astype(np.float32) + 0.2, 48000)  # the same on a DC offset
    assert on_offset is not None and on_offset.leq_dbfs == pytest.approx(-80, abs=0.1)


def _windows(path: Path) -> list[AudioWindow]:
    return list(FileSource([path], 5.0, 5.0).windows(threading.Event()))


def test_the_analyzer_adds_indices_to_every_window_with_audio(fixture_audio: Path) -> None:
    """Real windows of a real recording: the analyzer's indices are `compute` on the window's real samples, for quiet
    (floor above the recording) and gated windows too; off, none; digital silence, none."""
    windows = _windows(fixture_audio / "maad_jura_forest_night_20190522_0000.flac")
    assert len(windows) >= 2
    analyzer = Analyzer(None, None, None, quiet_below_dbfs=-1.0, indices=True, calibration_db=CALIBRATION_DB)
    for w in windows:
        result = analyzer.analyze(w).result
        assert result.status == "skipped_quiet" and result.group is not None and result.group.quiet
        real = w.samples[: w.samples.shape[0] - w.padded_samples]
        expected = indices.compute(real, w.sample_rate_hz, CALIBRATION_DB)
        assert result.indices == expected and expected is not None
        assert result.indices.leq_dbfs == pytest.approx(result.rms_dbfs, abs=1e-6)
    assert Analyzer(None, None, None, indices=False).analyze(windows[0]).result.indices is None
    silent = AudioWindow("z", "mic:test", 0.0, 0.0, 48000, np.zeros(240000, np.float32))
    assert Analyzer(None, None, None, indices=True).analyze(silent).result.indices is None


def test_calibration_db_is_validated_and_indices_can_be_turned_off() -> None:
    cfg = parse_config("source:\n  type: mic\n  calibration_db: 124\nindices:\n  enabled: false\n", "t.yaml")
    assert cfg.source.calibration_db == 124 and cfg.indices.enabled is False
    assert parse_config("", "t.yaml").indices.enabled is True
    for bad, key in (("source:\n  type: file\n  calibration_db: -3\n", "source.calibration_db"),
                     ("source:\n  type: mic\n  calibration_db: loud\n", "source.calibration_db"),
                     ("indices:\n  enabled: maybe\n", "indices.enabled"),
                     ("indices:\n  bands: [1, 2]\n", "indices.bands")):
        with pytest.raises(ConfigError) as info:
            parse_config(bad, "t.yaml")
        assert key in str(info.value)


def test_index_names_match_the_dataclass() -> None:
    ix = indices.compute(np.random.default_rng(1).normal(0, 0.1, 48000), 48000, 100.0)
    assert ix is not None
    assert tuple(f for f in ix.__dataclass_fields__) == INDEX_NAMES
