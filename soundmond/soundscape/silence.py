"""RECORDER_SILENT: the source has been quiet for `alerts.silent_recorder_s` without a break. Pure: it reads the
windows' own times, never a clock, so a file replayed faster than real time and a microphone behave alike.

An episode starts with the first quiet window (group "quiet": digital silence or below `windows.quiet_below_dbfs`)
and lasts while quiet windows follow; it fires once, when the quiet run reaches `silent_after_s` (from the first quiet
window's start to the current window's end), and ends when windows that are not quiet have followed one another for
`break_after_s` (`alerts.silent_recorder_break_s`, from the first of them to the last one's end). Shorter sound
inside the run (a dead microphone's click or crackle, a loose cable) neither ends it nor restarts its count: ending
the episode at the first window that was not quiet kept a clicking dead microphone from ever reaching 10 minutes, or
raised a new alert after every click. A failed window (status "error") says nothing about the sound: it neither
extends nor ends the run. A quiet window earlier than the run's start (the clock moved back, an older file) starts
the count again from it; the episode, fired or not, goes on.

`SilenceState` is what a restart must not forget (kept in the alert engine's `EngineState`): a recorder silent since
before the restart fires on time, and one that already fired does not fire again.
"""

from __future__ import annotations

from dataclasses import dataclass

from soundmond.data import WindowResult


@dataclass(frozen=True)
class SilenceState:
    quiet_since_s: float | None = None  # start of the first window of the current quiet run (None: not quiet)
    fired: bool = False  # this episode's RECORDER_SILENT was raised
    sound_since_s: float | None = None  # start of the sound inside the run (windows not quiet), None: none since


class SilenceWatch:
    """Follows the quiet runs of one source. Not thread-safe: the alert engine's owner is its owner."""

    def __init__(self, silent_after_s: float, state: SilenceState | None = None, break_after_s: float = 60.0) -> None:
        if silent_after_s <= 0:
            raise ValueError(f"silent_after_s must be positive seconds, e.g. 600, not {silent_after_s}")
        if break_after_s <= 0:
            raise ValueError(f"break_after_s must be positive seconds, e.g. 60, not {break_after_s}")
        self.silent_after_s = silent_after_s
        self.break_after_s = break_after_s
        self.state = state or SilenceState()

    def observe(self, result: WindowResult) -> float | None:
        """One window; the length of the quiet run (s) when this window makes the episode fire, else None."""
        if result.status == "error":
            return None
        st = self.state
        end = result.start_unix_s + (result.end_s - result.start_s)
        if result.group is None or not result.group.quiet:
            if st.quiet_since_s is not None:
                sound_since = result.start_unix_s if st.sound_since_s is None else st.sound_since_s
                broken = end - sound_since >= self.break_after_s
                self.state = SilenceState() if broken else SilenceState(st.quiet_since_s, st.fired, sound_since)
            return None
        since = st.quiet_since_s
        if since is None or result.start_unix_s < since:
            since = result.start_unix_s
        quiet_s = end - since
        fires = not st.fired and quiet_s >= self.silent_after_s
        self.state = SilenceState(since, st.fired or fires)
        return quiet_s if fires else None
