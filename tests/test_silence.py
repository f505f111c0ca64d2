"""RECORDER_SILENT: quiet runs measured in window times, once per episode, across restarts. Fake clock (plain floats):
`now` is the window's end, as `soundmond analyze` passes it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from soundmond.config import AlertsConfig
from soundmond.data import AlertType, GroupPrediction, LabelScore, WindowResult
from soundmond.soundscape.alert_state import EngineState
from soundmond.soundscape.alerts import AlertEngine
from soundmond.soundscape.silence import SilenceState, SilenceWatch

T = 1_700_000_000.0
HOP = 5.0

# what a window is: quiet (the analyzer's quiet floor), loud (a head's group), gate (skipped by min_rms_dbfs above the
# floor: no group, not quiet), error (a model failed: says nothing about the sound)
KINDS: dict[str, dict[str, Any]] = {
    "quiet": {"group": GroupPrediction("quiet", {}), "status": "skipped_quiet", "rms_dbfs": -92.0},
    "loud": {"group": GroupPrediction("natural", {"natural": 0.9, "industrial": 0.05, "other": 0.05}),
             "status": "ok", "rms_dbfs": -35.0},
    "gate": {"group": None, "status": "skipped_quiet", "rms_dbfs": -65.0},
    "error": {"group": None, "status": "error", "rms_dbfs": -35.0},
}


def win(t: float, kind: str) -> WindowResult:
    k = KINDS[kind]
    return WindowResult(window_id=f"w{t:.0f}", source="site.flac", start_unix_s=T + t, start_s=t, end_s=t + HOP,
                        group=k["group"], tagger_top=(LabelScore("Wind", 0.9),) if kind == "loud" else (),
                        tagger_top_score=0.9 if kind == "loud" else 0.0, species=(), bird_top_score=0.0,
                        rms_dbfs=k["rms_dbfs"], clipped_fraction=0.0, compute_ms=1.0, status=k["status"])


def run(start: float, end: float, kind: str) -> list[tuple[float, str]]:
    """Windows starting at start, start + HOP, ... < end."""
    out, t = [], start
    while t < end:
        out.append((t, kind))
        t += HOP
    return out


def engine(**config: Any) -> AlertEngine:
    return AlertEngine(AlertsConfig.model_validate({"silent_recorder_s": 60, **config}), [60, 3600, 86400])


def feed(e: AlertEngine, windows: list[tuple[float, str]], restart: bool = False) -> list[tuple[float, str]]:
    """(window start, key) of every RECORDER_SILENT raised; `restart`: a new engine through JSON before each window."""
    fired = []
    for t, kind in windows:
        if restart:
            state, unknown = EngineState.from_dict(json.loads(json.dumps(e.state(T + t).to_dict())))
            assert unknown == []
            e = engine(**e.config.model_dump())
            e.load_state(state, T + t)
        for a in e.on_window(win(t, kind), T + t + HOP):
            if a.type is AlertType.RECORDER_SILENT:
                fired.append((t, a.key))
    return fired


def clicking(start: float, end: float, every_s: float) -> list[tuple[float, str]]:
    """A dead microphone that clicks: quiet windows, one loud window every `every_s` seconds."""
    return [(t, "loud" if (t - start) % every_s == every_s - HOP else "quiet") for t, _ in run(start, end, "quiet")]


CASES = [
    pytest.param(run(0, 600, "quiet"), [(55, "RECORDER_SILENT:1")], id="ten-minutes-quiet-fires-once-at-60-s"),
    pytest.param(run(0, 50, "quiet"), [], id="shorter-than-the-threshold"),
    pytest.param(run(0, 100, "quiet") + run(100, 160, "loud") + run(160, 300, "quiet"),
                 [(55, "RECORDER_SILENT:1"), (215, "RECORDER_SILENT:2")], id="a-minute-of-sound-ends-the-episode"),
    pytest.param(run(0, 100, "quiet") + run(100, 155, "loud") + run(155, 300, "quiet"), [(55, "RECORDER_SILENT:1")],
                 id="55-s-of-sound-do-not-end-it"),
    pytest.param(clicking(0, 600, 30), [(60, "RECORDER_SILENT:1")], id="a-clicking-dead-microphone-fires-once"),
    pytest.param(run(0, 50, "quiet") + run(50, 110, "loud") + run(110, 300, "quiet"), [(165, "RECORDER_SILENT:1")],
                 id="a-minute-of-sound-before-the-threshold-restarts-the-count"),
    pytest.param(run(0, 50, "quiet") + [(50, "loud")] + run(55, 200, "quiet"), [(55, "RECORDER_SILENT:1")],
                 id="a-click-before-the-threshold-does-not-restart-it"),
    pytest.param(run(0, 30, "quiet") + [(30, "error")] + run(35, 200, "quiet"), [(55, "RECORDER_SILENT:1")],
                 id="a-failed-window-neither-extends-nor-ends-it"),
    pytest.param(run(0, 50, "quiet") + run(50, 110, "gate") + run(110, 300, "quiet"), [(165, "RECORDER_SILENT:1")],
                 id="gate-skipped-windows-above-the-floor-are-not-quiet"),
    pytest.param(run(0, 600, "loud"), [], id="never-quiet"),
    # quiet windows are below any real recording's level (README "Quiet windows"): half of them is a failing recorder
    # or a gain set far too low, which the alert's advice covers
    pytest.param(clicking(0, 600, 10), [(60, "RECORDER_SILENT:1")], id="quiet-every-other-window-fires-once"),
    pytest.param(run(100, 150, "quiet") + run(0, 100, "quiet"), [(55, "RECORDER_SILENT:1")],
                 id="an-earlier-window-starts-the-count-again"),
]


@pytest.mark.parametrize(("windows", "fired"), CASES)
def test_recorder_silent(windows: list[tuple[float, str]], fired: list[tuple[float, str]]) -> None:
    assert feed(engine(), windows) == fired


@pytest.mark.parametrize(("windows", "fired"), CASES)
def test_a_restart_before_every_window_changes_nothing(windows: list[tuple[float, str]],
                                                       fired: list[tuple[float, str]]) -> None:
    assert feed(engine(), windows, restart=True) == fired


def test_the_alert_says_how_long_and_since_when() -> None:
    e = engine()
    alerts = [a for t, kind in run(0, 60, "quiet") for a in e.on_window(win(t, kind), T + t + HOP)]
    (a,) = alerts
    assert (a.type, a.severity, a.key, a.ts_unix_s) == (AlertType.RECORDER_SILENT, "warning", "RECORDER_SILENT:1",
                                                        T + 60)
    assert a.evidence["quiet_since_unix_s"] == T and a.evidence["quiet_s"] == 60.0
    assert a.evidence["window_id"] == "w55" and "silent for 60 s" in a.message


def test_disabled_raises_nothing_but_follows_the_run() -> None:
    e = engine(disabled=["RECORDER_SILENT"])
    assert feed(e, run(0, 100, "quiet")) == []
    assert e.state(T + 100).silence == SilenceState(T, True)


def test_a_restart_inside_a_quiet_run_fires_on_time_and_one_after_firing_does_not_fire_again() -> None:
    e = engine()
    feed(e, run(0, 40, "quiet"))
    saved = e.state(T + 40)
    assert saved.silence == SilenceState(T, False)
    fresh = engine()
    fresh.load_state(EngineState.from_dict(json.loads(json.dumps(saved.to_dict())))[0], T + 40)
    assert feed(fresh, run(40, 120, "quiet")) == [(55, "RECORDER_SILENT:1")]
    again = engine()
    again.load_state(fresh.state(T + 120), T + 120)
    assert feed(again, run(120, 300, "quiet")) == []
    assert feed(engine(), run(120, 300, "quiet")) == [(175, "RECORDER_SILENT:1")]  # the contrast: no memory


def test_a_state_saved_before_silence_existed_reads_as_no_quiet_run() -> None:
    data = engine().state(T).to_dict()
    del data["silence"]
    state, _ = EngineState.from_dict(data)
    assert state.silence == SilenceState()


@pytest.mark.parametrize("silence", [{"fired": "yes"}, {"quiet_since_s": "soon"}, []])
def test_a_damaged_silence_state_is_refused(silence: object) -> None:
    with pytest.raises(ValueError, match="silence"):
        EngineState.from_dict({**engine().state(T).to_dict(), "silence": silence})


def test_the_watch_refuses_a_non_positive_threshold() -> None:
    with pytest.raises(ValueError, match="silent_after_s"):
        SilenceWatch(0)
    with pytest.raises(ValueError, match="silent_recorder_s"):
        AlertsConfig.model_validate({"silent_recorder_s": 0})
