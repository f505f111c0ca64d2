"""`soundmond run`'s exit codes, as the README's table says: 1 when some inputs could not be decoded (each named, the
rest analysed), 2 when the source path does not exist (the configured one: test_check_config.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import store_rows
from configs import daemon_config

from soundmond.cli import main
from soundmond.errors import ExitCode

REPO = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, source: Path | None = None) -> Path:
    return daemon_config(tmp_path, yamnet_dir, birdnet_dir,
                         f"source: {{type: file, path: {source}}}\n" if source is not None else "")


def run(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soundmond.cli", "run", "--config", str(cfg), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def recordings(tmp_path: Path, fixture_audio: Path) -> Path:
    """A folder with one recording that cannot be decoded and two that can (one 5-s window each)."""
    folder = tmp_path / "recordings"
    folder.mkdir()
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (folder / "empty.flac").write_bytes(b"")
    audio, rate = sf.read(fixture_audio / "whisp_field_horn.flac", dtype="float32")
    sf.write(folder / "horn.flac", audio, rate)
    sf.write(folder / "tone.wav", (0.3 * np.sin(np.arange(16000 * 5) * 0.3)).astype(np.float32), 16000)
    return folder


def test_a_missing_source_argument_is_refused_with_exit_2(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, yamnet_dir, birdnet_dir)
    missing = tmp_path / "nowhere"
    assert main(["run", "--config", str(cfg), "--source", str(missing)]) == ExitCode.USAGE
    err = capsys.readouterr().err.splitlines()
    assert f"--source: no such file or folder: {missing} - give --source a recording or a folder of recordings" in err
    assert not (tmp_path / "soundmond.db").exists()  # refused before anything was started


@pytest.mark.parametrize("how", ["--source", "source.path"])
def test_inputs_that_cannot_be_decoded_exit_1_and_the_rest_is_analysed(
    tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, recordings: Path, how: str
) -> None:
    if how == "--source":
        proc = run(write_config(tmp_path, yamnet_dir, birdnet_dir), "--source", str(recordings))
    else:
        proc = run(write_config(tmp_path, yamnet_dir, birdnet_dir, source=recordings))
    assert proc.returncode == ExitCode.PARTIAL, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    named = [line for line in proc.stderr.splitlines() if line.startswith("soundmond run: ")]
    assert named[:2] == [f"soundmond run: {recordings / 'broken.wav'}: " + named[0].split(": ", 2)[2],
                         f"soundmond run: {recordings / 'empty.flac'}: the file is empty (0 bytes)"]
    assert "cannot decode" in named[0]
    assert named[2] == "soundmond run: 2 input(s) could not be analysed; the rest was processed"
    stored = store_rows.windows(tmp_path / "soundmond.db")
    assert sorted(Path(w["source"]).name for w in stored) == ["horn.flac", "tone.wav"]


def test_a_clean_run_exits_0(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, recordings: Path) -> None:
    for bad in ("broken.wav", "empty.flac"):
        (recordings / bad).unlink()
    proc = run(write_config(tmp_path, yamnet_dir, birdnet_dir), "--source", str(recordings))
    assert proc.returncode == ExitCode.OK, proc.stderr[-3000:]
    assert not [line for line in proc.stderr.splitlines() if line.startswith("soundmond run: ")]
