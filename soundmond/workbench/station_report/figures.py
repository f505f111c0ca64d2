"""The figures of `soundmond report` (matplotlib, Agg, PNG): each takes the numbers of one query and writes one file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import numpy.typing as npt

from soundmond.workbench.report import plot_frequency
from soundmond.workbench.station_report.queries import SHARE_GROUPS, ReportData, Span

GROUP_COLOURS = {"natural": "#4c9a2a", "industrial": "#b5473a", "other": "#8a8fa0", "quiet": "#d8d8d8"}
SEVERITY_COLOURS = {"critical": "#c0001a", "warning": "#e08a00", "info": "#2a6fb5"}
DPI = 110


def _pyplot() -> Any:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bin_times(span: Span) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(span.start_unix_s + i * span.bin_s, dt.timezone.utc) for i in range(span.bins)]


def _time_axis(ax: Any, span: Span) -> None:
    import matplotlib.dates as mdates

    days = (span.end_unix_s - span.start_unix_s) / 86400
    if days <= 2:
        ax.xaxis.set_major_locator(mdates.HourLocator(byhour=range(0, 24, 2 if days <= 1 else 4), tz=dt.timezone.utc))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=dt.timezone.utc))
    else:
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(tz=dt.timezone.utc, maxticks=12))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d", tz=dt.timezone.utc))
    ax.set_xlim(dt.datetime.fromtimestamp(span.start_unix_s, dt.timezone.utc),
                dt.datetime.fromtimestamp(span.end_unix_s, dt.timezone.utc))
    ax.set_xlabel("time (UTC)")


def plot_shares(data: ReportData, path: Path) -> Path:
    """Stacked shares of the windows per bin (natural / industrial / other / quiet); bins with no analysed window are
    left blank; alerts as ticks above the bars, coloured by severity."""
    plt = _pyplot()
    span = data.span
    times = _bin_times(span)
    fig, (marks, ax) = plt.subplots(2, 1, figsize=(11, 4.2), sharex=True,
                                    gridspec_kw={"height_ratios": [1, 6], "hspace": 0.05})
    totals = np.sum([data.shares[g] for g in SHARE_GROUPS], axis=0).astype(float)
    # one step-wise band per group (four polygons, however many bins: fast on a month of 10-minute bins); a bin
    # without windows has every share 0, so it stays blank
    edges = [*times, times[-1] + dt.timedelta(seconds=span.bin_s)]
    bottom = np.zeros(span.bins + 1)
    for g in SHARE_GROUPS:
        share = np.divide(data.shares[g], totals, out=np.zeros(span.bins), where=totals > 0)
        top = bottom + np.append(share, share[-1])
        ax.fill_between(edges, bottom, top, step="post", color=GROUP_COLOURS[g], label=g, linewidth=0)
        bottom = top
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of windows")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=4, frameon=False)
    _time_axis(ax, span)
    marks.set_yticks([])
    marks.set_ylim(0, 1)
    for side in ("top", "right", "left"):
        marks.spines[side].set_visible(False)
    shown = False
    for severity in ("info", "warning", "critical"):
        counts = data.alert_bins.get(severity)
        if not counts:
            continue
        at = [times[i] for i, c in enumerate(counts) if c]
        marks.vlines(at, 0, 1, colors=SEVERITY_COLOURS[severity], linewidth=2, label=f"{severity} alert")
        shown = True
    if shown:
        marks.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    marks.set_title("alerts", loc="left", fontsize=9)
    fig.subplots_adjust(left=0.07, right=0.87, top=0.9, bottom=0.28)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_heatmap(data: ReportData, names: dict[str, str], path: Path) -> Path:
    """Detections per UTC hour (columns) and species (rows, most detected on top)."""
    plt = _pyplot()
    species = list(data.hour_counts)
    m = np.array([data.hour_counts[s] for s in species], dtype=float).reshape(len(species), 24)
    fig, ax = plt.subplots(figsize=(11, max(2.4, 0.32 * len(species) + 1.4)))
    image = ax.imshow(m, aspect="auto", cmap="YlGn", vmin=0, interpolation="nearest")
    ax.set_xticks(range(24), labels=[f"{h:02d}" for h in range(24)], fontsize=8)
    ax.set_yticks(range(len(species)), labels=[names.get(s, s) for s in species], fontsize=8)
    ax.set_xlabel("hour of day (UTC)")
    label = np.count_nonzero(m) <= 240  # numbers in the cells while they stay readable (and quick to draw)
    for i in range(len(species) if label else 0):
        for j in range(24):
            if m[i, j]:
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] > 0.6 * m.max() else "black")
    bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    bar.set_label("windows heard")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_species_frequency(data: ReportData, names: dict[str, str], path: Path, top: int = 30) -> Path:
    """Detections and distinct minutes per species, most detected first (the evaluate report's chart)."""
    rows = data.species[:top]
    return plot_frequency([names.get(s.scientific_name, s.scientific_name) for s in rows],
                          {"windows heard": [s.detections for s in rows],
                           "distinct minutes": [s.minutes for s in rows]},
                          path, title=f"species heard ({len(rows)} most detected)", xlabel="count")


def plot_health(data: ReportData, path: Path) -> Path:
    """Real-time factor per bin (line), failed windows (bars), bins without any window shaded, capture alerts
    as vertical lines."""
    plt = _pyplot()
    span = data.span
    times = _bin_times(span)
    width = span.bin_s / 86400
    fig, ax = plt.subplots(figsize=(11, 2.8))
    rtf = np.array([np.nan if v is None else v for v in data.rtf], dtype=float)
    stored = np.sum([data.shares[g] for g in SHARE_GROUPS], axis=0) + np.asarray(data.unanalysed)
    edges = [*times, times[-1] + dt.timedelta(seconds=span.bin_s)]
    empty = np.concatenate([[False], stored == 0, [False]]).astype(np.int8)
    starts, stops = np.flatnonzero(np.diff(empty) == 1), np.flatnonzero(np.diff(empty) == -1)
    for a, b in zip(starts, stops, strict=True):  # each run of empty bins exactly: [its first bin, the next bin)
        ax.axvspan(edges[a], edges[b], color="#eeeeee", linewidth=0)
    ax.plot(times, rtf, color="#2a6fb5", marker=".", markersize=3, linewidth=1, label="real-time factor")
    ax.axhline(1.0, color="#999999", linewidth=0.8, linestyle="--")
    top = max(1.2, float(np.nanmax(rtf)) * 1.15) if np.isfinite(rtf).any() else 1.2
    ax.set_ylim(0, top)
    ax.set_ylabel("compute s / audio s")
    failed = np.asarray(data.failed, dtype=float)
    if failed.any():
        twin = ax.twinx()
        twin.bar(times, failed, width=width, align="edge", color="#b5473a", alpha=0.6, label="failed windows")
        twin.set_ylabel("failed windows")
    for event in data.capture_events:
        at = dt.datetime.fromtimestamp(event.ts_unix_s, dt.timezone.utc)
        colour = "#4c9a2a" if event.type == "CAPTURE_RESTORED" else SEVERITY_COLOURS.get(event.severity, "#c0001a")
        ax.axvline(at, color=colour, linewidth=1.5)
    _time_axis(ax, span)
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_thumbnail(spectrogram: npt.NDArray[np.float64], duration_s: float, path: Path) -> Path:
    """A small mel spectrogram (no axes but time and a 0-16 kHz note) of one detection's window."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(2.6, 1.0))
    ax.imshow(spectrogram, origin="lower", aspect="auto", cmap="magma", extent=(0, duration_s, 0, 1))
    ax.set_yticks([])
    ax.tick_params(axis="x", labelsize=6, length=2, pad=1)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.98, bottom=0.2)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
