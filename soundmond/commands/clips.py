"""`soundmond clips`: the evidence clips a store knows, listed or copied out, checked against their SHA-256.

Reads the store's `evidence` table (docs/store.md) read-only, joined with `detections` for each clip's confidence:
one tab-separated line per written clip on stdout (`start_utc  kind  label  confidence  path  bytes  sha256`, a header
first), oldest first, within [--since, --until). `--species` (scientific or common name, any case, repeatable) and
`--alert TYPE` narrow it. Paths are absolute when the clips' folder is known (`--config`: its `evidence.path`, or
`--root DIR`), else relative to that folder as the store holds them.

`--copy-to DIR` copies each listed clip there (same relative path) and checks the copy's SHA-256 against the store's:
a clip that is missing, or whose bytes differ from what was written, is named on stderr and the command exits 1 after
copying the others. A clip already in DIR with the right SHA-256 is not copied again.

Exit codes: 0 every listed clip is there (and copied), 1 some clip missing or changed, 2 bad arguments / not a store.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from soundmond.commands.export import ExportError, open_store, parse_time
from soundmond.config import ConfigError, load_config
from soundmond.errors import ExitCode
from soundmond.identity import file_sha256

HEADER = ("start_utc", "kind", "label", "confidence", "path", "bytes", "sha256")


@dataclass(frozen=True)
class Clip:
    event_id: str
    kind: str  # detection | alert
    label: str  # scientific name, or alert-TYPE
    common_name: str | None
    confidence: float | None  # the detection's confidence in its window (None for alerts)
    path: str  # relative to evidence.path
    bytes: int
    sha256: str
    start_unix_s: float


def add_arguments(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="the station's config: its store.path and evidence.path")
    where.add_argument("--store", type=Path, help="the store file (store.path in the config)")
    p.add_argument("--root", type=Path, default=None,
                   help="with --store: the clips' folder (evidence.path in the config); paths are relative without")
    p.add_argument("--species", action="append", default=[], metavar="NAME",
                   help="only this species (scientific or common name, any case); repeatable")
    p.add_argument("--alert", action="append", default=[], metavar="TYPE",
                   help="only clips of this alert type (e.g. RARE_SPECIES); repeatable")
    p.add_argument("--since", help="first clip start included: ISO-8601 (UTC unless an offset is given) or epoch s")
    p.add_argument("--until", help="first clip start excluded, same forms as --since")
    p.add_argument("--copy-to", type=Path, default=None, metavar="DIR",
                   help="copy the listed clips here (same relative paths), each checked against its SHA-256")


def run(args: argparse.Namespace) -> int:
    try:
        store, root = _where(args)
        since, until = parse_time(args.since, "--since"), parse_time(args.until, "--until")
        if args.copy_to is not None and root is None:
            raise ExportError("--copy-to needs the clips' folder", "give --config, or --root DIR with --store")
        with closing(open_store(store)) as conn:
            clips = list(select(conn, species=args.species, alerts=args.alert, since=since, until=until))
    except ExportError as exc:
        print(f"soundmond clips: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    print("\t".join(HEADER))
    problems = 0
    copied = 0
    for clip in clips:
        source = root / clip.path if root is not None else None
        shown = str(source) if source is not None else clip.path
        print("\t".join((_utc(clip.start_unix_s), clip.kind, clip.label,
                         "" if clip.confidence is None else f"{clip.confidence:.4f}", shown, str(clip.bytes),
                         clip.sha256)))
        if source is None:
            continue
        problem = _check(source, clip) if args.copy_to is None else _copy(source, args.copy_to / clip.path, clip)
        if problem is None:
            copied += args.copy_to is not None
            continue
        problems += 1
        print(f"soundmond clips: {shown}: {problem}", file=sys.stderr)
    sys.stdout.flush()
    summary = f"{len(clips)} clips listed"
    if args.copy_to is not None:
        summary += f", {copied} in {args.copy_to}"
    if problems:
        summary += f", {problems} missing or changed (named above)"
    print(f"soundmond clips: {summary}", file=sys.stderr)
    return ExitCode.PARTIAL if problems else ExitCode.OK


def _where(args: argparse.Namespace) -> tuple[Path, Path | None]:
    if args.config is None:
        return args.store, args.root
    if args.root is not None:
        raise ExportError("--root goes with --store", "with --config the clips' folder is its evidence.path")
    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        raise ExportError(f"{args.config}: the config does not load ({len(exc.problems)} problems)",
                          f"run soundmond check-config {args.config}") from exc
    cfg = loaded.config
    return loaded.resolve(cfg.store.path), loaded.resolve(cfg.evidence.path)


def select(conn: sqlite3.Connection, *, species: list[str], alerts: list[str], since: float | None,
           until: float | None) -> Iterator[Clip]:
    """The written clips, oldest first, narrowed by species (scientific or common name, any case), alert type and
    time (the clip's start)."""
    where = ["e.status = 'written'"]
    params: list[object] = []
    kinds = []
    if species:
        names = [s.strip().casefold() for s in species]
        marks = ", ".join("?" * len(names))
        kinds.append(f"(e.kind = 'detection' AND (lower(e.label) IN ({marks}) OR lower(d.common_name) IN ({marks})))")
        params += names + names
    if alerts:
        kinds.append(f"(e.kind = 'alert' AND e.label IN ({', '.join('?' * len(alerts))}))")
        params += [f"alert-{a.strip().upper()}" for a in alerts]
    if kinds:
        where.append("(" + " OR ".join(kinds) + ")")
    if since is not None:
        where.append("e.start_unix_s >= ?")
        params.append(since)
    if until is not None:
        where.append("e.start_unix_s < ?")
        params.append(until)
    # detections hold one row per (window, species): the clip's detection is its window's row of that species
    sql = ("SELECT e.event_id, e.kind, e.label, d.common_name, d.confidence, e.path, e.bytes, e.sha256, "
           "e.start_unix_s FROM evidence e LEFT JOIN detections d ON e.kind = 'detection' AND "
           "d.window_id = e.window_id AND d.scientific_name = e.label "
           f"WHERE {' AND '.join(where)} ORDER BY e.start_unix_s, e.event_id")
    try:
        for row in conn.execute(sql, params):
            yield Clip(*row)
    except sqlite3.OperationalError as exc:
        raise ExportError(f"the store has no evidence clips table ({exc})",
                          "upgrade the store by running this soundmond's `run` or `analyze --store` on it") from exc


def _check(path: Path, clip: Clip) -> str | None:
    if not path.is_file():
        return "missing (deleted by hand, or the store and the folder do not belong together)"
    return None if file_sha256(path) == clip.sha256 else "its bytes differ from the clip that was written"


def _copy(source: Path, target: Path, clip: Clip) -> str | None:
    if target.is_file() and file_sha256(target) == clip.sha256:
        return None
    if (problem := _check(source, clip)) is not None:
        return problem
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    shutil.copyfile(source, partial)
    if file_sha256(partial) != clip.sha256:
        partial.unlink()
        return "changed while it was copied"
    partial.replace(target)
    return None


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
