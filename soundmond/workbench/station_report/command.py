"""`soundmond report`: what one station heard over a day or a range, as a static HTML page with its figures.

The store is read-only and aggregated in SQL (`queries`), so a store of any size is read in bounded memory. The
output folder (`--out`, replaced atomically) holds `index.html` (no script, no network: inline CSS, relative
images), `shares.png`, `heatmap.png`, `frequency.png`, `health.png`, one `thumb-N.png` per species whose best window
can be read back from its recording, and `report.json` (the numbers behind the page).

Times are UTC: `--day 2026-05-01` is that UTC day; `--since` / `--until` take ISO dates or times (UTC unless they
carry an offset); with neither, the last UTC day holding a window.

Exit codes: 0 written, 2 bad usage (dates, a missing or foreign store, another station's store), 5 the store cannot
be read or the folder cannot be written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import shutil
import sqlite3
import sys
from pathlib import Path

from soundmond.errors import ExitCode
from soundmond.logs import setup_logging
from soundmond.workbench.report import atomic_dir, output_folder_problem, write_json
from soundmond.workbench.station_report.evidence import (
    EvidenceClips,
    NoEvidenceClips,
    SourceAudio,
    StoredEvidenceClips,
    mel_spectrogram,
)
from soundmond.workbench.station_report.figures import (
    plot_health,
    plot_heatmap,
    plot_shares,
    plot_species_frequency,
    plot_thumbnail,
)
from soundmond.workbench.station_report.page import SpeciesMedia, render
from soundmond.workbench.station_report.queries import (
    ReportData,
    ReportError,
    Span,
    data_range,
    models_from_meta,
    open_read_only,
    read_meta,
    read_report,
)

logger = logging.getLogger(__name__)

BIN_S = 600  # 10-minute bins ...
MAX_BINS = 1500  # ... widened (by whole 10-minute steps) for long ranges, so a figure never has more bars
MAX_THUMBNAILS = 40  # spectrogram thumbnails (the most detected species)


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", type=Path, required=True, metavar="DB", help="the station's store (store.path)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--day", metavar="YYYY-MM-DD", help="one UTC day (default: the last day holding a window)")
    when.add_argument("--since", metavar="TIME", help="start of the range (ISO date or time, UTC unless an offset)")
    p.add_argument("--until", metavar="TIME", help="end of the range, exclusive (default: now); with --since")
    p.add_argument("--station", metavar="ID", help="refuse a store written by another station (station.id)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="report folder, replaced atomically")
    p.add_argument("--evidence", type=Path, default=None, metavar="DIR",
                   help="the station's evidence clips folder (evidence.path): an audio player for each species' best "
                        "detection that has a clip (checked against the store's SHA-256)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def parse_time(text: str, what: str) -> float:
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ReportError(f"{what} {text!r} is not an ISO date or time",
                          "write e.g. 2026-05-01 or 2026-05-01T06:00 (UTC) or 2026-05-01T06:00+02:00") from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def choose_span(args: argparse.Namespace, conn: sqlite3.Connection) -> Span:
    if args.until and not args.since:
        raise ReportError("--until needs --since", "give the range as --since TIME --until TIME, or use --day")
    if args.day:
        try:
            day = dt.date.fromisoformat(args.day)
        except ValueError as exc:
            raise ReportError(f"--day {args.day!r} is not a date", "write it as YYYY-MM-DD") from exc
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()
        end = start + 86400
    elif args.since:
        start = parse_time(args.since, "--since")
        end = parse_time(args.until, "--until") if args.until else dt.datetime.now(dt.timezone.utc).timestamp()
        if end <= start:
            raise ReportError(f"--until ({args.until or 'now'}) is not after --since ({args.since})",
                              "give an --until later than --since")
    else:
        found = data_range(conn)
        last = found[1] if found else dt.datetime.now(dt.timezone.utc).timestamp()
        start = math.floor(last / 86400) * 86400
        end = start + 86400
    bin_s = BIN_S * max(1, math.ceil((end - start) / BIN_S / MAX_BINS))
    return Span(start, end, bin_s)


def check_station(meta: dict[str, str], wanted: str | None, store: Path) -> tuple[str | None, list[str]]:
    """The station the page names, and notes; raises when the store is another station's."""
    recorded = meta.get("station_id")
    if wanted is None:
        return recorded, []
    if recorded is None:
        return wanted, [f"The store does not record its station; it is reported as {wanted} as asked."]
    if recorded != wanted:
        raise ReportError(f"{store} holds station {recorded!r}, not {wanted!r}",
                          f"give that station's store, or --station {recorded}")
    return recorded, []


def draw(data: ReportData, out: Path, clips: EvidenceClips) -> tuple[dict[str, str], dict[str, SpeciesMedia]]:
    names = {s.scientific_name: s.common_name for s in data.species}
    figures = {"shares": plot_shares(data, out / "shares.png").name,
               "health": plot_health(data, out / "health.png").name}
    if data.species:
        figures["heatmap"] = plot_heatmap(data, names, out / "heatmap.png").name
        figures["frequency"] = plot_species_frequency(data, names, out / "frequency.png").name
    audio = SourceAudio()
    media: dict[str, SpeciesMedia] = {}
    for i, s in enumerate(data.species):
        thumb = None
        note = "not drawn (only the most detected species get one)"
        if i < MAX_THUMBNAILS and s.best_source is not None and s.best_start_s is not None \
                and s.best_end_s is not None:
            seg = audio.segment(s.best_source, s.best_start_s, s.best_end_s)
            if seg is not None:
                thumb = plot_thumbnail(mel_spectrogram(*seg), seg[0].size / seg[1], out / f"thumb-{i}.png").name
            note = audio.unreadable.get(s.best_source, "")
        clip = clips.clip_for(s.best_window_id, s.scientific_name) if s.best_window_id else None
        clip_name = None
        if clip is not None:
            clip_name = f"clip-{i}{clip.suffix}"
            shutil.copyfile(clip, out / clip_name)
        media[s.scientific_name] = SpeciesMedia(thumb, clip_name, note)
    return figures, media


def report_json(data: ReportData, station: str | None, models: dict[str, str | None]) -> dict[str, object]:
    return {"station": station, "start_unix_s": data.span.start_unix_s, "end_unix_s": data.span.end_unix_s,
            "bin_s": data.span.bin_s, "windows": data.windows, "shares": data.shares, "unanalysed": data.unanalysed,
            "failed": data.failed, "rtf": data.rtf, "alert_counts": data.alert_counts, "counters": data.counters,
            "models": models,
            "species": [{"scientific_name": s.scientific_name, "common_name": s.common_name,
                         "detections": s.detections, "minutes": s.minutes, "first_unix_s": s.first_unix_s,
                         "last_unix_s": s.last_unix_s, "max_confidence": s.max_confidence,
                         "best_window_id": s.best_window_id} for s in data.species],
            "hour_counts": data.hour_counts}


def make_report(store: Path, out: Path, args: argparse.Namespace,
                clips: EvidenceClips | None = None) -> ReportData:
    """Read, draw and write the report; raises ReportError (usage), sqlite3.Error / OSError (reading, writing)."""
    if (problem := output_folder_problem(out)) is not None:
        raise ReportError(*problem.split(" - ", 1))
    conn = open_read_only(store)
    try:
        meta = read_meta(conn)
        station, notes = check_station(meta, args.station, store)
        span = choose_span(args, conn)
        data = read_report(conn, span)
        evidence_root = getattr(args, "evidence", None)
        if clips is None:
            clips = StoredEvidenceClips(conn, evidence_root) if evidence_root is not None else NoEvidenceClips()
        models = models_from_meta(data.meta)
        if data.windows == 0:
            notes.append("No window was stored in this range: the figures are empty.")
        clips_note = getattr(clips, "reason", "evidence clips where the station kept one")
        with atomic_dir(out) as tmp:
            figures, media = draw(data, tmp, clips)
            if missing := getattr(clips, "missing", 0):
                notes.append(f"{missing} evidence clips the store lists are missing or changed under "
                             f"{evidence_root}: not played.")
            (tmp / "index.html").write_text(render(data, store=store, station=station, models=models,
                                                   figures=figures, media=media, clips_note=clips_note, notes=notes),
                                            encoding="utf-8")
            write_json(tmp / "report.json", report_json(data, station, models))
    finally:
        conn.close()
    return data


def run_report(args: argparse.Namespace) -> int:
    setup_logging("DEBUG" if args.verbose else "INFO")
    try:
        data = make_report(args.store, args.out, args)
    except ReportError as exc:
        print(f"soundmond report: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except sqlite3.Error as exc:
        print(f"soundmond report: {args.store}: reading the store failed: {exc} - is another program rewriting it? "
              "try again, or copy the file first", file=sys.stderr)
        return ExitCode.FATAL
    except OSError as exc:
        print(f"soundmond report: {args.out}: cannot write the report: {exc} - check the folder and free space",
              file=sys.stderr)
        return ExitCode.FATAL
    print(f"soundmond report: {args.out / 'index.html'}: {data.windows} windows, {len(data.species)} species, "
          f"{sum(data.alert_counts.values())} alerts", file=sys.stderr)
    return ExitCode.OK
