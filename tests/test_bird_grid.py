"""The bird chunk grid study (soundmond.workbench.bench.bird_grid): birdnetlib's chunking, the nesting of the strides'
grids in the 0.5-s base grid, and an end-to-end run on three corpus clips with the real BirdNET model, checking the
table's structure and the invariants that must hold (and only those: grids of stride 2 and 3 do not nest, so their
recalls are not compared)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from soundmond.capture.audio import load_audio
from soundmond.config import BirdConfig
from soundmond.models.birds import BirdnetModel
from soundmond.workbench.bench.bird_grid import (
    BASE_STRIDE_S,
    RULES,
    chunk_at,
    grid_rows,
    logit_scale,
    main,
    run_file,
    select_clips,
    split_starts,
)

RATE = 48000
SPECIES_A = "audio/natural/bird_xc130831_Amazilia_yucatanensis.flac"  # 6 s
SPECIES_B = "audio/natural/bird_xc549199_Melospiza_melodia.flac"  # 6 s
NONBIRD = "audio/other/esc50_dog_1-100032-A-0.flac"  # 5 s
STRIDES = (3.0, 2.0, 1.5, 1.0)
SENSITIVITIES = (1.0, 1.25, 0.75)
# which grids nest (every chunk of the coarser one is in the finer one): 3 in 1.5 and 1, 2 in 1; not 3 in 2, 1.5 in 1
NESTED = ((3.0, 1.5), (3.0, 1.0), (2.0, 1.0))


@pytest.mark.parametrize(
    ("seconds", "stride", "expected_s"),
    [
        # a chunk of >= 1.5 s is kept (zero-padded), the first shorter one ends the file
        (6.0, 3.0, [0, 3]),
        (6.0, 2.0, [0, 2, 4]),
        (6.0, 1.5, [0, 1.5, 3, 4.5]),
        (6.0, 1.0, [0, 1, 2, 3, 4]),
        (5.0, 3.0, [0, 3]),
        (5.0, 2.0, [0, 2]),
        (5.0, 1.5, [0, 1.5, 3]),
        (5.0, 1.0, [0, 1, 2, 3]),
        (4.4, 3.0, [0]),
        (1.4, 3.0, []),
    ],
)
def test_split_starts_follow_birdnetlib(seconds: float, stride: float, expected_s: list[float]) -> None:
    assert split_starts(int(seconds * RATE), RATE, stride) == [int(s * RATE) for s in expected_s]


def test_the_last_partial_chunk_is_zero_padded() -> None:
    wave = np.ones(int(4.5 * RATE), dtype=np.float32)
    chunk = chunk_at(wave, 3 * RATE)
    assert chunk.shape == (3 * RATE,)
    assert chunk[: int(1.5 * RATE)].min() == 1.0 and chunk[int(1.5 * RATE) :].max() == 0.0


@pytest.mark.parametrize("seconds", [1.5, 4.0, 5.0, 6.0, 10.0, 10.133, 19.542, 60.0])
def test_every_studied_grid_is_a_subset_of_the_base_grid(seconds: float) -> None:
    n = int(seconds * RATE)
    base = split_starts(n, RATE, BASE_STRIDE_S)
    for stride in STRIDES:
        rows = grid_rows(base, split_starts(n, RATE, stride))
        assert [base[i] for i in rows] == split_starts(n, RATE, stride)
    for coarse, fine in NESTED:
        assert set(split_starts(n, RATE, coarse)) <= set(split_starts(n, RATE, fine))


def test_a_grid_off_the_base_grid_is_refused() -> None:
    n = 6 * RATE
    with pytest.raises(ValueError, match="not on the 0.5-s base grid"):
        grid_rows(split_starts(n, RATE, BASE_STRIDE_S), split_starts(n, RATE, 0.75))


def test_sensitivity_is_birdnet_analyzers() -> None:
    assert logit_scale(1.0) == 1.0
    assert logit_scale(1.25) == 0.75
    assert logit_scale(0.75) == 1.25
    assert logit_scale(2.0) == 0.5 and logit_scale(0.0) == 1.5


def test_bad_strides_are_refused_before_anything_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--strides", "3,0.75", "--model", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "0.75 s is not a multiple of 0.5 s" in err and "e.g. 3,2,1.5,1" in err


@pytest.mark.shared
def test_clips_are_species_files_and_non_bird_clips(shared_corpus: Path) -> None:
    names = ["Amazilia yucatanensis", "Melospiza melodia"]
    clips = select_clips(shared_corpus, names)
    kinds = {c.file: c for c in clips}
    assert kinds[SPECIES_A].kind == "species" and kinds[SPECIES_A].target == 0
    assert kinds[SPECIES_B].target == 1
    assert kinds["audio/natural/bird_xc328987_Synthliboramphus_antiquus.flac"].target is None  # not in the list
    assert kinds[NONBIRD].kind == "nonbird"
    # clips with birds but no labelled species are neither (soundscapes, chirping birds, crows, hen, rooster)
    assert "audio/natural/oss_1min_bird_chorus.flac" not in kinds
    assert "audio/other/esc50_rooster_1-26806-A-1.flac" not in kinds
    assert "audio/natural/esc50_crow_1-103298-A-9.flac" not in kinds


@pytest.mark.shared
@pytest.mark.slow
def test_derived_grid_chunks_equal_a_direct_run(shared_corpus: Path, birdnet_dir: Path) -> None:
    """The stride-2 chunks taken from the base run give the logits a run on the stride-2 grid itself gives."""
    model = BirdnetModel(birdnet_dir, BirdConfig(path=birdnet_dir))
    (clip,) = select_clips(shared_corpus, model.scientific_names, [SPECIES_B])
    base = run_file(model, clip, floor=-np.inf)
    wave, _ = load_audio(clip.path, RATE)
    starts = split_starts(wave.size, RATE, 2.0)
    for row, start in zip(grid_rows(base.starts, starts), starts, strict=True):
        direct, _ = model.chunk_outputs(chunk_at(wave, start))
        sel = base.rows == row
        np.testing.assert_array_equal(base.logits[sel], direct.reshape(-1)[base.classes[sel]])
        assert sel.sum() == int((~model.sound_class_mask).sum())


@pytest.mark.shared
@pytest.mark.slow
def test_study_end_to_end_on_three_clips(shared_corpus: Path, birdnet_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--corpus", str(shared_corpus), "--model", str(birdnet_dir), "--out", str(tmp_path)]
    for file in (SPECIES_A, SPECIES_B, NONBIRD):
        args += ["--only", file]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    report = json.loads((tmp_path / "bird_grid.json").read_text())
    assert (tmp_path / "bird_grid.md").read_text() == stdout
    rows = report["rows"]
    assert len(rows) == len(STRIDES) * len(SENSITIVITIES) * len(RULES)
    assert stdout.count("\n| ") == len(rows) + 1  # header + one line per row (the separator starts with "|-")
    by = {(r["stride_s"], r["sensitivity"], r["rule"]): r for r in rows}
    assert set(by) == {(s, v, r) for s in STRIDES for v in SENSITIVITIES for r in RULES}

    # cost: exact chunk counts (6-s, 6-s, 5-s clips) and their ratios to stride 3
    chunks = {3.0: 2 + 2 + 2, 2.0: 3 + 3 + 2, 1.5: 4 + 4 + 3, 1.0: 5 + 5 + 4}
    hours = (6 + 6 + 5) / 3600
    for (stride, _, _), r in by.items():
        assert r["chunks"] == chunks[stride]
        assert r["chunks_ratio"] == chunks[stride] / chunks[3.0]
        assert r["chunks_per_h"] == pytest.approx(chunks[stride] / hours)
        assert r["stream_chunks_per_h"] == 3600 / stride
        assert r["ms_per_h"] > 0
        assert r["species_files"] == 2 and r["nonbird_clips"] == 1
    assert report["run"]["base_chunks"] == 10 + 10 + 8

    for v in SENSITIVITIES:
        for rule in RULES:
            for coarse, fine in NESTED:  # a superset of chunks keeps at least as much
                a, b = by[(coarse, v, rule)], by[(fine, v, rule)]
                assert b["recalled"] >= a["recalled"] and b["false_clips"] >= a["false_clips"]
                assert b["false_per_h"] >= a["false_per_h"] and b["hits_per_h"] >= a["hits_per_h"]
    for s in STRIDES:
        for v in SENSITIVITIES:
            high, low, second = (by[(s, v, rule)] for rule in RULES)
            # the second pass keeps a species only where it reaches 0.25: per-file figures equal the 0.25 row's
            assert second["recalled"] == high["recalled"] and second["false_clips"] == high["false_clips"]
            assert low["recalled"] >= high["recalled"]
            assert high["false_per_h"] <= second["false_per_h"] <= low["false_per_h"]
            assert high["hits_per_h"] <= second["hits_per_h"] <= low["hits_per_h"]
        for rule in RULES:  # below 0.5 a flatter sigmoid (higher sensitivity) keeps more
            flat, plain, sharp = (by[(s, v, rule)] for v in (1.25, 1.0, 0.75))
            assert flat["recalled"] >= plain["recalled"] >= sharp["recalled"]
            assert flat["false_per_h"] >= plain["false_per_h"] >= sharp["false_per_h"]

    # recall agrees with the per-file maxima of the labelled species (sensitivity 1)
    maxima = {f["file"]: f["max_confidence_by_stride"] for f in report["species_files"]}
    for s in STRIDES:
        found = sum(m[f"{s:g}"] >= 0.25 for m in maxima.values())
        assert by[(s, 1.0, "0.25")]["recalled"] == found
    assert maxima[SPECIES_B]["3"] >= 0.25  # a clear song sparrow: the figures are not all zero
