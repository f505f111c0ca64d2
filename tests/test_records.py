"""One serialiser of a window (`soundmond.outputs.records`): on real WindowResults from the real models, the
`analyze` line and CSV row, the MQTT window and detection payloads and the stored rows say the same thing."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from collections import defaultdict
from pathlib import Path

import pytest
import store_rows

from soundmond.analysis import Analyzer
from soundmond.capture.files import FileSource
from soundmond.config import BirdConfig, StationConfig, StoreConfig, TaggerConfig
from soundmond.data import INDEX_NAMES, ChunkDetection, GroupPrediction, LabelScore, SpeciesScore, WindowResult
from soundmond.head.loader import load_head
from soundmond.models.birds import BirdnetModel
from soundmond.models.taggers import load_tagger
from soundmond.outputs import messages, records
from soundmond.outputs.store import Store

pytestmark = pytest.mark.slow

STATION = StationConfig(id="jura-1", latitude=46.5, longitude=6.1)


@pytest.fixture(scope="module")
def results(yamnet_dir: Path, birdnet_dir: Path, fixture_audio: Path) -> list[WindowResult]:
    """The analysed windows of the spinetail recording (species found), and the first again as a quiet one."""
    tagger = load_tagger(yamnet_dir, TaggerConfig(family="yamnet", path=yamnet_dir))
    birds = BirdnetModel(birdnet_dir, BirdConfig(path=birdnet_dir))
    analyzer = Analyzer(tagger, birds, load_head(None, "yamnet", len(tagger.labels), birds_enabled=True),
                        indices=True, calibration_db=120.0)
    source = FileSource([fixture_audio / "maad_spinetail_Cranioleuca_erythrops.flac"], 5.0, 5.0)
    try:
        out: list[WindowResult] = []
        for w in source.windows(threading.Event()):  # up to the first window with species (and at least two)
            out.append(analyzer.analyze(w).result)
            if len(out) >= 2 and out[-1].species:
                break
    finally:
        analyzer.close()
    assert any(r.species and r.group is not None for r in out)  # windows with everything in them
    quiet = dataclasses.replace(out[0], window_id="quiet", group=None, status="skipped_quiet", species=(),
                                tagger_top=(), rms_dbfs=-math.inf)
    return [*out, quiet]


def best_chunks(r: WindowResult) -> tuple[ChunkDetection, ...]:
    return tuple(sorted(r.best_chunks().values(), key=lambda c: (c.start_s, -c.confidence)))


def test_analyze_store_and_mqtt_agree_on_real_windows(results: list[WindowResult], tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    with Store(db, StoreConfig()) as store:
        store.write_batch(results, [], [])
        rebuilt = {r.window_id: r for r in store.recent_results(0)}
        # the stored rows rebuild the results exactly, each species with its best chunk (the store keeps those)
        assert rebuilt == {r.window_id: dataclasses.replace(r, detections=best_chunks(r)) for r in results}
    rows = {w["window_id"]: w for w in store_rows.windows(db)}
    dets: dict[str, list[dict]] = defaultdict(list)
    for d in store_rows.detections(db):
        dets[d["window_id"]].append(d)

    for r in results:
        line = json.loads(json.dumps(records.analyze_record(r)))
        csv = records.csv_row(line)
        msg = messages.window_payload(r, STATION)
        messages.validate(msg)
        row = rows[r.window_id]

        assert line["window_id"] == msg["window_id"] == msg["event_id"] == row["window_id"] == r.window_id
        assert line["file"] == msg["source"] == row["source"] == csv["file"]
        assert line["status"] == msg["status"] == row["status"] == csv["status"]
        assert line["group"] == msg["group"] == row["group"]
        assert line["start_utc"] == msg["ts"] == records.iso_utc(row["start_unix_s"])
        # the store keeps full precision; analyze and MQTT round it the same way (rms_dbfs: 1 and 2 decimals)
        assert line["start_s"] == msg["start_s"] == round(row["start_s"], 3)
        assert line["end_s"] == msg["end_s"] == round(row["end_s"], 3)
        assert line["compute_ms"] == msg["compute_ms"] == round(row["compute_ms"], 1)
        assert line["clipped_fraction"] == msg["clipped_fraction"] == round(row["clipped_fraction"], 4)
        if math.isfinite(r.rms_dbfs):
            assert (line["rms_dbfs"], msg["rms_dbfs"]) == (round(row["rms_dbfs"], 1), round(row["rms_dbfs"], 2))
        else:
            assert line["rms_dbfs"] is None and msg["rms_dbfs"] is None and row["rms_dbfs"] == r.rms_dbfs
        if r.group is None:
            assert line["group_probabilities"] is None and msg["shares"] is None and row["p_natural"] is None
        else:
            stored_probs = {g: round(row[f"p_{g}"], 4) for g in ("natural", "industrial", "other")}
            assert line["group_probabilities"] == msg["shares"] == stored_probs
            assert csv["p_industrial"] == stored_probs["industrial"]
        top = [(t["label"], t["score"]) for t in line["tagger_top"]]
        assert top == [(t["label"], t["score"]) for t in msg["tagger_top"]]
        assert top == [(label, round(score, 4)) for label, score in row["tagger_top"]]
        assert csv["tagger_top"] == "; ".join(f"{label}:{score}" for label, score in top)

        stored_species = [(d["scientific_name"], d["common_name"], round(d["confidence"], 4))
                          for d in dets[r.window_id]]
        assert [(s["scientific_name"], s["common_name"], s["confidence"]) for s in line["species"]] == stored_species
        assert [(s["scientific_name"], s["common_name"], s["confidence"]) for s in msg["species"]] == stored_species
        best = r.best_chunks()
        for s, in_window, stored in zip(r.species, msg["species"], dets[r.window_id], strict=True):
            chunk = best[s.scientific_name]  # every kept species was kept in one of the window's chunks
            det = messages.detection_payload(s, STATION, window_id=r.window_id, ts_unix_s=r.start_unix_s,
                                             chunk=chunk)
            messages.validate(det)
            assert {k: det[k] for k in in_window} == in_window  # a detection says what its window says
            # where in the window it was heard: the species' best chunk, the same in MQTT, the store and analyze
            assert chunk.confidence == s.confidence
            assert (det["chunk_start_s"], det["chunk_end_s"]) == (round(chunk.start_s, 3), round(chunk.end_s, 3))
            assert (det["chunk_start"], det["chunk_end"]) == (records.iso_utc(stored["chunk_start_unix_s"]),
                                                              records.iso_utc(stored["chunk_end_unix_s"]))
            assert (stored["chunk_start_s"], stored["chunk_end_s"]) == (chunk.start_s, chunk.end_s)
            assert {"start_s": det["chunk_start_s"], "end_s": det["chunk_end_s"], "start_utc": det["chunk_start"],
                    "end_utc": det["chunk_end"], "scientific_name": s.scientific_name,
                    "common_name": s.common_name, "confidence": det["confidence"]} in line["detections"]
        # analyze lists every chunk's species, with the chunk's times; each window's chunks end inside it
        assert [(d["scientific_name"], d["start_s"]) for d in line["detections"]] == [
            (d.scientific_name, round(d.start_s, 3)) for d in r.detections]
        assert all(r.start_s < d.end_s <= r.end_s + 1e-9 and d.end_s - d.start_s == 3.0 for d in r.detections)

        assert r.indices is not None  # acoustic indices: levels at rms_dbfs digits, the others at 4 decimals
        for name in INDEX_NAMES:
            digits = (1, 2) if name.startswith("leq") else (4, 4)
            assert (line["indices"][name], msg["indices"][name]) == tuple(round(row[name], d) for d in digits)
            assert csv[name] == line["indices"][name]


def test_analyze_record_shape_is_unchanged() -> None:
    """The `analyze` JSON line, key by key, as users' scripts read it (occurrence only when known, -inf dBFS null)."""
    r = WindowResult(
        window_id="w1", source="a.flac", start_unix_s=1_716_537_600.25, start_s=5.00049, end_s=10.0,
        group=GroupPrediction("natural", {"natural": 0.712345, "industrial": 0.2, "other": 0.087655}),
        tagger_top=(LabelScore("Bird", 0.812345),), tagger_top_score=0.812345,
        species=(SpeciesScore("Turdus merula", "Eurasian Blackbird", 0.91234, 0.41234),
                 SpeciesScore("Parus major", "Great Tit", 0.5)),
        bird_top_score=0.91234, rms_dbfs=-32.456, clipped_fraction=0.000123, compute_ms=120.04,
        detections=(ChunkDetection("Turdus merula", "Eurasian Blackbird", 0.91234, 6.0, 9.0, 1_716_537_601.25,
                                   1_716_537_604.25, 0.41234),),
    )
    assert json.dumps(records.analyze_record(r)) == (
        '{"file": "a.flac", "window_id": "w1", "start_s": 5.0, "end_s": 10.0, "start_utc": "2024-05-24T08:00:00.250Z", '
        '"status": "ok", "error": null, "group": "natural", '
        '"group_probabilities": {"natural": 0.7123, "industrial": 0.2, "other": 0.0877}, '
        '"tagger_top": [{"label": "Bird", "score": 0.8123}], '
        '"species": [{"scientific_name": "Turdus merula", "common_name": "Eurasian Blackbird", "confidence": 0.9123, '
        '"occurrence": 0.4123}, {"scientific_name": "Parus major", "common_name": "Great Tit", "confidence": 0.5}], '
        '"rms_dbfs": -32.5, "clipped_fraction": 0.0001, "compute_ms": 120.0, '
        '"detections": [{"start_s": 6.0, "end_s": 9.0, "start_utc": "2024-05-24T08:00:01.250Z", '
        '"end_utc": "2024-05-24T08:00:04.250Z", "scientific_name": "Turdus merula", '
        '"common_name": "Eurasian Blackbird", "confidence": 0.9123, "occurrence": 0.4123}]}'
    )
    quiet = dataclasses.replace(r, group=None, status="skipped_quiet", rms_dbfs=-math.inf)
    assert records.analyze_record(quiet)["rms_dbfs"] is None
    assert records.csv_row(records.analyze_record(quiet))["p_natural"] == ""
