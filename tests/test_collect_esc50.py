"""`soundmond collect esc50` end to end against a local HTTP server serving a tiny ESC-50-shaped zip built here:
success and idempotence, a dropped connection resumed with Range (on a rerun and within one run), a server that
ignores Range, a wrong checksum, a damaged zip, bad usage; then `soundmond train-head` on the unpacked folder."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundmond.cli import main
from soundmond.workbench.esc50 import LICENCE_NOTE, MARKER, work_dir

RATE = 44100
PREFIX = "ESC-50-master/"
# (category, ESC-50 target, folds of its two clips): natural, industrial and other, each group in several folds so
# every ESC-50 fold's training part holds all three groups.
CATEGORIES = [("rain", 10, (1, 2)), ("crow", 9, (3, 4)), ("engine", 44, (5, 1)), ("siren", 42, (2, 3)),
              ("dog", 0, (4, 5)), ("clock_tick", 38, (1, 3))]
META_FIELDS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]


def _clip(category: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(5 * RATE) / RATE
    if category == "rain":
        y = rng.normal(0, 0.2, t.size)
    elif category == "crow":
        y = 0.4 * np.sin(2 * np.pi * 1400 * t) * (np.sin(2 * np.pi * 2 * t) > 0.3)
    elif category == "engine":
        y = sum(0.15 * np.sin(2 * np.pi * 55 * k * t) for k in range(1, 6)) + rng.normal(0, 0.02, t.size)
    elif category == "siren":
        y = 0.4 * np.sin(2 * np.pi * (900 + 300 * np.sin(2 * np.pi * 0.5 * t)) * t)
    elif category == "dog":
        y = 0.5 * rng.normal(0, 1, t.size) * (np.sin(2 * np.pi * 1.5 * t) > 0.8)
    else:  # clock_tick
        y = np.zeros(t.size)
        y[:: RATE // 2] = 0.9
    return np.asarray(y, dtype=np.float32)


def tiny_esc50() -> tuple[bytes, dict[str, bytes]]:
    """The zip (stored, so a flipped byte breaks a CRC) and its audio files by name."""
    rows, audio = [], {}
    for n, (category, target, folds) in enumerate(CATEGORIES):
        for take, fold in zip("AB", folds, strict=True):
            src = 100000 + 10 * n + (take == "B")
            name = f"{fold}-{src}-{take}-{target}.wav"
            buf = io.BytesIO()
            sf.write(buf, _clip(category, src), RATE, format="WAV", subtype="PCM_16")
            audio[name] = buf.getvalue()
            rows.append({"filename": name, "fold": fold, "target": target, "category": category, "esc10": "False",
                         "src_file": src, "take": take})
    meta = io.StringIO()
    writer = csv.DictWriter(meta, fieldnames=META_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(PREFIX + "README.md", "# ESC-50 (tiny test copy)\n")
        zf.writestr(PREFIX + "LICENSE", "Creative Commons Attribution-NonCommercial 3.0\n")
        zf.writestr(PREFIX + "meta/esc50.csv", meta.getvalue())
        for name, data in audio.items():
            zf.writestr(PREFIX + "audio/" + name, data)
    return out.getvalue(), audio


@dataclass
class Server:
    body: bytes
    honour_range: bool = True
    truncate: int = 0  # the next N answers send half their body, then close the connection
    length: bool = True  # False: no Content-Length, the body ends when the connection closes (size unknown)
    ranges: list[str | None] = field(default_factory=list)  # the Range header of every request, in order
    url: str = ""


@pytest.fixture(scope="module")
def archive() -> tuple[bytes, dict[str, bytes]]:
    return tiny_esc50()


@pytest.fixture
def server(archive: tuple[bytes, dict[str, bytes]]) -> Iterator[Server]:
    state = Server(archive[0])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            if self.path != "/ESC-50-master.zip":
                self.send_error(404)
                return
            rng = self.headers.get("Range")
            state.ranges.append(rng)
            body, start = state.body, 0
            match = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if match and state.honour_range:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            if state.length:
                self.send_header("Content-Length", str(len(payload)))
            self.send_header("Content-Type", "application/zip")
            self.end_headers()
            if state.truncate > 0:
                state.truncate -= 1
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/ESC-50-master.zip"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _collect(server: Server, out: Path, *extra: str, progress: bool = False) -> int:
    return main(["collect", "esc50", "--out", str(out), "--url", server.url, "--timeout", "10", "--backoff", "0",
                 *([] if progress else ["--no-progress"]), *extra])


def _assert_complete(out: Path, audio: dict[str, bytes]) -> None:
    with open(out / "meta" / "esc50.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["filename"] for r in rows] == list(audio)
    for name, data in audio.items():
        assert (out / "audio" / name).read_bytes() == data
    assert "CC BY-NC 3.0" in (out / LICENCE_NOTE).read_text()
    assert (out / "LICENSE").is_file()  # the dataset's own files come along
    assert not work_dir(out).exists()  # the download and staging folders are gone


def test_collect_success_then_idempotent(server: Server, archive: tuple[bytes, dict[str, bytes]], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ESC-50"
    out.mkdir()  # an empty folder is as good as none
    digest = hashlib.sha256(archive[0]).hexdigest()
    assert _collect(server, out, "--sha256", digest.upper()) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert "CC BY-NC 3.0" in captured.err
    _assert_complete(out, archive[1])
    assert server.ranges == [None]
    assert digest in (out / MARKER).read_text()

    assert _collect(server, out) == 0  # a complete folder: nothing fetched
    captured = capsys.readouterr()
    assert "already complete" in captured.err and captured.out.strip() == str(out)
    assert server.ranges == [None]

    gone = next(iter(archive[1]))
    (out / "audio" / gone).unlink()  # a complete folder that lost a clip is not called complete
    assert _collect(server, out) == 2
    assert "no longer whole" in capsys.readouterr().err
    assert server.ranges == [None]


def test_truncated_download_is_resumed_by_a_rerun(server: Server, archive: tuple[bytes, dict[str, bytes]],
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ESC-50"
    server.truncate = 1
    assert _collect(server, out, "--retries", "0") == 1
    err = capsys.readouterr().err
    part = work_dir(out) / "archive.zip.part"
    kept = part.stat().st_size
    assert 0 < kept < len(archive[0])
    assert "download incomplete" in err and "rerun" in err and "kept" in err
    assert not out.exists()

    assert _collect(server, out, "--retries", "0") == 0
    assert server.ranges == [None, f"bytes={kept}-"]
    _assert_complete(out, archive[1])


def test_dropped_connection_is_resumed_within_one_run(server: Server, archive: tuple[bytes, dict[str, bytes]],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "ESC-50"
    server.truncate = 2
    assert _collect(server, out, "--retries", "2", progress=True) == 0
    assert server.ranges[0] is None and len(server.ranges) == 3
    assert all(r is not None and r.startswith("bytes=") for r in server.ranges[1:])
    _assert_complete(out, archive[1])


def test_a_whole_partial_file_is_finished_without_a_body(server: Server, archive: tuple[bytes, dict[str, bytes]],
                                                         tmp_path: Path) -> None:
    out = tmp_path / "ESC-50"
    part = work_dir(out) / "archive.zip.part"  # an earlier run got every byte, then stopped before the rename
    part.parent.mkdir(parents=True)
    part.write_bytes(archive[0])
    assert _collect(server, out, "--retries", "0") == 0
    assert server.ranges == [f"bytes={len(archive[0])}-"]  # answered 416 with the same total: nothing more to fetch
    _assert_complete(out, archive[1])


def test_server_ignoring_range_restarts_from_zero(server: Server, archive: tuple[bytes, dict[str, bytes]],
                                                  tmp_path: Path) -> None:
    out = tmp_path / "ESC-50"
    server.honour_range = False
    server.truncate = 1
    assert _collect(server, out, "--retries", "0") == 1
    kept = (work_dir(out) / "archive.zip.part").stat().st_size
    assert _collect(server, out, "--retries", "0") == 0
    assert server.ranges == [None, f"bytes={kept}-"]  # asked to resume, got the whole file: not appended
    _assert_complete(out, archive[1])


def test_wrong_checksum_exits_1_and_removes_the_file(server: Server, archive: tuple[bytes, dict[str, bytes]],
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ESC-50"
    assert _collect(server, out, "--sha256", "0" * 64) == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and hashlib.sha256(archive[0]).hexdigest() in err and "removed" in err
    assert not out.exists()
    assert not list(work_dir(out).glob("archive.zip*"))


def test_damaged_zip_exits_1(server: Server, archive: tuple[bytes, dict[str, bytes]], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    body = bytearray(archive[0])
    body[len(body) // 2] ^= 0xFF  # inside a stored WAV: its CRC no longer matches
    server.body = bytes(body)
    out = tmp_path / "ESC-50"
    assert _collect(server, out) == 1
    assert "damaged" in capsys.readouterr().err
    assert not out.exists()


def test_unknown_size_relies_on_the_zip_check(server: Server, archive: tuple[bytes, dict[str, bytes]],
                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ESC-50"
    server.length = False
    server.truncate = 1  # a clean close half-way: nothing says bytes are missing but the zip itself
    assert _collect(server, out, "--retries", "0") == 1
    assert "damaged" in capsys.readouterr().err
    assert not out.exists() and not list(work_dir(out).glob("archive.zip*"))  # removed: it cannot be resumed
    assert _collect(server, out, "--retries", "0") == 0
    assert server.ranges == [None, None]
    _assert_complete(out, archive[1])


def test_bad_usage_exits_2_without_a_request(server: Server, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert _collect(server, tmp_path / "a", "--sha256", "abc") == 2
    assert "64 hexadecimal" in capsys.readouterr().err
    occupied = tmp_path / "b"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine\n")
    assert _collect(server, occupied) == 2
    assert "exists and is not a complete" in capsys.readouterr().err
    assert (occupied / "notes.txt").read_text() == "mine\n"
    assert server.ranges == []
    server.url = server.url.replace("ESC-50-master.zip", "nope.zip")
    assert _collect(server, tmp_path / "c") == 2
    assert "HTTP 404" in capsys.readouterr().err


def test_train_head_reads_the_collected_folder(server: Server, tmp_path: Path, yamnet_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ESC-50"
    assert _collect(server, out) == 0
    capsys.readouterr()
    head = tmp_path / "heads" / "esc50.onnx"
    code = main(["train-head", "--labels", str(out), "--out", str(head), "--tagger", str(yamnet_dir),
                 "--features", "probs", "--models", "logreg_C1", "--no-cache", "--no-progress", "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert head.is_file() and head.with_suffix(".skops").is_file()
    assert '"clips": 12' in captured.out and "ESC-50's own folds [1, 2, 3, 4, 5]" in captured.out
