"""The config schema: defaults, the shipped config.yaml, and errors that name the key, the line and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from soundmond.cli import main
from soundmond.config import ConfigError, load_config, parse_config, read_secret
from soundmond.data import AlertType

REPO = Path(__file__).resolve().parent.parent


def test_shipped_config_is_valid_and_every_key_is_commented() -> None:
    loaded = load_config(REPO / "config.yaml")
    assert loaded.config.station.id == "station-1"
    assert loaded.resolve(Path("models/yamnet")) == REPO / "models" / "yamnet"
    for n, line in enumerate((REPO / "config.yaml").read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            assert "#" in line, f"config.yaml line {n} has no comment: {line!r}"


@pytest.mark.parametrize(
    ("yaml_text", "key", "line", "hint_part"),
    [
        ("models:\n  birds:\n    min_confidence: 3\n", "models.birds.min_confidence", 3, "allowed range"),
        ("station:\n  id: a\n  colour: red\n", "station.colour", 3, "spelling"),
        ("mqtt:\n  enabled: true\n  password: hunter2\n", "mqtt.password", 3, "password_env"),
        ("source:\n  type: mic\n  device: 2\n  gain: 3\n", "source.gain", 4, "spelling"),
        ("source:\n  type: speaker\n", "source.type", 2, "allowed values"),
        ("windows:\n  length_s: 5\n  hop_s: 6\n", "windows.hop_s", 3, "fix the value"),
        ("models:\n  tagger:\n    family: vggish\n", "models.tagger.family", 3, "allowed values"),
        ("station:\n  latitude: north\n", "station.latitude", 2, "right type"),
        ("aggregation:\n  spans_s: []\n", "aggregation.spans_s", 2, "fix the value"),
        ("source:\n  type: file\n  recursive: true\n", "source.recursive", 3, "spelling"),  # always recursive
        # cross-field rules: each refusal names its own key and line
        ("alerts:\n  frequency:\n    span_s: 172800\n", "alerts.frequency.span_s", 3, "aggregation.spans_s"),
        ("aggregation:\n  spans_s: [60, 600]\nalerts:\n  bird_activity_drop: {span_s: 3600}\n",
         "alerts.bird_activity_drop.span_s", 4, "shorten it"),
        ("alerts:\n  industrial_rise:\n    baseline_days: 2\n    min_baseline_days: 3\n",
         "alerts.industrial_rise.min_baseline_days", 4, "at most baseline_days"),
        ("alerts:\n  disabled:\n    - low_confidence\n    - NOPE\n", "alerts.disabled.1", 4, "use one of RARE_SPECIES"),
    ],
)
def test_errors_name_key_line_and_fix(yaml_text: str, key: str, line: int, hint_part: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml_text, "test.yaml")
    problems = {p.key: p for p in info.value.problems}
    assert key in problems, [str(p) for p in info.value.problems]
    assert problems[key].line == line
    assert hint_part in problems[key].hint


def test_secret_value_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("mqtt:\n  password: hunter2\n")
    assert "hunter2" not in str(info.value)


def test_invalid_yaml_reports_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("station:\n  id: [unclosed\n")
    assert info.value.problems[0].key == "(yaml)"
    assert info.value.problems[0].line is not None


def test_check_config_cli_prints_problems_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("station:\n  id: ok\nmodels:\n  birds:\n    sensitivity: 9\n    bogus: 1\n")
    assert main(["check-config", str(bad)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert "models.birds.sensitivity: Input should be less than or equal to 1.5 (line 5) - " \
           "use a value within the allowed range" in out
    assert any(line.startswith("models.birds.bogus: ") and "(line 6)" in line for line in out)


def test_check_config_cli_ok(capsys: pytest.CaptureFixture[str]) -> None:
    """--quick: without the model folders (the shipped config's models/ may not be exported in this checkout;
    tests/test_check_config.py checks the full preflight on real model folders)."""
    assert main(["check-config", "--quick", str(REPO / "config.yaml")]) == 0
    assert capsys.readouterr().out == f"ok: {REPO / 'config.yaml'}\n"


def test_every_rule_span_too_long_is_listed_with_the_exact_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("aggregation:\n  spans_s: [60]\nalerts:\n  frequency:\n    span_s: 3600\n")
    assert [str(p) for p in info.value.problems] == [
        "alerts.frequency.span_s: 3600 s is longer than the longest aggregation span (60 s) (line 5) - add it to "
        "aggregation.spans_s or shorten it",
        # not in the file: the line of the nearest key that is
        "alerts.industrial_rise.span_s: 3600 s is longer than the longest aggregation span (60 s) (line 3) - add it "
        "to aggregation.spans_s or shorten it",
        "alerts.bird_activity_drop.span_s: 3600 s is longer than the longest aggregation span (60 s) (line 3) - add "
        "it to aggregation.spans_s or shorten it",
    ]


def test_alert_names_in_any_case_become_alert_types() -> None:
    config = parse_config("alerts:\n  disabled: [low_confidence, ' Capture_Lost ']\n")
    assert config.alerts.disabled == [AlertType.LOW_CONFIDENCE, AlertType.CAPTURE_LOST]


def test_the_loaded_config_knows_every_key_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("# comment\nalerts:\n  rare_species:\n    - Turdus merula\n    - Parus major\n")
    loaded = load_config(path)
    assert (loaded.line("alerts"), loaded.line("alerts.rare_species.1"), loaded.line("store.path")) == (2, 5, None)
    assert str(loaded.problem("alerts.rare_species.1", "unknown", "fix it")) == \
        "alerts.rare_species.1: unknown (line 5) - fix it"
    assert str(loaded.problem("store.path", "bad", "fix it")) == "store.path: bad - fix it"


def test_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert "cannot read" in str(info.value)


def test_secret_from_credential_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SM_PW", "from-env")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert read_secret("SM_PW", "mqtt_password") == "from-env"
    (tmp_path / "mqtt_password").write_text("from-cred\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_secret("SM_PW", "mqtt_password") == "from-cred"
    monkeypatch.delenv("SM_PW")
    assert read_secret("SM_PW", "other") is None


def test_help_shows_an_example() -> None:
    out = subprocess.run([sys.executable, "-m", "soundmond.cli", "check-config", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "example:" in out and "exit codes:" in out
