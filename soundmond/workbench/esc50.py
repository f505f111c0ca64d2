"""`soundmond collect esc50`: download the ESC-50 archive and unpack it to the layout `train-head --labels DIR` reads.

What it does:
1. Streams the archive (default `DEFAULT_URL`, the master zip of karoldvl/ESC-50 on GitHub, about 600 MB) with httpx
   to `.<DIR name>.esc50-download/archive.zip.part` beside DIR. A broken download is resumed: the next attempt (this
   run's `--retries`, or a rerun) asks for the rest with an HTTP `Range: bytes=N-` request and appends a `206` answer;
   a server that ignores Range (a plain `200`) is downloaded again from zero, so the file is never spliced.
2. Checks the size (the `Content-Length`, or the total of `Content-Range`, when the server states one: GitHub's
   generated zips often do not) and, when a digest is known (`--sha256`, else `PINNED_SHA256`), the sha256. The zip's
   own CRC of every member is checked while unpacking, so an archive of unknown size and digest is still verified.
3. Unpacks into a staging folder beside DIR, checks that it holds `meta/esc50.csv` (with ESC-50's columns) and every
   clip it lists under `audio/`, writes `LICENCE_NOTE` and `MARKER` into it and renames it to DIR in one step: DIR
   either does not exist or is complete. The download folder is then removed.

Licence: every ESC-50 clip is from freesound.org under CC BY-NC 3.0 (the dataset's terms, by K. J. Piczak): it is
printed on stderr and written to DIR/LICENCE-soundmond.txt next to the dataset's own LICENSE and README.

A wrong sha256 removes the downloaded file: it is whole (its size matched) but not the archive asked for, so resuming
it cannot repair it and keeping it would make the next run skip the download and fail again; the error prints the
digest that was found, so a user who trusts a changed archive can pass it with `--sha256`. A zip that fails its own
CRC or is not ESC-50 is removed for the same reason. Only an incomplete download is kept (that is what resuming is for).

Idempotent: a DIR holding `MARKER` and `meta/esc50.csv` is complete; a second run says so and touches no network.

Exit codes: 0 DIR is complete (downloaded now or already there; DIR on stdout), 1 the archive could not be fetched
or verified (network failure or truncated download: the partial file is kept and a rerun resumes; wrong checksum,
damaged zip or not ESC-50: the file is removed), 2 bad usage (a malformed `--sha256`, an `--out` that exists and is
not a complete ESC-50 download, an HTTP 4xx answer: check `--url`), 5 the output folder cannot be written.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from soundmond.errors import ExitCode, HintedError
from soundmond.logs import setup_logging
from soundmond.progress import show_progress

logger = logging.getLogger(__name__)

# The one place the archive's location is spelled out.
DEFAULT_URL = "https://github.com/karoldvl/ESC-50/archive/master.zip"
# No digest is pinned: `master` is a moving branch and GitHub generates its zips on request, so a pinned sha256 would
# reject a good archive the day the branch moves. The digest of what was fetched is written to MARKER; pass it with
# `--sha256` to insist on that archive later.
PINNED_SHA256: str | None = None
META_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
LICENCE_NOTE = "LICENCE-soundmond.txt"
MARKER = ".soundmond-esc50.json"
CHUNK = 1 << 20
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
LICENCE_TEXT = """\
ESC-50: Dataset for Environmental Sound Classification, by Karol J. Piczak.
Licence: the clips are excerpts of freesound.org recordings under Creative Commons Attribution-NonCommercial 3.0
(CC BY-NC 3.0, https://creativecommons.org/licenses/by-nc/3.0/), per clip: credit each clip's freesound uploader
(meta/esc50.csv `src_file` is the freesound sound id; the dataset's own LICENSE file attributes every clip and
governs where it says more) and do not use the clips commercially.
Cite: K. J. Piczak, ESC: Dataset for Environmental Sound Classification, Proc. 23rd ACM Multimedia, 2015,
doi:10.1145/2733373.2806390. Source: https://github.com/karoldvl/ESC-50 (now karolpiczak/ESC-50).
A head trained on these clips is derived from them: say so, with these terms, wherever it is shared."""


class Esc50Error(HintedError):
    """ESC-50 could not be collected; `code` is the exit status it means."""

    code = ExitCode.PARTIAL


class DownloadIncomplete(Esc50Error):
    """Worth another attempt: a dropped connection, a timeout, a 5xx / 429 answer, fewer bytes than announced."""


class UsageError(Esc50Error):
    code = ExitCode.USAGE


@dataclass(frozen=True)
class Settings:
    url: str = DEFAULT_URL
    sha256: str | None = PINNED_SHA256
    retries: int = 3
    backoff_s: float = 2.0
    timeout_s: float = 60.0
    progress: bool = True


def work_dir(out: Path) -> Path:
    """Where the download and the staging folder live: beside DIR, so the final rename stays on one file system."""
    return out.parent / f".{out.name}.esc50-download"


def completed(out: Path) -> dict[str, Any] | None:
    """The marker of a DIR this command completed, or None; raises UsageError when clips have gone missing since."""
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not (out / "meta" / "esc50.csv").is_file():
        return None
    try:
        _validate(out)
    except Esc50Error as exc:
        raise UsageError(f"--out {out} was collected before but is no longer whole: {exc.problem}",
                         "remove the folder and rerun to collect it again") from None
    return marker


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) of `bytes A-B/T` or `bytes */T`; None for what is absent or `*`."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    first, total = match.groups()
    return (int(first) if first else None), (int(total) if total and total != "*" else None)


def download_once(client: httpx.Client, url: str, part: Path, bar: tqdm) -> int | None:
    """One attempt: resume `part` with a Range request (or start it); returns the total size when the server gave
    one. Raises DownloadIncomplete (part kept) or Esc50Error."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}  # Range and Content-Length count the bytes on the wire
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with client.stream("GET", url, headers=headers) as response:
            status = response.status_code
            if status == 416 and have:
                _, total = _content_range(response.headers.get("content-range"))
                if total == have:
                    return total  # the previous attempt had it all
                part.unlink()
                raise DownloadIncomplete(f"the server cannot resume at byte {have} (HTTP 416)",
                                         "the partial file was removed: the next attempt starts from zero")
            if status in RETRY_STATUS:
                raise DownloadIncomplete(f"HTTP {status} from {url}")
            if status >= 400:
                raise UsageError(f"HTTP {status} from {url}", "check --url")
            if status == 206:
                first, total = _content_range(response.headers.get("content-range"))
                if first != have:
                    part.unlink()
                    raise DownloadIncomplete(f"asked for byte {have} on, the server sent from byte {first}",
                                             "the partial file was removed: the next attempt starts from zero")
                mode = "ab"
            elif status == 200:
                if have:
                    logger.warning("the server ignored the Range request (HTTP 200): downloading again from zero")
                have, mode = 0, "wb"
                length = response.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
            else:
                raise Esc50Error(f"unexpected HTTP {status} from {url}", "check --url")
            bar.reset(total=total)
            bar.update(have)
            with open(part, mode) as fh:
                for chunk in response.iter_raw(CHUNK):
                    fh.write(chunk)
                    bar.update(len(chunk))
    except httpx.TransportError as exc:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "connection failed"
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            raise UsageError(f"unusable URL {url} ({exc})", "check --url") from None
        raise DownloadIncomplete(f"{kind} after {_size(part)} ({type(exc).__name__}: {exc})") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadIncomplete(f"got {size} of {total} bytes")
    return total


def _size(path: Path) -> str:
    return f"{path.stat().st_size if path.exists() else 0} bytes"


def download(settings: Settings, part: Path, client: httpx.Client | None = None) -> None:
    """Download `settings.url` to `part`, resuming and retrying with exponential backoff."""
    own = client is None
    client = client or httpx.Client(timeout=httpx.Timeout(settings.timeout_s), follow_redirects=True,
                                    headers={"User-Agent": "soundmond-collect"})
    bar = tqdm(desc="ESC-50", unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
               disable=not show_progress(settings.progress))
    delay = settings.backoff_s
    try:
        for attempt in range(settings.retries + 1):
            try:
                download_once(client, settings.url, part, bar)
                return
            except DownloadIncomplete as exc:
                if attempt == settings.retries:
                    kept = f"{part} ({_size(part)}) is kept" if part.exists() else "nothing is kept"
                    raise DownloadIncomplete(f"download incomplete: {exc.problem}",
                                             f"{kept}; rerun the same command to resume") from None
                logger.warning("%s; retry %d/%d in %.1f s", exc, attempt + 1, settings.retries, delay)
                time.sleep(delay)
                delay *= 2
    finally:
        bar.close()
        if own:
            client.close()


def check_checksum(archive: Path, expected: str | None) -> str:
    """The archive's sha256; a mismatch removes the archive (see the module docstring) and raises."""
    actual = sha256_of(archive)
    if expected and actual != expected.lower():
        archive.unlink()
        raise Esc50Error(f"checksum mismatch: the archive's sha256 is {actual}, expected {expected.lower()}",
                         "the downloaded file was removed; rerun to download it again, or, if the archive has "
                         f"legitimately changed, pass --sha256 {actual}")
    return actual


def _validate(root: Path) -> int:
    """Number of clips of an unpacked ESC-50 folder; raises Esc50Error when it is not one."""
    meta = root / "meta" / "esc50.csv"
    with open(meta, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in META_COLUMNS if c not in (reader.fieldnames or [])]
        rows = list(reader)
    if missing:
        raise Esc50Error(f"meta/esc50.csv lacks the ESC-50 column(s) {missing}", "check --url")
    absent = [r["filename"] for r in rows if not (root / "audio" / r["filename"]).is_file()]
    if absent or not rows:
        raise Esc50Error(f"the archive lists {len(rows)} clip(s) in meta/esc50.csv, {len(absent)} of them missing "
                         f"from audio/ (e.g. {absent[:3]})", "check --url")
    return len(rows)


def unpack(archive: Path, staging: Path, out: Path, settings: Settings, digest: str) -> int:
    """Extract, check, annotate and rename into `out` in one step; returns the number of clips."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            metas = sorted((n for n in zf.namelist() if n == "meta/esc50.csv" or n.endswith("/meta/esc50.csv")),
                           key=len)
            if not metas:
                raise Esc50Error(f"{settings.url}: the archive holds no meta/esc50.csv: it is not ESC-50",
                                 "check --url")
            prefix = metas[0][: -len("meta/esc50.csv")]
            members = [n for n in zf.namelist() if n.startswith(prefix)]
            zf.extractall(staging, members)  # reading each member checks its CRC; names are sanitised
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        archive.unlink()
        raise Esc50Error(f"the archive is damaged ({exc}); it was removed", "rerun to download it again") from None
    root = staging / prefix
    try:
        clips = _validate(root)
    except Esc50Error:
        archive.unlink()
        raise
    (root / LICENCE_NOTE).write_text(
        LICENCE_TEXT + f"\n\nDownloaded by `soundmond collect esc50` from {settings.url}\n"
        f"on {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, sha256 {digest}.\n")
    (root / MARKER).write_text(json.dumps(
        {"url": settings.url, "sha256": digest, "bytes": archive.stat().st_size, "clips": clips,
         "licence": "CC BY-NC 3.0 (per clip, freesound.org)"}, indent=2) + "\n")
    os.replace(root, out)  # DIR does not exist or is empty (checked before the download)
    return clips


def collect_esc50(out: Path, settings: Settings, client: httpx.Client | None = None) -> bool:
    """Make `out` a complete ESC-50 folder; False when it already was one (nothing done)."""
    if completed(out):
        return False
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        hint = ("it is an ESC-50 checkout not made by `collect esc50`: use it as it is (train-head --labels DIR)"
                if (out / "meta" / "esc50.csv").is_file() else "remove it or choose another --out")
        raise UsageError(f"--out {out} exists and is not a complete `collect esc50` download", hint)
    work = work_dir(out)
    work.mkdir(parents=True, exist_ok=True)
    archive, part = work / "archive.zip", work / "archive.zip.part"
    if not archive.is_file():  # a whole, checked archive of an interrupted unpack is used as it is
        download(settings, part, client)
        os.replace(part, archive)
    digest = check_checksum(archive, settings.sha256)
    clips = unpack(archive, work / "unpack", out, settings, digest)
    shutil.rmtree(work, ignore_errors=True)
    logger.info("ESC-50: %d clips in %s", clips, out)
    return True


# ---------------------------------------------------------------- CLI


def add_esc50_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="folder to create (meta/esc50.csv + audio/, what `train-head --labels DIR` reads)")
    p.add_argument("--url", default=DEFAULT_URL, help=f"archive URL (default {DEFAULT_URL})")
    p.add_argument("--sha256", default=PINNED_SHA256, metavar="HEX",
                   help="expected sha256 of the archive (default: none pinned, the branch moves; the zip's own "
                   "CRCs are always checked)")
    p.add_argument("--retries", type=int, default=3, help="attempts to resume a broken download (default 3)")
    p.add_argument("--backoff", type=float, default=2.0, help="first retry delay in seconds, doubling (default 2)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-read timeout in seconds (default 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run_esc50(args: argparse.Namespace) -> int:
    setup_logging("DEBUG" if args.verbose else "INFO")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    sha = args.sha256.strip().lower() if args.sha256 else None
    if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", sha):
        print(f"soundmond collect esc50: --sha256 {args.sha256!r} is not 64 hexadecimal digits - pass the "
              "archive's sha256 (e.g. from `sha256sum`)", file=sys.stderr)
        return ExitCode.USAGE
    if args.retries < 0:
        print("soundmond collect esc50: --retries must be >= 0", file=sys.stderr)
        return ExitCode.USAGE
    settings = Settings(url=args.url, sha256=sha, retries=args.retries, backoff_s=args.backoff,
                        timeout_s=args.timeout, progress=not args.no_progress)
    try:
        fetched = collect_esc50(args.out, settings)
    except Esc50Error as exc:
        print(f"soundmond collect esc50: {exc}", file=sys.stderr)
        return exc.code
    except OSError as exc:
        print(f"soundmond collect esc50: cannot write {args.out} or its download folder {work_dir(args.out)}: "
              f"{exc} - check the permissions and free space (about 1.3 GB while unpacking)", file=sys.stderr)
        return ExitCode.FATAL
    if not fetched:
        print(f"soundmond collect esc50: {args.out} is already complete (nothing to do)", file=sys.stderr)
    print(LICENCE_TEXT, file=sys.stderr)
    print(args.out)
    return ExitCode.OK


__all__ = ["DEFAULT_URL", "LICENCE_NOTE", "MARKER", "PINNED_SHA256", "DownloadIncomplete", "Esc50Error", "Settings",
           "add_esc50_arguments", "collect_esc50", "completed", "download", "run_esc50", "work_dir"]
