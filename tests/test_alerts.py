"""Alert rules, hysteresis and cooldown, baselines and their not-ready period. Fake clock (plain floats), no sleeps."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from soundmond.config import AlertsConfig
from soundmond.data import Alert, AlertType, GroupPrediction, LabelScore, SpeciesScore, WindowResult
from soundmond.soundscape.aggregate import DAY_S, Aggregator
from soundmond.soundscape.alert_state import EngineState, KeyState
from soundmond.soundscape.alerts import SEVERITY, AlertEngine

T = 19675 * DAY_S + 8 * 3600  # 2023-11-14 08:00 UTC
SPANS = [60, 3600, 86400]
HOP = 30.0  # windows every 30 s keep the span tests small: 120 windows per hour

OWL = SpeciesScore("Bubo bubo", "Eurasian Eagle-Owl", 0.82)
BLACKBIRD = "Turdus merula"

PROBS = {
    "natural": {"natural": 0.8, "industrial": 0.1, "other": 0.1},
    "industrial": {"natural": 0.1, "industrial": 0.8, "other": 0.1},
}


def win(
    start: float,
    species: Sequence[SpeciesScore] = (),
    *,
    group: str | None = "natural",
    status: str = "ok",
    tagger_score: float = 0.9,
    bird_score: float | None = None,
) -> WindowResult:
    """A WindowResult for the window starting at `start` (id w<start>)."""
    return WindowResult(
        window_id=f"w{start:.0f}",
        source="mic:test",
        start_unix_s=float(start),
        start_s=0.0,
        end_s=5.0,
        group=None if group is None else GroupPrediction(group, dict(PROBS[group])),  # type: ignore[arg-type]
        tagger_top=(LabelScore("Wind", tagger_score),),
        tagger_top_score=tagger_score,
        species=tuple(species),
        bird_top_score=bird_score if bird_score is not None else max((s.confidence for s in species), default=0.05),
        rms_dbfs=-40.0,
        clipped_fraction=0.0,
        compute_ms=10.0,
        status=status,  # type: ignore[arg-type]
    )


def sp(name: str, confidence: float = 0.8, occurrence: float | None = None, common: str = "") -> SpeciesScore:
    return SpeciesScore(name, common or name.split()[0], confidence, occurrence)


def engine(**config: Any) -> AlertEngine:
    """The engine with `config`; UNKNOWN_SOUND's head guard off unless given (the windows here carry a head at 0.8:
    the rule tables drive UNKNOWN_SOUND by the models' scores; the guard has its own test)."""
    return AlertEngine(AlertsConfig.model_validate({"unknown_sound_head_below": None, **config}), SPANS)


UNKNOWN: dict[str, Any] = {"tagger_score": 0.1, "bird_score": 0.1}  # a window no model recognises
KNOWN: dict[str, Any] = {"tagger_score": 0.9}

# --- per-window rules ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "species", "lookup", "keys"),
    [
        pytest.param({"rare_species": ["bubo BUBO"]}, [OWL], None, ["RARE_SPECIES:Bubo bubo"], id="listed-scientific"),
        pytest.param({"rare_species": [" eurasian eagle-owl"]}, [OWL], None, ["RARE_SPECIES:Bubo bubo"],
                     id="listed-common-name"),
        pytest.param({}, [sp("Turdus merula", occurrence=0.005)], None, ["RARE_SPECIES:Turdus merula"],
                     id="occurrence-below"),
        pytest.param({}, [sp("Turdus merula", occurrence=0.5)], None, [], id="occurrence-common"),
        pytest.param({}, [sp("Turdus merula")], None, [], id="occurrence-unknown"),
        pytest.param({}, [sp("Turdus merula")], {"Turdus merula": 0.001}, ["RARE_SPECIES:Turdus merula"],
                     id="occurrence-from-lookup"),
        pytest.param({}, [sp("Turdus merula", occurrence=0.5)], {"Turdus merula": 0.001}, [],
                     id="own-occurrence-wins-over-lookup"),
        pytest.param({"rare_occurrence_below": None}, [sp("Turdus merula", occurrence=0.001)], None, [],
                     id="occurrence-rule-off"),
        pytest.param({"rare_species": ["Bubo bubo"]}, [OWL, sp("Crex crex", occurrence=0.0)], None,
                     ["RARE_SPECIES:Bubo bubo", "RARE_SPECIES:Crex crex"], id="two-rare-two-keys"),
        pytest.param({"rare_species": ["Bubo bubo"], "disabled": ["rare_species"]}, [OWL], None, [],
                     id="disabled"),
    ],
)
def test_rare_species(
    config: dict[str, Any], species: list[SpeciesScore], lookup: dict[str, float] | None, keys: list[str]
) -> None:
    alerts = engine(**config).on_window(win(T, species), T + 5, occurrence=None if lookup is None else lookup.get)
    rare = [a for a in alerts if a.type == "RARE_SPECIES"]
    assert sorted(a.key for a in rare) == keys
    for a in rare:
        assert a.severity == "warning"
        assert a.evidence["window_id"] == f"w{T:.0f}"
        assert a.message.startswith("Rare species: ")


def test_rare_species_message_reads_well() -> None:
    (alert,) = engine(rare_species=["Bubo bubo"]).on_window(win(T, [OWL]), T + 5)
    assert alert.message == "Rare species: Bubo bubo (Eurasian Eagle-Owl) at 0.82 in window w1699948.. " \
        "(on the rare-species list)"
    assert alert.evidence["confidence"] == pytest.approx(0.82)


@pytest.mark.parametrize(
    ("window", "fires"),
    [
        pytest.param(win(T, [sp("Turdus merula", 0.3)]), True, id="uncertain-species"),
        pytest.param(win(T, [sp("Turdus merula", 0.3), sp("Erithacus rubecula", 0.6)]), False,
                     id="best-species-is-confident"),
        pytest.param(win(T, [sp("Turdus merula", 0.5)]), False, id="at-threshold-is-confident"),
        pytest.param(win(T, []), False, id="no-species"),
    ],
)
def test_low_confidence(window: WindowResult, fires: bool) -> None:
    alerts = [a for a in engine().on_window(window, T + 5) if a.type == "LOW_CONFIDENCE"]
    assert len(alerts) == int(fires)
    if fires:
        assert alerts[0].key == "LOW_CONFIDENCE"
        assert alerts[0].severity == "info"
        assert "Uncertain identification: Turdus merula" in alerts[0].message


def test_unknown_sound_needs_an_unsure_head_too() -> None:
    """A window no label reaches 0.3 in but the head calls industrial at 0.9 has been recognised (a chainsaw, a DCASE
    machine: YAMNet's mean-pooled labels stay low while the ontology sums are clear); at 0.5 it has not; with the
    guard off (null) the models' scores alone decide."""
    def head_at(p: float) -> WindowResult:
        w = win(T, tagger_score=0.2, bird_score=0.1, group="industrial")
        return dataclasses.replace(w, group=GroupPrediction("industrial", {"natural": (1 - p) / 2,
                                                                           "industrial": p, "other": (1 - p) / 2}))
    guarded = AlertsConfig().unknown_sound_head_below
    assert guarded == 0.6  # the default
    assert [a.type for a in engine(unknown_sound_head_below=guarded).on_window(head_at(0.9), T + 5)] == []
    fired = engine(unknown_sound_head_below=guarded).on_window(head_at(0.5), T + 5)
    assert [a.type for a in fired] == ["UNKNOWN_SOUND"]
    assert fired[0].evidence["head_probability"] == pytest.approx(0.5)
    assert fired[0].evidence["unknown_sound_head_below"] == 0.6
    off = engine(unknown_sound_head_below=None)
    assert [a.type for a in off.on_window(head_at(0.9), T + 5)] == ["UNKNOWN_SOUND"]


@pytest.mark.parametrize(
    ("window", "fires"),
    [
        pytest.param(win(T, tagger_score=0.2, bird_score=0.1), True, id="nothing-recognised"),
        pytest.param(win(T, tagger_score=0.3, bird_score=0.1), False, id="tagger-at-threshold"),
        pytest.param(win(T, tagger_score=0.1, bird_score=0.4), False, id="bird-model-recognises"),
        pytest.param(win(T, group=None, status="skipped_quiet", tagger_score=0.0, bird_score=0.0), False,
                     id="skipped-quiet"),
        pytest.param(win(T, group=None, status="error", tagger_score=0.0, bird_score=0.0), False, id="failed"),
    ],
)
def test_unknown_sound(window: WindowResult, fires: bool) -> None:
    alerts = engine().on_window(window, T + 5)
    assert [a.type for a in alerts] == (["UNKNOWN_SOUND"] if fires else [])
    if fires:
        assert alerts[0].evidence["tagger_top_score"] == pytest.approx(0.2)
        assert "Unidentified sound in window" in alerts[0].message


# --- hysteresis and cooldown -------------------------------------------------------------------------------------


def held(start: float, end: float, holds: bool, step: float = 5.0) -> list[tuple[float, bool]]:
    """Observations every `step` s in [start, end): the condition holds (True) or not."""
    n = int((end - start) / step)
    return [(start + i * step, holds) for i in range(n)]


HYSTERESIS_CASES = [
        pytest.param({}, held(0, 3600, True), [0], id="held-an-hour-one-alert"),
        pytest.param({}, held(0, 300, True) + held(300, 1500, False) + held(4000, 4100, True), [0, 4000],
                     id="cleared-and-cooldown-passed-fires-again"),
        pytest.param({}, held(0, 5, True) + held(5, 1000, False) + held(1200, 5000, True), [0],
                     id="new-episode-inside-cooldown-held-silently"),
        pytest.param({}, held(0, 5, True) + held(5, 1000, False) + held(1200, 5000, True)
                     + held(5000, 5600, False) + held(5600, 5700, True), [0, 5600],
                     id="held-episode-clears-then-fires"),
        pytest.param({}, [(t, (t % 1000) >= 100) for t, _ in held(0, 7200, True)], [100],
                     id="short-gaps-never-clear-past-cooldown"),
        pytest.param({}, held(0, 100, True) + held(100, 695, False) + held(4000, 4100, True), [0, 4000],
                     id="last-seen-false-then-gap-counts-as-false"),
        pytest.param({}, held(0, 100, True) + held(4000, 4100, True), [0], id="last-seen-true-then-gap-still-held"),
        pytest.param({}, held(0, 100, True) + held(100, 695, False) + held(695, 4100, True), [0],
                     id="false-for-less-than-clear-after"),
        pytest.param({"cooldown_s": 0, "clear_after_s": 0}, [(0, True), (5, False), (10, True), (15, True)],
                     [0, 10], id="no-cooldown-no-clear-delay"),
        pytest.param({"cooldown_s": 100, "clear_after_s": 0}, [(0, True), (5, False), (10, True), (200, False),
                                                              (205, True)], [0, 205], id="cooldown-only"),
        pytest.param({"disabled": ["UNKNOWN_SOUND"]}, held(0, 3600, True), [], id="disabled-never-fires"),
]


@pytest.mark.parametrize(("config", "observations", "fired_at"), HYSTERESIS_CASES)
def test_hysteresis_and_cooldown(
    config: dict[str, Any], observations: list[tuple[float, bool]], fired_at: list[float]
) -> None:
    e = engine(**config)  # defaults: cooldown 3600 s, clear after 600 s
    fired = []
    for t, holds in observations:
        for a in e.on_window(win(T + t, **(UNKNOWN if holds else KNOWN)), T + t):
            fired.append(a.ts_unix_s - T)
    assert fired == fired_at


def test_keys_are_independent() -> None:
    e = engine(rare_species=["Bubo bubo", "Crex crex"])
    first = e.on_window(win(T, [OWL]), T)
    second = e.on_window(win(T + 5, [OWL, sp("Crex crex")]), T + 5)
    assert [a.key for a in first] == ["RARE_SPECIES:Bubo bubo"]
    assert [a.key for a in second] == ["RARE_SPECIES:Crex crex"]
    assert e.active_keys() == ["RARE_SPECIES:Bubo bubo", "RARE_SPECIES:Crex crex"]


# --- a restart remembers (state -> JSON -> a new engine) --------------------------------------------------------------


def restarted(e: AlertEngine, now: float, **config: Any) -> AlertEngine:
    """A new engine (same config unless `config` is given) that took over `e`'s state through JSON, as the daemon's
    store holds it."""
    data = json.loads(json.dumps(e.state(now).to_dict()))
    state, unknown = EngineState.from_dict(data)
    assert unknown == []
    fresh = engine(**(config or e.config.model_dump()))
    fresh.load_state(state, now)
    return fresh


@pytest.mark.parametrize("case", [p.id for p in HYSTERESIS_CASES])
def test_a_restart_before_every_observation_changes_nothing(case: str) -> None:
    """The hysteresis table again, with the engine replaced by a restored one before every observation: the same
    alerts fire at the same times as in one uninterrupted run."""
    (param,) = [p for p in HYSTERESIS_CASES if p.id == case]
    config, observations, fired_at = param.values
    e = engine(**config)
    fired = []
    for t, holds in observations:
        e = restarted(e, T + t)
        for a in e.on_window(win(T + t, **(UNKNOWN if holds else KNOWN)), T + t):
            fired.append(a.ts_unix_s - T)
    assert fired == fired_at


@pytest.mark.parametrize(
    ("before", "down_until", "after", "fired_after"),
    [
        pytest.param(held(0, 100, True), 420, held(420, 500, True), [], id="restart-7-min-later-inside-cooldown"),
        pytest.param(held(0, 100, True), 4000, held(4000, 4100, True), [],
                     id="active-condition-not-forgotten-past-cooldown"),
        pytest.param(held(0, 100, True) + held(100, 800, False), 900, held(900, 1000, True), [],
                     id="cleared-then-new-episode-inside-cooldown-held"),
        pytest.param(held(0, 100, True) + held(100, 800, False), 4000, held(4000, 4100, True), [4000],
                     id="cleared-and-cooldown-passed-fires-again"),
        pytest.param(held(0, 100, True) + held(100, 400, False), 4000, held(4000, 4100, True), [4000],
                     id="seen-false-before-the-restart-clears-over-the-downtime"),
        pytest.param(held(0, 100, False), 200, held(200, 300, True), [200], id="never-fired-fires-after-restart"),
    ],
)
def test_a_restart_within_the_cooldown_does_not_raise_again(
    before: list[tuple[float, bool]], down_until: float, after: list[tuple[float, bool]], fired_after: list[float]
) -> None:
    e = engine()  # cooldown 3600 s, clear after 600 s
    for t, holds in before:
        e.on_window(win(T + t, **(UNKNOWN if holds else KNOWN)), T + t)
    e = restarted(e, T + before[-1][0])
    fired = []
    for t, holds in after:
        for a in e.on_window(win(T + t, **(UNKNOWN if holds else KNOWN)), T + t):
            fired.append(a.ts_unix_s - T)
    assert fired == fired_after
    if before[0][1] and down_until < 3600:  # the contrast: an engine without the memory raises it again
        assert engine().on_window(win(T + after[0][0], **UNKNOWN), T + after[0][0]) != []


def test_state_round_trips_through_json() -> None:
    e = engine(rare_species=["Bubo bubo"])
    e.on_window(win(T, [OWL], **UNKNOWN), T)
    e.on_window(win(T + 5, [OWL], **KNOWN), T + 5)  # UNKNOWN_SOUND seen false: false_since set
    e.external("CAPTURE_LOST", f"CAPTURE:{e.next_episode('CAPTURE')}:lost", "critical", "lost", None, T + 6)
    state = e.state(T + 10)
    assert {k.key: (k.active, k.false_since_s, k.last_fired_s) for k in state.keys} == {
        "CAPTURE:1:lost": (False, None, T + 6),
        "RARE_SPECIES:Bubo bubo": (True, None, T),
        "UNKNOWN_SOUND": (True, T + 5, T),
    }
    text = json.dumps(state.to_dict())
    assert EngineState.from_dict(json.loads(text)) == (state, [])


def test_episode_numbers_go_on_after_a_restart() -> None:
    e = engine()
    key = f"CAPTURE:{e.next_episode('CAPTURE')}:lost"
    assert e.external("CAPTURE_LOST", key, "critical", "lost", None, T) is not None
    e = restarted(e, T + 60)
    assert e.external("CAPTURE_LOST", key, "critical", "lost again", None, T + 60) is None  # its cooldown holds
    assert (e.episode("CAPTURE"), e.next_episode("CAPTURE")) == (1, 2)  # a new loss is a new key: it fires
    assert e.external("CAPTURE_LOST", "CAPTURE:2:lost", "critical", "lost", None, T + 70) is not None


@pytest.mark.parametrize(
    ("saved_config", "config", "kept"),
    [
        pytest.param({"rare_species": ["Bubo bubo"]}, {"rare_species": ["Bubo bubo"], "disabled": ["RARE_SPECIES"]},
                     ["UNKNOWN_SOUND"], id="type-now-disabled"),
        pytest.param({"rare_species": ["Bubo bubo"]}, {"rare_species": ["Bubo bubo"], "cooldown_s": 60,
                                                       "clear_after_s": 0}, ["RARE_SPECIES:Bubo bubo", "UNKNOWN_SOUND"],
                     id="shorter-cooldown-still-active"),
    ],
)
def test_a_state_from_another_configuration(saved_config: dict[str, Any], config: dict[str, Any], kept: list[str],
                                            caplog: pytest.LogCaptureFixture) -> None:
    e = engine(**saved_config)
    e.on_window(win(T, [OWL], **UNKNOWN), T)
    with caplog.at_level(logging.INFO, logger="soundmond.soundscape.alerts"):
        fresh = restarted(e, T + 60, **config)
    assert fresh.active_keys() == kept
    if len(kept) < 2:
        assert "dropped: RARE_SPECIES:Bubo bubo" in caplog.text


def test_span_rule_keys_of_another_span_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    state = EngineState(T, (KeyState("HIGH_FREQUENCY:Turdus merula:3600", AlertType.HIGH_FREQUENCY, True, None, T),
                            KeyState("HIGH_FREQUENCY:Turdus merula:1800", AlertType.HIGH_FREQUENCY, True, None, T)))
    e = engine(frequency={"span_s": 1800})
    with caplog.at_level(logging.INFO, logger="soundmond.soundscape.alerts"):
        e.load_state(state, T + 10)
    assert e.active_keys() == ["HIGH_FREQUENCY:Turdus merula:1800"]
    assert "HIGH_FREQUENCY:Turdus merula:3600" in caplog.text


def test_unknown_alert_types_are_left_out_and_named() -> None:
    data = engine().state(T).to_dict()
    data["keys"] = [{"key": "OWL_PARTY", "type": "OWL_PARTY", "active": True, "false_since_s": None,
                     "last_fired_s": T},
                    {"key": "UNKNOWN_SOUND", "type": "UNKNOWN_SOUND", "active": True, "false_since_s": None,
                     "last_fired_s": T}]
    state, unknown = EngineState.from_dict(data)
    assert unknown == ["OWL_PARTY"] and [k.key for k in state.keys] == ["UNKNOWN_SOUND"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param({"version": 99}, "state version 99", id="other-version"),
        pytest.param({"saved_unix_s": "yesterday"}, "saved_unix_s", id="saved-not-a-number"),
        pytest.param({"keys": {}}, "'keys' is not a list", id="keys-not-a-list"),
        pytest.param({"keys": [{"key": "UNKNOWN_SOUND", "type": "UNKNOWN_SOUND", "active": "yes"}]}, "keys[0]",
                     id="active-not-a-bool"),
        pytest.param({"keys": [{"key": "UNKNOWN_SOUND", "type": "UNKNOWN_SOUND", "active": True,
                                "last_fired_s": float("nan")}]}, "keys[0].last_fired_s", id="nan-time"),
        pytest.param({"episodes": {"CAPTURE": -1}}, "'episodes'", id="negative-episode"),
    ],
)
def test_a_damaged_state_is_refused_whole(change: dict[str, Any], problem: str) -> None:
    data = {**engine().state(T).to_dict(), **change}
    with pytest.raises(ValueError, match=re.escape(problem)):
        EngineState.from_dict(data)


def test_a_state_saved_in_the_future_is_taken_as_now() -> None:
    """The clock moved back an hour: the cooldown runs from the restart, not from an hour ahead."""
    e = engine()
    e.on_window(win(T + 3600, **UNKNOWN), T + 3600)
    e.on_window(win(T + 3605, **KNOWN), T + 3605)
    fresh = engine()
    fresh.load_state(e.state(T + 3605), T)
    assert fresh.on_window(win(T + 700, **KNOWN), T + 700) == []  # cleared: false since T, for 700 s > 600 s
    assert fresh.on_window(win(T + 3500, **UNKNOWN), T + 3500) == []  # inside the cooldown counted from T
    fresh.on_window(win(T + 3550, **KNOWN), T + 3550)
    assert len(fresh.on_window(win(T + 4200, **UNKNOWN), T + 4200)) == 1  # cooldown from T has passed


# --- external events ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "calls", "fired_at"),
    [
        pytest.param({}, [0, 10, 3599, 3600], [0, 3600], id="cooldown"),
        pytest.param({"cooldown_s": 0}, [0, 10], [0, 10], id="no-cooldown"),
        pytest.param({"disabled": ["capture_lost"]}, [0, 4000], [], id="disabled"),
    ],
)
def test_external_goes_through_the_same_bookkeeping(
    config: dict[str, Any], calls: list[float], fired_at: list[float]
) -> None:
    e = engine(**config)
    fired = []
    for t in calls:
        a = e.external("CAPTURE_LOST", "CAPTURE_LOST:mic", SEVERITY["CAPTURE_LOST"], "Microphone lost",
                       {"device": "hw:1"}, T + t)
        if a is not None:
            assert (a.severity, a.evidence, a.message) == ("critical", {"device": "hw:1"}, "Microphone lost")
            fired.append(a.ts_unix_s - T)
    assert fired == fired_at
    if not config:
        other = e.external("FALLING_BEHIND", "FALLING_BEHIND", "warning", "Behind by 60 s", None, T + 10)
        assert other is not None  # another key is not held by CAPTURE_LOST's cooldown


# --- span rules against a real Aggregator ---------------------------------------------------------------------------


def hour(
    end: float, *, species: dict[str, int] | None = None, industrial: int = 0, windows: int = 120
) -> list[WindowResult]:
    """`windows` windows every HOP s ending at `end`; species[name] of them (the first ones) carry that species,
    the first `industrial` of them are industrial."""
    out = []
    for i in range(windows):
        start = end - 3600 + i * HOP
        names = [name for name, n in (species or {}).items() if i < n]
        group = "industrial" if i < industrial else "natural"
        out.append(win(start, [sp(n) for n in names], group=group))
    return out


def station(previous: Sequence[dict[str, Any]], current: dict[str, Any], now: float = T) -> Aggregator:
    """An aggregator with the hour before `now` on each previous day (d = 1 first) and today."""
    agg = Aggregator(SPANS)
    results: list[WindowResult] = []
    for d, spec in reversed(list(enumerate(previous, start=1))):
        results += hour(now - d * DAY_S, **spec)
    results += hour(now, **current)
    for r in results:
        agg.add(r)
    return agg


def bird(n: int) -> dict[str, Any]:
    return {"species": {BLACKBIRD: n}}


SPAN_CASES = [
    # HIGH_FREQUENCY: count > mean + 3 * max(std, 1)
    pytest.param({}, [bird(10), bird(12), bird(11), bird(9)], bird(30), ["HIGH_FREQUENCY:Turdus merula:3600"],
                 id="high-far-above"),
    pytest.param({}, [bird(10), bird(12), bird(11), bird(9)], bird(14), [], id="high-within-3-std"),
    pytest.param({}, [bird(0)] * 3, bird(4), ["HIGH_FREQUENCY:Turdus merula:3600"], id="high-new-species"),
    pytest.param({}, [bird(5)] * 3, bird(8), [], id="high-constant-baseline-std-floor"),
    pytest.param({}, [bird(5)] * 3, bird(9), ["HIGH_FREQUENCY:Turdus merula:3600"], id="high-constant-baseline-far"),
    pytest.param({}, [bird(10)] * 2, bird(60), [], id="high-not-ready-two-days"),
    pytest.param({}, [bird(10), {"windows": 0}, bird(10), bird(10)], bird(60),
                 ["HIGH_FREQUENCY:Turdus merula:3600"], id="high-unrecorded-day-skipped"),
    pytest.param({}, [bird(10), {"windows": 60, **bird(0)}, bird(10)], bird(60), [],
                 id="high-half-recorded-day-not-counted"),
    pytest.param({"disabled": ["HIGH_FREQUENCY"]}, [bird(10)] * 3, bird(60), [], id="high-disabled"),
    # LOW_FREQUENCY: count < mean - 3 * max(std, 1), baseline mean >= 5, complete span
    pytest.param({"disabled": ["BIRD_ACTIVITY_DROP"]}, [bird(20)] * 3, bird(5), ["LOW_FREQUENCY:Turdus merula:3600"],
                 id="low-far-below"),
    pytest.param({}, [bird(20)] * 3, bird(5), ["BIRD_ACTIVITY_DROP:3600", "LOW_FREQUENCY:Turdus merula:3600"],
                 id="low-and-bird-drop-together"),
    pytest.param({}, [bird(20)] * 3, bird(18), [], id="low-within"),
    pytest.param({}, [bird(4)] * 3, bird(0), [], id="low-baseline-too-small"),
    pytest.param({}, [bird(20)] * 3, {"windows": 60}, [], id="low-current-span-incomplete"),
    # INDUSTRIAL_RISE: share > baseline mean + 0.2, >= 30 windows with a group
    pytest.param({}, [{"industrial": 12}] * 3, {"industrial": 60}, ["INDUSTRIAL_RISE:3600"], id="industrial-rise"),
    pytest.param({}, [{"industrial": 12}] * 3, {"industrial": 34}, [], id="industrial-within-margin"),
    pytest.param({"industrial_rise": {"min_windows": 200}}, [{"industrial": 12}] * 3, {"industrial": 60}, [],
                 id="industrial-too-few-windows"),
    pytest.param({}, [{"industrial": 12}] * 2, {"industrial": 120}, [], id="industrial-not-ready"),
    # BIRD_ACTIVITY_DROP: bird windows < 0.5 x baseline mean (>= 10), complete span
    pytest.param({"frequency": {"k": 100}}, [bird(60)] * 3, bird(20), ["BIRD_ACTIVITY_DROP:3600"],
                 id="bird-drop"),
    pytest.param({"frequency": {"k": 100}}, [bird(60)] * 3, bird(40), [], id="bird-no-drop"),
    pytest.param({"disabled": ["LOW_FREQUENCY"]}, [bird(8)] * 3, bird(0), [], id="bird-baseline-too-small"),
    pytest.param({"frequency": {"k": 100}}, [bird(60)] * 3, {"windows": 30}, [], id="bird-span-incomplete"),
]


@pytest.mark.parametrize(("config", "previous", "current", "keys"), SPAN_CASES)
def test_span_rules(config: dict[str, Any], previous: list[dict[str, Any]], current: dict[str, Any],
                    keys: list[str]) -> None:
    alerts = engine(**config).on_tick(station(previous, current), T)
    assert sorted(a.key for a in alerts) == keys
    for a in alerts:
        assert a.severity == SEVERITY[a.type]
        assert a.message


def test_high_frequency_evidence_and_message() -> None:
    agg = station([bird(10), bird(12), bird(11), bird(9)], bird(30))
    (alert,) = engine().on_tick(agg, T)
    ev = alert.evidence
    assert ev["count"] == 30
    assert ev["baseline_counts"] == [10, 12, 11, 9]  # previous day first
    assert ev["baseline_mean"] == pytest.approx(10.5)
    assert len(ev["examples"]) == 5  # type: ignore[arg-type]
    assert alert.message.startswith("Unusually many Turdus merula (Turdus): 30 windows in the last 60 min")


def test_industrial_rise_evidence() -> None:
    (alert,) = engine().on_tick(station([{"industrial": 12}] * 3, {"industrial": 60}), T)
    assert alert.evidence["share"] == pytest.approx(0.5)
    assert alert.evidence["baseline_shares"] == pytest.approx([0.1, 0.1, 0.1])
    assert alert.evidence["windows_with_group"] == 120
    assert "Industrial sound up: 50% of 120 windows in the last 60 min, usually 10%" in alert.message


@pytest.mark.parametrize(
    ("config", "previous", "ready", "days_available"),
    [
        pytest.param({}, [], False, 0.04, id="first-hour"),
        pytest.param({}, [bird(10)] * 2, False, 2.04, id="two-days"),
        pytest.param({}, [bird(10)] * 3, True, 3.04, id="three-days"),
        pytest.param({"frequency": {"min_baseline_days": 5}}, [bird(10)] * 3, False, 3.04, id="needs-five"),
        pytest.param({"disabled": ["HIGH_FREQUENCY", "LOW_FREQUENCY", "INDUSTRIAL_RISE", "BIRD_ACTIVITY_DROP"]},
                     [], True, 0.04, id="all-disabled"),
    ],
)
def test_baseline_status(config: dict[str, Any], previous: list[dict[str, Any]], ready: bool,
                         days_available: float) -> None:
    e = engine(**config)
    agg = station(previous, bird(60))
    status = e.baseline_status(agg, T)
    assert status.ready is ready
    assert status.days_available == pytest.approx(days_available, abs=0.01)
    if not ready:
        assert "Learning" in status.message
        assert e.on_tick(agg, T) == []  # a 60-window blackbird hour would fire with a baseline of 10


def test_span_rule_held_for_an_hour_fires_once_then_again_after_clearing() -> None:
    """Ticks every minute for 6 h: a blackbird burst (hour 0-1), quiet (1-4 h), another burst (from 4 h)."""
    agg = Aggregator(SPANS)
    for d in (1, 2, 3):  # previous days: no blackbirds from 07:00 to 14:00
        for r in (win(t) for t in _times(T - d * DAY_S - 3600, T - d * DAY_S + 6 * 3600)):
            agg.add(r)
    for r in (win(t, [sp(BLACKBIRD)]) for t in _times(T - 3600, T)):
        agg.add(r)
    e = engine()
    fired: list[Alert] = []
    for minute in range(6 * 60):
        now = T + minute * 60
        burst = minute < 60 or minute >= 240
        for t in _times(now, now + 60):
            agg.add(win(t, [sp(BLACKBIRD)] if burst else []))
        fired += e.on_tick(agg, now + 60)
    assert [(a.key, (a.ts_unix_s - T) // 60) for a in fired] == [
        ("HIGH_FREQUENCY:Turdus merula:3600", 1),  # first tick
        ("HIGH_FREQUENCY:Turdus merula:3600", 242),  # cleared in the quiet hours; 4 windows > 0 + 3 x 1 again
    ]


def _times(start: float, end: float) -> Iterable[float]:
    t = start
    while t < end:
        yield t
        t += HOP


def test_rule_span_longer_than_aggregation_is_refused() -> None:
    with pytest.raises(ValueError, match="longest aggregation span"):
        AlertEngine(AlertsConfig(), [60])


@pytest.mark.parametrize(
    ("confidence", "printed"),
    [
        pytest.param(0.4976, "at 0.498 in window", id="rounds-up-to-the-threshold-so-more-digits"),
        pytest.param(0.41, "at 0.41 in window", id="two-digits-when-they-read-below"),
        pytest.param(0.49996, "at 0.49996 in window", id="as-many-digits-as-it-takes"),
    ],
)
def test_low_confidence_message_never_reads_as_the_threshold(confidence: float, printed: str) -> None:
    """The message is "<value> ... (below 0.50)": a value printed as 0.50 would contradict it."""
    alerts = [a for a in engine().on_window(win(T, [sp("Turdus merula", confidence)]), T + 5)
              if a.type == "LOW_CONFIDENCE"]
    assert len(alerts) == 1
    assert printed in alerts[0].message
    assert alerts[0].message.endswith("(below 0.50)")
