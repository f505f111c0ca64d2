"""The local SQLite store: windows, detections, aggregates, alerts, the MQTT outbox, counters, stage states
(`engine_state`: what the alert engine remembers across restarts); retention.

One job per module, imported in this order (no circle):

    schema.py    tables, migrations, the version check, connections, transactions, the store's errors
    rows.py      stage dataclasses <-> rows: the outbox item and row, column tuples, results rebuilt from rows
    replays.py   the replay records (which recordings were analysed how far) and `--reanalyze`'s deletes
    evidence.py  the evidence clips' rows (what became of each clip) and the outbox rows announcing them
    database.py  `Store`: writes in one transaction, the outbox and its bound (`OUTBOX_POLICY`), retention, the reads
                 the daemon needs (`recent_results`, `load_state`, `outbox_pending`, `outbox_counts`)
    writer.py    `StoreWriter`: the thread that batches writes off the inference thread

Tests read the database with sqlite3 directly (tests/store_rows.py); the store has no read API for them.
"""

from soundmond.outputs.store.database import OUTBOX_POLICY, Store
from soundmond.outputs.store.evidence import EvidenceOutbox
from soundmond.outputs.store.rows import ALERT_KIND, OutboxItem, OutboxRow, SavedState
from soundmond.outputs.store.schema import (
    OUTBOX_DROPPED,
    OUTBOX_REFUSED,
    SCHEMA_VERSION,
    WRITER_DROPPED_OUTBOX,
    WRITER_DROPPED_WINDOWS,
    WRITER_REJECTED,
    StoreDataError,
    StoreError,
    StoreVersionError,
)
from soundmond.outputs.store.writer import StoreWriter

__all__ = [
    "ALERT_KIND",
    "EvidenceOutbox",
    "OUTBOX_DROPPED",
    "OUTBOX_POLICY",
    "OUTBOX_REFUSED",
    "SCHEMA_VERSION",
    "WRITER_DROPPED_OUTBOX",
    "WRITER_DROPPED_WINDOWS",
    "WRITER_REJECTED",
    "OutboxItem",
    "OutboxRow",
    "SavedState",
    "Store",
    "StoreDataError",
    "StoreError",
    "StoreVersionError",
    "StoreWriter",
]
