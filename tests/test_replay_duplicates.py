"""A file with the same bytes as an earlier one of the replay is skipped (it is the same recording), and said loudly:
a recorder writing digital silence writes byte-identical files, whose time is then not analysed."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundmond.capture.files import FileSource
from soundmond.config import StoreConfig
from soundmond.outputs.store import Store


def test_a_byte_identical_file_is_skipped_with_a_warning_naming_the_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    names = ["site_20240501_120000.wav", "site_20240501_120100.wav", "site_20240501_120200.wav"]
    for name in names[:2]:  # a dead microphone: two minutes of digital zeros, the same bytes
        sf.write(tmp_path / name, np.zeros(60 * 16000, np.int16), 16000, subtype="PCM_16")
    sf.write(tmp_path / names[2], (np.random.default_rng(0).standard_normal(60 * 16000) * 1000).astype(np.int16),
             16000, subtype="PCM_16")
    with Store(tmp_path / "s.db", StoreConfig()) as store:
        source = FileSource(sorted(tmp_path.glob("*.wav")), 5.0, 5.0, ledger=store)
        with caplog.at_level(logging.INFO, logger="soundmond.capture.files"):
            windows = list(source.windows(threading.Event()))
    assert len(windows) == 24 and {w.source for w in windows} == {str(tmp_path / names[0]), str(tmp_path / names[2])}
    assert source.report.duplicates == 1
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and names[1] in warned[0].getMessage() and names[0] in warned[0].getMessage()
    assert "digital silence" in warned[0].getMessage()
