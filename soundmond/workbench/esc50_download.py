"""The download half of `soundmond collect esc50`: one archive URL to one file, resumed across attempts and runs.

The download folder (`.<DIR name>.esc50-download/` beside DIR) holds at most three things:
- `source.json`: the URL the two files below came from. A rerun resumes or reuses them only for the same `--url`;
  with another URL (or none recorded) it removes them and starts over, saying so, so the bytes of one URL are never
  completed with the bytes of another, and a refused archive cannot stand in for a new one;
- `archive.zip.part`: an incomplete download. The next attempt asks for the rest with `Range: bytes=N-` and appends
  a `206` answer; a server that ignores Range (a plain `200`) is downloaded again from zero, never spliced;
- `archive.zip`: the whole download, before it is checked and unpacked.

After a failure `tidy` keeps only what a rerun can resume (a part or a whole archive, with its `source.json`),
removes everything else (the folder too when nothing is left) and says exactly what it kept.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from tqdm import tqdm

from soundmond.errors import ExitCode, HintedError
from soundmond.progress import show_progress

logger = logging.getLogger(__name__)

# The one place the archive's location is spelled out.
DEFAULT_URL = "https://github.com/karoldvl/ESC-50/archive/master.zip"
# No digest is pinned: `master` is a moving branch and GitHub generates its zips on request, so a pinned sha256 would
# reject a good archive the day the branch moves. The digest of what was fetched is written to the marker file; pass
# it with `--sha256` to insist on that archive later.
PINNED_SHA256: str | None = None
SOURCE = "source.json"
PART = "archive.zip.part"
ARCHIVE = "archive.zip"
CHUNK = 1 << 20
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class Esc50Error(HintedError):
    """ESC-50 could not be collected; `code` is the exit status it means."""

    code = ExitCode.PARTIAL


class DownloadIncomplete(Esc50Error):
    """Worth another attempt: a dropped connection, a timeout, a 5xx / 429 answer, fewer bytes than announced."""


class UsageError(Esc50Error):
    code = ExitCode.USAGE


class WriteError(Esc50Error):
    """The output folder or the download folder cannot be written."""

    code = ExitCode.FATAL


@dataclass(frozen=True)
class Settings:
    url: str = DEFAULT_URL
    sha256: str | None = PINNED_SHA256
    retries: int = 3
    backoff_s: float = 2.0
    timeout_s: float = 60.0
    progress: bool = True


def check_url(url: str) -> None:
    """Raises UsageError unless `url` is an absolute http(s) URL with a host (checked before anything is created)."""
    hint = f"pass the archive's http(s) address, e.g. {DEFAULT_URL}"
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UsageError(f"--url {url!r} is not a valid URL ({exc})", hint) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(f"--url {url!r} is not an http(s) URL with a host", hint)


def recorded_url(work: Path) -> str | None:
    """The URL `source.json` names, or None (absent, unreadable, not ours)."""
    try:
        data = json.loads((work / SOURCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    url = data.get("url") if isinstance(data, dict) else None
    return url if isinstance(url, str) else None


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def claim(work: Path, url: str) -> None:
    """Make `work` the download folder of `url`: what another URL (or an unknown one) left there is removed, with a
    warning; then `source.json` names `url`."""
    previous = recorded_url(work)
    for name in (PART, ARCHIVE):
        path = work / name
        if path.exists() and previous != url:
            origin = f"of {previous}" if previous else "of an unknown URL"
            logger.warning("starting over: %s (%d bytes) is %s, not of --url %s; removed it", path, _size(path),
                           origin, url)
            path.unlink()
    work.mkdir(parents=True, exist_ok=True)
    if previous != url:
        (work / SOURCE).write_text(json.dumps({"url": url}) + "\n", encoding="utf-8")


def tidy(work: Path) -> str:
    """After a failure: keep what a rerun can resume (a part or a whole archive, with `source.json`), remove the rest
    (the folder too when nothing is kept); returns what was kept, in words, for the error's hint."""
    if not work.is_dir():
        return "nothing was kept"
    part, archive = work / PART, work / ARCHIVE
    if part.exists() and not _size(part):
        part.unlink()  # not a byte to resume
    keep = {SOURCE, PART, ARCHIVE} if part.exists() or archive.exists() else set()
    for path in work.iterdir():
        if path.name not in keep:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    if not keep:
        try:
            work.rmdir()
        except OSError:
            return f"nothing was kept, but {work} could not be removed"
        return "nothing was kept"
    url = recorded_url(work) or "an unknown URL"
    if archive.exists():
        return (f"kept the whole archive {archive} ({_size(archive)} bytes from {url}): rerun with the same --url "
                "to unpack it without downloading again")
    return f"kept {part} ({_size(part)} bytes of {url}): rerun with the same --url to resume"


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
    have = _size(part)
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
                for chunk in response.iter_raw():  # as received: a dropped connection loses nothing read
                    fh.write(chunk)
                    bar.update(len(chunk))
    except httpx.TransportError as exc:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "connection failed"
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            raise UsageError(f"unusable URL {url} ({exc})", "check --url") from None
        raise DownloadIncomplete(f"{kind} after {_size(part)} bytes ({type(exc).__name__}: {exc})") from None
    size = _size(part)
    if total is not None and size != total:
        raise DownloadIncomplete(f"got {size} of {total} bytes")
    return total


def download(settings: Settings, part: Path, client: httpx.Client | None = None) -> None:
    """Download `settings.url` to `part`, resuming and retrying with exponential backoff. Raises DownloadIncomplete
    after the last retry (what is kept is for `tidy` to say)."""
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
                    raise DownloadIncomplete(f"download incomplete after {attempt + 1} attempt(s): {exc.problem}",
                                             "check the network") from None
                logger.warning("%s; retry %d/%d in %.1f s", exc, attempt + 1, settings.retries, delay)
                time.sleep(delay)
                delay *= 2
    finally:
        bar.close()
        if own:
            client.close()


def fetch(work: Path, settings: Settings, client: httpx.Client | None = None) -> Path:
    """The whole archive of `settings.url` in `work`: a whole one of the same URL left by an interrupted run is used
    as it is, a part of it is resumed, anything of another URL is removed first (see the module docstring)."""
    claim(work, settings.url)
    archive, part = work / ARCHIVE, work / PART
    if archive.is_file():
        logger.info("using the whole archive downloaded before from %s (%d bytes)", settings.url, _size(archive))
        part.unlink(missing_ok=True)
        return archive
    if part.exists():
        logger.info("resuming the download of %s at byte %d", settings.url, _size(part))
    download(settings, part, client)
    part.replace(archive)
    return archive


__all__ = ["ARCHIVE", "DEFAULT_URL", "PART", "PINNED_SHA256", "SOURCE", "DownloadIncomplete", "Esc50Error",
           "Settings", "UsageError", "WriteError", "check_url", "claim", "download", "fetch", "recorded_url",
           "tidy"]
