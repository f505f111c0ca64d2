"""A replay recognises the models, not only the window settings: real models on a real recording, a real store.

A recording a store holds from BirdNET, replayed with another bird model (the session's tiny hf export, conftest.py),
is analysed again with a warning naming the bird models, beside the earlier rows (other ids), and each replay record
still says which models made its rows (`models@<identity>` in the store's meta). A store from before model identities
(its records without a `models=` part) is skipped with the same models and analysed again with others.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import store_rows
from configs import daemon_config

from soundmond.cli import main
from soundmond.errors import ExitCode
from soundmond.identity import models_identity

RECORDING = "oss_birds_10s.flac"  # 10.1 s: two 5-s windows


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


def meta(db: Path) -> dict[str, str]:
    return {str(k): str(v) for k, v in query(db, "SELECT key, value FROM meta")}


def records(db: Path) -> list[str]:
    return [str(r[0]) for r in query(db, "SELECT analysis FROM replay_sources ORDER BY started_unix_s")]


def window_ids(db: Path) -> set[str]:
    return {w["window_id"] for w in store_rows.windows(db)}


def replay(cfg: Path, source: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    code = main(["run", "--config", str(cfg), "--source", str(source), *extra])
    err = capsys.readouterr().err
    assert code == ExitCode.OK, err[-3000:]
    return err


@pytest.fixture(scope="module")
def hf_bird_model(tmp_path_factory: pytest.TempPathFactory, hf_check_audio: Path) -> Path:
    """One tiny random hf bird model (wav2vec2), exported as `python -m export hf` does."""
    for module in ("torch", "transformers", "optimum.exporters.onnx"):
        pytest.importorskip(module, reason=f"exporting the hf test model needs the export extra ({module})")
    os.environ.setdefault("USE_TF", "0")
    import hf_models

    root = tmp_path_factory.mktemp("hf-bird")
    checkpoint = hf_models.make_checkpoints(root / "checkpoints", ["wav2vec2"])["wav2vec2"]
    return hf_models.export(checkpoint, root / "wav2vec2", hf_check_audio)


@pytest.mark.export
def test_another_bird_model_analyses_a_stored_recording_again_beside_the_earlier_rows(
    tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, hf_bird_model: Path, fixture_audio: Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    source = fixture_audio / RECORDING
    birdnet = daemon_config(tmp_path, yamnet_dir, birdnet_dir)
    hf = tmp_path / "hf.yaml"  # the same store, tagger and windows; another bird model (at BirdNET's stride)
    hf.write_text(birdnet.read_text().replace(
        f"birds: {{path: {birdnet_dir}}}", f"birds: {{family: hf, path: {hf_bird_model}, min_confidence: 0.0, "
                                           "stride_s: 3.0}"))
    assert hf.read_text() != birdnet.read_text()
    db = tmp_path / "soundmond.db"

    replay(birdnet, source, capsys)
    by_birdnet = window_ids(db)
    birdnet_detections = store_rows.detections(db)
    assert len(by_birdnet) == 2 and birdnet_detections
    birdnet_models = json.loads(meta(db)["models"])
    assert birdnet_models["birds"].startswith("birdnet ")

    err = replay(hf, source, capsys)
    assert "already analysed, skipped" not in err and "already analysed (same content" not in err
    warning = next(line for line in err.splitlines() if "was analysed before with other settings or models" in line)
    hf_models_ = json.loads(meta(db)["models"])
    assert hf_models_["birds"].startswith("hf ")
    assert f"the bird model ({birdnet_models['birds']} -> {hf_models_['birds']})" in warning
    assert "the tagger" not in warning and "hop_s" not in warning  # only what changed is named
    assert "1 analysed before with other settings or models: analysed again, the earlier rows kept" in err
    by_hf = window_ids(db) - by_birdnet
    assert len(by_hf) == 2 and by_birdnet <= window_ids(db)  # the earlier rows kept, the new ones their own ids
    assert [d for d in store_rows.detections(db) if d["window_id"] in by_birdnet] == birdnet_detections
    assert {d["window_id"] for d in store_rows.detections(db)} & by_hf  # the hf model's own detections

    # each record's models stay known: its `models=` part names a `models@` entry of the meta
    keys = records(db)
    assert len(keys) == 2
    made_by = [json.loads(meta(db)[f"models@{key.rpartition(';models=')[2]}"])["birds"] for key in keys]
    assert made_by == [birdnet_models["birds"], hf_models_["birds"]]

    # the same models again: nothing analysed, the same ids; either model's rows are recognised
    for cfg in (hf, birdnet):
        again = replay(cfg, source, capsys)
        assert "1 file already analysed, skipped" in again and "analysed before with other" not in again
        assert window_ids(db) == by_birdnet | by_hf

    # --reanalyze replaces every earlier row of the recording with this model's
    redo = replay(hf, source, capsys, "--reanalyze")
    assert "1 analysed again (--reanalyze: earlier rows replaced)" in redo
    assert window_ids(db) == by_hf


def as_before_model_identities(db: Path) -> None:
    """Rewrite a store as a soundmond before model identities left it: records without a `models=` part and only the
    latest models in the meta."""
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE replay_sources SET analysis = substr(analysis, 1, instr(analysis, ';models=') - 1)")
        conn.execute("DELETE FROM meta WHERE key LIKE 'models@%'")


def test_a_store_from_before_model_identities_skips_with_the_same_models_and_analyses_again_with_others(
    tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, fixture_audio: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = fixture_audio / RECORDING
    cfg = daemon_config(tmp_path, yamnet_dir, birdnet_dir)
    db = tmp_path / "soundmond.db"
    replay(cfg, source, capsys)
    before = window_ids(db)
    as_before_model_identities(db)
    assert records(db)[0].count("models=") == 0

    same = replay(cfg, source, capsys)
    assert "1 file already analysed, skipped" in same and window_ids(db) == before
    old_models = meta(db)["models@legacy"]  # the models the store named before: those of its records
    assert json.loads(old_models) == json.loads(meta(db)["models"])
    assert f"models@{models_identity(json.loads(old_models))}" in meta(db)

    no_birds = tmp_path / "no-birds.yaml"
    no_birds.write_text(cfg.read_text().replace(f"birds: {{path: {birdnet_dir}}}", "birds: {enabled: false}"))
    other = replay(no_birds, source, capsys)
    warning = next(line for line in other.splitlines() if "was analysed before with other settings or models" in line)
    assert f"the bird model ({json.loads(old_models)['birds']} -> none)" in warning
    assert before < window_ids(db) and len(window_ids(db)) == 4  # beside the earlier rows, with ids of its own
