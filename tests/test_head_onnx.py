"""The ONNX head: same probabilities as the skops head it was converted from (real YAMNet / BirdNET outputs on the
fixture audio), the embedded checksum (a flipped weight byte, a truncated file), refusals at save and at load, and a
daemon that never imports scikit-learn, skops, scipy or onnx."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

import soundmond.head.save
from soundmond.capture.audio import load_audio
from soundmond.config import BirdConfig, TaggerConfig
from soundmond.head.loader import Head, load_head
from soundmond.head.meta import (
    HEAD_CLASSES,
    HeadError,
    HeadMeta,
    default_head_path,
    head_features,
    tagger_only_head_path,
)
from soundmond.head.onnx import CHECKSUM_KEY, CHECKSUM_PLACEHOLDER, FORMAT_KEY, seal
from soundmond.head.save import save_head
from soundmond.models.birds import BirdnetModel
from soundmond.models.taggers import YamnetTagger

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "audio"
SHIPPED_HEADS = [default_head_path("yamnet"), tagger_only_head_path("yamnet")]


def meta_for(dim: int, family: str = "yamnet", label_count: int = 521) -> HeadMeta:
    return HeadMeta(
        tagger_family=family,
        tagger_label_count=label_count,
        features="probabilities",
        feature_dim=dim,
        classes=list(HEAD_CLASSES),
        trained_on="test",
        training_data_sha256="0" * 64,
    )


def training_data(dim: int = 6, classes: list[str] = HEAD_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.array(classes * 20)
    x = rng.normal(size=(y.size, dim)) * 3.0 + 10.0
    x[:, 0] += np.array([classes.index(c) for c in y]) * 2.0  # something to learn
    return x, y


def fitted(dim: int = 6) -> object:
    x, y = training_data(dim)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)


@pytest.fixture(scope="module")
def real_features(yamnet_dir: Path, birdnet_dir: Path) -> dict[str, np.ndarray]:
    """Per feature kind, the head's input for 5-s windows of every fixture recording (real YAMNet and BirdNET)."""
    tagger = YamnetTagger(yamnet_dir, TaggerConfig(path=yamnet_dir))
    birds = BirdnetModel(birdnet_dir, BirdConfig(path=birdnet_dir))
    with open(FIXTURES / "labels.csv", newline="") as fh:
        files = [r["file"] for r in csv.DictReader(fh)]
    kinds = {Head.load(p).meta.features for p in SHIPPED_HEADS}
    rows: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    for name in files:
        s16, _ = load_audio(FIXTURES / name, 16000)
        s48, _ = load_audio(FIXTURES / name, 48000)
        for start in np.arange(0.0, max(s16.size / 16000 - 5.0, 0.0) + 1e-9, 2.5)[:6]:  # up to 6 windows a file
            out = tagger.tag(s16[int(start * 16000) : int((start + 5) * 16000)])
            bird = birds.detect(s48[int(start * 48000) : int((start + 5) * 48000)], start_unix_s=0.0)
            for kind in kinds:
                rows[kind].append(head_features(out, kind, bird))
    return {k: np.stack(v) for k, v in rows.items()}


# --- the shipped ONNX heads are the skops heads ---------------------------------------------------------------------


@pytest.mark.parametrize("shipped", SHIPPED_HEADS, ids=lambda p: p.name)
def test_onnx_head_gives_the_skops_heads_probabilities_on_real_features(
    shipped: Path, real_features: dict[str, np.ndarray]
) -> None:
    onnx_head = Head.load(shipped, tagger_family="yamnet", tagger_label_count=521)
    skops_head = Head.load(shipped.with_suffix(".skops"), tagger_family="yamnet", tagger_label_count=521)
    x = real_features[onnx_head.meta.features]
    assert x.dtype == np.float32 and x.shape == (len(x), onnx_head.meta.feature_dim) and len(x) >= 20
    got, want = onnx_head.predict_proba(x), skops_head.predict_proba(x)
    assert got.dtype == np.float64 and got.shape == (len(x), 3)
    assert np.abs(got - want).max() <= 1e-9
    assert np.allclose(got.sum(axis=1), 1.0)
    assert len(set(got.argmax(axis=1))) >= 2  # the windows are not all one group: a real comparison
    assert onnx_head.meta == skops_head.meta


def test_shipped_onnx_head_carries_its_meta_and_format() -> None:
    model = onnx.load(str(SHIPPED_HEADS[0]))
    props = {p.key: p.value for p in model.metadata_props}
    assert props[FORMAT_KEY] == "onnx-1"
    assert json.loads(props["soundmond.head_meta"])["tagger_family"] == "yamnet"
    assert len(props[CHECKSUM_KEY]) == 64 and props[CHECKSUM_KEY] != CHECKSUM_PLACEHOLDER
    assert [n.op_type for n in model.graph.node] == ["Cast", "Sub", "Div", "Gemm", "Softmax"]


# --- the checksum -----------------------------------------------------------------------------------------------------


def _weights_offset(data: bytes) -> int:
    """Where a byte of the logistic regression's largest coefficient sits in a serialised head (a coefficient the
    head uses: many of the ontology-prior head's are exactly 0, and a bit flipped in 0.0 is a denormal)."""
    model = onnx.load_from_string(data)
    tensor = next(t for t in model.graph.initializer if t.name == "coef_t")
    raw = tensor.raw_data
    offset = data.find(raw)
    assert offset > 0 and len(raw) > 1000
    largest = int(np.abs(onnx.numpy_helper.to_array(tensor)).argmax())
    return offset + 4 * largest + 2  # float32, little-endian: the byte of the mantissa's top bits


def test_a_flipped_weight_byte_is_caught_by_the_checksum(tmp_path: Path) -> None:
    original = SHIPPED_HEADS[0].read_bytes()
    offset = _weights_offset(original)
    damaged = bytearray(original)
    damaged[offset] ^= 0x10  # one bit of one coefficient, as SD-card bit rot would do
    path = tmp_path / "yamnet.onnx"
    path.write_bytes(bytes(damaged))
    with pytest.raises(HeadError, match="checksum mismatch: the head file was changed or damaged") as err:
        Head.load(path)
    assert str(path) in str(err.value) and "reinstall" in err.value.hint
    # Without the checksum the damage would go unnoticed: re-sealed, the same bytes load and predict differently.
    start = original.find(CHECKSUM_KEY.encode()) + len(CHECKSUM_KEY) + 2
    unsealed = bytes(damaged[:start]) + CHECKSUM_PLACEHOLDER.encode() + bytes(damaged[start + 64 :])
    path.write_bytes(seal(unsealed))
    x = np.random.default_rng(0).normal(size=(64, Head.load(SHIPPED_HEADS[0]).meta.feature_dim)).astype(np.float32)
    assert np.abs(Head.load(path).predict_proba(x) - Head.load(SHIPPED_HEADS[0]).predict_proba(x)).max() > 0


def test_a_changed_checksum_is_refused(tmp_path: Path) -> None:
    data = SHIPPED_HEADS[1].read_bytes()
    start = data.find(CHECKSUM_KEY.encode()) + len(CHECKSUM_KEY) + 2
    digit = data[start : start + 1]
    path = tmp_path / "h.onnx"
    path.write_bytes(data[:start] + (b"0" if digit != b"0" else b"1") + data[start + 1 :])
    with pytest.raises(HeadError, match="checksum mismatch"):
        Head.load(path)


@pytest.mark.parametrize("keep", [0.5, 0.99, 1.0 - 1e-4])
def test_a_truncated_onnx_head_is_refused(tmp_path: Path, keep: float) -> None:
    data = SHIPPED_HEADS[0].read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(HeadError, match="checksum") as err:
        Head.load(path)
    assert str(path) in str(err.value)


def test_an_onnx_file_that_is_not_a_head_is_refused(tmp_path: Path, yamnet_dir: Path) -> None:
    path = tmp_path / "head.onnx"
    path.write_bytes((yamnet_dir / "model.onnx").read_bytes())
    with pytest.raises(HeadError, match="checksum missing"):
        Head.load(path)
    path.write_bytes(b"")
    with pytest.raises(HeadError, match="checksum missing"):
        Head.load(path)


def test_a_sealed_onnx_file_of_another_format_is_refused(tmp_path: Path) -> None:
    model = onnx.load(str(SHIPPED_HEADS[1]))
    for prop in model.metadata_props:
        if prop.key == FORMAT_KEY:
            prop.value = "onnx-0"
        if prop.key == CHECKSUM_KEY:
            prop.value = CHECKSUM_PLACEHOLDER
    path = tmp_path / "h.onnx"
    path.write_bytes(seal(model.SerializeToString()))
    with pytest.raises(HeadError, match="not a soundmond ONNX head"):
        Head.load(path)


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    for name in ("head.pkl", "head.joblib", "head"):
        path = tmp_path / name
        path.write_bytes(SHIPPED_HEADS[0].read_bytes())
        with pytest.raises(HeadError, match="unknown head file type") as err:
            load_head(path, "yamnet", 521)
        assert str(path) in str(err.value)
    with pytest.raises(HeadError, match="must end in .onnx or .skops"):
        save_head(tmp_path / "head.pkl", fitted(), meta_for(6))
    assert not list(tmp_path.glob("head.pkl.*")) and not (tmp_path / "head.onnx").exists()


# --- saving ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mine.onnx", "mine.skops"])
def test_save_head_writes_both_formats_that_agree(tmp_path: Path, name: str) -> None:
    model = fitted()
    x, _ = training_data()
    files = save_head(tmp_path / "heads" / name, model, meta_for(6), features=x)
    assert (files.onnx, files.skops) == (tmp_path / "heads" / "mine.onnx", tmp_path / "heads" / "mine.skops")
    assert sorted(p.name for p in (tmp_path / "heads").iterdir()) == ["mine.onnx", "mine.skops"]  # no .tmp left
    assert files.parity_max_abs_diff <= 1e-9 and files.parity_random_rows == 512 and files.parity_feature_rows == 60
    onnx_head, skops_head = Head.load(files.onnx), Head.load(files.skops)
    assert onnx_head.meta == skops_head.meta == meta_for(6)
    xf = x.astype(np.float32)
    assert np.abs(onnx_head.predict_proba(xf) - skops_head.predict_proba(xf)).max() <= 1e-9
    report = files.report()
    assert report["loaded_by_the_daemon"] == "mine.onnx" and report["onnx_parity"]["training_feature_rows"] == 60
    # the same model and meta give the same ONNX bytes
    again = save_head(tmp_path / "again.onnx", model, meta_for(6), features=x)
    assert again.onnx.read_bytes() == files.onnx.read_bytes()


def test_the_skops_head_says_the_onnx_head_avoids_scikit_learn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = save_head(tmp_path / "mine.onnx", fitted(), meta_for(6))
    with caplog.at_level("INFO", logger="soundmond.head.loader"):
        Head.load(files.skops)
    assert any("mine.onnx" in r.getMessage() and "without importing scikit-learn" in r.getMessage()
               for r in caplog.records)


def _refused_at_save(tmp_path: Path, model: object, match: str, meta: HeadMeta | None = None) -> None:
    with pytest.raises(HeadError, match=match):
        save_head(tmp_path / "bad.onnx", model, meta or meta_for(6))
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file left


def test_other_models_are_refused_at_save(tmp_path: Path) -> None:
    x, y = training_data()
    _refused_at_save(tmp_path, RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y),
                     "cannot convert RandomForestClassifier")
    _refused_at_save(tmp_path, LogisticRegression(max_iter=500).fit(x, y), "cannot convert LogisticRegression")
    _refused_at_save(tmp_path, make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=500)).fit(x, y),
                     "cannot convert MinMaxScaler \\+ LogisticRegression")
    two = training_data(classes=["industrial", "natural"])
    _refused_at_save(tmp_path, make_pipeline(StandardScaler(), LogisticRegression()).fit(*two),
                     r"classes are \['industrial', 'natural'\]")
    _refused_at_save(tmp_path, fitted(), "model takes 6 features, meta says 7", meta_for(7))


def test_one_vs_rest_models_are_refused_at_save(tmp_path: Path) -> None:
    x, y = training_data()
    ovr = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=500))).fit(x, y)
    _refused_at_save(tmp_path, ovr, "cannot convert StandardScaler \\+ OneVsRestClassifier")
    if "multi_class" in LogisticRegression().get_params():  # older scikit-learn fits a one-vs-rest one itself
        logreg = LogisticRegression(multi_class="ovr", max_iter=500)
        _refused_at_save(tmp_path, make_pipeline(StandardScaler(), logreg).fit(x, y), "one-vs-rest")


def test_a_conversion_outside_the_tolerance_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(soundmond.head.save, "PARITY_TOLERANCE", -1.0)  # any difference, even 0, is too much
    _refused_at_save(tmp_path, fitted(), "the ONNX head differs from scikit-learn by")


# --- the daemon does not import scikit-learn -------------------------------------------------------------------------

_DAEMON = """
import json, sys
from soundmond.cli import main
code = main(["run", "--config", sys.argv[1], "--source", sys.argv[2]])
print(json.dumps({"code": code, "modules": sorted(m for m in sys.modules if m.split(".")[0] in
                  ("sklearn", "skops", "scipy", "onnx"))}))
"""


def test_the_daemon_never_imports_scikit_learn_skops_scipy_or_onnx(
    tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n  birds: {{path: {birdnet_dir}}}\n"
        f"store: {{path: {tmp_path / 'soundmond.db'}}}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", _DAEMON, str(cfg), str(FIXTURES / "whisp_field_horn.flac")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert "head loaded from" in proc.stderr and "yamnet.onnx" in proc.stderr  # the default head, loaded
    assert result["modules"] == []


@pytest.mark.parametrize("shipped", SHIPPED_HEADS, ids=lambda p: p.name)
def test_the_shipped_onnx_heads_are_reproduced_by_convert(tmp_path: Path, shipped: Path) -> None:
    import shutil

    skops, report = shipped.with_suffix(".skops"), json.loads(shipped.with_suffix(".json").read_text())
    shutil.copy(skops, tmp_path / skops.name)
    del report["files"]
    (tmp_path / shipped.with_suffix(".json").name).write_text(json.dumps(report))
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_default_head.py"), "--convert", str(tmp_path / skops.name)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / shipped.name).read_bytes() == shipped.read_bytes()  # byte for byte
    assert (tmp_path / skops.name).read_bytes() == skops.read_bytes()  # the skops head is not rewritten
    files = json.loads((tmp_path / shipped.with_suffix(".json").name).read_text())["files"]
    assert files["onnx"] == shipped.name and files["onnx_parity"]["max_abs_diff"] <= 1e-9
    assert json.loads(proc.stdout) == files
