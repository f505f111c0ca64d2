"""Replays are recognised: which recordings of a replay the store already holds, and what to do with each.

Before a replay with a store (`soundmond run --source`, a file source, `soundmond analyze --store`), every file is
hashed (SHA-256 of its bytes, read 1 MiB at a time) and looked up in the store's replay records:

    done       decoding finished and its last window is stored: skipped without decoding
    partial    started but not complete (a crash, a stop): decoded again, the windows already stored skipped
               (their ids derive from the content and the offset, so they are recognised), the rest analysed
    new        never analysed with these window settings, bird chunk stride and models (a file analysed with other
               settings or other models is analysed again, with a warning naming what changed: its earlier rows stay
               unless `--reanalyze`)
    duplicate  the same bytes as an earlier file of this replay: skipped

The models are part of the analysis key (`;models=<identity>`, `identity.models_identity` of the session's model
versions: tagger, bird model, head) and of the window ids, so the rows of other models never share an id with the
earlier ones. Records from before model identities (no `models=` part; also a Parquet dataset's, imported) count as
made by the models the store named then (`models@legacy` in its meta, `Store.record_run`); unknown: the same.

With `reanalyze`, the earlier rows of every file seen before are deleted first (`ReplayLedger.forget_source`) and the
file is analysed as new. What was skipped is logged, e.g. `12 files already analysed, skipped; 1 resumed at 35 s`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from soundmond.identity import LEGACY_MODELS, file_sha256, models_identity
from soundmond.protocols import ReplayLedger

logger = logging.getLogger(__name__)

FileState = Literal["new", "partial", "done", "duplicate"]


DEFAULT_BIRD_STRIDE_S = 3.0  # BirdNET's own grid: a key (and window ids) without a stride mean this one


def bird_stride_part(bird_stride_s: float | None) -> str:
    """What the bird chunk stride adds to an analysis key and a file's window identity: nothing at 3 s (or with the
    bird model off), so every key and id made before the stride existed stays valid."""
    if bird_stride_s is None or bird_stride_s == DEFAULT_BIRD_STRIDE_S:
        return ""
    return f";bird_stride_s={bird_stride_s:g}"


def models_part(models: str | None) -> str:
    """What the models (`identity.models_identity`) add to an analysis key and a file's window identity."""
    return "" if models is None else f";models={models}"


def analysis_key(station: str, window_s: float, hop_s: float, channel: int | None,
                 bird_stride_s: float | None = None, models: str | None = None) -> str:
    """The settings a file's window ids derive from, besides its content: a file analysed with other settings
    yields other windows. The bird model's chunk stride is one (other chunks, other detections), the models another
    (other scores, other detections)."""
    return (f"station={station};window_s={window_s:g};hop_s={hop_s:g};channel={'mix' if channel is None else channel}"
            + bird_stride_part(bird_stride_s) + models_part(models))


def key_parts(analysis: str) -> dict[str, str]:
    """An analysis key's settings by name (the stride is given when it is the default 3 s)."""
    parts = dict(part.partition("=")[::2] for part in analysis.split(";") if part)
    parts.setdefault("bird_stride_s", f"{DEFAULT_BIRD_STRIDE_S:g}")
    return parts


MODEL_ROLES = {"tagger": "the tagger", "birds": "the bird model", "head": "the head"}


def what_changed(before: str, now: str, ledger: ReplayLedger) -> str:
    """The settings and models that differ between two analysis keys, in words, e.g. `the bird model (birdnet
    BirdNET-Analyzer@... -> hf org/model@...)` or `hop_s 5 -> 2.5`."""
    old, new = key_parts(before), key_parts(now)
    changes = [f"{name} {old.get(name, '-')} -> {new.get(name, '-')}" for name in sorted(set(old) | set(new))
               if name != "models" and old.get(name) != new.get(name)]
    if "models" in new and old.get("models", LEGACY_MODELS) != new["models"]:
        was = ledger.recorded_models(old.get("models", LEGACY_MODELS))
        is_ = ledger.recorded_models(new["models"]) or {}
        if was is None:
            changes.append(f"the models (not recorded then; now {', '.join(f'{k}: {v}' for k, v in is_.items())})")
        else:
            changes.extend(f"{MODEL_ROLES.get(role, role)} ({was.get(role) or 'none'} -> {is_.get(role) or 'none'})"
                           for role in sorted(set(was) | set(is_)) if was.get(role) != is_.get(role))
    return "; ".join(changes) or "other settings"


def legacy_key(analysis: str) -> str | None:
    """The key a record from before model identities has for these settings (None: no models in `analysis`)."""
    base, found, _ = analysis.partition(";models=")
    return base if found else None


def legacy_is_ours(ledger: ReplayLedger, analysis: str) -> bool:
    """Were records without a models part made by these models? (the store's `models@legacy`; unknown: yes)"""
    before = ledger.recorded_models(LEGACY_MODELS)
    return before is None or models_identity(before) == key_parts(analysis).get("models")


@dataclass(frozen=True)
class FilePlan:
    path: Path
    sha256: str
    state: FileState
    analysis: str | None = None  # the key its records and window ids go by when not the source's (a legacy record)
    same_as: Path | None = None  # a duplicate: the earlier file of this replay with the same bytes


@dataclass
class ReplayReport:
    """What a replay skipped and resumed (filled by `FileSource` as it goes)."""

    planned: bool = False  # a store was asked
    done: int = 0  # files already analysed, skipped without decoding
    duplicates: int = 0  # files with the same bytes as an earlier one of this replay
    reanalysed: int = 0  # files whose earlier rows were deleted (--reanalyze)
    changed: int = 0  # files analysed before with other settings or models, analysed again beside those rows
    resumed: list[tuple[Path, float]] = field(default_factory=list)  # (file, seconds where analysis went on)
    windows_skipped: int = 0  # windows of partial files already stored

    def text(self) -> str:
        """One line for the log and stderr, e.g. `12 files already analysed, skipped; 1 resumed at 35 s`."""
        parts = [f"{self.done} file{'s' * (self.done != 1)} already analysed, skipped"] if self.done else []
        if self.resumed:
            at = ", ".join(f"{at_s:.0f} s" for _, at_s in self.resumed[:5]) + (", ..." if len(self.resumed) > 5 else "")
            parts.append(f"{len(self.resumed)} resumed at {at}")
        if self.windows_skipped:
            parts.append(f"{self.windows_skipped} windows already stored, skipped")
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicate file{'s' * (self.duplicates != 1)} (same bytes), skipped")
        if self.changed:
            parts.append(f"{self.changed} analysed before with other settings or models: analysed again, the earlier "
                         "rows kept")
        if self.reanalysed:
            parts.append(f"{self.reanalysed} analysed again (--reanalyze: earlier rows replaced)")
        return "; ".join(parts) or "nothing of it was analysed before"


def plan_files(paths: Iterable[Path], ledger: ReplayLedger, analysis: str, *, reanalyze: bool,
               report: ReplayReport, on_error: Callable[[Path, str], None]) -> list[FilePlan]:
    """Hash every file and decide what to do with it (see the module docstring); unreadable files go to `on_error`."""
    plans: list[FilePlan] = []
    seen: dict[str, Path] = {}
    report.planned = True
    for path in paths:
        try:
            sha = file_sha256(path)
        except OSError as exc:
            on_error(path, f"cannot read ({exc.strerror or exc})")
            continue
        if sha in seen:
            plans.append(FilePlan(path, sha, "duplicate", same_as=seen[sha]))
            continue
        seen[sha] = path
        records = ledger.replay_progress(sha)
        if records and reanalyze:
            deleted = ledger.forget_source(sha)
            report.reanalysed += 1
            logger.info("%s: --reanalyze: its earlier rows deleted (%s)", path, deleted)
            records = []
        key: str | None = None
        mine = [r for r in records if r.analysis == analysis]
        old = legacy_key(analysis)
        if not mine and old is not None and (legacy := [r for r in records if r.analysis == old]):
            if legacy_is_ours(ledger, analysis):
                mine, key = legacy, old
        if any(r.complete for r in mine):
            plans.append(FilePlan(path, sha, "done", key))
        elif mine:
            plans.append(FilePlan(path, sha, "partial", key))
        else:
            if records:
                report.changed += 1
                logger.warning("%s was analysed before with other settings or models: %s. It is analysed again; "
                               "its earlier rows are kept (--reanalyze replaces them)", path,
                               what_changed(records[-1].analysis, analysis, ledger))
            plans.append(FilePlan(path, sha, "new"))
    counts = {state: sum(p.state == state for p in plans) for state in ("done", "partial", "new", "duplicate")}
    logger.info("replay of %d files: %d already analysed (skipped), %d partly analysed (resumed), %d new, "
                "%d duplicates (skipped)", len(plans), counts["done"], counts["partial"], counts["new"],
                counts["duplicate"])
    return plans
