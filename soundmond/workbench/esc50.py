"""`soundmond collect esc50`: download the ESC-50 archive and unpack it to the layout `train-head --labels DIR` reads.

What it does:
1. Streams the archive (default https://github.com/karoldvl/ESC-50/archive/master.zip, the master zip of ESC-50 on
   GitHub, about 600 MB) to `.<DIR name>.esc50-download/archive.zip.part` beside DIR, and records the URL beside it
   (`source.json`). A broken download is resumed: the next attempt (this run's `--retries`, or a rerun with the same
   `--url`) asks for the rest with an HTTP `Range: bytes=N-` request and appends a `206` answer; a server that ignores
   Range (a plain `200`) is downloaded again from zero, so the file is never spliced. A rerun with another `--url`
   removes what the old URL left and starts over (it says so): one URL's bytes never complete another's.
2. Checks the size (the `Content-Length`, or the total of `Content-Range`, when the server states one: GitHub's
   generated zips often do not) and, when a digest is given with `--sha256`, the sha256 (no digest is pinned by
   default: master is a moving branch and GitHub generates its zip on request). The zip's own CRC of every member is
   checked while unpacking, so an archive of unknown size and digest is still verified.
3. Unpacks into a staging folder beside DIR, checks that it holds `meta/esc50.csv` (with ESC-50's columns) and every
   clip it lists under `audio/`, writes `LICENCE-soundmond.txt` (the licence, source URL and sha256) and
   `.soundmond-esc50.json` (what was fetched) into it and renames it to DIR in one step: DIR either does not exist
   or is complete. The download folder is then removed.

Licence: every ESC-50 clip is from freesound.org under CC BY-NC 3.0 (the dataset's terms, by K. J. Piczak): it is
printed on stderr and written to DIR/LICENCE-soundmond.txt next to the dataset's own LICENSE and README.

A refused archive is removed: a wrong sha256 (it is whole, its size matched, but not the archive asked for; the
error prints the digest found, so a user who trusts a changed archive can pass it with `--sha256`), a zip that fails
its own CRC, or one that is not ESC-50. Resuming cannot repair it and keeping it would make the next run fail again.
After any failure only what a rerun can resume is kept (a partial download, or a whole archive whose unpacking
could not be written, each of the URL recorded beside it) and the error says exactly what; bad usage is refused
before anything is created.

Idempotent: a DIR holding `.soundmond-esc50.json` and `meta/esc50.csv` is complete; a second run says so and touches
no network.

Exit codes: 0 DIR is complete (downloaded now or already there; DIR on stdout), 1 the archive could not be fetched
or verified (network failure or truncated download: the partial file is kept and a rerun with the same --url
resumes; wrong checksum, damaged zip or not ESC-50: the file is removed), 2 bad usage (a malformed `--url` or
`--sha256`, an `--out` that exists and is not a complete ESC-50 download, an HTTP 4xx answer: check `--url`),
5 the output folder or the download folder cannot be written.
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
import zlib
from pathlib import Path
from typing import Any

import httpx

from soundmond.errors import ExitCode
from soundmond.logs import setup_logging
from soundmond.workbench.esc50_download import (
    CHUNK,
    DEFAULT_URL,
    PINNED_SHA256,
    DownloadIncomplete,
    Esc50Error,
    Settings,
    UsageError,
    WriteError,
    check_url,
    fetch,
    tidy,
)

logger = logging.getLogger(__name__)

META_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
LICENCE_NOTE = "LICENCE-soundmond.txt"
MARKER = ".soundmond-esc50.json"
LICENCE_TEXT = """\
ESC-50: Dataset for Environmental Sound Classification, by Karol J. Piczak.
Licence: the clips are excerpts of freesound.org recordings under Creative Commons Attribution-NonCommercial 3.0
(CC BY-NC 3.0, https://creativecommons.org/licenses/by-nc/3.0/), per clip: credit each clip's freesound uploader
(meta/esc50.csv `src_file` is the freesound sound id; the dataset's own LICENSE file attributes every clip and
governs where it says more) and do not use the clips commercially.
Cite: K. J. Piczak, ESC: Dataset for Environmental Sound Classification, Proc. 23rd ACM Multimedia, 2015,
doi:10.1145/2733373.2806390. Source: https://github.com/karoldvl/ESC-50 (now karolpiczak/ESC-50).
A head trained on these clips is derived from them: say so, with these terms, wherever it is shared."""


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


def check_checksum(archive: Path, expected: str | None) -> str:
    """The archive's sha256; raises Esc50Error (the caller removes the archive) when it is not `expected`."""
    actual = sha256_of(archive)
    if expected and actual != expected.lower():
        raise Esc50Error(f"checksum mismatch: the archive's sha256 is {actual}, expected {expected.lower()}",
                         "rerun to download it again, or, if the archive has legitimately changed, pass "
                         f"--sha256 {actual}")
    return actual


def _validate(root: Path) -> int:
    """Number of clips of an unpacked ESC-50 folder; raises Esc50Error when it is not one."""
    meta = root / "meta" / "esc50.csv"
    try:
        with open(meta, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in META_COLUMNS if c not in (reader.fieldnames or [])]
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise Esc50Error(f"meta/esc50.csv is not a readable CSV ({exc})", "check --url") from None
    if missing:
        raise Esc50Error(f"meta/esc50.csv lacks the ESC-50 column(s) {missing}", "check --url")
    absent = [r["filename"] or "" for r in rows if not (root / "audio" / (r["filename"] or "")).is_file()]
    if absent or not rows:
        raise Esc50Error(f"the archive lists {len(rows)} clip(s) in meta/esc50.csv, {len(absent)} of them missing "
                         f"from audio/ (e.g. {absent[:3]})", "check --url")
    return len(rows)


def unpack(archive: Path, staging: Path, out: Path, settings: Settings, digest: str) -> int:
    """Extract, check, annotate and rename into `out` in one step; returns the number of clips. Raises Esc50Error
    for an archive that is damaged or not ESC-50 (the caller removes it), OSError when a write fails."""
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
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError) as exc:
        raise Esc50Error(f"the archive is damaged ({exc})", "rerun to download it again") from None
    root = staging / prefix
    clips = _validate(root)
    (root / LICENCE_NOTE).write_text(
        LICENCE_TEXT + f"\n\nDownloaded by `soundmond collect esc50` from {settings.url}\n"
        f"on {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, sha256 {digest}.\n")
    (root / MARKER).write_text(json.dumps(
        {"url": settings.url, "sha256": digest, "bytes": archive.stat().st_size, "clips": clips,
         "licence": "CC BY-NC 3.0 (per clip, freesound.org)"}, indent=2) + "\n")
    os.replace(root, out)  # DIR does not exist or is empty (checked before the download)
    return clips


def check_settings(settings: Settings) -> None:
    """Raises UsageError for bad usage, before anything is created or fetched."""
    check_url(settings.url)
    if settings.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", settings.sha256):
        raise UsageError(f"--sha256 {settings.sha256!r} is not 64 hexadecimal digits",
                         "pass the archive's sha256 (e.g. from `sha256sum`)")
    if settings.retries < 0 or settings.backoff_s < 0 or not settings.timeout_s > 0:
        raise UsageError(f"--retries {settings.retries}, --backoff {settings.backoff_s}, --timeout "
                         f"{settings.timeout_s}: out of range", "--retries and --backoff must be >= 0, --timeout > 0")


def _and(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def collect_esc50(out: Path, settings: Settings, client: httpx.Client | None = None) -> bool:
    """Make `out` a complete ESC-50 folder; False when it already was one (nothing done). Raises Esc50Error (its
    hint says what was kept for a rerun); bad usage raises UsageError before anything is created."""
    check_settings(settings)
    if completed(out):
        return False
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        hint = ("it is an ESC-50 checkout not made by `collect esc50`: use it as it is (train-head --labels DIR)"
                if (out / "meta" / "esc50.csv").is_file() else "remove it or choose another --out")
        raise UsageError(f"--out {out} exists and is not a complete `collect esc50` download", hint)
    work = work_dir(out)
    try:
        archive = fetch(work, settings, client)
        try:
            digest = check_checksum(archive, settings.sha256)
            clips = unpack(archive, work / "unpack", out, settings, digest)
        except Esc50Error as exc:  # refused: resuming cannot repair it, and a rerun must not pick it up again
            archive.unlink(missing_ok=True)
            raise type(exc)(exc.problem, _and(exc.hint, "the archive was removed")) from None
    except Esc50Error as exc:
        raise type(exc)(exc.problem, _and(exc.hint, tidy(work))) from None
    except OSError as exc:
        raise WriteError(f"cannot write {out} or its download folder {work}: {exc}",
                         _and("check the permissions and free space (about 1.3 GB while unpacking)", tidy(work))
                         ) from None
    except BaseException:  # an interrupt: keep what a rerun can resume, no more
        tidy(work)
        raise
    shutil.rmtree(work, ignore_errors=True)
    logger.info("ESC-50: %d clips in %s", clips, out)
    return True


# ---------------------------------------------------------------- CLI


def add_esc50_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="folder to create (meta/esc50.csv + audio/, what `train-head --labels DIR` reads)")
    p.add_argument("--url", default=DEFAULT_URL, help=f"archive URL (default {DEFAULT_URL})")
    pinned = f"default {PINNED_SHA256}" if PINNED_SHA256 else "default: none pinned, the branch moves"
    p.add_argument("--sha256", default=PINNED_SHA256, metavar="HEX",
                   help=f"expected sha256 of the archive ({pinned}; the zip's own CRCs are always checked)")
    p.add_argument("--retries", type=int, default=3, help="attempts to resume a broken download (default 3)")
    p.add_argument("--backoff", type=float, default=2.0, help="first retry delay in seconds, doubling (default 2)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-read timeout in seconds (default 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run_esc50(args: argparse.Namespace) -> int:
    setup_logging("DEBUG" if args.verbose else "INFO")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    settings = Settings(url=args.url, sha256=args.sha256.strip().lower() if args.sha256 else None,
                        retries=args.retries, backoff_s=args.backoff, timeout_s=args.timeout,
                        progress=not args.no_progress)
    try:
        fetched = collect_esc50(args.out, settings)
    except Esc50Error as exc:
        print(f"soundmond collect esc50: {exc}", file=sys.stderr)
        return exc.code
    except OSError as exc:  # reading --out itself (before anything was created)
        print(f"soundmond collect esc50: cannot read {args.out}: {exc} - check its permissions", file=sys.stderr)
        return ExitCode.FATAL
    if not fetched:
        print(f"soundmond collect esc50: {args.out} is already complete (nothing to do)", file=sys.stderr)
    print(LICENCE_TEXT, file=sys.stderr)
    print(args.out)
    return ExitCode.OK


__all__ = ["DEFAULT_URL", "LICENCE_NOTE", "MARKER", "PINNED_SHA256", "DownloadIncomplete", "Esc50Error", "Settings",
           "UsageError", "WriteError", "add_esc50_arguments", "check_settings", "collect_esc50", "completed",
           "run_esc50", "work_dir"]
