"""`created_utc`, the one field of a head's metadata that differs between two trainings, follows SOURCE_DATE_EPOCH;
a bad value is refused before any training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from soundmond.head.meta import utc_now_iso

REPO = Path(__file__).resolve().parent.parent


def test_source_date_epoch_fixes_the_creation_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert utc_now_iso() == "2023-11-14T22:13:20+00:00"
    for bad in ("yesterday", "-5", "1e9", "99999999999999"):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", bad)
        with pytest.raises(ValueError, match=f"SOURCE_DATE_EPOCH='{bad}' is not a Unix time"):
            utc_now_iso()
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert utc_now_iso().endswith("+00:00") and utc_now_iso() != "2023-11-14T22:13:20+00:00"


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "soundmond.cli", "train-head", "--labels", "missing.csv", "--out", "h.onnx"],
    [sys.executable, str(REPO / "scripts" / "train_default_head.py"), "--out", "h.onnx"],
])
def test_a_bad_source_date_epoch_is_refused_before_training(tmp_path: Path, command: list[str]) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "SOURCE_DATE_EPOCH": "-5"}
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "SOURCE_DATE_EPOCH='-5' is not a Unix time" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written
