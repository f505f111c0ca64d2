"""soundmond.models on real exported models and real recordings (tests/fixtures/audio)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from soundmond.capture.audio import load_audio
from soundmond.config import BirdConfig, ConfigError, LocationFilterConfig, TaggerConfig
from soundmond.identity import file_sha256
from soundmond.models.birds import (
    BIRDNET_SOUND_CLASSES_V24,
    BirdnetMetaModel,
    BirdnetModel,
    birdnet_week,
    is_sound_class,
    split_birdnet_label,
)
from soundmond.models.sessions import (
    ModelOutputError,
    check_sidecar,
    frame_starts,
    make_session,
)
from soundmond.models.sidecar import ModelFolderError, model_digest, read_sidecar, write_sidecar
from soundmond.models.taggers import AstTagger, YamnetTagger, load_tagger
from soundmond.protocols import BirdModel, Tagger

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "audio"
SPINETAIL = FIXTURES / "maad_spinetail_Cranioleuca_erythrops.flac"
# 2018-09-19, the date of the spinetail recording (Valle del Cauca, Colombia): BirdNET week 35
SEPT_19_2018 = dt.datetime(2018, 9, 19, 7, 0, tzinfo=dt.timezone.utc).timestamp()
CALI = (3.45, -76.53)
MUNICH = (48.14, 11.58)


def window(name: str, rate: int, start_s: float = 0.0, length_s: float = 5.0) -> np.ndarray:
    samples, _ = load_audio(FIXTURES / name, rate)
    a = int(start_s * rate)
    return samples[a : a + int(length_s * rate)]


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def yamnet(yamnet_dir: Path) -> YamnetTagger:
    return YamnetTagger(yamnet_dir, TaggerConfig(family="yamnet", path=yamnet_dir, threads=2))


@pytest.fixture(scope="module")
def birdnet_cali(birdnet_dir: Path) -> BirdnetModel:
    return BirdnetModel(birdnet_dir, BirdConfig(path=birdnet_dir, min_confidence=0.1, threads=2), *CALI)


# --- sessions and sidecars -------------------------------------------------------------------------------------------


def test_make_session_uses_explicit_options(yamnet_dir: Path) -> None:
    session = make_session(yamnet_dir / "model.onnx", threads=2)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_make_session_translates_ort_errors(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ModelFolderError, match="ONNX Runtime cannot load model.onnx") as info:
        make_session(bad, threads=1)
    assert "re-export" in info.value.hint


def test_sidecar_family_mismatch_names_the_config_key(yamnet_dir: Path, birdnet_dir: Path) -> None:
    with pytest.raises(ModelFolderError, match=r"models\.tagger\.family is 'ast'") as info:
        AstTagger(yamnet_dir, TaggerConfig(family="ast", path=yamnet_dir))
    assert "set models.tagger.family: yamnet" in info.value.hint
    with pytest.raises(ModelFolderError, match=r"models\.birds"):
        check_sidecar(yamnet_dir, "birdnet", BirdConfig(path=yamnet_dir))
    with pytest.raises(ModelFolderError, match=r"models\.tagger"):
        load_tagger(birdnet_dir, TaggerConfig(family="yamnet", path=birdnet_dir))


def test_tampered_model_is_refused(yamnet_dir: Path, tmp_path: Path) -> None:
    folder = copy_folder(yamnet_dir, tmp_path / "yamnet")
    model = folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match="model.onnx does not match the checksum"):
        YamnetTagger(folder, TaggerConfig(path=folder))


def test_label_count_mismatch_is_refused(yamnet_dir: Path, tmp_path: Path) -> None:
    folder = copy_folder(yamnet_dir, tmp_path / "yamnet")
    labels = folder / "labels.csv"
    labels.write_text("\n".join(labels.read_text().splitlines()[:-1]) + "\n")  # one label fewer
    sidecar = read_sidecar(folder)
    files = dict(sidecar.files, **{"labels.csv": file_sha256(labels)})  # checksums consistent: only the count is off
    write_sidecar(folder, sidecar.model_copy(update={"files": files}))
    with pytest.raises(ModelFolderError, match="520 labels but model.json says label_count 521"):
        check_sidecar(folder, "yamnet", TaggerConfig(path=folder))


def test_sidecar_with_wrong_shapes_is_refused(yamnet_dir: Path, tmp_path: Path) -> None:
    folder = copy_folder(yamnet_dir, tmp_path / "yamnet")
    data = json.loads((folder / "model.json").read_text())
    data["inputs"][0]["shape"] = ["batch", 16000]
    data["chunk_samples"] = 16000
    (folder / "model.json").write_text(json.dumps(data))
    # the sidecar is self-consistent (no checksum covers model.json itself) but the graph takes 15600 samples
    with pytest.raises(ModelFolderError, match=r"model.onnx's 'audio' has shape \['batch', 15600\]"):
        YamnetTagger(folder, TaggerConfig(path=folder))


def test_missing_folder_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="no such model folder") as info:
        YamnetTagger(tmp_path / "nope", TaggerConfig())
    assert "models.tagger.path" in info.value.hint


# --- YAMNet ----------------------------------------------------------------------------------------------------------


def test_yamnet_implements_tagger(yamnet: YamnetTagger) -> None:
    assert isinstance(yamnet, Tagger)
    assert yamnet.family == "yamnet" and yamnet.sample_rate_hz == 16000 and len(yamnet.labels) == 521


def test_yamnet_tags_the_horn_as_a_vehicle_horn(yamnet: YamnetTagger) -> None:
    out = yamnet.tag(window("whisp_field_horn.flac", 16000))
    top = [s.label for s in out.top]
    assert top[0] == "Vehicle horn, car horn, honking"
    assert "Vehicle" in top
    assert out.probabilities.shape == (521,) and out.embedding.shape == (1024,)
    assert out.probabilities.dtype == np.float32
    assert 0.0 <= out.probabilities.min() and out.probabilities.max() <= 1.0
    assert [s.score for s in out.top] == sorted((s.score for s in out.top), reverse=True)


def test_yamnet_engine_birds_and_silence(yamnet: YamnetTagger) -> None:
    assert yamnet.tag(window("whisp_field_engine.flac", 16000)).top[0].label == "Vehicle"
    birds = {s.label for s in yamnet.tag(window("maad_spinetail_Cranioleuca_erythrops.flac", 16000)).top}
    assert {"Bird", "Animal"} <= birds
    assert yamnet.tag(window("maad_jura_forest_night_20190522_0000.flac", 16000)).top[0].label == "Silence"


def test_yamnet_short_window_is_padded_and_long_window_pooled(yamnet: YamnetTagger, yamnet_dir: Path) -> None:
    short = yamnet.tag(window("whisp_field_horn.flac", 16000, length_s=0.5))
    assert short.probabilities.shape == (521,)
    scores, _ = yamnet.frame_outputs(window("whisp_field_horn.flac", 16000))
    assert scores.shape[0] == 10  # 9 regular frames + 1 aligned to the end of 5 s
    max_tagger = YamnetTagger(yamnet_dir, TaggerConfig(path=yamnet_dir, pooling="max"))
    samples = window("oss_birds_10s.flac", 16000, length_s=10.0)
    pooled_max = max_tagger.tag(samples).probabilities
    pooled_mean = yamnet.tag(samples).probabilities
    assert np.all(pooled_max >= pooled_mean - 1e-6)


def test_yamnet_batched_equals_frame_by_frame(yamnet: YamnetTagger, yamnet_dir: Path) -> None:
    looped = YamnetTagger(yamnet_dir, TaggerConfig(path=yamnet_dir))
    looped._dynamic = False  # what a model exported with a fixed batch of 1 goes through
    samples = window("whisp_field_engine.flac", 16000)
    a, b = yamnet.tag(samples), looped.tag(samples)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
    np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-4)


def test_nan_output_is_a_clear_per_window_error(yamnet: YamnetTagger, birdnet_cali: BirdnetModel) -> None:
    with pytest.raises(ModelOutputError, match="YAMNet returned NaN"):
        yamnet.tag(np.full(16000, np.inf, dtype=np.float32))
    with pytest.raises(ModelOutputError, match="BirdNET returned NaN"):
        birdnet_cali.detect(np.full(144000, np.nan, dtype=np.float32), start_unix_s=SEPT_19_2018)
    # the models are still usable afterwards
    assert yamnet.tag(window("whisp_field_horn.flac", 16000)).top


def test_frame_starts_cover_the_window() -> None:
    assert frame_starts(80000, 15600, 7680) == [0, 7680, 15360, 23040, 30720, 38400, 46080, 53760, 61440, 64400]
    assert frame_starts(240000, 144000, 144000) == [0, 96000]
    assert frame_starts(1000, 15600, 7680) == [0]
    assert frame_starts(288000, 144000, 144000) == [0, 144000]


# --- AST (tiny random checkpoint: the code path, not the predictions) ------------------------------------------------


def test_ast_tagger_on_tiny_random_model(ast_tiny_dir: Path) -> None:
    config = TaggerConfig(family="ast", path=ast_tiny_dir, top_k=3)
    tagger = load_tagger(ast_tiny_dir, config)
    assert isinstance(tagger, AstTagger) and isinstance(tagger, Tagger)
    out = tagger.tag(window("oss_birds_10s.flac", 16000))
    assert out.probabilities.shape == (527,) and len(out.top) == 3
    assert 0.0 < out.probabilities.min() and out.probabilities.max() < 1.0  # sigmoid of logits
    assert out.embedding.ndim == 1 and np.isfinite(out.embedding).all()


def test_ast_long_window_is_split_and_pooled(ast_tiny_dir: Path) -> None:
    tagger = AstTagger(ast_tiny_dir, TaggerConfig(family="ast", path=ast_tiny_dir))
    assert tagger.features.max_length == 512
    samples = window("oss_birds_10s.flac", 16000, length_s=10.0)
    whole = tagger.tag(samples)
    first = tagger.tag(samples[: tagger.chunk_samples])
    assert not np.allclose(whole.probabilities, first.probabilities)  # the second chunk contributed


# --- BirdNET ---------------------------------------------------------------------------------------------------------


def test_birdnet_implements_bird_model(birdnet_cali: BirdnetModel) -> None:
    assert isinstance(birdnet_cali, BirdModel)
    assert birdnet_cali.sample_rate_hz == 48000


@pytest.mark.parametrize("start_s", [0.0, 5.0, 10.0])
def test_birdnet_names_the_red_faced_spinetail(birdnet_cali: BirdnetModel, start_s: float) -> None:
    # scikit-maad's spinetail.wav is a Red-faced Spinetail recording (Colombia); BirdNET V2.4 ranks it first in each
    # of the first three 5-s windows (0.22, 0.47, 0.75 here); the tail after 15 s also holds other Cranioleuca calls.
    out = birdnet_cali.detect(window(SPINETAIL.name, 48000, start_s), start_unix_s=SEPT_19_2018)
    assert out.species[0].scientific_name == "Cranioleuca erythrops"
    assert out.species[0].common_name == "Red-faced Spinetail"
    assert out.top_score == pytest.approx(out.species[0].confidence)
    assert out.embedding is not None and out.embedding.shape == (1024,)


def test_sensitivity_means_what_it_means_in_birdnet_analyzer(birdnet_dir: Path) -> None:
    """BirdNET-Analyzer maps sensitivity s to the sigmoid scale clip(2 - s, 0.5, 1.5): a HIGHER sensitivity gives more
    detections. soundmond used sigmoid(s * logit), the opposite for every s but 1.0."""
    samples = window(SPINETAIL.name, 48000, 10.0)

    def confidences(sensitivity: float) -> dict[str, float]:
        model = BirdnetModel(birdnet_dir, BirdConfig(path=birdnet_dir, min_confidence=0.05, sensitivity=sensitivity))
        return {s.scientific_name: s.confidence for s in model.detect(samples, start_unix_s=SEPT_19_2018).species}

    plain, keen, strict = confidences(1.0), confidences(1.25), confidences(0.75)
    assert set(strict) <= set(plain) <= set(keen) and len(keen) > len(strict)
    for name, conf in plain.items():
        logit = np.log(conf / (1.0 - conf))
        assert keen[name] == pytest.approx(1.0 / (1.0 + np.exp(-0.75 * logit)), abs=1e-5)
        if name in strict:
            assert strict[name] == pytest.approx(1.0 / (1.0 + np.exp(-1.25 * logit)), abs=1e-5)


def test_include_exclude_and_min_confidence(birdnet_dir: Path) -> None:
    samples = window(SPINETAIL.name, 48000, 10.0)

    def detect(**kw: object) -> list[str]:
        model = BirdnetModel(birdnet_dir, BirdConfig(path=birdnet_dir, min_confidence=0.1, **kw))  # type: ignore[arg-type]
        return [s.scientific_name for s in model.detect(samples, start_unix_s=SEPT_19_2018).species]

    everything = detect()
    assert "Cranioleuca erythrops" in everything and len(everything) >= 2
    assert detect(include=["red-faced SPINETAIL"]) == ["Cranioleuca erythrops"]  # common name, any case
    assert "Cranioleuca erythrops" not in detect(exclude=["cranioleuca erythrops"])
    strict = BirdnetModel(birdnet_dir, BirdConfig(path=birdnet_dir, min_confidence=0.99))
    out = strict.detect(samples, start_unix_s=SEPT_19_2018)
    assert out.species == () and out.top_score == pytest.approx(0.75, abs=0.05)  # top_score is before filtering


def test_unknown_species_names_are_a_config_error(birdnet_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        BirdnetModel(birdnet_dir, BirdConfig(path=birdnet_dir, include=["Turdus merula", "Dodo"], exclude=["Xyz"]))
    text = str(info.value)
    assert "models.birds.include" in text and "'Dodo'" in text
    assert "models.birds.exclude" in text and "'Xyz'" in text
    assert "Turdus merula" not in text.split("unknown species:")[1].split(";")[0]


def test_location_filter_keeps_local_and_removes_foreign_species(birdnet_dir: Path) -> None:
    samples = window(SPINETAIL.name, 48000, 10.0)
    on = BirdConfig(path=birdnet_dir, min_confidence=0.1, location_filter=LocationFilterConfig(enabled=True))
    in_colombia = BirdnetModel(birdnet_dir, on, *CALI).detect(samples, start_unix_s=SEPT_19_2018)
    assert in_colombia.species[0].scientific_name == "Cranioleuca erythrops"
    assert in_colombia.species[0].occurrence is not None and in_colombia.species[0].occurrence >= 0.03
    in_germany = BirdnetModel(birdnet_dir, on, *MUNICH).detect(samples, start_unix_s=SEPT_19_2018)
    assert "Cranioleuca erythrops" not in {s.scientific_name for s in in_germany.species}
    assert in_germany.top_score == pytest.approx(in_colombia.top_score)  # filtering never changes top_score


def test_occurrence_is_filled_when_location_known_even_with_filter_off(
    birdnet_cali: BirdnetModel, birdnet_dir: Path
) -> None:
    samples = window(SPINETAIL.name, 48000, 10.0)
    out = birdnet_cali.detect(samples, start_unix_s=SEPT_19_2018)
    assert not birdnet_cali.filter_on
    assert all(s.occurrence is not None for s in out.species)
    nowhere = BirdnetModel(birdnet_dir, BirdConfig(path=birdnet_dir, min_confidence=0.1))
    assert all(s.occurrence is None for s in nowhere.detect(samples, start_unix_s=SEPT_19_2018).species)


def test_non_species_classes_are_never_species(birdnet_cali: BirdnetModel) -> None:
    assert int(birdnet_cali.sound_class_mask.sum()) == len(BIRDNET_SOUND_CLASSES_V24) == 13
    found = birdnet_cali.detect_full(window("whisp_field_horn.flac", 48000), start_unix_s=SEPT_19_2018)
    assert "Siren" in {s.label for s in found.sound_classes}  # BirdNET hears the horn as "Siren"
    names = {s.scientific_name for s in found.output.species}
    assert not names & BIRDNET_SOUND_CLASSES_V24


def test_birdnet_label_rules() -> None:
    assert split_birdnet_label("Turdus merula_Eurasian Blackbird") == ("Turdus merula", "Eurasian Blackbird")
    assert is_sound_class(*split_birdnet_label("Engine_Engine"))
    assert is_sound_class(*split_birdnet_label("Human vocal_Human vocal"))
    assert not is_sound_class(*split_birdnet_label("Cranioleuca erythrops_Red-faced Spinetail"))
    assert not is_sound_class(*split_birdnet_label("Anaxyrus americanus_American Toad"))  # a species, not a bird


@pytest.mark.parametrize(
    ("date", "week"),
    [((2024, 1, 1), 1), ((2024, 1, 8), 2), ((2024, 1, 31), 4), ((2018, 9, 19), 35), ((2024, 12, 31), 48)],
)
def test_birdnet_week(date: tuple[int, int, int], week: int) -> None:
    assert birdnet_week(dt.datetime(*date, 12, tzinfo=dt.timezone.utc).timestamp()) == week


def test_meta_output_is_tabulated_per_week_and_its_session_released(birdnet_cali: BirdnetModel) -> None:
    a = birdnet_cali.occurrence(35)
    assert a is not None and birdnet_cali.occurrence(35) is a
    b = birdnet_cali.occurrence(10)
    assert b is not None and b is not a and not np.array_equal(a, b)
    meta = BirdnetMetaModel(birdnet_cali.folder, birdnet_cali.sidecar)
    for week in (-1, 1, 10, 35, 48):
        table = birdnet_cali.occurrence(week)
        assert table is not None and np.array_equal(table, meta.occurrence(*CALI, week))
    # only the species session stays loaded (the meta session held about 75 MB)
    sessions = [v for v in vars(birdnet_cali).values() if isinstance(v, ort.InferenceSession)]
    assert len(sessions) == 1


def test_model_digest_covers_external_weights(birdnet_dir: Path, yamnet_dir: Path) -> None:
    yamnet = read_sidecar(yamnet_dir)
    assert model_digest(yamnet) == yamnet.files["model.onnx"]  # one self-contained file: its own checksum
    birdnet = read_sidecar(birdnet_dir)
    assert "model.onnx.data" in birdnet.files  # BirdNET's weights live beside its graph
    digest = model_digest(birdnet)
    changed = birdnet.model_copy(update={"files": {**birdnet.files, "model.onnx.data": "0" * 64}})
    assert digest not in (birdnet.files["model.onnx"], birdnet.files["model.onnx.data"], model_digest(changed))
