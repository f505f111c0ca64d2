"""docs/store.md describes the store the code makes: every table and every column of a freshly migrated store (the
real schema, all of `MIGRATIONS`) has its row in the doc, and the doc names no column the store does not have."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

from soundmond.config import StoreConfig
from soundmond.outputs.store import Store

DOC = Path(__file__).resolve().parent.parent / "docs" / "store.md"
SECTION = re.compile(r"^## `(\w+)`\s*$")
COLUMN_ROW = re.compile(r"^\| `(\w+)` \| (\w+)")


def documented() -> dict[str, dict[str, str]]:
    """table -> {column: declared type} from the doc's `## `table`` sections and their `| `column` | TYPE |` rows."""
    tables: dict[str, dict[str, str]] = {}
    current: str | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if m := SECTION.match(line):
            current = m.group(1)
            tables[current] = {}
        elif current is not None and (m := COLUMN_ROW.match(line)):
            tables[current][m.group(1)] = m.group(2)
    return tables


def real_schema(tmp_path: Path) -> dict[str, dict[str, str]]:
    db = tmp_path / "fresh.db"
    with Store(db, StoreConfig()):
        pass
    with closing(sqlite3.connect(db)) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return {t: {r[1]: r[2].upper() for r in conn.execute(f"PRAGMA table_info({t})")} for t in names}


def test_every_table_and_column_of_the_schema_is_documented(tmp_path: Path) -> None:
    schema, doc = real_schema(tmp_path), documented()
    assert set(doc) == set(schema), "docs/store.md needs a `## `table`` section per table, and only those"
    for table, columns in schema.items():
        missing = sorted(set(columns) - set(doc[table]))
        stale = sorted(set(doc[table]) - set(columns))
        assert not missing, f"docs/store.md: describe {table}.{', '.join(missing)} (a `| `column` | TYPE |` row)"
        assert not stale, f"docs/store.md: {table} has no column {', '.join(stale)}"
        for column, declared in columns.items():
            assert doc[table][column] == declared, f"docs/store.md: {table}.{column} is {declared}"


def test_the_parser_sees_the_doc() -> None:
    """The checks above are only as good as the parsing: the doc's tables and a few known rows are found."""
    doc = documented()
    assert {"windows", "detections", "alerts", "aggregates", "outbox", "counters", "meta", "engine_state",
            "replay_sources"} <= set(doc)
    assert doc["windows"]["group"] == "TEXT" and doc["windows"]["leq_db_spl"] == "REAL"
    assert doc["outbox"]["qos"] == "INTEGER" and len(doc["windows"]) >= 28
