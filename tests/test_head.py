"""soundmond.head.meta: the shipped YAMNet heads on real audio, choosing the head, safe loading of skops heads (the
training artefact), refusals. The ONNX format itself (checksum, conversion, no scikit-learn in the daemon):
tests/test_head_onnx.py."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from fakes import FixedBirds, FixedHead, StaticTagger
from heads import BIRD_FEATURES, bird_head
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from soundmond.analysis import Analyzer
from soundmond.capture.audio import load_audio
from soundmond.config import BirdConfig, LoadedConfig, TaggerConfig, load_config
from soundmond.data import AudioWindow, BirdOutput, TaggerOutput
from soundmond.head.loader import Head, load_head
from soundmond.head.meta import (
    HEAD_CLASSES,
    BirdFeaturesMissing,
    HeadError,
    HeadMeta,
    default_head_path,
    feature_parts,
    head_features,
    tagger_only_head_path,
)
from soundmond.head.save import save_head
from soundmond.head.skops import ALLOWED_TYPES, TRUSTED_TYPES, schema_types
from soundmond.models.birds import BirdnetModel
from soundmond.models.taggers import AstTagger, YamnetTagger
from soundmond.protocols import GroupHead
from soundmond.workbench.prior_training import target_figure

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "audio"
SHIPPED = default_head_path("yamnet")
SHIPPED_TAGGER = tagger_only_head_path("yamnet")  # for stations with models.birds.enabled: false
SHIPPED_HEADS = [SHIPPED, SHIPPED_TAGGER]  # the ONNX heads the daemon loads
SHIPPED_SKOPS = [p.with_suffix(".skops") for p in SHIPPED_HEADS]  # the training artefacts they were converted from
TARGET = 0.95


def fixture_rows() -> list[dict[str, str]]:
    with open(FIXTURES / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def five_s(name: str, start_s: float = 0.0, rate: int = 16000) -> np.ndarray:
    samples, _ = load_audio(FIXTURES / name, rate)
    return samples[int(start_s * rate) : int((start_s + 5) * rate)]


def small_head_file(
    path: Path, model: object, family: str = "yamnet", dim: int = 4, features: str = "probabilities", **extra: object
) -> Path:
    meta = HeadMeta(
        tagger_family=family,
        tagger_label_count=521,
        features=features,
        feature_dim=dim,
        classes=list(HEAD_CLASSES),
        trained_on="test",
        training_data_sha256="0" * 64,
    ).__dict__
    sio.dump({"model": model, "meta": meta, **extra}, path)
    return path


def fitted_pipeline(dim: int = 4) -> object:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, dim))
    y = np.array(HEAD_CLASSES * 10)
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)


@pytest.fixture(scope="module")
def yamnet(yamnet_dir: Path) -> YamnetTagger:
    return YamnetTagger(yamnet_dir, TaggerConfig(path=yamnet_dir))


@pytest.fixture(scope="module")
def birdnet(birdnet_dir: Path) -> BirdnetModel:
    return BirdnetModel(birdnet_dir, BirdConfig(path=birdnet_dir))


# --- the shipped head ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shipped", SHIPPED_SKOPS, ids=lambda p: p.name)
def test_shipped_head_holds_exactly_the_allowed_types(shipped: Path) -> None:
    with zipfile.ZipFile(shipped) as archive:
        types = schema_types(json.loads(archive.read("schema.json")))
    assert types == ALLOWED_TYPES  # the allow-list is minimal: nothing in it the shipped heads do not use
    assert sio.get_untrusted_types(file=shipped) == TRUSTED_TYPES == []


@pytest.mark.parametrize("shipped", SHIPPED_HEADS, ids=lambda p: p.name)
def test_shipped_head_metrics_file_matches_the_head(shipped: Path) -> None:
    report = json.loads(shipped.with_suffix(".json").read_text())
    head = Head.load(shipped)
    skops_head = Head.load(shipped.with_suffix(".skops"))
    assert head.meta == skops_head.meta  # the ONNX head carries the skops head's meta, CV figures included
    assert report["head"] == shipped.with_suffix(".skops").name  # what the training command wrote
    assert report["files"]["onnx"] == report["files"]["loaded_by_the_daemon"] == shipped.name
    assert report["files"]["skops"] == shipped.with_suffix(".skops").name
    assert report["files"]["onnx_parity"]["max_abs_diff"] <= report["files"]["onnx_parity"]["tolerance"] == 1e-9
    assert "converted_by" not in report["files"]  # written by the training command itself (both files at once)
    cv = head.meta.cv_metrics
    assert report["cv"]["natural_vs_industrial"]["balanced_accuracy"] == pytest.approx(
        cv["natural_vs_industrial_balanced_accuracy"]
    )
    assert report["nested_cv"]["natural_vs_industrial"]["balanced_accuracy"] == pytest.approx(
        cv["nested_natural_vs_industrial_balanced_accuracy"]
    )
    assert report["session_grouped_cv"]["natural_vs_industrial"]["balanced_accuracy"] == pytest.approx(
        cv["session_grouped_natural_vs_industrial_balanced_accuracy"]
    )
    assert report["chosen"]["features"] == head.meta.features
    assert report["chosen"]["needs_birdnet"] == head.needs_birds
    assert report["command"].startswith("python scripts/train_default_head.py")
    assert "StratifiedGroupKFold" in cv["scheme"] and "source recording" in cv["scheme"]
    matrix = np.array(report["cv"]["confusion_matrix"]["rows_true_columns_predicted"])
    assert matrix.sum() == report["data"]["windows"] == report["cv"]["windows"]
    assert f"{report['chosen']['features']}/{report['chosen']['model']}" in report["comparison"]


@pytest.mark.parametrize("shipped", SHIPPED_HEADS, ids=lambda p: p.name)
def test_shipped_heads_beat_the_previous_head_where_a_new_site_is_concerned(shipped: Path) -> None:
    """Under the source-held-out CV (each source data set held out whole, the figure that predicts a new site), the
    ontology-prior head, with its parameters rechosen in every fold, beats the head shipped before it on
    natural-vs-industrial and on 3-class balanced accuracy, and on the held-out DCASE machines. Between natural and
    industrial it decides as the no-training rule does (its correction moves "other" only), so its binary figures are
    the rule's, and per clip (issue 15's protocol) they meet the 0.95 target; with the 3-class decision (a natural
    window called "other" is wrong) the rule, which never says "other", stays ahead on natural vs industrial alone and
    far behind on 3 classes."""
    report = json.loads(shipped.with_suffix(".json").read_text())
    source = report["source_held_out_cv"]
    head, previous, rule = source["head"], source["previous_head"], source["ontology_rule"]

    def ni(m: dict) -> float:
        return float(m["natural_vs_industrial"]["balanced_accuracy"])

    checked = "source_held_out_cv.head.per_clip.natural_vs_industrial.binary_balanced_accuracy"
    assert report["cv_target"]["checked_on"] == [checked] and report["cv_target"]["met"] is True
    assert target_figure(head) >= TARGET > target_figure(previous) + 0.05
    assert target_figure(head) == head["per_clip"]["natural_vs_industrial"]["binary_balanced_accuracy"]
    assert head["per_clip"]["windows"] == report["data"]["clips"]
    binary = "binary_balanced_accuracy"
    assert head["natural_vs_industrial"][binary] == rule["natural_vs_industrial"][binary]  # the rule's call per window
    assert ni(previous) + 0.05 < ni(head) < ni(rule) < TARGET  # stricter: per window, "other" counted wrong
    assert previous["balanced_accuracy_3class"] + 0.05 < head["balanced_accuracy_3class"]
    assert rule["balanced_accuracy_3class"] + 0.2 < head["balanced_accuracy_3class"]
    dcase = "dcase2020t2"
    assert head["per_source"][dcase]["industrial_recall"] > previous["per_source"][dcase]["industrial_recall"] + 0.3
    assert len(head["chosen_per_fold"]) == len(head["folds"]) == 11  # rechosen in every held-out fold
    head_file = Head.load(shipped)
    assert head_file.meta.cv_metrics["source_held_out_natural_vs_industrial_balanced_accuracy"] == ni(head)
    assert report["chosen"] == {"features": "probabilities", "model": report["chosen"]["model"],
                                "needs_birdnet": False}
    assert report["chosen"]["model"].startswith("ontology_prior(")


def test_shipped_tagger_only_head_is_tagger_only() -> None:
    report = json.loads(SHIPPED_TAGGER.with_suffix(".json").read_text())
    head = Head.load(SHIPPED_TAGGER, tagger_family="yamnet", tagger_label_count=521)
    assert not head.needs_birds and head.meta.features == "probabilities"
    assert report["tagger_only"] is True and report["birdnet"] is None
    assert "--tagger-only" in report["command"] and "--out soundmond/heads/yamnet-tagger." in report["command"]
    main = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert report["cv_scheme"] == main["cv_scheme"] and report["data"] == main["data"]  # same windows, groups
    # the previous tagger-only recipe is what it is compared with (no BirdNET block anywhere)
    assert "birdnet" not in report["source_held_out_cv"]["previous_head"]["recipe"]
    assert report["recipe"]["params"] == main["recipe"]["params"]  # the same procedure on the same data


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("whisp_field_horn.flac", "industrial"),
        ("whisp_field_engine.flac", "industrial"),
        ("maad_spinetail_Cranioleuca_erythrops.flac", "natural"),
        ("oss_birds_10s.flac", "natural"),
        ("maad_jura_forest_20190522_0600.flac", "natural"),
    ],
)
def test_shipped_head_on_real_fixture_audio(
    yamnet: YamnetTagger, birdnet: BirdnetModel, name: str, group: str
) -> None:
    # smoke test: these fixture files are also in the training corpus
    head = load_head(None, "yamnet", len(yamnet.labels))
    assert isinstance(head, GroupHead)
    birds = birdnet.detect(five_s(name, rate=48000), start_unix_s=0.0) if head.needs_birds else None
    prediction = head.predict(yamnet.tag(five_s(name)), birds)
    assert prediction.group == group
    assert set(prediction.probabilities) == set(HEAD_CLASSES)
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
    assert prediction.probabilities[group] == max(prediction.probabilities.values())


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("whisp_field_horn.flac", "industrial"),
        ("whisp_field_engine.flac", "industrial"),
        ("maad_spinetail_Cranioleuca_erythrops.flac", "natural"),
        ("oss_birds_10s.flac", "natural"),
        ("maad_jura_forest_20190522_0600.flac", "natural"),
    ],
)
def test_tagger_only_head_on_real_fixture_audio(yamnet: YamnetTagger, name: str, group: str) -> None:
    # birds disabled: no bird output at all (these fixture files are also in the training corpus)
    head = load_head(None, "yamnet", len(yamnet.labels), birds_enabled=False)
    assert head.path == SHIPPED_TAGGER and not head.needs_birds
    prediction = head.predict(yamnet.tag(five_s(name)))
    assert prediction.group == group
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0)


def test_bird_head_refuses_a_window_without_bird_output(yamnet: YamnetTagger, tmp_path: Path) -> None:
    head = load_head(bird_head(tmp_path / "birds.onnx"), "yamnet", len(yamnet.labels))
    assert head.needs_birds
    with pytest.raises(BirdFeaturesMissing, match="enable models.birds"):
        head.predict(yamnet.tag(five_s("whisp_field_horn.flac")))


def test_fixture_labels_cover_the_groups() -> None:
    assert {r["group"] for r in fixture_rows()} == set(HEAD_CLASSES)


# --- choosing the head: birds enabled or not ------------------------------------------------------------------------


def test_default_head_paths_are_the_onnx_heads() -> None:
    assert default_head_path("yamnet") == SHIPPED == SHIPPED.parent / "yamnet.onnx"
    assert tagger_only_head_path("yamnet") == SHIPPED.parent / "yamnet-tagger.onnx"
    assert all(p.is_file() for p in SHIPPED_HEADS + SHIPPED_SKOPS)


def test_load_head_picks_the_tagger_only_head_when_birds_are_disabled(caplog: pytest.LogCaptureFixture) -> None:
    assert load_head(None, "yamnet", 521).path == SHIPPED  # birds enabled (the default): the main head
    with caplog.at_level("INFO", logger="soundmond.head.loader"):
        head = load_head(None, "yamnet", 521, birds_enabled=False)
    assert head.path == SHIPPED_TAGGER and not head.needs_birds
    reason = next(r.getMessage() for r in caplog.records if "tagger-only" in r.getMessage())
    assert "models.birds.enabled is false" in reason and str(SHIPPED_TAGGER) in reason
    assert "yamnet.onnx" in reason  # the head it did not use, and why


def test_configured_tagger_only_head_works_either_way() -> None:
    assert load_head(SHIPPED_TAGGER, "yamnet", 521, birds_enabled=False).path == SHIPPED_TAGGER
    assert load_head(SHIPPED_TAGGER, "yamnet", 521, birds_enabled=True).path == SHIPPED_TAGGER


def test_configured_bird_head_with_birds_disabled_is_refused(tmp_path: Path) -> None:
    bird = bird_head(tmp_path / "birds.onnx")
    with pytest.raises(HeadError) as err:
        load_head(bird, "yamnet", 521, birds_enabled=False)
    message = str(err.value)
    assert str(bird) in message and BIRD_FEATURES in message
    assert "models.head.path" in message and "models.birds.enabled is false" in message
    assert "set models.birds.enabled: true" in err.value.hint
    assert "leave models.head.path empty" in err.value.hint and SHIPPED_TAGGER.name in err.value.hint
    assert err.value.config_keys == ("models.head.path", "models.birds.enabled")


def test_bird_head_without_a_tagger_only_head_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import soundmond.head.meta

    bird_head(tmp_path / "yamnet.onnx")  # a family shipping only a head that needs BirdNET
    monkeypatch.setattr(soundmond.head.meta, "HEADS_DIR", tmp_path)
    assert load_head(None, "yamnet", 521).needs_birds
    with pytest.raises(HeadError, match="no tagger-only head is shipped for it") as e:
        load_head(None, "yamnet", 521, birds_enabled=False)
    assert "but models.birds.enabled is false" in str(e.value)
    assert "--tagger-only" in e.value.hint and "models.head.path" in e.value.hint
    assert e.value.config_keys == ("models.head.path", "models.birds.enabled")


def _loaded(tmp_path: Path, yaml_text: str) -> LoadedConfig:

    path = tmp_path / "config.yaml"
    path.write_text(yaml_text)
    return load_config(path)


def test_load_models_with_birds_disabled_uses_the_tagger_only_head(tmp_path: Path, yamnet_dir: Path) -> None:
    from soundmond.analysis import build_session, load_models

    loaded = _loaded(
        tmp_path, f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n  birds: {{enabled: false}}\n"
    )
    tagger, birds, head, versions = load_models(loaded)
    assert birds is None and not head.needs_birds
    assert "yamnet-tagger.onnx" in str(versions["head"]) and "birds" not in versions
    session = build_session(loaded, models=(tagger, birds, head, versions))
    samples = five_s("whisp_field_horn.flac")
    window = AudioWindow("w", "test", 0.0, 0.0, 16000, samples)
    analysis, _ = session.process(window, now=0.0)
    assert analysis.result.status == "ok" and analysis.result.group is not None
    assert analysis.result.group.group == "industrial" and analysis.bird_output is None


def test_load_models_turns_a_bird_head_without_birds_into_a_model_load_error(
    tmp_path: Path, yamnet_dir: Path
) -> None:
    from soundmond.analysis import ModelLoadError, load_models

    loaded = _loaded(
        tmp_path,
        f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n  birds: {{enabled: false}}\n"
        f"  head: {{path: {bird_head(tmp_path / 'birds.onnx')}}}\n",
    )
    with pytest.raises(ModelLoadError) as err:
        load_models(loaded)
    message = str(err.value)
    assert message.startswith("models.head.path / models.birds.enabled: ")
    assert "needs BirdNET's embedding" in message and "set models.birds.enabled: true" in message


def test_load_models_turns_an_analyzer_refusal_into_a_model_load_error(
    tmp_path: Path, yamnet_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import soundmond.analysis
    from soundmond.analysis import ModelLoadError, load_models

    class Refusing:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise ValueError("the head was trained on 'ast' outputs, the tagger is 'yamnet'")

    monkeypatch.setattr(soundmond.analysis, "Analyzer", Refusing)
    loaded = _loaded(
        tmp_path, f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n  birds: {{enabled: false}}\n"
    )
    with pytest.raises(ModelLoadError, match=r"^models.head.path: the head was trained on 'ast'"):
        load_models(loaded)


# --- refusals --------------------------------------------------------------------------------------------------------


def test_tampered_skops_head_is_refused(tmp_path: Path) -> None:
    data = bytearray(SHIPPED.with_suffix(".skops").read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(".npy") and i.file_size > 1000)
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size // 2
    data[offset] ^= 0xFF
    tampered = tmp_path / "tampered.skops"
    tampered.write_bytes(bytes(data))
    with pytest.raises(HeadError, match="damaged") as err:
        Head.load(tampered)
    assert str(tampered) in str(err.value) and "retrain" in err.value.hint


def test_truncated_skops_head_is_refused(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.skops"
    truncated.write_bytes(SHIPPED.with_suffix(".skops").read_bytes()[:-200])
    with pytest.raises(HeadError, match="not a readable skops head file"):
        Head.load(truncated)


def test_missing_head_names_the_config_key(tmp_path: Path) -> None:
    with pytest.raises(HeadError, match="no such head file") as err:
        Head.load(tmp_path / "nope.skops")
    assert "models.head.path" in err.value.hint
    with pytest.raises(HeadError, match="no head is shipped for the 'ast' tagger"):
        load_head(None, "ast")


def test_head_with_a_type_skops_distrusts_is_refused(tmp_path: Path) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = np.random.default_rng(0).normal(size=(30, 4))
    model = HistGradientBoostingClassifier(max_iter=3).fit(x, np.array(HEAD_CLASSES * 10))
    path = small_head_file(tmp_path / "hgb.skops", model)
    with pytest.raises(HeadError, match=r"untrusted type \S+ in head file") as err:
        Head.load(path)
    assert "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor" in str(err.value)


def test_head_with_an_extra_type_outside_the_allow_list_is_refused(tmp_path: Path) -> None:
    # skops itself trusts sklearn estimators by default; the head's allow-list is narrower.
    from sklearn.tree import DecisionTreeClassifier

    path = small_head_file(tmp_path / "extra.skops", fitted_pipeline(), smuggled=DecisionTreeClassifier())
    with pytest.raises(HeadError, match=r"untrusted type sklearn\.tree\._classes\.DecisionTreeClassifier in head"):
        Head.load(path)


@pytest.mark.parametrize("shipped", SHIPPED_HEADS + SHIPPED_SKOPS, ids=lambda p: p.name)
def test_head_for_another_tagger_is_refused(shipped: Path) -> None:
    with pytest.raises(HeadError, match="trained on 'yamnet' tagger outputs, but models.tagger.family is 'ast'"):
        Head.load(shipped, tagger_family="ast")
    with pytest.raises(HeadError, match="expects a tagger with 521 labels"):
        Head.load(shipped, tagger_family="yamnet", tagger_label_count=527)
    with pytest.raises(HeadError, match="trained on 'yamnet'"):
        load_head(shipped, "ast")
    assert Head.load(shipped, tagger_family="yamnet", tagger_label_count=521).tagger_family == "yamnet"


def test_feature_dimension_mismatch_is_refused(tmp_path: Path) -> None:
    path = small_head_file(tmp_path / "dim.skops", fitted_pipeline(4), dim=5)
    with pytest.raises(HeadError, match="model takes 4 features, meta says 5"):
        Head.load(path)


# --- an AST head (tiny random AST: exercises the family path, not accuracy) ------------------------------------------


def test_ast_head_round_trip(ast_tiny_dir: Path, tmp_path: Path) -> None:
    tagger = AstTagger(ast_tiny_dir, TaggerConfig(family="ast", path=ast_tiny_dir))
    rows = fixture_rows()
    outputs, groups = [], []
    for row in rows:
        for start in (0.0, 2.5):
            outputs.append(tagger.tag(five_s(row["file"], start)))
            groups.append(row["group"])
    x = np.stack([head_features(o, "both") for o in outputs])
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000)).fit(x, groups)
    meta = HeadMeta(
        tagger_family="ast",
        tagger_label_count=len(tagger.labels),
        features="both",
        feature_dim=int(x.shape[1]),
        classes=list(HEAD_CLASSES),
        trained_on="tests/fixtures/audio with a tiny random AST",
        training_data_sha256="0" * 64,
    )
    files = save_head(tmp_path / "ast.skops", model, meta, features=x)
    assert files.onnx == tmp_path / "ast.onnx" and files.parity_feature_rows == len(outputs)
    head = load_head(files.onnx, "ast", len(tagger.labels))
    prediction = head.predict(outputs[0])
    assert prediction.group in HEAD_CLASSES
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
    skops_head = load_head(files.skops, "ast", len(tagger.labels))
    assert np.abs(head.predict_proba(x) - skops_head.predict_proba(x)).max() <= 1e-9
    for path in files[:2]:
        with pytest.raises(HeadError, match="trained on 'ast'"):
            load_head(path, "yamnet")


# --- feature kinds and the bird output -------------------------------------------------------------------------------


def test_feature_parts() -> None:
    assert feature_parts("both") == ("probabilities", "embedding")
    assert feature_parts("embedding+birdnet_embedding") == ("embedding", "birdnet_embedding")
    for bad in ("embedding_max", "birdnet_embedding+embedding", "embedding+embedding", ""):
        with pytest.raises(ValueError, match="FEATURE_PARTS|'\\+'-joined"):
            feature_parts(bad)


def _outputs(dim: int = 3) -> tuple[TaggerOutput, BirdOutput]:
    tagger = TaggerOutput(np.arange(dim, dtype=np.float32), np.full(2, 7.0, np.float32), ())
    birds = BirdOutput((), 0.0, embedding=np.full(4, 9.0, np.float32))
    return tagger, birds


def test_head_features_concatenate_the_parts_in_order() -> None:
    tagger, birds = _outputs()
    assert head_features(tagger, "probabilities+embedding+birdnet_embedding", birds).tolist() == [0, 1, 2, 7, 7] + [
        9
    ] * 4
    assert head_features(tagger, "embedding", None).tolist() == [7, 7]
    with pytest.raises(BirdFeaturesMissing, match="needs BirdNET's embedding"):
        head_features(tagger, "embedding+birdnet_embedding", None)
    with pytest.raises(BirdFeaturesMissing):
        head_features(tagger, "birdnet_embedding", BirdOutput((), 0.0, embedding=None))


def test_head_with_birdnet_features_round_trip(tmp_path: Path) -> None:
    path = small_head_file(tmp_path / "b.skops", fitted_pipeline(6), dim=6, features="embedding+birdnet_embedding")
    head = Head.load(path)
    assert head.needs_birds and isinstance(head, GroupHead)
    tagger, birds = _outputs()
    assert head.predict(tagger, birds).group in HEAD_CLASSES
    with pytest.raises(BirdFeaturesMissing):
        head.predict(tagger)


def test_head_with_unknown_features_is_refused(tmp_path: Path) -> None:
    path = small_head_file(tmp_path / "u.skops", fitted_pipeline(), features="embedding_max")
    with pytest.raises(HeadError, match="meta.features"):
        Head.load(path)


def test_analyzer_passes_the_bird_output_to_the_head() -> None:
    head = FixedHead(needs_birds=True)
    assert isinstance(head, GroupHead)
    analyzer = Analyzer(StaticTagger(), FixedBirds(), head)
    tone = (0.01 * np.sin(2 * np.pi * 440 * np.arange(80000) / 16000)).astype(np.float32)  # a sound (not a constant)
    window = AudioWindow("w", "test", 0.0, 0.0, 16000, tone)
    analysis = analyzer.analyze(window)
    assert analysis.result.status == "ok" and analysis.result.group is not None
    assert head.seen == [analysis.bird_output] and analysis.bird_output is not None


def test_analyzer_refuses_a_bird_head_without_the_bird_model() -> None:
    with pytest.raises(ValueError, match="needs BirdNET's embedding but the bird model is disabled"):
        Analyzer(StaticTagger(), None, FixedHead(needs_birds=True))


# --- training helpers ------------------------------------------------------------------------------------------------


def test_source_group_keeps_recordings_together() -> None:
    from soundmond.workbench.corpus import source_group

    assert source_group({"original_id": "freesound:11687 take A"}) == "freesound:11687"
    assert source_group({"original_id": "freesound:11687 take B"}) == "freesound:11687"
    dcase = {"file": "audio/industrial/dcase2020t2_machine_normal_id_00_00000003.flac"}
    assert source_group({**dcase, "source_path": "train/normal_id_00_00000003.wav"}) == (
        "dcase:train/normal_id_00_00000003.wav"
    )  # each DCASE clip is its own recording file
    assert source_group({"original_id": "XC328987", "file": "x.flac"}) == "XC328987"
    maad = {"file": "a.flac", "source_repo": "scikit-maad/scikit-maad", "source_path": "data/x.wav"}
    assert source_group(maad) == "scikit-maad/scikit-maad:data/x.wav"


def test_session_group_is_stricter() -> None:
    from soundmond.workbench.corpus import esc50_sessions, session_group

    dcase = {"file": "audio/industrial/dcase2020t2_machine_anomaly_id_00_00000000.flac", "source_path": "t/a.wav"}
    assert session_group(dcase) == "dcase-machine:id_00"
    jura = {"file": "a.flac", "source_repo": "scikit-maad/scikit-maad",
            "source_path": "data/indices/S4A03895_20190522_051500.wav"}
    assert session_group(jura) == "maad:S4A03895:20190522"
    rows = [
        {"original_id": "freesound:50454 take A", "category": "engine"},
        {"original_id": "freesound:50455 take A", "category": "engine"},
        {"original_id": "freesound:18527 take A", "category": "engine"},
        {"original_id": "freesound:50460 take A", "category": "rain"},
    ]
    sessions = esc50_sessions(rows)
    assert sessions["freesound:50454"] == sessions["freesound:50455"] != sessions["freesound:18527"]
    assert sessions["freesound:50460"] != sessions["freesound:50454"]  # another category


def test_cut_windows() -> None:
    from soundmond.workbench.dataset import cut_windows

    assert [w.size for w in cut_windows(np.zeros(16000 * 12, np.float32), 16000)] == [80000, 80000]
    assert [w.size for w in cut_windows(np.ones(16000 * 3, np.float32), 16000)] == [80000]  # padded


def test_training_script_without_corpus_exits_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "train_default_head.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--corpus", str(tmp_path / "none"), "--out", str(tmp_path / "h.skops")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "corpus not found" in proc.stderr and not (tmp_path / "h.skops").exists()


@pytest.mark.shared
def test_corpus_grouping(shared_corpus: Path) -> None:
    from soundmond.workbench.corpus import read_corpus

    clips = read_corpus(shared_corpus)
    assert len(clips) == 347
    groups_of_source: dict[str, set[str]] = {}
    for clip in clips:
        groups_of_source.setdefault(clip.source, set()).add(clip.group)
    assert all(len(g) == 1 for g in groups_of_source.values())  # a recording has one label
    dcase = [c for c in clips if "dcase" in c.file]
    assert len(dcase) == 14 and len({c.source for c in dcase}) == 14  # 14 recording files ...
    assert len({c.session for c in dcase}) == 1  # ... of one machine (id_00): the stricter grouping
    takes = [c for c in clips if "-19898-" in c.file]  # ESC-50 chainsaw freesound:19898 takes A, B, C
    assert len(takes) == 3 and len({c.source for c in takes}) == 1
    jura = [c for c in clips if c.file.split("/")[-1].startswith("maad_jura")]
    assert len({c.source for c in jura}) == len(jura) and len({c.session for c in jura}) == 1
    sessions_of_source: dict[str, set[str]] = {}
    for clip in clips:
        sessions_of_source.setdefault(clip.source, set()).add(clip.session)
    assert all(len(s) == 1 for s in sessions_of_source.values())  # sessions never split a recording
