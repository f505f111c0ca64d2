"""`soundmond collect xeno-canto` against a local HTTP server on 127.0.0.1 that speaks the Xeno-canto API v3 JSON and
serves real audio (the repository's fixture recordings), with scripted faults: HTTP 500s, a stalled response (client
timeout), truncated bodies, malformed JSON, a rejected key and a No-Derivatives licence."""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import soundfile as sf

from soundmond.cli import main

KEY = "sekrit-Key-1234567890"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "audio"


def _wav_bytes(path: Path, seconds: float = 6.0) -> bytes:
    data, rate = sf.read(str(path), dtype="int16", always_2d=True)
    buf = io.BytesIO()
    sf.write(buf, data[: int(seconds * rate)], rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _recording(rid: int, gen: str, sp: str, lic: str = "//creativecommons.org/licenses/by-nc-sa/4.0/",
               name: str = "") -> dict[str, Any]:
    return {
        "id": str(rid), "gen": gen, "sp": sp, "ssp": "", "grp": "birds", "en": f"{gen} bird", "rec": "Jane Recordist",
        "cnt": "France", "loc": "Jura", "lat": "46.5", "lon": "6.1", "alt": "900", "type": "song", "sex": "",
        "stage": "", "method": "field recording", "url": f"//xeno-canto.org/{rid}", "file": f"/audio/{rid}",
        "file-name": name or f"XC{rid}-{gen}-{sp}.wav", "sono": {}, "osci": "", "lic": lic, "q": "A",
        "length": "0:06", "time": "05:30", "date": "2019-05-22", "uploaded": "2020-01-01", "also": [], "rmk": "",
        "animal-seen": "no", "playback-used": "no", "temp": "", "regnr": "", "auto": "no", "dvc": "", "mic": "",
        "smp": "48000",
    }


class XenoCantoStub:
    """Scripted API: species -> recordings; per-path fault plans ('500', 'stall', 'truncate', 'ok'), one per hit."""

    def __init__(self) -> None:
        self.species: dict[str, list[dict[str, Any]]] = {}
        self.audio: dict[str, tuple[bytes, str]] = {}
        self.plans: dict[str, list[str]] = {}
        self.hits: Counter[str] = Counter()
        self.seen_keys: list[str] = []
        self.base = ""

    def plan(self, path: str) -> str:
        queue = self.plans.get(path)
        return queue.pop(0) if queue else "ok"


@pytest.fixture()
def stub() -> Iterator[XenoCantoStub]:
    state = XenoCantoStub()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet server
            pass

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            url = urlsplit(self.path)
            state.hits[url.path] += 1
            plan = state.plan(url.path)
            if plan == "500":
                self._send(500, b"Internal Server Error", "text/plain")
                return
            if plan == "stall":
                time.sleep(1.5)  # longer than the client's timeout
            if url.path == "/api/3/recordings":
                q = parse_qs(url.query)
                state.seen_keys.append(q.get("key", [""])[0])
                if q.get("key") != [KEY]:
                    self._send(401, json.dumps({"error": "auth", "message": "invalid key"}).encode(),
                               "application/json")
                    return
                query = q["query"][0]
                name = query.removeprefix("sp:").strip('"')
                if name == "malformus jsonii":
                    self._send(200, b'{"numRecordings": "3", "recordings": [{"id": ', "application/json")
                    return
                recs = state.species.get(name, [])
                page = int(q.get("page", ["1"])[0])
                per_page = 2
                pages = max(1, (len(recs) + per_page - 1) // per_page)
                body = {"numRecordings": str(len(recs)), "numSpecies": "1", "page": page, "numPages": pages,
                        "recordings": recs[(page - 1) * per_page : page * per_page]}
                self._send(200, json.dumps(body).encode(), "application/json")
                return
            if url.path in state.audio:
                data, ctype = state.audio[url.path]
                if plan == "truncate":  # announce the full length, send half, close
                    self.send_response(200)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._send(200, data, ctype)
                return
            self._send(404, b"not found", "text/plain")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _populate(stub: XenoCantoStub) -> None:
    wav = _wav_bytes(FIXTURES / "maad_spinetail_Cranioleuca_erythrops.flac")
    flac = (FIXTURES / "oss_rugr_drum_Bonasa_umbellus.flac").read_bytes()
    stub.species["cranioleuca erythrops"] = [
        _recording(101, "Cranioleuca", "erythrops"),
        _recording(102, "Cranioleuca", "erythrops", lic="//creativecommons.org/licenses/by-nc-nd/4.0/"),
        _recording(103, "Cranioleuca", "erythrops"),
    ]
    stub.species["bonasa umbellus"] = [
        _recording(201, "Bonasa", "umbellus", name="XC201-Bonasa-umbellus.flac"),
        _recording(202, "Bonasa", "umbellus", name="XC202-Bonasa-umbellus.flac"),
    ]
    for rid in (101, 102, 103):
        stub.audio[f"/audio/{rid}"] = (wav, "audio/wav")
    for rid in (201, 202):
        stub.audio[f"/audio/{rid}"] = (flac, "audio/flac")
    # Faults: the first API call for C. erythrops is a 500; its first recording a 500 then fine; the second stalls
    # once (timeout); the third is truncated once; B. umbellus' second recording is always truncated.
    stub.plans["/api/3/recordings"] = ["500"]
    stub.plans["/audio/101"] = ["500"]
    stub.plans["/audio/102"] = ["stall"]
    stub.plans["/audio/103"] = ["truncate"]
    stub.plans["/audio/202"] = ["truncate"] * 10


def _args(stub: XenoCantoStub, out: Path, *species: str, per_species: int = 3) -> list[str]:
    return [
        "collect", "xeno-canto", "--species", ",".join(species), "--per-species", str(per_species),
        "--out", str(out), "--api-url", f"{stub.base}/api/3", "--retries", "2", "--backoff", "0.01",
        "--timeout", "0.5", "--api-interval", "0", "--no-progress", "-v",
    ]


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_collect_with_faults_then_resume(
    stub: XenoCantoStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _populate(stub)
    monkeypatch.setenv("XC_API_KEY", KEY)
    out = tmp_path / "xc"
    caplog.set_level(logging.DEBUG)
    code = main(_args(stub, out, "Cranioleuca erythrops", "Bonasa umbellus", "Malformus jsonii"))
    captured = capsys.readouterr()
    assert code == 1, captured.err  # one recording truncated every time, one species with malformed JSON
    summary = json.loads(captured.out)
    assert summary["downloaded"] == 4, captured.err[-3000:]
    problems = {(e["species"], e["recording"]): e["problem"] for e in summary["errors"]}
    assert "malformed JSON" in problems[("Malformus jsonii", "")]
    assert "truncated" in problems[("Bonasa umbellus", "XC202")]
    assert "gave up after 3 attempts" in problems[("Bonasa umbellus", "XC202")]
    assert summary["species"]["Cranioleuca erythrops"] == {
        "wanted": 3, "found": 3, "downloaded": 3, "already_present": 0, "failed": 0, "no_derivatives": 1,
    }
    # retried: 500 on the API and the audio, the stall, the truncation
    assert stub.hits["/audio/101"] == 2 and stub.hits["/audio/102"] == 2 and stub.hits["/audio/103"] == 2
    assert stub.hits["/audio/202"] == 3

    rows = {r["original_id"]: r for r in _rows(out)}
    assert set(rows) == {"XC101", "XC102", "XC103", "XC201"}
    for row in rows.values():
        path = out / row["file"]
        assert path.is_file()
        data, rate = sf.read(str(path))
        assert data.size > 0 and rate > 0
        assert row["recordist"] == "Jane Recordist" and row["source_url"] == f"https://xeno-canto.org/{row['original_id'][2:]}"
        assert row["license_url"].startswith("https://creativecommons.org/licenses/")
        assert row["latitude"] == "46.5" and row["longitude"] == "6.1"
    assert rows["XC101"]["file"] == "audio/Cranioleuca_erythrops/XC101.flac"
    assert sf.info(str(out / rows["XC101"]["file"])).format == "FLAC"
    # -ND: written exactly as served (no transcoding), flagged
    assert rows["XC102"]["no_derivatives"] == "true" and rows["XC102"]["file"].endswith("XC102.wav")
    assert (out / rows["XC102"]["file"]).read_bytes() == stub.audio["/audio/102"][0]
    assert rows["XC102"]["license"].startswith("CC BY-NC-ND 4.0")
    assert rows["XC101"]["no_derivatives"] == "false"
    # the FLAC holds the served samples exactly
    served, _ = sf.read(io.BytesIO(stub.audio["/audio/101"][0]), dtype="int16")
    written, _ = sf.read(str(out / rows["XC101"]["file"]), dtype="int16")
    assert np.array_equal(served, written)
    # nothing half-written: no temporary files, no file for the failed recording
    leftovers = [p for p in out.rglob("*") if p.is_file() and (p.name.startswith(".") or "XC202" in p.name)]
    assert leftovers == []
    # the key reached the server but no log, stdout, stderr or CSV
    assert KEY in stub.seen_keys
    assert KEY not in captured.out and KEY not in captured.err and KEY not in caplog.text
    assert KEY not in (out / "labels.csv").read_text()

    # Resume: the second run downloads nothing new (only B. umbellus' failed recording is tried again, and fails)
    before = sum(v for k, v in stub.hits.items() if k.startswith("/audio/") and k != "/audio/202")
    code = main(_args(stub, out, "Cranioleuca erythrops", "Bonasa umbellus"))
    captured = capsys.readouterr()
    assert code == 1
    summary = json.loads(captured.out)
    assert summary["downloaded"] == 0 and summary["already_present"] == 4
    after = sum(v for k, v in stub.hits.items() if k.startswith("/audio/") and k != "/audio/202")
    assert after == before
    assert len(_rows(out)) == 4


def test_collect_pages_until_enough(stub: XenoCantoStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    _populate(stub)
    stub.plans.clear()
    monkeypatch.setenv("XC_API_KEY", KEY)
    out = tmp_path / "xc"
    assert main(_args(stub, out, "Cranioleuca erythrops", per_species=3)) == 0
    assert json.loads(capsys.readouterr().out)["downloaded"] == 3  # 2 per page: needed page 2


def test_missing_key_exits_2(stub: XenoCantoStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("XC_API_KEY", raising=False)
    assert main(_args(stub, tmp_path / "xc", "Bonasa umbellus")) == 2
    assert "XC_API_KEY is not set" in capsys.readouterr().err
    assert stub.hits == Counter()


def test_rejected_key_exits_2_without_echoing_it(stub: XenoCantoStub, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _populate(stub)
    monkeypatch.setenv("XC_API_KEY", "wrong-key-987654321")
    assert main(_args(stub, tmp_path / "xc", "Bonasa umbellus")) == 2
    captured = capsys.readouterr()
    assert "refused the key" in captured.err and "wrong-key-987654321" not in captured.err + captured.out
    assert not (tmp_path / "xc" / "labels.csv").exists()


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["collect", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "XC_API_KEY" in out  # two examples: xeno-canto and esc50


def test_species_from_model(birdnet_dir: Path) -> None:
    from soundmond.workbench.collect import model_species

    species = model_species(birdnet_dir)
    assert len(species) > 6000 and "Turdus merula" in species
    assert "Engine" not in species and "Human vocal" not in species
    assert all(len(s.split()) == 2 for s in species)
