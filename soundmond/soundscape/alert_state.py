"""The alert engine's memory as a frozen, JSON-serialisable value, so a restart neither re-fires an alert inside its
cooldown nor forgets one that is active (`AlertEngine.state()` / `AlertEngine.load_state()`; the daemon stores it in
the store's `engine_state` table).

Per key: its rule type, whether it is inside an episode (`active`), since when its condition has been seen false
(`false_since_s`, hysteresis) and when it last fired (`last_fired_s`, cooldown). `episodes` holds the counters the
daemon numbers its own alert keys with (capture episodes: `CAPTURE:<n>:lost`), so a new episode after a restart gets
a new key instead of one still cooling down; `silence` the quiet run RECORDER_SILENT follows (soundscape/silence.py;
absent in states saved before it existed: read as no quiet run). Baselines need no state here: the aggregator is
rebuilt from the stored windows.

`to_dict()` gives plain JSON types; `from_dict()` reads them back strictly (`ValueError` naming what is wrong), so a
damaged row is refused whole rather than half-read; only keys of alert types this version does not know are left
out (and named). No pickle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from soundmond.data import AlertType
from soundmond.soundscape.silence import SilenceState

STATE_VERSION = 1


@dataclass(frozen=True)
class KeyState:
    """One alert key's hysteresis and cooldown state."""

    key: str
    type: AlertType
    active: bool  # inside an episode (fired, or held silently by the cooldown) until seen false for clear_after_s
    false_since_s: float | None  # first false observation since the condition was last true
    last_fired_s: float | None  # when this key last fired (the cooldown runs from here)

    def to_dict(self) -> dict[str, object]:
        return {"key": self.key, "type": str(self.type), "active": self.active,
                "false_since_s": self.false_since_s, "last_fired_s": self.last_fired_s}


@dataclass(frozen=True)
class EngineState:
    """Everything an `AlertEngine` remembers, at `saved_unix_s`."""

    saved_unix_s: float
    keys: tuple[KeyState, ...] = ()
    episodes: Mapping[str, int] = field(default_factory=dict)  # never mutated: from_dict/state() build a new one
    silence: SilenceState = SilenceState()

    def to_dict(self) -> dict[str, object]:
        return {
            "version": STATE_VERSION,
            "saved_unix_s": self.saved_unix_s,
            "keys": [k.to_dict() for k in self.keys],
            "episodes": dict(self.episodes),
            "silence": {"quiet_since_s": self.silence.quiet_since_s, "fired": self.silence.fired,
                        "sound_since_s": self.silence.sound_since_s},
        }

    @classmethod
    def from_dict(cls, data: object) -> tuple[EngineState, list[str]]:
        """The state `to_dict()` wrote, and the keys left out because their alert type is unknown to this version (a
        state written by a newer soundmond). `ValueError` naming the problem when `data` is not such a state."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"state version {data.get('version')!r}, this soundmond reads version {STATE_VERSION}")
        saved = _time(data.get("saved_unix_s"), "saved_unix_s", optional=False)
        assert saved is not None
        raw_keys = data.get("keys")
        if not isinstance(raw_keys, list):
            raise ValueError("'keys' is not a list")
        keys: list[KeyState] = []
        unknown: list[str] = []
        for i, raw in enumerate(raw_keys):
            if not isinstance(raw, Mapping):
                raise ValueError(f"keys[{i}] is not an object")
            key, type_name, active = raw.get("key"), raw.get("type"), raw.get("active")
            if not isinstance(key, str) or not key or not isinstance(type_name, str) or not isinstance(active, bool):
                raise ValueError(f"keys[{i}] needs a non-empty 'key', a 'type' name and a boolean 'active'")
            if type_name not in AlertType.__members__:
                unknown.append(key)
                continue
            keys.append(KeyState(key, AlertType(type_name), active,
                                 _time(raw.get("false_since_s"), f"keys[{i}].false_since_s"),
                                 _time(raw.get("last_fired_s"), f"keys[{i}].last_fired_s")))
        raw_episodes = data.get("episodes", {})
        if not isinstance(raw_episodes, Mapping) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in raw_episodes.items()
        ):
            raise ValueError("'episodes' is not an object of counters (name: non-negative integer)")
        raw_silence = data.get("silence", {})
        if not isinstance(raw_silence, Mapping) or not isinstance(raw_silence.get("fired", False), bool):
            raise ValueError("'silence' is not an object with a boolean 'fired' and 'quiet_since_s' (seconds or null)")
        silence = SilenceState(_time(raw_silence.get("quiet_since_s"), "silence.quiet_since_s"),
                               bool(raw_silence.get("fired", False)),
                               _time(raw_silence.get("sound_since_s"), "silence.sound_since_s"))  # absent before
        return cls(saved, tuple(keys), dict(raw_episodes), silence), unknown


def _time(value: object, name: str, *, optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} is {value!r}, expected a finite number of seconds{' or null' if optional else ''}")
    return float(value)
