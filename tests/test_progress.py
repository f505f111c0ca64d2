"""Progress bars: drawn on stderr when it is a terminal (a pseudo-terminal here), absent when stderr is a pipe or
with --no-progress; for `analyze` on a folder and for a workbench command (`evaluate`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.terminal import run_with_tty_stderr

REPO = Path(__file__).resolve().parent.parent
BAR = "%|"
SOUNDMOND = [sys.executable, "-m", "soundmond.cli"]  # tqdm's percentage followed by the bar's left edge


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, yamnet_dir: Path, birdnet_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n  birds: {{path: {birdnet_dir}}}\n")
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, fixture_audio: Path) -> Path:
    root = tmp_path_factory.mktemp("rec")
    for name in ("whisp_field_engine.flac", "oss_birds_10s.flac"):
        (root / name).write_bytes((fixture_audio / name).read_bytes())
    return root


def test_analyze_on_a_terminal_shows_a_bar_with_files_and_audio_seconds(config: Path, folder: Path) -> None:
    code, shown = run_with_tty_stderr([*SOUNDMOND, "analyze", str(folder), "--config", str(config)])
    assert code == 0, shown[-3000:]
    assert BAR in shown and "\r" in shown
    assert "audio: 100%|" in shown and "files 2/2" in shown  # 15 s of audio in two files, all done
    assert " 15/15 s " in shown
    assert "start time from the file modification time" in shown or "INFO" in shown  # logs still get through


def test_no_progress_and_a_pipe_show_no_bar(config: Path, folder: Path) -> None:
    code, shown = run_with_tty_stderr([*SOUNDMOND, "analyze", str(folder), "--config", str(config), "--no-progress"])
    assert code == 0, shown[-3000:]
    assert BAR not in shown and "INFO" in shown
    piped = subprocess.run([sys.executable, "-m", "soundmond.cli", "analyze", str(folder), "--config", str(config)],
                           cwd=REPO, capture_output=True, text=True, timeout=240)
    assert piped.returncode == 0, piped.stderr[-3000:]
    assert BAR not in piped.stderr and "\r" not in piped.stderr and "INFO" in piped.stderr


def test_evaluate_bar_only_on_a_terminal(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path,
                                         fixture_audio: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("file,group\nwhisp_field_engine.flac,industrial\noss_birds_10s.flac,natural\n")
    args = ["evaluate", "--labels", str(labels), "--audio-root", str(fixture_audio), "--no-species",
            "--birdnet", str(birdnet_dir), "--tagger", str(yamnet_dir), "--out", str(tmp_path / "out")]
    code, shown = run_with_tty_stderr([*SOUNDMOND, *args])
    assert code == 0, shown[-3000:]
    assert "tagger + head: 100%|" in shown
    piped = subprocess.run([sys.executable, "-m", "soundmond.cli", *args], cwd=REPO, capture_output=True, text=True,
                           timeout=240)
    assert piped.returncode == 0, piped.stderr[-3000:]
    assert BAR not in piped.stderr and "\r" not in piped.stderr
