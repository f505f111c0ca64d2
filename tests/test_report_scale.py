"""`soundmond report` on a month of windows (30 days x 17,280 5-s windows, tests/synthetic_store.py): the report is
made from SQL aggregates, so a month costs about the memory of a day (peak RSS measured with wait4)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.synthetic_store import WINDOWS_PER_DAY, build

REPO = Path(__file__).resolve().parent.parent
DAYS = 30


def report_rss_kb(*args: str) -> tuple[int, str]:
    """Run `soundmond report` in a fresh interpreter that prints its own peak RSS (VmHWM, KB) when
    done; its exit code must be 0. Returns (peak RSS in KB, the report's stderr)."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork + exec, so a child of a big pytest process would
    # report the parent's peak (seen in CI: 7.6 GB for a 147-MB report); VmHWM belongs to this process's memory only
    code = ("import re, sys; from soundmond.cli import main; rc = main(sys.argv[1:]); "
            "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1); "
            "print('RSS_KB', hwm, file=sys.stderr); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "report", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    return int(lines[-1].split()[1]), "\n".join(lines[:-1])


@pytest.mark.slow
def test_a_month_of_windows_costs_about_the_memory_of_a_day(tmp_path: Path) -> None:
    db = tmp_path / "month.db"
    start = dt.datetime(2026, 4, 1, tzinfo=dt.timezone.utc)
    detections = build(db, DAYS, start.timestamp())
    day_rss, _ = report_rss_kb("--store", str(db), "--day", "2026-04-15", "--out", str(tmp_path / "day"))
    month_rss, err = report_rss_kb("--store", str(db), "--since", "2026-04-01", "--until", "2026-05-01",
                                   "--out", str(tmp_path / "month"))
    month = json.loads((tmp_path / "month" / "report.json").read_text())
    assert month["windows"] == DAYS * WINDOWS_PER_DAY
    assert sum(s["detections"] for s in month["species"]) == detections
    assert month["bin_s"] == 1800 and len(month["rtf"]) == DAYS * 48  # bins widened to stay under 1500
    assert month["alert_counts"] == {"CAPTURE_LOST": 4 * DAYS, "CAPTURE_RESTORED": 4 * DAYS}
    print(f"peak RSS: one day {day_rss / 1024:.0f} MB, {DAYS} days {month_rss / 1024:.0f} MB; {err.strip()}")
    assert month_rss < day_rss + 80 * 1024, (day_rss, month_rss)  # 30 x the rows, not 30 x the memory
    assert month_rss < 400 * 1024
