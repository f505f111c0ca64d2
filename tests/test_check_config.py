"""`check-config` is the preflight: what `run` would refuse, it refuses first, with the same line and exit code.

Every case starts from the shipped config.yaml (real model folders from $SOUNDMOND_TEST_MODELS or the export cache,
the store in tmp_path), changes one value in place (so every other line keeps its number and comment), and asserts
the exact `key.path: problem (line N) - how to fix` line, whose line number the test finds in the text itself.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path

import onnx
import pytest
from heads import bird_head

from soundmond.cli import main
from soundmond.data import AlertType
from soundmond.errors import ExitCode
from soundmond.head.loader import Head
from soundmond.head.meta import HeadError, default_head_path
from soundmond.head.onnx import CHECKSUM_KEY, CHECKSUM_PLACEHOLDER, META_KEY, seal

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config.yaml"
STORE_HINT = "create it, or give store.path a folder the service user may write"


def line_of(text: str, key: str) -> int:
    """1-based line of a dotted key in block-style YAML: each part is searched below the previous one."""
    lines = text.splitlines()
    start = 0
    for part in key.split("."):
        start = next(i for i in range(start, len(lines)) if re.match(rf"\s*{re.escape(part)}:", lines[i]))
    return start + 1


def set_key(text: str, key: str, value: str) -> str:
    """The YAML text with `key` set to `value` on its own line, the comment kept."""
    n = line_of(text, key) - 1
    lines = text.splitlines()
    match = re.match(r"(\s*[\w.]+:)\s*[^#]*?(\s+#.*)?$", lines[n])
    assert match, lines[n]
    lines[n] = f"{match.group(1)} {value}{match.group(2) or ''}"
    return "\n".join(lines) + "\n"


class Station:
    """The shipped config.yaml pointed at real model folders, the test audio and a store in tmp_path."""

    def __init__(self, tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, fixture_audio: Path) -> None:
        self.tmp = tmp_path
        self.birdnet_dir = birdnet_dir
        text = SHIPPED.read_text()
        for key, value in (("models.tagger.path", yamnet_dir), ("models.birds.path", birdnet_dir),
                           ("store.path", tmp_path / "var" / "soundmond.db"), ("source.path", fixture_audio)):
            text = set_key(text, key, str(value))
        self.text = text
        self.path = tmp_path / "config.yaml"
        self.path.write_text(text)

    def set(self, key: str, value: object) -> int:
        """Set one key in the config file; returns its line."""
        self.text = set_key(self.text, key, str(value))
        self.path.write_text(self.text)
        return line_of(self.text, key)


@pytest.fixture
def station(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, fixture_audio: Path) -> Station:
    return Station(tmp_path, yamnet_dir, birdnet_dir, fixture_audio)


def check_config(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = main(["check-config", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def assert_refused(capsys: pytest.CaptureFixture[str], station: Station, line: str, code: ExitCode,
                   *, run: bool = False) -> None:
    """check-config prints `line` on stdout and exits `code`; with `run`, `soundmond run` refuses with the same line
    on stderr and the same code (before it loads any model)."""
    got, out, _ = check_config(capsys, str(station.path))
    assert (got, out) == (code, [line])
    if run:
        assert main(["run", "--config", str(station.path)]) == code
        err = capsys.readouterr().err.splitlines()
        assert line in err, err


def test_the_shipped_config_is_ok(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config(capsys, str(station.path)) == (ExitCode.OK, [f"ok: {station.path}"], "")


def test_a_missing_source_folder(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    missing = station.tmp / "recordings"
    n = station.set("source.path", missing)
    assert_refused(capsys, station, f"source.path: no such file or folder: {missing} (line {n}) - give source.path a "
                   "recording or a folder of recordings (relative to the config file's folder), or use "
                   "`run --source`", ExitCode.USAGE, run=True)


def test_a_missing_model_folder(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    missing = station.tmp / "models" / "birdnet"
    n = station.set("models.birds.path", missing)
    assert_refused(capsys, station, f"models.birds.path: {missing}: no such model folder (line {n}) - set "
                   "models.birds.path to a folder written by `python -m export birdnet`", ExitCode.MODELS, run=True)


def test_a_damaged_model_is_refused_and_quick_skips_the_models(
    station: Station, yamnet_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = station.tmp / "models" / "yamnet"
    shutil.copytree(yamnet_dir, folder)
    model = folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    n = station.set("models.tagger.path", folder)
    assert_refused(capsys, station, f"models.tagger.path: {folder}: model.onnx does not match the checksum in "
                   f"model.json (file changed or damaged) (line {n}) - re-export the model folder; never edit its "
                   "files by hand", ExitCode.MODELS)
    assert check_config(capsys, "--quick", str(station.path)) == (ExitCode.OK, [f"ok: {station.path}"], "")


def test_a_head_for_another_tagger(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped head with its meta changed to an AST tagger's (527 labels) and sealed again: a sound head, made
    for another tagger."""
    model = onnx.load(str(default_head_path("yamnet")))
    for prop in model.metadata_props:
        if prop.key == META_KEY:
            prop.value = json.dumps(json.loads(prop.value) | {"tagger_family": "ast", "tagger_label_count": 527})
        elif prop.key == CHECKSUM_KEY:
            prop.value = CHECKSUM_PLACEHOLDER
    head = station.tmp / "ast-head.onnx"
    head.write_bytes(seal(model.SerializeToString()))
    assert Head.load(head, tagger_family="ast", tagger_label_count=527).meta.tagger_family == "ast"
    with pytest.raises(HeadError, match="trained on 'ast' tagger outputs"):  # what `run` would meet loading it
        Head.load(head, tagger_family="yamnet", tagger_label_count=521)
    n = station.set("models.head.path", head)
    assert_refused(capsys, station, f"models.head.path: {head}: this head was trained on 'ast' tagger outputs, but "
                   f"models.tagger.family is 'yamnet' (line {n}) - leave models.head.path empty to use the head "
                   "shipped for 'yamnet', or train one for it", ExitCode.MODELS, run=True)


def test_an_unknown_rare_species(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    n = station.set("alerts.rare_species", "[Turdus merula, eurasian blackbird, Turdus merulla]")
    assert_refused(capsys, station, f"alerts.rare_species.2: unknown species 'Turdus merulla' (line {n}) - did you "
                   f"mean 'Turdus merula'? use scientific or common names as in {station.birdnet_dir / 'labels.txt'} "
                   "(case does not matter)", ExitCode.USAGE, run=True)
    # analyze refuses it too, with the same line, before it analyses anything
    assert main(["analyze", str(station.tmp), "--config", str(station.path)]) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert captured.out == "" and f"alerts.rare_species.2: unknown species 'Turdus merulla' (line {n})" in captured.err


def test_unknown_include_and_exclude_names(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    include = station.set("models.birds.include", "[Parus major, Dodo]")
    exclude = station.set("models.birds.exclude", "['Turdus merula_Eurasian Blackbird', Engine, Nightingale2]")
    code, out, _ = check_config(capsys, str(station.path))
    assert code == ExitCode.USAGE
    assert [line.split(" - ")[0] for line in out] == [
        f"models.birds.include.1: unknown species 'Dodo' (line {include})",
        f"models.birds.exclude.2: unknown species 'Nightingale2' (line {exclude})",
    ]


def test_an_unknown_alert_type(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    n = station.set("alerts.disabled", "[NOPE]")
    assert_refused(capsys, station, f"alerts.disabled.0: unknown alert type 'NOPE' (line {n}) - use one of "
                   f"{', '.join(AlertType.__members__)}", ExitCode.USAGE, run=True)


def test_an_unwritable_store_folder(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    """Tests run as root, where no mode bit stops a write: the store's parent is a regular file instead."""
    blocker = station.tmp / "var"
    blocker.write_text("a file where the store's folder should be\n")
    store = blocker / "db" / "soundmond.db"
    n = station.set("store.path", store)
    assert_refused(capsys, station, f"store.path: cannot create the folder {store.parent}: {blocker} is not a folder "
                   f"(line {n}) - give store.path a folder the service user may write (not under a file)",
                   ExitCode.FATAL, run=True)
    assert not (blocker / "db").exists()


def test_an_evidence_path_under_a_file(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = station.tmp / "clips"
    blocker.write_text("a file where the evidence folder should be\n")
    station.set("evidence.enabled", "true")
    n = station.set("evidence.path", blocker / "evidence")
    assert_refused(capsys, station, f"evidence.path: {blocker} is not a folder (line {n}) - give evidence.path a "
                   "folder the service user may write (not a file, not under one)", ExitCode.FATAL, run=True)


def test_a_store_path_that_is_a_folder(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    store = station.tmp / "store"
    store.mkdir()
    n = station.set("store.path", store)
    assert_refused(capsys, station, f"store.path: {store} exists and is not a file (line {n}) - give store.path the "
                   "path of the SQLite database file", ExitCode.FATAL)


def test_a_rule_span_longer_than_the_aggregation(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    n = station.set("alerts.frequency.span_s", 172800)
    assert_refused(capsys, station, f"alerts.frequency.span_s: 172800 s is longer than the longest aggregation span "
                   f"(86400 s) (line {n}) - add it to aggregation.spans_s or shorten it", ExitCode.USAGE, run=True)


def test_several_problems_in_the_order_run_meets_them(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    """Config (species), then models, then store, then source: the exit code is the first stage's."""
    station.set("source.path", station.tmp / "recordings")
    (station.tmp / "var").write_text("")
    station.set("store.path", station.tmp / "var" / "soundmond.db")
    code, out, _ = check_config(capsys, str(station.path))
    assert code == ExitCode.FATAL
    assert [line.split(":")[0] for line in out] == ["store.path", "source.path"]
    station.set("models.tagger.path", station.tmp / "nowhere")
    station.set("alerts.rare_species", "[Dodo]")
    code, out, _ = check_config(capsys, str(station.path))
    assert code == ExitCode.USAGE
    assert [line.split(":")[0] for line in out] == ["alerts.rare_species.0", "models.tagger.path", "store.path",
                                                    "source.path"]
    assert main(["run", "--config", str(station.path)]) == ExitCode.USAGE
    assert capsys.readouterr().err.splitlines()[-4:] == out


def test_a_missing_microphone_is_only_a_warning(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    """A USB microphone may appear after boot: `run` starts (and exits 4 while it is missing), check-config warns."""
    station.text = station.text.replace("  type: file ", "  type: mic  ", 1)
    station.text = re.sub(r"\n  path: .*\n(  .*\n)*?  realtime: .*\n", "\n  device: no-such-microphone-here\n",
                          station.text, count=1)
    station.path.write_text(station.text)
    n = line_of(station.text, "source.device")
    code, out, err = check_config(capsys, str(station.path))
    assert (code, out) == (ExitCode.OK, [f"ok: {station.path}"])
    warning = next(line for line in err.splitlines() if line.startswith("source."))
    assert warning.startswith("source.device: input device 'no-such-microphone-here' is not found right now (") \
        or warning.startswith("source.type: cannot look for the microphone: PortAudio is not available"), warning
    if warning.startswith("source.device"):
        assert f"(line {n}) - plug the microphone in, or set source.device from `soundmond devices`; " in warning


def test_run_with_source_does_not_check_the_configured_source(
    station: Station, fixture_audio: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --source` replays other recordings: a configured path that does not exist is no reason to refuse. The
    rest is still checked (here: a store folder that cannot be made), so nothing heavy runs in this test."""
    station.set("source.path", station.tmp / "recordings")
    (station.tmp / "var").write_text("")
    assert main(["run", "--config", str(station.path), "--source", str(fixture_audio)]) == ExitCode.FATAL
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err if line.startswith(("source.", "store."))] == ["store.path"]


def test_a_head_that_needs_birds_with_birds_off(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    """Birds off: the shipped tagger-only head is taken (ok); a configured head that needs BirdNET is refused."""
    station.set("models.birds.enabled", "false")
    station.set("models.birds.path", station.tmp / "no-birdnet-here")  # not read with birds off
    assert check_config(capsys, str(station.path)) == (ExitCode.OK, [f"ok: {station.path}"], "")
    head = bird_head(station.tmp / "birds.onnx")
    n = station.set("models.head.path", head)
    assert_refused(capsys, station, f"models.head.path: {head}: models.head.path names a head that needs BirdNET's "
                   "embedding (features 'probabilities+embedding+birdnet_embedding'), but models.birds.enabled is "
                   f"false (line {n}) - set models.birds.enabled: true, or leave models.head.path empty to use the "
                   "shipped tagger-only head (yamnet-tagger.onnx)", ExitCode.MODELS, run=True)


def test_a_metrics_address_run_cannot_listen_on(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    """`run` refuses a metrics.bind it cannot listen on (exit 2): check-config says so first, with the key and line;
    a port in use now (maybe this station's own daemon) is only a warning."""
    station.set("metrics.port", "9108")
    station.set("metrics.bind", "not-an-address")
    code, out, _ = check_config(capsys, str(station.path))
    assert code == ExitCode.USAGE
    assert len(out) == 1 and out[0].startswith("metrics.bind: 'not-an-address' is not an address") and " - " in out[0]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        station.set("metrics.bind", "127.0.0.1")
        station.set("metrics.port", str(busy.getsockname()[1]))
        code, out, err = check_config(capsys, str(station.path))
    assert code == ExitCode.OK and out == [f"ok: {station.path}"] and "is in use now" in err
