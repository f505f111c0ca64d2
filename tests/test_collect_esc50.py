"""`soundmond collect esc50` end to end against a local HTTP server serving a tiny ESC-50-shaped zip built here:
success and idempotence, a dropped connection resumed with Range (on a rerun and within one run), a server that
ignores Range, a wrong checksum, a damaged zip, an archive that is not ESC-50 then the right one, a partial download
of another URL, bad usage (nothing created), what a failure keeps and says; the help text; then
`soundmond train-head` on the unpacked folder."""

from __future__ import annotations

import csv
import hashlib
import io
import json
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
from soundmond.workbench.esc50 import DEFAULT_URL, LICENCE_NOTE, MARKER, PINNED_SHA256, work_dir
from soundmond.workbench.esc50_download import ARCHIVE, PART, SOURCE

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
    paths: list[str] = field(default_factory=list)  # the path of every request, in order
    others: dict[str, bytes] = field(default_factory=dict)  # more files by path (served like the archive)
    url: str = ""

    def at(self, path: str) -> str:
        """The URL of `path` on this server."""
        return self.url.rsplit("/", 1)[0] + path


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
            if self.path != "/ESC-50-master.zip" and self.path not in state.others:
                self.send_error(404)
                return
            rng = self.headers.get("Range")
            state.ranges.append(rng)
            state.paths.append(self.path)
            body, start = state.others.get(self.path, state.body), 0
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


def _collect(server: Server, out: Path, *extra: str, progress: bool = False, url: str = "") -> int:
    return main(["collect", "esc50", "--out", str(out), "--url", url or server.url, "--timeout", "10", "--backoff",
                 "0", *([] if progress else ["--no-progress"]), *extra])


def _not_esc50() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("other/README.md", "not a data set\n")
    return out.getvalue()


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
    assert "download incomplete" in err and f"kept {part} ({kept} bytes of {server.url})" in err
    assert "rerun with the same --url to resume" in err and "nothing" not in err
    assert sorted(p.name for p in work_dir(out).iterdir()) == sorted([PART, SOURCE])  # only what resumes
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
    (part.parent / SOURCE).write_text(json.dumps({"url": server.url}))
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
    assert "checksum mismatch" in err and hashlib.sha256(archive[0]).hexdigest() in err
    assert "the archive was removed; nothing was kept" in err
    assert not out.exists() and not work_dir(out).exists()


def test_damaged_zip_exits_1(server: Server, archive: tuple[bytes, dict[str, bytes]], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    body = bytearray(archive[0])
    body[len(body) // 2] ^= 0xFF  # inside a stored WAV: its CRC no longer matches
    server.body = bytes(body)
    out = tmp_path / "ESC-50"
    assert _collect(server, out) == 1
    err = capsys.readouterr().err
    assert "damaged" in err and "the archive was removed; nothing was kept" in err
    assert not out.exists() and not work_dir(out).exists()
    server.body = archive[0]  # the server is fixed: a rerun downloads afresh
    assert _collect(server, out) == 0
    assert server.ranges == [None, None]
    _assert_complete(out, archive[1])


def test_unknown_size_relies_on_the_zip_check(server: Server, archive: tuple[bytes, dict[str, bytes]],
                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ESC-50"
    server.length = False
    server.truncate = 1  # a clean close half-way: nothing says bytes are missing but the zip itself
    assert _collect(server, out, "--retries", "0") == 1
    assert "damaged" in capsys.readouterr().err
    assert not out.exists() and not work_dir(out).exists()  # removed: it cannot be resumed
    assert _collect(server, out, "--retries", "0") == 0
    assert server.ranges == [None, None]
    _assert_complete(out, archive[1])


def test_bad_usage_exits_2_without_a_request_or_a_folder(server: Server, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    new = tmp_path / "new"  # --out's parent does not exist yet: a refused run must not create it either
    out = new / "ESC-50"
    cases = [
        (("--sha256", "abc"), "64 hexadecimal"),
        (("--retries", "-1"), "--retries and --backoff must be >= 0"),
        (("--timeout", "0"), "--timeout > 0"),
        (("--url", "not a url"), "is not an http(s) URL"),
        (("--url", "ftp://127.0.0.1/ESC-50-master.zip"), "is not an http(s) URL"),
        (("--url", "http://127.0.0.1:port/x.zip"), "is not a valid URL"),
    ]
    for extra, message in cases:
        assert _collect(server, out, *extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and " - " in err, (extra, err)  # problem - how to fix
        assert not new.exists(), extra
    occupied = tmp_path / "b"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine\n")
    assert _collect(server, occupied) == 2
    assert "exists and is not a complete" in capsys.readouterr().err
    assert (occupied / "notes.txt").read_text() == "mine\n"
    assert not work_dir(occupied).exists()
    assert server.ranges == []
    assert _collect(server, tmp_path / "c", url=server.at("/nope.zip")) == 2
    err = capsys.readouterr().err
    assert "HTTP 404" in err and "check --url; nothing was kept" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no download folder left behind


def test_an_archive_that_is_not_esc50_is_removed_and_the_right_url_then_downloads(
        server: Server, archive: tuple[bytes, dict[str, bytes]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    server.others["/other.zip"] = _not_esc50()
    out = tmp_path / "cc_other"
    other = server.at("/other.zip")
    assert _collect(server, out, url=other) == 1
    err = capsys.readouterr().err
    assert f"{other}: the archive holds no meta/esc50.csv: it is not ESC-50" in err
    assert "check --url; the archive was removed; nothing was kept" in err
    assert not out.exists() and not work_dir(out).exists()

    assert _collect(server, out) == 0  # the right URL: downloaded, not blamed for the other archive
    assert server.paths == ["/other.zip", "/ESC-50-master.zip"] and server.ranges == [None, None]
    _assert_complete(out, archive[1])


def test_a_partial_download_of_another_url_starts_over(server: Server, archive: tuple[bytes, dict[str, bytes]],
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server.others["/other.zip"] = bytes(range(256)) * 64
    out = tmp_path / "ESC-50"
    other = server.at("/other.zip")
    server.truncate = 1
    assert _collect(server, out, "--retries", "0", url=other) == 1
    part = work_dir(out) / PART
    kept = part.stat().st_size
    assert f"kept {part} ({kept} bytes of {other})" in capsys.readouterr().err

    assert _collect(server, out, "--retries", "0") == 0
    err = capsys.readouterr().err
    assert "starting over" in err and other in err  # says so, naming the URL the part came from
    assert server.paths == ["/other.zip", "/ESC-50-master.zip"]
    assert server.ranges == [None, None]  # not resumed at byte `kept` of the other file
    _assert_complete(out, archive[1])


def test_a_partial_file_of_unknown_origin_starts_over(server: Server, archive: tuple[bytes, dict[str, bytes]],
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ESC-50"
    part = work_dir(out) / PART  # e.g. left by an older soundmond, which recorded no URL
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)
    assert _collect(server, out, "--retries", "0") == 0
    assert "starting over" in capsys.readouterr().err
    assert server.ranges == [None]
    _assert_complete(out, archive[1])


def test_a_whole_archive_is_reused_only_for_its_own_url(server: Server, archive: tuple[bytes, dict[str, bytes]],
                                                        tmp_path: Path) -> None:
    out = tmp_path / "ESC-50"  # an interrupted unpack left the whole archive and a staging folder
    work = work_dir(out)
    (work / "unpack" / "junk").mkdir(parents=True)
    (work / ARCHIVE).write_bytes(archive[0])
    (work / SOURCE).write_text(json.dumps({"url": server.url}))
    assert _collect(server, out) == 0
    assert server.ranges == []  # unpacked without a request
    _assert_complete(out, archive[1])

    out2 = tmp_path / "ESC-50-b"  # the same, but recorded for another URL: fetched again from --url
    work2 = work_dir(out2)
    work2.mkdir()
    (work2 / ARCHIVE).write_bytes(_not_esc50())
    (work2 / SOURCE).write_text(json.dumps({"url": server.at("/other.zip")}))
    assert _collect(server, out2) == 0
    assert server.ranges == [None]
    _assert_complete(out2, archive[1])


def test_a_failed_unpack_keeps_only_the_whole_archive(server: Server, archive: tuple[bytes, dict[str, bytes]],
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> None:  # a full disk cannot be had for real here
        raise OSError(28, "No space left on device")

    out = tmp_path / "ESC-50"
    with monkeypatch.context() as patch:
        patch.setattr(zipfile.ZipFile, "extractall", full)
        assert _collect(server, out) == 5
    err = capsys.readouterr().err
    work = work_dir(out)
    assert "No space left on device" in err
    assert f"kept the whole archive {work / ARCHIVE} ({len(archive[0])} bytes from {server.url})" in err
    assert sorted(p.name for p in work.iterdir()) == sorted([ARCHIVE, SOURCE])  # the staging folder is gone
    assert _collect(server, out) == 0
    assert server.ranges == [None]  # unpacked from the kept archive, not fetched again
    _assert_complete(out, archive[1])


def test_an_interrupt_keeps_what_a_rerun_resumes(server: Server, archive: tuple[bytes, dict[str, bytes]],
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:  # Ctrl-C half-way through unpacking
        raise KeyboardInterrupt

    out = tmp_path / "ESC-50"
    with monkeypatch.context() as patch:
        patch.setattr(zipfile.ZipFile, "extractall", interrupted)
        assert _collect(server, out) == 130
    assert sorted(p.name for p in work_dir(out).iterdir()) == sorted([ARCHIVE, SOURCE])
    assert _collect(server, out) == 0
    assert server.ranges == [None]
    _assert_complete(out, archive[1])


def test_help_shows_values_not_constant_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["collect", "esc50", "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the options' help
    for value in (DEFAULT_URL, LICENCE_NOTE, MARKER, PINNED_SHA256 or "none pinned"):
        assert value in text, value
    for name in ("DEFAULT_URL", "PINNED_SHA256", "LICENCE_NOTE", "MARKER"):
        assert not re.search(rf"\b{name}\b", text), name


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
