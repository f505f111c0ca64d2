"""Reports of `soundmond evaluate` and `soundmond train-head`: figures (matplotlib, Agg), Markdown, JSON, CSV, written
atomically (a report folder is built beside its destination and renamed into place, so a failed run leaves the
previous report, or nothing, never half a report)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import numpy.typing as npt

REPORT_MARKER = "report.json"  # every report folder (report, evaluate, train-head) holds one


def output_folder_problem(out: Path) -> str | None:
    """Why `out` must not be replaced by a report folder (`problem - how to fix`), or None: it may be missing, an
    empty folder, or an earlier report (it holds `report.json`). Anything else is the user's and is never deleted."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return None
    if not out.is_dir():
        return f"{out} exists and is not a folder: not replaced - give a new folder for the report"
    if any(out.iterdir()) and not (out / REPORT_MARKER).is_file():
        return (f"{out} is a folder that is not an earlier report (no {REPORT_MARKER}): its files are not replaced - "
                "give a new or empty folder, or an earlier report's")
    return None


class OutputFolderError(FileExistsError):
    """`atomic_dir` refused to replace something that is not an earlier report."""


@contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yields a temporary folder beside `out`; on success it replaces `out` (an old `out` is removed only then).
    `out` must be missing, an empty folder or an earlier report (`output_folder_problem`): `OutputFolderError`
    otherwise, before anything is written."""
    out = Path(out)
    if (problem := output_folder_problem(out)) is not None:
        raise OutputFolderError(problem)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _pyplot() -> Any:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(
    matrix: npt.ArrayLike,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: Path,
    *,
    title: str,
    xlabel: str = "predicted",
    ylabel: str = "true",
    normalise_rows: bool = False,
    unit: str = "count",
) -> Path:
    """A labelled confusion-matrix heat map (counts in the cells; colour by row share when `normalise_rows`)."""
    plt = _pyplot()
    m = np.asarray(matrix, dtype=float)
    n_rows, n_cols = m.shape
    shade = m / np.maximum(m.sum(axis=1, keepdims=True), 1) if normalise_rows else m
    longest = max((len(s) for s in [*row_labels, *col_labels]), default=5)
    cell = 0.42 if max(n_rows, n_cols) > 10 else 0.9
    width = max(5.5, n_cols * cell + longest * 0.09 + 2.0)
    height = max(4.5, n_rows * cell + longest * 0.09 + 1.6)
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(shade, cmap="Blues", aspect="auto", vmin=0)
    small = max(n_rows, n_cols) > 10
    font = 8 if small else 11
    rotate = small or max((len(s) for s in col_labels), default=0) * n_cols > 45
    for i in range(n_rows):
        for j in range(n_cols):
            if m[i, j]:
                dark = shade[i, j] > 0.55 * max(float(shade.max()), 1e-9)
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=font,
                        color="white" if dark else "black")
    ax.set_xticks(range(n_cols), labels=list(col_labels), rotation=50 if rotate else 0,
                  ha="right" if rotate else "center", rotation_mode="anchor", fontsize=font + 1)
    ax.set_yticks(range(n_rows), labels=list(row_labels), fontsize=font + 1)
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.set_title(textwrap.fill(title, width=int(width * 8)), fontsize=12)  # ~8 characters per inch at 12 pt
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("share of the true row" if normalise_rows else unit)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_frequency(
    names: Sequence[str],
    series: Mapping[str, Sequence[float]],
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str = "species",
) -> Path:
    """Horizontal grouped bars: one row per name (top to bottom as given), one bar per series."""
    plt = _pyplot()
    n = len(names)
    k = max(len(series), 1)
    longest = max((len(s) for s in names), default=5)
    fig, ax = plt.subplots(figsize=(max(8.0, 5.5 + longest * 0.09), max(3.5, (0.2 + 0.1 * k) * n + 1.6)))
    height = 0.8 / k
    y = np.arange(n)
    for i, (label, values) in enumerate(series.items()):
        ax.barh(y + (i - (k - 1) / 2) * height, list(values), height=height, label=label)
    ax.set_yticks(y, labels=list(names), fontsize=9 if n > 25 else 10)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.set_title(title, fontsize=12, pad=28 if k > 1 else 6)
    ax.xaxis.get_major_locator().set_params(integer=True)
    top = max((max(v, default=0) for v in series.values()), default=0)
    ax.set_xlim(0, max(1.0, float(top)) * 1.08)
    ax.grid(axis="x", alpha=0.3)
    if k > 1:
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=k, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


__all__ = ["atomic_dir", "markdown_table", "plot_confusion", "plot_frequency", "write_csv", "write_json"]
