"""Ids derived from what a thing is, so a replay or a restart yields the same ids and nothing is counted twice.

    window     station + source identity + the window's length/hop (in samples, at the source's rate) + its first
               sample's offset. A file's identity is the SHA-256 of its bytes (and the channel analysed, the bird
               chunk stride when not 3 s and the models that analysed it: `models_identity`); a
               microphone's is its device plus a capture session id drawn at random when the source is made, so a
               microphone window never equals a file window, nor a window of an earlier daemon start.
    detection  the window id + the species' scientific name.
    alert      the alert key + what raised it: the window id for per-window rules; for span rules and daemon events
               (capture lost, falling behind), which have no window, the time of the tick or event rounded to the
               second (the same key cannot fire twice within a second: cooldowns are longer).
    evidence   (the `evidence` message: what became of an event's clip) the event id + the status + what tells this
               change from another of the same status: the clip's write time for `written` and `deleted` (a clip
               written again after a deletion is a new clip), the reason for `skipped`.

Every id is 32 hex characters (the first 128 bits of a SHA-256), the length of the uuid4 hex ids they replaced.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ID_CHARS = 32
MODELS_META = "models@"  # the store's meta key of the models with one identity: `models@<models_identity>`
LEGACY_MODELS = "legacy"  # ... of the models that analysed what a store held before model identities
HASH_CHUNK_BYTES = 1 << 20  # a file is hashed 1 MiB at a time: a long recording never sits whole in memory


def derive_id(kind: str, *parts: object) -> str:
    """A 32-hex-character id from `kind` and `parts` (their str(), separated so ("ab", "c") != ("a", "bc"))."""
    text = "\x1f".join([kind, *(str(p) for p in parts)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:ID_CHARS]


def file_sha256(path: Path | str) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def file_source_identity(sha256: str, channel: int | None) -> str:
    """What a file source is: its content (and which channel of it is analysed, None = the mix of all)."""
    return f"file:{sha256}:{'mix' if channel is None else channel}"


def models_identity(versions: Mapping[str, Any]) -> str:
    """16 hex characters naming a set of models (`Session.model_versions`: each model's family, source, revision or
    checksum, quantization; the head): the same models give the same identity, any other model another."""
    return derive_id("models", json.dumps(dict(versions), sort_keys=True, default=str))[:16]


def mic_source_identity(device: str, session: str | None = None) -> str:
    """What a microphone source is: its device and a capture session (random when not given)."""
    return f"mic:{device}:{session or uuid.uuid4().hex}"


def window_id(station: str, source_identity: str, window_samples: int, hop_samples: int, rate_hz: int,
              start_sample: int) -> str:
    return derive_id("window", station, source_identity, rate_hz, window_samples, hop_samples, start_sample)


def detection_id(window_id: str, scientific_name: str) -> str:
    return derive_id("detection", window_id, scientific_name)


def alert_id(key: str, origin: str) -> str:
    """`origin`: the window id that raised the alert, or `at_second(ts)` for alerts with no window."""
    return derive_id("alert", key, origin)


def evidence_id(event_id: str, status: str, written_unix_s: float | None, reason: str | None) -> str:
    """The id of an `evidence` message about `event_id`'s clip (see the module docstring)."""
    return derive_id("evidence", event_id, status, reason if status == "skipped" else repr(written_unix_s))


def at_second(ts_unix_s: float) -> str:
    return f"t{round(ts_unix_s)}"
