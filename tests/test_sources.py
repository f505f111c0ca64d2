"""FileSource on real recordings and on every kind of bad file: each bad file is named, the rest still flows."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundmond.capture.files import FileSource, start_time_from_name

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "audio"


def collect(paths: list[Path], window_s: float = 5.0, hop_s: float = 5.0, **kw: object):
    errors: list[tuple[Path, str]] = []
    source = FileSource(paths, window_s, hop_s, on_error=lambda p, m: errors.append((p, m)), **kw)  # type: ignore[arg-type]
    return list(source.windows(threading.Event())), errors, source


def test_real_fixtures_make_exact_windows() -> None:
    windows, errors, source = collect([FIXTURES])
    assert errors == []
    assert source.files_done == 8
    by_file: dict[str, list] = {}
    for w in windows:
        by_file.setdefault(Path(w.source).name, []).append(w)
        assert w.samples.dtype == np.float32 and w.samples.ndim == 1
        assert w.samples.shape[0] == round(5.0 * w.sample_rate_hz)
    # 19.54 s at 44.1 kHz: windows at 0, 5, 10 and one last window ending at the end of the file
    spinetail = by_file["maad_spinetail_Cranioleuca_erythrops.flac"]
    assert [round(w.start_s, 2) for w in spinetail] == [0.0, 5.0, 10.0, 14.54]
    assert spinetail[-1].end_s == pytest.approx(19.542, abs=1e-3)
    original, rate = sf.read(FIXTURES / "maad_spinetail_Cranioleuca_erythrops.flac", dtype="float32")
    assert rate == 44100
    assert np.array_equal(spinetail[1].samples, original[5 * rate : 10 * rate])


def test_start_time_from_audiomoth_name() -> None:
    expected = dt.datetime(2019, 5, 22, 6, 0, tzinfo=dt.timezone.utc).timestamp()
    windows, _, _ = collect([FIXTURES / "maad_jura_forest_20190522_0600.flac"])
    assert windows[0].start_unix_s == expected
    assert windows[1].start_unix_s == expected + 5.0
    assert start_time_from_name(Path("20260501_053012.WAV")) == dt.datetime(
        2026, 5, 1, 5, 30, 12, tzinfo=dt.timezone.utc).timestamp()
    assert start_time_from_name(Path("recording.wav")) is None
    assert start_time_from_name(Path("20261399_999999.WAV")) is None  # not a date: falls back to the file time


def test_overlapping_hop() -> None:
    windows, _, _ = collect([FIXTURES / "oss_birds_10s.flac"], 5.0, 2.5)
    assert [w.start_s for w in windows] == [0.0, 2.5, 5.0]
    assert windows[-1].end_s == pytest.approx(10.0)  # the 0.13-s tail is shorter than min_tail_s


def _write(path: Path, data: np.ndarray, rate: int, subtype: str = "FLOAT") -> Path:
    sf.write(path, data, rate, subtype=subtype)
    return path


def test_bad_files_are_named_and_the_rest_still_flows(tmp_path: Path) -> None:
    good = _write(tmp_path / "a_good.wav", np.random.default_rng(0).normal(0, 0.1, 16000 * 6).astype(np.float32), 16000)
    (tmp_path / "b_empty.wav").write_bytes(b"")
    (tmp_path / "c_garbage.flac").write_bytes(b"fLaC" + bytes(range(256)) * 20)
    truncated = (FIXTURES / "whisp_field_horn.flac").read_bytes()
    (tmp_path / "d_truncated.flac").write_bytes(truncated[: len(truncated) // 3])
    (tmp_path / "e_text.mp3").write_text("not audio at all")
    windows, errors, source = collect([tmp_path])
    named = {p.name: m for p, m in errors}
    assert set(named) >= {"b_empty.wav", "c_garbage.flac", "e_text.mp3"}
    assert "empty" in named["b_empty.wav"]
    assert all(m for m in named.values())
    assert any(Path(w.source) == good for w in windows)
    # a truncated FLAC either yields the audio that is there or is named as failed, never both silently
    truncated_windows = [w for w in windows if Path(w.source).name == "d_truncated.flac"]
    assert truncated_windows or "d_truncated.flac" in named


def test_missing_path_is_reported(tmp_path: Path) -> None:
    windows, errors, _ = collect([tmp_path / "nope.wav"])
    assert windows == [] and errors[0][1] == "no such file or folder"


def test_nan_and_inf_samples_become_silence_and_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = np.full(16000 * 5, 0.25, dtype=np.float32)
    data[100:200] = np.nan
    data[300] = np.inf
    path = _write(tmp_path / "nan.wav", data, 16000)
    windows, errors, _ = collect([path])
    assert errors == []
    assert np.isfinite(windows[0].samples).all()
    assert windows[0].samples[150] == 0.0 and windows[0].samples[1000] == pytest.approx(0.25)
    assert "101 NaN/inf samples" in caplog.text


def test_all_nan_file_fails_clearly(tmp_path: Path) -> None:
    path = _write(tmp_path / "allnan.wav", np.full(16000 * 5, np.nan, dtype=np.float32), 16000)
    windows, errors, _ = collect([path])
    assert windows == [] and "NaN" in errors[0][1]


def test_short_file_is_padded_and_says_so(tmp_path: Path) -> None:
    path = _write(tmp_path / "short.wav", np.full(8000 * 2, 0.1, dtype=np.float32), 8000)
    windows, errors, _ = collect([path])
    assert errors == [] and len(windows) == 1
    w = windows[0]
    assert w.samples.shape[0] == 8000 * 5 and w.padded_samples == 8000 * 3
    assert w.end_s == pytest.approx(2.0)  # the window never claims audio that was not there
    assert np.all(w.samples[16000:] == 0)


def test_multichannel_mixdown_and_channel_choice(tmp_path: Path) -> None:
    stereo = np.stack([np.full(22050 * 5, 0.5), np.full(22050 * 5, -0.1)], axis=1).astype(np.float32)
    path = _write(tmp_path / "stereo.wav", stereo, 22050)
    mixed, _, _ = collect([path])
    assert mixed[0].samples[0] == pytest.approx(0.2)
    right, _, _ = collect([path], channel=1)
    assert right[0].samples[0] == pytest.approx(-0.1)
    bad, errors, _ = collect([path], channel=5)
    assert bad == [] and "channel 5" in errors[0][1]


def test_ogg_and_clipped_audio_decode(tmp_path: Path) -> None:
    clipped = np.clip(np.sin(np.arange(48000 * 5) / 5.0) * 3, -1, 1).astype(np.float32)
    path = _write(tmp_path / "clipped.ogg", clipped, 48000, subtype="VORBIS")
    windows, errors, _ = collect([path])
    assert errors == [] and len(windows) == 1 and windows[0].sample_rate_hz == 48000


def test_realtime_pacing_uses_the_clock() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    windows, _, _ = collect([FIXTURES / "oss_birds_10s.flac"], realtime=True, sleep=sleep, clock=lambda: now[0])
    assert len(windows) == 2
    assert sum(slept) == pytest.approx(10.0)


def test_stop_event_ends_the_replay() -> None:
    stop = threading.Event()
    source = FileSource([FIXTURES], 5.0, 5.0)
    got = []
    for w in source.windows(stop):
        got.append(w)
        stop.set()
    assert len(got) == 1
