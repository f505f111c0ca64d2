"""What subscribers may send the station, and what the publisher does with it.

Two topics are read: `<prefix>/set` (JSON commands; `{"command": "republish"}` re-sends the retained state and the
Home Assistant discovery) and `<discovery_prefix>/status` (Home Assistant's birth message: `online` asks for the
discovery again). Anything else, malformed or too large is ignored with a reason the publisher counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

MAX_BIRTH_BYTES = 64
MAX_COMMAND_BYTES = 4096

Action = Literal["resend_discovery", "republish", "none", "ignored"]


@dataclass(frozen=True)
class Incoming:
    """What to do about one incoming message; `reason` and `detail` say why it is ignored."""

    action: Action
    reason: str = ""  # oversized | malformed | unknown_command | unexpected_topic
    detail: str = ""


def _ignored(reason: str, detail: str) -> Incoming:
    return Incoming("ignored", reason, detail)


def read_incoming(topic: str, payload: bytes, *, set_topic: str, birth_topic: str) -> Incoming:
    """Classify a message received on `topic` (`set_topic`: commands, `birth_topic`: Home Assistant's status)."""
    if topic == birth_topic:
        if len(payload) > MAX_BIRTH_BYTES:
            return _ignored("oversized", f"{len(payload)} bytes")
        try:
            text = payload.decode("utf-8").strip()
        except UnicodeDecodeError:
            return _ignored("malformed", "not UTF-8")
        if text == "online":
            return Incoming("resend_discovery")
        if text == "offline":
            return Incoming("none")
        return _ignored("malformed", "neither online nor offline")
    if topic == set_topic:
        if len(payload) > MAX_COMMAND_BYTES:
            return _ignored("oversized", f"{len(payload)} bytes")
        try:
            command = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _ignored("malformed", "not UTF-8 JSON")
        if not isinstance(command, dict) or not isinstance(command.get("command"), str):
            return _ignored("malformed", 'not a JSON object with a string "command"')
        name = command["command"]
        if name == "republish":
            return Incoming("republish")
        return _ignored("unknown_command", f"command {name[:40]!r} is not known (known: republish)")
    return _ignored("unexpected_topic", "not subscribed here")
