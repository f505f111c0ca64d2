"""`soundmond analyze`: recordings through the same `Session.process` as the daemon, one record per window on stdout
(JSON lines or CSV, `soundmond.outputs.records`), the aggregate and the alerts with `--summary` (figures over every
window analysed, and how many fall outside the rolling spans); a path that does not exist is bad usage (exit 2, before
any model loads); files that cannot be decoded are named on stderr
(exit 1) and the others analysed. With `--store DB` the windows, detections and alerts are also written to that
store, idempotently: files the store already holds are skipped (the same ids), a file a crash interrupted resumes,
and stderr says what was skipped; `--reanalyze` replaces the earlier rows instead. `--format raven|birdnet-csv|audacity`
writes the chunk detections as BirdNET-Analyzer does, per recording into `--out DIR` or (birdnet-csv, and audacity for
one recording) to stdout (`soundmond.outputs.birdformats`). `--evidence DIR` writes evidence clips as the daemon does
(the config's `evidence` limits and `privacy`, whatever `evidence.enabled` says) into DIR: each JSON record names the
clips its window asks for (`evidence`: event id -> path under DIR), and the summary lists the clips written (size,
SHA-256) and the counts of those skipped. `--format parquet --out DATASET [--workers N | --cluster ADDRESS]` writes a
resumable Parquet dataset instead, with a pool of worker processes or on a Dask cluster
(`soundmond.commands.analyze_dataset`)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from soundmond.analysis import ModelLoadError, build_session
from soundmond.capture.files import FileSource
from soundmond.commands import analyze_dataset
from soundmond.commands.common import (
    add_config_argument,
    load_with_logging,
    report_config_error,
    with_input_failures,
)
from soundmond.config import ConfigError
from soundmond.data import Alert
from soundmond.errors import ExitCode
from soundmond.outputs import birdformats, records
from soundmond.outputs.evidence import EvidenceStage
from soundmond.outputs.store import Store, StoreError
from soundmond.outputs.store.rows import clean
from soundmond.preflight import preflight
from soundmond.progress import AudioProgress
from soundmond.soundscape.aggregate import RunTotals, SoundscapeSnapshot


def json_line(obj: object) -> str:
    """One line of strict JSON (`clean`: a non-finite number, such as the -inf dBFS of digital silence, is null, as
    in the store and on MQTT; Python's default would write -Infinity, which JSON parsers refuse)."""
    return json.dumps(clean(obj), allow_nan=False) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", type=Path, help="audio files or folders (wav, flac, mp3, ogg, opus)")
    add_config_argument(p, "config file (models, windows, alert rules)")
    p.add_argument("--format", choices=("jsonl", "csv", *birdformats.FORMATS, analyze_dataset.PARQUET),
                   default="jsonl",
                   help="jsonl/csv: one record per window; raven, birdnet-csv, audacity: chunk detections as "
                        "BirdNET-Analyzer writes them; parquet: a resumable dataset (windows, detections, chunks, "
                        "alerts by station/date) in --out")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="bird formats: one file per recording in DIR (created if missing); required for raven. "
                        "parquet: the dataset folder (required; a rerun skips the files it holds)")
    p.add_argument("--summary", action="store_true", help="add the aggregate and the alerts at the end")
    p.add_argument("--store", type=Path, default=None, metavar="DB",
                   help="also write windows, detections and alerts to this SQLite store (created if missing); "
                        "files it already holds are skipped")
    p.add_argument("--reanalyze", action="store_true",
                   help="with --store or --format parquet: analyse files already held again, replacing their rows")
    p.add_argument("--evidence", type=Path, default=None, metavar="DIR",
                   help="write evidence clips of detections and alerts into DIR (the config's evidence limits and "
                        "speech privacy apply); records name them, --summary lists them")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it is drawn on stderr only when stderr is a terminal)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    analyze_dataset.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    if (problem := analyze_dataset.usage_problem(args)) is not None:
        print(f"soundmond analyze: {problem}", file=sys.stderr)
        return ExitCode.USAGE
    if missing := [p for p in args.paths if not p.exists()]:  # bad usage, as `run --source`: before any model loads
        for path in missing:
            print(f"soundmond analyze: no such file or folder: {path} - give analyze recordings or folders of "
                  "recordings that exist", file=sys.stderr)
        return ExitCode.USAGE
    if args.format == analyze_dataset.PARQUET:
        return analyze_dataset.run(args)
    if args.reanalyze and args.store is None:
        print("soundmond analyze: --reanalyze replaces rows in a store - give the store with --store DB",
              file=sys.stderr)
        return ExitCode.USAGE
    if (problem := birdformats.where_problem(args.format, args.out, args.paths, summary=args.summary)) is not None:
        print(f"soundmond analyze: {problem}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        loaded = load_with_logging(args.config, args.verbose)
    except ConfigError as exc:
        return report_config_error(exc)
    # what run would refuse in the models, with run's words
    if (refused := preflight(loaded, models_only=True).refused()) is not None:
        return refused
    try:
        session = build_session(loaded)
    except ModelLoadError as exc:
        print(f"soundmond: {exc}", file=sys.stderr)
        return ExitCode.MODELS
    errors: list[tuple[Path, str]] = []
    cfg = loaded.config
    store = None
    if args.store is not None:
        try:
            store = Store(args.store, cfg.store)
            store.record_run(cfg.station.id, session.model_versions)
        except StoreError as exc:
            session.close()
            print(f"soundmond analyze: store: {exc}", file=sys.stderr)
            return ExitCode.FATAL
    out = sys.stdout
    bird = (birdformats.BirdFormatWriter(args.format, args.out, out,
                                         birdformats.model_band_hz(session.analyzer.birds))
            if args.format in birdformats.FORMATS else None)

    def failed(path: Path, problem: str) -> None:
        errors.append((path, problem))
        if bird is not None:
            bird.discard(str(path))

    source = FileSource(args.paths, cfg.windows.length_s, cfg.windows.hop_s, station=cfg.station.id, ledger=store,
                        reanalyze=args.reanalyze, on_error=failed,
                        bird_stride_s=cfg.models.birds.stride_s if cfg.models.birds.enabled else None,
                        models=session.model_versions)
    evidence = None
    if args.evidence is not None:
        tagger = session.analyzer.tagger
        try:
            evidence = EvidenceStage(cfg.evidence, cfg.privacy, args.evidence, store=store, stop=threading.Event(),
                                     tagger_labels=tagger.labels if tagger is not None else (),
                                     keep_records=True).start()
        except OSError as exc:
            session.close()
            if store is not None:
                store.close()
            why = exc.strerror or exc
            print(f"soundmond analyze: --evidence {args.evidence}: cannot make the clips' folder ({why}) - give a "
                  "folder you can write to", file=sys.stderr)
            return ExitCode.FATAL
    writer = csv.DictWriter(out, fieldnames=records.CSV_FIELDS) if args.format == "csv" else None
    if writer:
        writer.writeheader()
    alerts_raised: list[Alert] = []
    last_ts = 0.0
    totals = RunTotals()
    stored = 0
    progress = AudioProgress(args.paths, enabled=not args.no_progress)
    try:
        source.open()
        for window in source.windows(threading.Event()):
            analysis, alerts = session.process(window, now=window.start_unix_s + window.duration_s)
            last_ts = max(last_ts, window.start_unix_s + window.duration_s)
            alerts_raised.extend(alerts)
            totals.add(analysis.result)
            if store is not None:  # one transaction per window: a crash keeps every window analysed before it
                store.write_batch([analysis.result], alerts, ())
                stored += 1
            rec = records.analyze_record(analysis.result)
            if evidence is not None:
                evidence.offer(window, analysis, alerts)
                rec["evidence"] = evidence.planned(analysis.result, alerts)
            if bird is not None:
                bird.add(analysis.result, window.sample_rate_hz)
            elif writer:
                writer.writerow(records.csv_row(rec))
            else:
                out.write(json_line(rec))
            out.flush()
            progress.window(window.source, window.start_s + window.duration_s)
        if bird is not None:
            bird.close()
    except StoreError as exc:
        print(f"soundmond analyze: store: {exc}", file=sys.stderr)
        return ExitCode.FATAL
    except birdformats.BirdFormatError as exc:
        print(f"soundmond analyze: {exc}", file=sys.stderr)
        return ExitCode.FATAL
    finally:
        progress.close()
        session.close()
        if evidence is not None:
            evidence.end()
            evidence.close()
        if store is not None:
            store.close()
    if store is not None:
        print(f"soundmond analyze: {args.store}: {stored} windows stored; {source.report.text()}", file=sys.stderr)
    if evidence is not None:
        print(f"soundmond analyze: {evidence.stats.written} evidence clips written to {args.evidence} "
              f"({evidence.stats.existing} already there); skipped: {dict(evidence.stats.skipped) or 'none'}",
              file=sys.stderr)
    if bird is not None and args.out is not None:
        print(f"soundmond analyze: {len(bird.written)} {args.format} files written to {args.out}", file=sys.stderr)
    if args.summary:
        summary = batch_summary(session.aggregator.snapshot(last_ts) if last_ts else None, totals)
        summary["alerts"] = [records.alert_record(a) for a in alerts_raised]
        summary["files_analysed"] = source.files_done
        summary["files_failed"] = [{"file": str(p), "problem": m} for p, m in errors]
        if evidence is not None:
            summary["evidence"] = {"clips": [asdict(r) for r in evidence.records],
                                   "skipped": dict(evidence.stats.skipped)}
        analysed = totals.figures()
        if analysed is not None and (whole := sum(s.from_windows for s in analysed.species_summary)):
            print(f"soundmond analyze: {whole} of the species summary's detections are whole windows without chunk "
                  "detections (counted once per species per window: 'from_windows')", file=sys.stderr)
        if summary["windows_outside_spans"]:
            print(f"soundmond analyze: {summary['windows_outside_spans']} of {totals.windows} windows are older than "
                  "the longest aggregation span before the newest window; the summary's 'analysed' figures count "
                  "every window", file=sys.stderr)
        out.write(json_line(summary))  # jsonl only: a table on stdout with --summary is refused above
    return with_input_failures(ExitCode.OK, errors, "analyze")


def batch_summary(snapshot: SoundscapeSnapshot | None, totals: RunTotals) -> dict[str, object]:
    """`summary`: the rolling spans as the daemon keeps them, ending at the newest window; `analysed`: the same
    figures over every window analysed, from the first window's start to the last one's end; `windows_outside_spans`:
    how many analysed windows none of the spans holds (recordings older than the longest span)."""
    longest = max(snapshot.spans, key=lambda f: f.span_s).windows if snapshot is not None and snapshot.spans else 0
    figures = totals.figures()
    return {
        "summary": snapshot.to_dict() if snapshot is not None else None,
        "analysed": figures.to_dict() if figures is not None else None,
        "windows_outside_spans": totals.windows - longest,
    }
