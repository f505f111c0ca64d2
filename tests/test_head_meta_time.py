"""`created_utc`, the one field of a head's metadata that differs between two trainings, follows SOURCE_DATE_EPOCH."""

from __future__ import annotations

import pytest

from soundmond.head.meta import utc_now_iso


def test_source_date_epoch_fixes_the_creation_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert utc_now_iso() == "2023-11-14T22:13:20+00:00"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH='yesterday' is not a Unix time"):
        utc_now_iso()
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert utc_now_iso().endswith("+00:00") and utc_now_iso() != "2023-11-14T22:13:20+00:00"
