"""A large synthetic store for `soundmond report`'s scale test: `days` x 17,280 windows (5 s each, around the
clock), written straight into a store made by `Store` (its real schema), one transaction per day.

Each window gets a group by the hour (birds at dawn, traffic by day, quiet at night), one or two detections from a
pool of `species` names in daylight hours, and every six hours a CAPTURE_LOST / CAPTURE_RESTORED pair; sources are
`mic:synthetic` (nothing to read back). Deterministic (seeded)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

from soundmond.config import StoreConfig
from soundmond.outputs.store.database import Store
from soundmond.outputs.store.rows import ALERT_COLUMNS, DETECTION_COLUMNS, WINDOW_COLUMNS

WINDOWS_PER_DAY = 17_280
GROUPS = np.array(["natural", "industrial", "other", "quiet"])


def build(path: Path, days: int, start_unix_s: float, *, species: int = 60, seed: int = 7) -> int:
    """Write the store; returns the number of detection rows."""
    Store(path, StoreConfig()).close()  # the schema, migrated as the daemon makes it
    rng = np.random.default_rng(seed)
    names = [(f"Synthetica avis{i:02d}", f"Synthetic bird {i:02d}") for i in range(species)]
    conn = sqlite3.connect(path, isolation_level=None)
    detections = 0
    tagger_top = json.dumps([["Bird", 0.5]])
    for day in range(days):
        t0 = start_unix_s + day * 86400
        offsets = np.arange(WINDOWS_PER_DAY) * 5.0
        hours = (offsets // 3600).astype(int)
        weights = np.where(hours[:, None] < 5, [0.1, 0.05, 0.05, 0.8],
                           np.where(hours[:, None] < 9, [0.7, 0.2, 0.1, 0.0], [0.3, 0.5, 0.15, 0.05]))
        pick = (rng.random(WINDOWS_PER_DAY)[:, None] > np.cumsum(weights, axis=1)).sum(axis=1)
        groups = GROUPS[np.minimum(pick, 3)]
        compute = rng.uniform(40, 120, WINDOWS_PER_DAY)
        windows = []
        dets = []
        for i in range(WINDOWS_PER_DAY):
            wid = f"d{day}w{i}"
            t = t0 + offsets[i]
            windows.append((wid, "mic:synthetic", t, offsets[i], offsets[i] + 5.0, "ok", None, str(groups[i]),
                            0.3, 0.3, 0.4, tagger_top, 0.5, 0.4, -40.0, 0.0, float(compute[i]), t))
            if 4 <= hours[i] < 20 and groups[i] == "natural":
                for rank in range(1 + (i % 3 == 0)):
                    k = int(rng.integers(species))
                    dets.append((wid, rank, names[k][0], names[k][1], float(rng.uniform(0.3, 0.99)), None, t))
        alerts = []
        for h in (0, 6, 12, 18):
            lost = t0 + h * 3600 + 600
            alerts.append((f"lost-{day}-{h}", "CAPTURE_LOST", "capture", "critical", lost, "capture lost", "{}"))
            alerts.append((f"back-{day}-{h}", "CAPTURE_RESTORED", "capture", "info", lost + 300, "restored", "{}"))
        conn.execute("BEGIN")
        for table, columns, rows in (("windows", WINDOW_COLUMNS, windows), ("detections", DETECTION_COLUMNS, dets),
                                     ("alerts", ALERT_COLUMNS, alerts)):
            n = len(columns.split(","))  # columns added by later schemas (indices, chunk times) stay NULL here
            conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * n)})",
                             [tuple(r) + (None,) * (n - len(r)) for r in rows])
        conn.execute("COMMIT")
        detections += len(dets)
    conn.close()
    return detections
