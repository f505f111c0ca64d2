"""The `soundmond` dispatcher: building the parser and `--help` import no workbench module and none of the workbench's
libraries; a workbench command without them names the missing module and the extra to install (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from soundmond.cli import COMMANDS, main, missing_workbench_library
from soundmond.errors import EXIT_CODES_HELP, ExitCode

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("sklearn", "skops", "scipy", "matplotlib", "httpx", "torch", "tensorflow")

# Run in a clean interpreter: what `sys.modules` holds after the given statement.
PROBE = """
import json, sys
{statement}
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(statement: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(statement=statement)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1])), proc


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith("soundmond.workbench") or m.split(".")[0] in HEAVY)


def test_building_the_parser_imports_nothing_heavy() -> None:
    modules, _ = _modules_after("from soundmond.cli import build_parser\nbuild_parser()")
    assert "soundmond.cli" in modules
    assert _heavy(modules) == []
    assert not {spec.module for spec in COMMANDS.values()} & modules  # no command module either


def test_top_level_help_lists_every_command_and_imports_nothing_heavy() -> None:
    statement = ("from soundmond.cli import main\n"
                 "try:\n    main(['--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0\n")
    modules, proc = _modules_after(statement)
    assert _heavy(modules) == []
    for command in ("run", "analyze", "check-config", "devices", *COMMANDS):
        assert f"    {command}" in proc.stdout
    assert EXIT_CODES_HELP.splitlines()[1] in proc.stdout and "examples:" in proc.stdout


def test_a_command_help_imports_only_its_module(capsys: pytest.CaptureFixture[str]) -> None:
    statement = ("from soundmond.cli import main\n"
                 "try:\n    main(['evaluate', '--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0\n")
    modules, proc = _modules_after(statement)
    assert "soundmond.workbench.evaluate" in modules
    assert not {"soundmond.workbench.train_head", "soundmond.workbench.collect", "httpx"} & modules
    assert "--labels CSV" in proc.stdout and "examples:\n  soundmond evaluate" in proc.stdout
    assert EXIT_CODES_HELP in proc.stdout


def _hide(monkeypatch: pytest.MonkeyPatch, library: str) -> None:
    """Make `library` (and its submodules) fail to import, as if not installed, and the workbench modules be imported
    afresh; `monkeypatch` restores both after the test."""
    for name in [m for m in sys.modules if m.startswith("soundmond.workbench")]:
        monkeypatch.delitem(sys.modules, name)
    for name in [m for m in sys.modules if m == library or m.startswith(library + ".")] or [library]:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize(("command", "library", "named"), [
    ("train-head", "sklearn", "scikit-learn (module sklearn)"),
    ("evaluate", "matplotlib", "matplotlib"),
    ("collect", "httpx", "httpx"),
], ids=["train-head", "evaluate", "collect"])
def test_workbench_command_without_its_extra_exits_2(
    command: str, library: str, named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("file,group\nx.wav,natural\n")
    argv = {
        "train-head": ["train-head", "--labels", str(labels), "--out", str(tmp_path / "h.onnx")],
        "evaluate": ["evaluate", "--labels", str(labels), "--out", str(tmp_path / "report")],
        "collect": ["collect", "xeno-canto", "--species", "Turdus merula", "--out", str(tmp_path / "xc")],
    }[command]
    _hide(monkeypatch, library)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE == 2
    assert err.strip().splitlines() == [
        f"soundmond {command}: needs {named}, which is not installed: pip install 'soundmond[workbench]'"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]  # nothing written


def test_a_library_missing_at_run_time_is_reported_too(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """skops and onnx are imported only when a head is written: their absence is found while the command runs."""
    import soundmond.workbench.train_head as train_head

    def run(args: object) -> int:
        import skops.io  # noqa: F401  # what `save_head` does

        return 0

    monkeypatch.setitem(sys.modules, "skops", None)
    monkeypatch.setattr(train_head, "run_train_head", run)
    assert main(["train-head", "--labels", "l.csv", "--out", "h.onnx"]) == 2
    assert capsys.readouterr().err == (
        "soundmond train-head: needs skops, which is not installed: pip install 'soundmond[workbench]'\n")
    assert missing_workbench_library(ModuleNotFoundError("no", name="yaml")) is None  # not a workbench library
