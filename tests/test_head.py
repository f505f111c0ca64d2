"""soundmond.head: safe loading of skops heads, refusals, and the shipped YAMNet head on real audio."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from soundmond.analyzer import Analyzer
from soundmond.audio import load_audio
from soundmond.config import BirdConfig, TaggerConfig
from soundmond.data import AudioWindow, BirdOutput, GroupPrediction, TaggerOutput
from soundmond.head import (
    ALLOWED_TYPES,
    HEAD_CLASSES,
    TRUSTED_TYPES,
    BirdFeaturesMissing,
    Head,
    HeadError,
    HeadMeta,
    default_head_path,
    feature_parts,
    head_features,
    load_head,
    save_head,
    schema_types,
)
from soundmond.models import AstTagger, BirdnetModel, YamnetTagger
from soundmond.protocols import GroupHead

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "audio"
SHIPPED = default_head_path("yamnet")
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


def test_shipped_head_holds_exactly_the_allowed_types() -> None:
    with zipfile.ZipFile(SHIPPED) as archive:
        types = schema_types(json.loads(archive.read("schema.json")))
    assert types == ALLOWED_TYPES  # the allow-list is minimal: nothing in it the shipped head does not use
    assert sio.get_untrusted_types(file=SHIPPED) == TRUSTED_TYPES == []


def test_shipped_head_metrics_file_matches_the_head() -> None:
    report = json.loads(SHIPPED.with_suffix(".json").read_text())
    head = Head.load(SHIPPED)
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


def test_shipped_head_meets_the_target() -> None:
    # the chosen head's grouped 5-fold CV, and the nested CV of the selection (no selection optimism)
    report = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert report["cv_target"]["natural_vs_industrial_balanced_accuracy"] == TARGET
    assert report["cv"]["natural_vs_industrial"]["balanced_accuracy"] >= TARGET
    assert report["nested_cv"]["natural_vs_industrial"]["balanced_accuracy"] >= TARGET


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


def test_shipped_head_refuses_a_window_without_bird_output(yamnet: YamnetTagger) -> None:
    head = load_head(None, "yamnet", len(yamnet.labels))
    if not head.needs_birds:
        pytest.skip("the shipped head uses tagger features only")
    with pytest.raises(BirdFeaturesMissing, match="enable models.birds"):
        head.predict(yamnet.tag(five_s("whisp_field_horn.flac")))


def test_fixture_labels_cover_the_groups() -> None:
    assert {r["group"] for r in fixture_rows()} == set(HEAD_CLASSES)


# --- refusals --------------------------------------------------------------------------------------------------------


def test_tampered_head_is_refused(tmp_path: Path) -> None:
    data = bytearray(SHIPPED.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(".npy") and i.file_size > 1000)
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size // 2
    data[offset] ^= 0xFF
    tampered = tmp_path / "tampered.skops"
    tampered.write_bytes(bytes(data))
    with pytest.raises(HeadError, match="damaged") as err:
        Head.load(tampered)
    assert str(tampered) in str(err.value) and "retrain" in err.value.hint


def test_truncated_head_is_refused(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.skops"
    truncated.write_bytes(SHIPPED.read_bytes()[:-200])
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


def test_head_for_another_tagger_is_refused() -> None:
    with pytest.raises(HeadError, match="trained on 'yamnet' tagger outputs, but models.tagger.family is 'ast'"):
        Head.load(SHIPPED, tagger_family="ast")
    with pytest.raises(HeadError, match="expects a tagger with 521 labels"):
        Head.load(SHIPPED, tagger_family="yamnet", tagger_label_count=527)


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
    path = save_head(tmp_path / "ast.skops", model, meta)
    head = load_head(path, "ast", len(tagger.labels))
    prediction = head.predict(outputs[0])
    assert prediction.group in HEAD_CLASSES
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
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


class _Tagger:
    family = "yamnet"
    sample_rate_hz = 16000
    labels = ("a", "b", "c")

    def tag(self, samples: np.ndarray) -> TaggerOutput:
        return _outputs()[0]


class _Birds:
    sample_rate_hz = 48000

    def detect(self, samples: np.ndarray, *, start_unix_s: float) -> BirdOutput:
        return _outputs()[1]


class _BirdHead:
    tagger_family = "yamnet"
    needs_birds = True

    def __init__(self) -> None:
        self.seen: list[BirdOutput | None] = []

    def predict(self, tagger_output: TaggerOutput, bird_output: BirdOutput | None = None) -> GroupPrediction:
        self.seen.append(bird_output)
        return GroupPrediction("natural", {"industrial": 0.1, "natural": 0.8, "other": 0.1})


def test_analyzer_passes_the_bird_output_to_the_head() -> None:
    head = _BirdHead()
    assert isinstance(head, GroupHead)
    analyzer = Analyzer(_Tagger(), _Birds(), head)
    window = AudioWindow("w", "test", 0.0, 0.0, 16000, np.zeros(80000, np.float32) + 0.01)
    analysis = analyzer.analyze(window)
    assert analysis.result.status == "ok" and analysis.result.group is not None
    assert head.seen == [analysis.bird_output] and analysis.bird_output is not None


def test_analyzer_refuses_a_bird_head_without_the_bird_model() -> None:
    with pytest.raises(ValueError, match="needs BirdNET's embedding but the bird model is disabled"):
        Analyzer(_Tagger(), None, _BirdHead())


# --- training helpers ------------------------------------------------------------------------------------------------


def test_source_group_keeps_recordings_together() -> None:
    from soundmond.training import source_group

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
    from soundmond.training import esc50_sessions, session_group

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
    from soundmond.training import cut_windows

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
    from soundmond.training import read_corpus

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
