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

from soundmond.audio import load_audio
from soundmond.config import TaggerConfig
from soundmond.head import (
    ALLOWED_TYPES,
    HEAD_CLASSES,
    TRUSTED_TYPES,
    Head,
    HeadError,
    HeadMeta,
    default_head_path,
    head_features,
    load_head,
    save_head,
    schema_types,
)
from soundmond.models import AstTagger, YamnetTagger
from soundmond.protocols import GroupHead

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "audio"
SHIPPED = default_head_path("yamnet")
TARGET = 0.95


def fixture_rows() -> list[dict[str, str]]:
    with open(FIXTURES / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def five_s(name: str, start_s: float = 0.0) -> np.ndarray:
    samples, _ = load_audio(FIXTURES / name, 16000)
    return samples[int(start_s * 16000) : int((start_s + 5) * 16000)]


def small_head_file(path: Path, model: object, family: str = "yamnet", dim: int = 4, **extra: object) -> Path:
    meta = HeadMeta(
        tagger_family=family,
        tagger_label_count=521,
        features="probabilities",
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
    assert report["chosen"]["features"] == head.meta.features
    assert report["command"].startswith("python scripts/train_default_head.py")
    assert "StratifiedGroupKFold" in cv["scheme"]


@pytest.mark.xfail(
    strict=True,
    reason="grouped 5-fold CV gives about 0.80, not 0.95: all 14 DCASE machine clips are one machine (id_00), "
    "so its fold never saw machinery in training (see soundmond/heads/yamnet.json, cv_per_category)",
)
def test_shipped_head_meets_the_target() -> None:
    report = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert report["cv"]["natural_vs_industrial"]["balanced_accuracy"] >= TARGET


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
def test_shipped_head_on_real_fixture_audio(yamnet: YamnetTagger, name: str, group: str) -> None:
    head = load_head(None, "yamnet", len(yamnet.labels))
    assert isinstance(head, GroupHead)
    prediction = head.predict(yamnet.tag(five_s(name)))
    assert prediction.group == group
    assert set(prediction.probabilities) == set(HEAD_CLASSES)
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
    assert prediction.probabilities[group] == max(prediction.probabilities.values())


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


# --- training helpers ------------------------------------------------------------------------------------------------


def test_source_group_keeps_recordings_together() -> None:
    from soundmond.training import source_group

    assert source_group({"original_id": "freesound:11687 take A"}) == "freesound:11687"
    assert source_group({"original_id": "freesound:11687 take B"}) == "freesound:11687"
    assert source_group({"file": "audio/industrial/dcase2020t2_machine_normal_id_00_00000003.flac"}) == "dcase:id_00"
    assert source_group({"original_id": "XC328987", "file": "x.flac"}) == "XC328987"
    maad = {"file": "a.flac", "source_repo": "scikit-maad/scikit-maad", "source_path": "data/x.wav"}
    assert source_group(maad) == "scikit-maad/scikit-maad:data/x.wav"


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
    assert len({c.source for c in clips if "dcase" in c.file}) == 1  # all DCASE clips: machine id_00
