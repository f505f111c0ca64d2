"""The one reader of labelled-audio CSVs (`labels.csv` of the corpus, of `soundmond collect`, the files given to
`train-head` and `evaluate`): a header row, one row per audio file, `file` relative to an audio root, and any of
`group` (natural / industrial / other), `category`, `species`, coordinates, grouping columns.

`read_label_rows` checks the header and numbers the rows (line 2 is the first); what a row must hold, and whether a
bad row is skipped or stops the command, is each command's rule (documented in its module)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from soundmond.errors import HintedError


class LabelsError(HintedError):
    """The labels file is missing or unusable as a whole."""


@dataclass(frozen=True)
class LabelRow:
    labels: Path  # the CSV it came from
    line: int  # 1-based line in the CSV (the header is line 1)
    file: str  # the `file` column, stripped ("" when empty)
    path: Path  # the audio file: the audio root / `file`
    group: str  # the `group` column, stripped ("" when empty)
    category: str  # the `category` column, stripped
    columns: Mapping[str, str]  # the whole row as read

    @property
    def where(self) -> str:
        """`labels.csv:LINE: FILE`, the prefix of every problem about this row."""
        return f"{self.labels}:{self.line}: {self.file or '(no file)'}"

    @property
    def audio_exists(self) -> bool:
        return bool(self.file) and self.path.is_file()


def read_label_rows(
    labels: Path, audio_root: Path, *, one_of: Sequence[str] = (), joiner: str = "or"
) -> list[LabelRow]:
    """Every row of `labels` (needs a `file` column and, when `one_of` is given, at least one of those columns)."""
    if labels.is_dir():
        columns = "a 'file' column" + (f" and a {f' {joiner} '.join(repr(c) for c in one_of)} column" if one_of else "")
        raise LabelsError(f"{labels} is a folder, not a labels file",
                          f"pass a labels CSV file (a header row with {columns}; one row per audio file)")
    if not labels.is_file():
        raise LabelsError(f"{labels}: no such labels file")
    try:
        with open(labels, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = set(reader.fieldnames or [])
            raw = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelsError(f"{labels}: cannot read ({exc})") from exc
    if "file" not in fields or (one_of and not fields & set(one_of)):
        wanted = "a 'file' column" + (f" and a {f' {joiner} '.join(repr(c) for c in one_of)} column" if one_of else "")
        raise LabelsError(f"{labels}: needs {wanted} (has {sorted(fields)})")
    rows = []
    for n, row in enumerate(raw, start=2):
        file = (row.get("file") or "").strip()
        rows.append(LabelRow(labels, n, file, audio_root / file, (row.get("group") or "").strip(),
                             (row.get("category") or "").strip(), row))
    return rows


__all__ = ["LabelRow", "LabelsError", "read_label_rows"]
