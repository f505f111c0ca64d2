"""`soundmond collect xeno-canto`: download labelled bird recordings from the Xeno-canto API v3.

What it does, per species (scientific names from `--species`, or every species of the BirdNET label list with
`--from-model`):
1. Queries `GET {api}/recordings?query=sp:"<genus species>"&key=<XC_API_KEY>&page=P` (paged until `--per-species`
   usable recordings are found or the pages run out). API requests are spaced by `--api-interval` seconds (Xeno-canto
   asks for at most one request per second).
2. Downloads each chosen recording (`file` of the recording; protocol-relative `//host/...` URLs get the API's
   scheme) with at most `--concurrency` downloads at a time. A download is complete only if its byte count equals the
   `Content-Length` and the audio decodes to the end; HTTP 5xx / 429, timeouts, dropped connections and truncated
   files are retried with exponential backoff (`--retries`), anything else fails at once with the reason.
3. Writes `audio/<Genus_species>/XC<id>.flac` (mono or multi-channel as published, 16-bit FLAC at the original rate)
   through a temporary file renamed into place, then rewrites `labels.csv` (again temp file + rename) with one row per
   file: file, group, category, species, recordist, licence, licence URL, source URL, XC id, country, location,
   latitude, longitude, date, time, quality, sound type, `no_derivatives`.

Licences. Every row keeps the recording's own licence and source URL; keep them with any copy. Recordings under a
No-Derivatives licence (`-nd` in `lic`) are NOT transcoded: their bytes are written exactly as Xeno-canto serves them
(`XC<id>.mp3`, ...) with `no_derivatives = true`, so nothing written here is an adaptation of them. Downstream tools
should not trim or re-encode those files for redistribution (decoding them for analysis is fine).

Resumable: a recording already listed in `labels.csv` whose file exists is not downloaded again, so a second run
over the same species downloads nothing new (it still asks the API what there is).

Secrets: the API key is read from the environment variable `XC_API_KEY` only. It is sent as the `key` query
parameter and never written to logs, errors, the CSV or stdout (URLs are logged with the key redacted; httpx's own
request log is silenced).

Exit codes: 0 everything wanted was collected (or already there), 1 some species or recordings failed (each named on
stderr and in the JSON summary; the rest was written), 2 bad usage (no species, `XC_API_KEY` not set, key rejected,
an unreadable labels.csv of an earlier run), 5 the output folder cannot be written.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import numpy as np
import soundfile as sf
from tqdm import tqdm

from soundmond.errors import ExitCode, HintedError
from soundmond.identity import file_sha256
from soundmond.logs import setup_logging
from soundmond.models.birds import is_sound_class, split_birdnet_label
from soundmond.models.sessions import read_labels as read_model_labels
from soundmond.models.sidecar import ModelFolderError, verify_folder
from soundmond.progress import show_progress
from soundmond.workbench.esc50 import __doc__ as esc50_doc
from soundmond.workbench.esc50 import add_esc50_arguments, run_esc50
from soundmond.workbench.labels import LabelsError, read_label_rows

logger = logging.getLogger(__name__)

DEFAULT_API = "https://xeno-canto.org/api/3"
KEY_ENV = "XC_API_KEY"
LABELS_FILE = "labels.csv"
LABEL_FIELDS = [
    "file", "group", "category", "species", "common_name", "recordist", "license", "license_url", "source_url",
    "original_id", "country", "location", "latitude", "longitude", "date", "time", "quality", "sound_type",
    "no_derivatives", "sha256",
]
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
RAW = argparse.RawDescriptionHelpFormatter


class CollectError(HintedError):
    """A species or recording could not be collected; the message names it and says why (never holds the key)."""


class KeyRejected(CollectError):
    """The API refused the key (401 / 403); the hint says where to check it."""


class TransientError(CollectError):
    """Worth retrying: 5xx / 429, timeout, dropped connection, truncated body."""


@dataclass(frozen=True)
class Recording:
    xc_id: str
    species: str  # "Genus species"
    common_name: str
    recordist: str
    country: str
    location: str
    latitude: str
    longitude: str
    date: str
    time: str
    quality: str
    sound_type: str
    file_url: str
    file_name: str
    license_url: str
    page_url: str

    @property
    def no_derivatives(self) -> bool:
        return bool(re.search(r"(^|[-/])nd([-/]|$)", self.license_url.lower()))

    @property
    def license_name(self) -> str:
        """'//creativecommons.org/licenses/by-nc-sa/4.0/' -> 'CC BY-NC-SA 4.0'."""
        match = re.search(r"licenses/([a-z-]+)/([\d.]+)", self.license_url.lower())
        if not match:
            return self.license_url
        return f"CC {match.group(1).upper()} {match.group(2)}"


@dataclass
class Settings:
    api_url: str = DEFAULT_API
    per_species: int = 5
    concurrency: int = 4
    retries: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    api_interval_s: float = 1.0
    quality: tuple[str, ...] = ()  # e.g. ("A", "B"); empty: any
    progress: bool = True


@dataclass
class Outcome:
    species: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    downloaded: int = 0
    already_present: int = 0


def redact(text: str, key: str) -> str:
    return text.replace(key, "***") if key else text


def _absolute(url: str, base: str) -> str:
    """Protocol-relative (`//host/x`) and relative (`/x`) URLs of an API answer, resolved against the API's URL."""
    if url.startswith("//"):
        return f"{urlsplit(base).scheme or 'https'}:{url}"
    return urljoin(base, url)


def parse_page(payload: bytes, what: str) -> tuple[list[dict[str, Any]], int]:
    """(recordings, numPages) of one API response; a clear CollectError for anything that is not the v3 format."""
    try:
        data = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CollectError(f"{what}: the API answered with malformed JSON ({exc.msg if hasattr(exc, 'msg') else exc})"
                           ) from exc
    if not isinstance(data, dict):
        raise CollectError(f"{what}: the API answered with JSON that is not an object")
    if "error" in data and "recordings" not in data:
        raise CollectError(f"{what}: the API reported an error: {data.get('message') or data.get('error')}")
    recordings = data.get("recordings")
    if not isinstance(recordings, list) or not all(isinstance(r, dict) for r in recordings):
        raise CollectError(f"{what}: the API answer has no 'recordings' list")
    try:
        pages = int(data.get("numPages", 1))
    except (TypeError, ValueError) as exc:
        raise CollectError(f"{what}: 'numPages' is not a number ({data.get('numPages')!r})") from exc
    return recordings, pages


def to_recording(raw: dict[str, Any], api_url: str) -> Recording:
    missing = [k for k in ("id", "gen", "sp", "file", "lic") if not raw.get(k)]
    if missing:
        raise CollectError(f"recording {raw.get('id', '?')}: missing field(s) {missing}")
    return Recording(
        xc_id=f"XC{raw['id']}",
        species=f"{str(raw['gen']).strip().capitalize()} {str(raw['sp']).strip().lower()}",
        common_name=str(raw.get("en", "")),
        recordist=str(raw.get("rec", "")),
        country=str(raw.get("cnt", "")),
        location=str(raw.get("loc", "")),
        latitude=str(raw.get("lat") or ""),
        longitude=str(raw.get("lon") or raw.get("lng") or ""),  # v3 "lon", v2 "lng"
        date=str(raw.get("date", "")),
        time=str(raw.get("time", "")),
        quality=str(raw.get("q", "")),
        sound_type=str(raw.get("type", "")),
        file_url=_absolute(str(raw["file"]), api_url),
        file_name=str(raw.get("file-name", "")),
        license_url=_absolute(str(raw["lic"]), "https:"),
        page_url=_absolute(str(raw.get("url", f"//xeno-canto.org/{raw['id']}")), "https:"),
    )


def species_dir(species: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", species).strip("_")


def _suffix(rec: Recording, content_type: str) -> str:
    suffix = Path(rec.file_name).suffix.lower()
    if re.fullmatch(r"\.[a-z0-9]{2,5}", suffix):
        return suffix
    return {"audio/mpeg": ".mp3", "audio/flac": ".flac", "audio/x-flac": ".flac", "audio/wav": ".wav",
            "audio/x-wav": ".wav", "audio/ogg": ".ogg"}.get(content_type.split(";")[0].strip(), ".mp3")


def read_labels(out: Path) -> dict[str, dict[str, str]]:
    """Existing labels.csv rows by XC id (resume); rows whose file is gone are dropped (downloaded again)."""
    path = out / LABELS_FILE
    if not path.is_file():
        return {}
    return {row.columns["original_id"]: dict(row.columns) for row in read_label_rows(path, out)
            if row.columns.get("original_id") and row.audio_exists}


def write_labels(out: Path, rows: Iterable[dict[str, str]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".labels.", suffix=".csv.tmp", dir=out)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=LABEL_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for row in sorted(rows, key=lambda r: r["file"]):
                writer.writerow(row)
        os.replace(tmp, out / LABELS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode the whole file (a truncated download fails here or has no frames)."""
    try:
        data, rate = sf.read(str(path), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise TransientError(f"the downloaded file does not decode ({exc})") from exc
    if data.shape[0] == 0:
        raise TransientError("the downloaded file holds no audio frames")
    return data, int(rate)


class XenoCantoClient:
    """Async Xeno-canto API v3 client: paged queries, downloads with retries, atomic writes, a labels CSV."""

    def __init__(self, key: str, out: Path, settings: Settings, client: httpx.AsyncClient | None = None) -> None:
        self.key = key
        self.out = out
        self.settings = settings
        self._client = client
        self._api_lock = asyncio.Lock()
        self._last_api = 0.0
        self._labels_lock = asyncio.Lock()
        self.rows: dict[str, dict[str, str]] = {}

    def _safe(self, text: str) -> str:
        return redact(text, self.key)

    async def _retrying(self, what: str, attempt_fn: Any) -> Any:
        delay = self.settings.backoff_s
        for attempt in range(self.settings.retries + 1):
            try:
                return await attempt_fn()
            except TransientError as exc:
                if attempt == self.settings.retries:
                    raise CollectError(f"{what}: {exc} (gave up after {attempt + 1} attempts)") from None
                logger.warning("%s: %s; retry %d/%d in %.2f s", what, exc, attempt + 1, self.settings.retries,
                               delay)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _transient(self, exc: httpx.TransportError) -> CollectError:
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return CollectError(self._safe(f"unusable URL ({exc})"))
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "connection failed"
        return TransientError(self._safe(f"{kind} ({type(exc).__name__})"))

    async def _api_page(self, species: str, page: int) -> tuple[list[dict[str, Any]], int]:
        assert self._client is not None
        what = f"{species}: API page {page}"
        params = {"query": f'sp:"{species.lower()}"', "key": self.key, "page": str(page)}
        url = self.settings.api_url.rstrip("/") + "/recordings"

        async def attempt() -> tuple[list[dict[str, Any]], int]:
            async with self._api_lock:  # Xeno-canto asks for at most one API request per second
                loop = asyncio.get_running_loop()
                wait = self._last_api + self.settings.api_interval_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._last_api = loop.time()
            try:
                response = await self._client.get(url, params=params)  # type: ignore[union-attr]
            except httpx.TransportError as exc:
                raise self._transient(exc) from None
            if response.status_code in (401, 403):
                raise KeyRejected(f"the API refused the key from {KEY_ENV} (HTTP {response.status_code})",
                                  "check the key on your Xeno-canto account page")
            if response.status_code in RETRY_STATUS:
                raise TransientError(f"HTTP {response.status_code}")
            if response.status_code != 200:
                raise CollectError(f"{what}: HTTP {response.status_code}: {self._safe(response.text[:200])}")
            return parse_page(response.content, what)

        result: tuple[list[dict[str, Any]], int] = await self._retrying(what, attempt)
        return result

    async def find(self, species: str) -> list[Recording]:
        """Up to `per_species` recordings of `species` (API order), with the quality filter applied."""
        chosen: list[Recording] = []
        page, pages = 1, 1
        while page <= pages and len(chosen) < self.settings.per_species:
            raw, pages = await self._api_page(species, page)
            for item in raw:
                try:
                    rec = to_recording(item, self.settings.api_url)
                except CollectError as exc:
                    logger.warning("%s: %s (skipped)", species, exc)
                    continue
                if rec.species.casefold() != species.casefold():
                    continue  # a query can match a subspecies or a similar name
                if self.settings.quality and rec.quality not in self.settings.quality:
                    continue
                chosen.append(rec)
                if len(chosen) >= self.settings.per_species:
                    break
            page += 1
        return chosen

    async def download(self, rec: Recording) -> str:
        """Download, check and write one recording; returns its path relative to the output folder."""
        assert self._client is not None
        target_dir = self.out / "audio" / species_dir(rec.species)
        what = f"{rec.species}: {rec.xc_id}"

        async def attempt() -> str:
            target_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{rec.xc_id}.", suffix=".part", dir=target_dir)
            tmp = Path(tmp_name)
            try:
                try:
                    with os.fdopen(fd, "wb") as fh:
                        async with self._client.stream("GET", rec.file_url) as response:  # type: ignore[union-attr]
                            if response.status_code in RETRY_STATUS:
                                raise TransientError(f"HTTP {response.status_code}")
                            if response.status_code != 200:
                                raise CollectError(f"{what}: download failed with HTTP {response.status_code}")
                            expected = response.headers.get("content-length")
                            content_type = response.headers.get("content-type", "")
                            received = 0
                            async for chunk in response.aiter_raw():
                                fh.write(chunk)
                                received += len(chunk)
                except httpx.RemoteProtocolError as exc:  # connection closed before Content-Length bytes
                    raise TransientError(f"truncated download ({type(exc).__name__})") from None
                except httpx.TransportError as exc:
                    raise self._transient(exc) from None
                if expected is not None and received != int(expected):
                    raise TransientError(f"truncated download ({received} of {expected} bytes)")
                data, rate = check_audio(tmp)
                if rec.no_derivatives:  # kept exactly as published: no transcoding (see module docstring)
                    final = target_dir / f"{rec.xc_id}{_suffix(rec, content_type)}"
                    os.replace(tmp, final)
                else:
                    final = target_dir / f"{rec.xc_id}.flac"
                    fd2, flac_name = tempfile.mkstemp(prefix=f".{rec.xc_id}.", suffix=".flac.part",
                                                      dir=target_dir)
                    os.close(fd2)
                    try:
                        sf.write(flac_name, data, rate, format="FLAC", subtype="PCM_16")
                        os.replace(flac_name, final)
                    finally:
                        Path(flac_name).unlink(missing_ok=True)
                return str(final.relative_to(self.out))
            finally:
                tmp.unlink(missing_ok=True)

        relative: str = await self._retrying(what, attempt)
        return relative

    def row(self, rec: Recording, relative: str) -> dict[str, str]:
        return {
            "file": relative, "group": "natural", "category": "bird", "species": rec.species,
            "common_name": rec.common_name, "recordist": rec.recordist,
            "license": f"{rec.license_name} (xeno-canto {rec.xc_id} by {rec.recordist})",
            "license_url": rec.license_url, "source_url": rec.page_url, "original_id": rec.xc_id,
            "country": rec.country, "location": rec.location, "latitude": rec.latitude, "longitude": rec.longitude,
            "date": rec.date, "time": rec.time, "quality": rec.quality, "sound_type": rec.sound_type,
            "no_derivatives": "true" if rec.no_derivatives else "false",
            "sha256": file_sha256(self.out / relative),
        }

    async def collect(self, species: Sequence[str]) -> Outcome:
        outcome = Outcome()
        self.rows = read_labels(self.out)
        limits = httpx.Limits(max_connections=self.settings.concurrency + 1)
        timeout = httpx.Timeout(self.settings.timeout_s)
        owns = self._client is None
        if owns:
            self._client = httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=True,
                                             headers={"User-Agent": "soundmond-collect"})
        sem = asyncio.Semaphore(self.settings.concurrency)
        bar = tqdm(total=0, desc="recordings", unit="file", file=sys.stderr,
                   disable=not show_progress(self.settings.progress))
        try:
            async def one(rec: Recording, stats: dict[str, Any]) -> None:
                if rec.xc_id in self.rows:
                    stats["already_present"] += 1
                    outcome.already_present += 1
                    bar.update(1)
                    return
                async with sem:
                    try:
                        relative = await self.download(rec)
                    except CollectError as exc:
                        message = self._safe(str(exc))
                        logger.error("%s", message)
                        outcome.errors.append({"species": rec.species, "recording": rec.xc_id, "problem": message})
                        stats["failed"] += 1
                        return
                    finally:
                        bar.update(1)
                async with self._labels_lock:
                    self.rows[rec.xc_id] = self.row(rec, relative)
                    write_labels(self.out, self.rows.values())
                stats["downloaded"] += 1
                outcome.downloaded += 1

            async def per_species(name: str) -> None:
                stats: dict[str, Any] = {"wanted": self.settings.per_species, "found": 0, "downloaded": 0,
                                         "already_present": 0, "failed": 0, "no_derivatives": 0}
                outcome.species[name] = stats
                try:
                    recs = await self.find(name)
                except KeyRejected:
                    raise
                except CollectError as exc:
                    message = self._safe(str(exc))
                    logger.error("%s", message)
                    outcome.errors.append({"species": name, "recording": "", "problem": message})
                    stats["error"] = message
                    return
                stats["found"] = len(recs)
                stats["no_derivatives"] = sum(r.no_derivatives for r in recs)
                if len(recs) < self.settings.per_species:
                    logger.warning("%s: only %d recording(s) available", name, len(recs))
                bar.total += len(recs)
                bar.refresh()
                await asyncio.gather(*(one(r, stats) for r in recs))

            await asyncio.gather(*(per_species(s) for s in species))
        finally:
            bar.close()
            if owns and self._client is not None:
                await self._client.aclose()
                self._client = None
        if self.rows or (self.out / LABELS_FILE).exists():
            write_labels(self.out, self.rows.values())
        return outcome


def model_species(birdnet_dir: Path) -> list[str]:
    """Every species (not the non-species sound classes) of a BirdNET folder's label list."""
    sidecar = verify_folder(birdnet_dir, "birdnet")
    names = [split_birdnet_label(label) for label in read_model_labels(birdnet_dir, sidecar)]
    return sorted({s for s, c in names if not is_sound_class(s, c)})


# ---------------------------------------------------------------- CLI


def add_collect_arguments(parser: argparse.ArgumentParser) -> None:
    sources = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    add_esc50_arguments(sources.add_parser("esc50", help="the ESC-50 archive, unpacked for train-head --labels DIR",
                                           description=esc50_doc, formatter_class=RAW))
    p = sources.add_parser("xeno-canto", help="bird recordings from the Xeno-canto API v3 (key in XC_API_KEY)",
                           description=__doc__, formatter_class=RAW)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--species", action="append", metavar="NAMES",
                      help="scientific names, comma-separated (repeatable), e.g. 'Turdus merula,Parus major'")
    what.add_argument("--from-model", action="store_true", help="every species of the BirdNET label list (--birdnet)")
    p.add_argument("--birdnet", type=Path, default=Path("models/birdnet"), help="BirdNET folder for --from-model")
    p.add_argument("--per-species", type=int, default=5, metavar="N", help="recordings per species (default 5)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (audio/ + labels.csv)")
    p.add_argument("--quality", default="", help="accepted Xeno-canto quality ratings, e.g. 'A,B' (default any)")
    p.add_argument("--concurrency", type=int, default=4, help="simultaneous downloads (default 4)")
    p.add_argument("--retries", type=int, default=4, help="retries per request with exponential backoff (default 4)")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubling (default 1)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds (default 60)")
    p.add_argument("--api-interval", type=float, default=1.0,
                   help="minimum seconds between API requests (Xeno-canto's rate limit; default 1)")
    p.add_argument("--api-url", default=DEFAULT_API, help=f"API base URL (default {DEFAULT_API})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _species_args(values: Sequence[str]) -> list[str]:
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            name = " ".join(name.split())
            if name and name.casefold() not in {n.casefold() for n in names}:
                names.append(name)
    return names


def run_collect(args: argparse.Namespace) -> int:
    if args.source == "esc50":
        return run_esc50(args)
    setup_logging("DEBUG" if args.verbose else "INFO")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO request log would show the key
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        print(f"soundmond collect: {KEY_ENV} is not set: put your Xeno-canto API key (xeno-canto.org, account page) "
              f"in the environment, e.g. `export {KEY_ENV}=...` (it is never read from files or arguments)",
              file=sys.stderr)
        return ExitCode.USAGE
    if args.per_species < 1 or args.concurrency < 1 or args.retries < 0:
        print("soundmond collect: --per-species and --concurrency must be >= 1, --retries >= 0", file=sys.stderr)
        return ExitCode.USAGE
    if args.from_model:
        try:
            species = model_species(args.birdnet)
        except ModelFolderError as exc:
            print(f"soundmond collect: {exc}", file=sys.stderr)
            return ExitCode.USAGE
    else:
        species = _species_args(args.species)
        bad = [s for s in species if len(s.split()) != 2]
        if bad:
            print(f"soundmond collect: --species: {bad} are not 'Genus species' scientific names", file=sys.stderr)
            return ExitCode.USAGE
    if not species:
        print("soundmond collect: no species to collect", file=sys.stderr)
        return ExitCode.USAGE
    settings = Settings(
        api_url=args.api_url, per_species=args.per_species, concurrency=args.concurrency, retries=args.retries,
        backoff_s=args.backoff, timeout_s=args.timeout, api_interval_s=args.api_interval,
        quality=tuple(q.strip().upper() for q in args.quality.split(",") if q.strip()),
        progress=not args.no_progress,
    )
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=args.out, prefix=".write-test.")
        probe.close()
    except OSError as exc:
        print(f"soundmond collect: cannot write to {args.out}: {exc}", file=sys.stderr)
        return ExitCode.FATAL
    client = XenoCantoClient(key, args.out, settings)
    try:
        outcome = asyncio.run(client.collect(species))
    except KeyRejected as exc:
        print(f"soundmond collect: {redact(str(exc), key)}", file=sys.stderr)
        return ExitCode.USAGE
    except LabelsError as exc:  # the labels.csv of an earlier run is unreadable
        print(f"soundmond collect: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except OSError as exc:
        print(f"soundmond collect: cannot write to {args.out}: {redact(str(exc), key)}", file=sys.stderr)
        return ExitCode.FATAL
    summary = {
        "out": str(args.out),
        "labels": str(args.out / LABELS_FILE),
        "species": outcome.species,
        "downloaded": outcome.downloaded,
        "already_present": outcome.already_present,
        "files_listed": len(client.rows),
        "errors": outcome.errors,
    }
    print(redact(json.dumps(summary, indent=2), key))
    for err in outcome.errors:
        print(f"soundmond collect: {err['problem']}", file=sys.stderr)
    return ExitCode.PARTIAL if outcome.errors else ExitCode.OK


__all__ = [
    "CollectError",
    "Recording",
    "Settings",
    "XenoCantoClient",
    "add_collect_arguments",
    "model_species",
    "parse_page",
    "run_collect",
]
