"""The HTML page of `soundmond report`: one static file, inline CSS, no script, images beside it (relative links)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from html import escape
from pathlib import Path

from soundmond import __version__
from soundmond.workbench.station_report.queries import SHARE_GROUPS, ReportData

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
p.what { color: #444; max-width: 60em; } p.note { color: #8a5a00; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border-bottom: 1px solid #ddd; padding: 3px 8px; }
th { text-align: left; background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.figure { max-width: 100%; border: 1px solid #eee; } img.thumb { height: 56px; display: block; }
.summary span { margin-right: 1.5em; } em.sci { color: #555; }
"""


@dataclass(frozen=True)
class SpeciesMedia:
    """What the species table shows beside a species: its thumbnail and clip (file names in the report folder),
    or why there is none."""

    thumbnail: str | None
    clip: str | None
    note: str


def utc(ts: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime(fmt)


def _figure(title: str, src: str, alt: str, what: str, fig_id: str) -> str:
    return (f'<section id="{fig_id}"><h2>{escape(title)}</h2><p class="what">{escape(what)}</p>'
            f'<img class="figure" src="{escape(src)}" alt="{escape(alt)}"></section>')


def render(data: ReportData, *, store: Path, station: str | None, models: dict[str, str | None],
           figures: dict[str, str], media: dict[str, SpeciesMedia], clips_note: str, notes: list[str]) -> str:
    span = data.span
    title = f"soundmond report: {escape(station or 'station not recorded')}"
    day = utc(span.start_unix_s, "%Y-%m-%d")
    if span.end_unix_s - span.start_unix_s > 86400:
        day += " to " + utc(span.end_unix_s - 1, "%Y-%m-%d")
    analysed = sum(sum(data.shares[g]) for g in SHARE_GROUPS)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title} {day}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>{title}</h1><p>{day} (UTC, {utc(span.start_unix_s)} to {utc(span.end_unix_s)}), "
             f"from <code>{escape(str(store))}</code>; made {utc(dt.datetime.now(dt.timezone.utc).timestamp())} "
             f"by soundmond {escape(__version__)}.</p>",
             "<p class='summary'>"
             f"<span>windows stored: <b id='n-windows'>{data.windows}</b></span>"
             f"<span>analysed: <b>{analysed}</b></span>"
             f"<span>species: <b id='n-species'>{len(data.species)}</b></span>"
             f"<span>alerts: <b id='n-alerts'>{sum(data.alert_counts.values())}</b></span></p>"]
    parts += [f"<p class='note'>{escape(n)}</p>" for n in notes]
    parts.append(_figure(
        "Soundscape over the day", figures["shares"], "stacked shares of natural, industrial, other and quiet windows",
        f"Each bar is {span.bin_s // 60} minutes: the share of its analysed windows the head called natural, "
        "industrial or other, and the windows too quiet to classify. A blank bar means no window was analysed then. "
        "The ticks above are the alerts raised in that bar, coloured by severity.", "fig-shares"))
    parts.append(_alerts_table(data))
    parts.append(_species_table(data, media, clips_note))
    if data.hour_counts:
        parts.append(_figure(
            "Species by hour", figures["heatmap"], "hour by species heat map",
            "Windows in which each species was heard (rows, most heard on top), per hour of the day (UTC), summed over "
            "the range: when in the day each species sings.", "fig-heatmap"))
        parts.append(_figure(
            "Species frequency", figures["frequency"], "species frequency bar chart",
            "How often each species was heard: the windows it was found in, and the distinct minutes with at least "
            "one (a long song counts once per minute).", "fig-frequency"))
    parts.append(_figure(
        "Capture and health", figures["health"], "real-time factor and capture events",
        "The real-time factor (compute seconds per second of audio; below the dashed line at 1 the station keeps "
        "up), windows that failed, grey where no window was stored (no audio, or the station was off), and "
        "vertical lines at capture alerts (red lost, green restored).", "fig-health"))
    parts.append(_health_table(data))
    parts.append(_indices_table(data))
    parts.append(_models_table(models))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _alerts_table(data: ReportData) -> str:
    if not data.alert_counts:
        return "<section id='alerts'><h2>Alerts</h2><p class='what'>No alert was raised in this range.</p></section>"
    counts = ", ".join(f"{escape(t)} {n}" for t, n in data.alert_counts.items())
    rows = "".join(f"<tr><td>{utc(a.ts_unix_s)}</td><td>{escape(a.type)}</td><td>{escape(a.severity)}</td>"
                   f"<td>{escape(a.message)}</td></tr>" for a in data.alerts)
    shown = len(data.alerts)
    total = sum(data.alert_counts.values())
    more = f" (the first {shown} of {total})" if shown < total else ""
    return (f"<section id='alerts'><h2>Alerts</h2><p class='what'>By type: {counts}. Each alert below{more}, "
            "in time order.</p><table><tr><th>time (UTC)</th><th>type</th><th>severity</th><th>message</th></tr>"
            f"{rows}</table></section>")


def _species_table(data: ReportData, media: dict[str, SpeciesMedia], clips_note: str) -> str:
    if not data.species:
        return ("<section id='species'><h2>Species</h2><p class='what'>No species was detected in this range."
                "</p></section>")
    rows = []
    for s in data.species:
        m = media.get(s.scientific_name)
        thumb = (f"<img class='thumb' src='{escape(m.thumbnail)}' alt='mel spectrogram of the best detection'>"
                 if m and m.thumbnail else f"<small>{escape(m.note if m else 'not drawn')}</small>")
        clip = f"<audio controls preload='none' src='{escape(m.clip)}'></audio>" if m and m.clip else "&ndash;"
        conf = "" if s.max_confidence is None else f"{s.max_confidence:.2f}"
        rows.append(f"<tr class='species-row'><td>{escape(s.common_name)}<br><em class='sci'>"
                    f"{escape(s.scientific_name)}</em></td><td class='num'>{s.detections}</td>"
                    f"<td class='num'>{s.minutes}</td><td>{utc(s.first_unix_s, '%m-%d %H:%M')}</td>"
                    f"<td>{utc(s.last_unix_s, '%m-%d %H:%M')}</td><td class='num'>{conf}</td>"
                    f"<td>{thumb}</td><td>{clip}</td></tr>")
    return ("<section id='species'><h2>Species</h2><p class='what'>Every species detected, most detected first: "
            "the windows it was heard in (the store keeps one row per window and species; `analyze --summary` and the "
            "soundscape message count each 3-s BirdNET chunk instead, so their 'detections' are higher), distinct "
            "minutes, when it was first and last heard (UTC), its "
            "highest confidence, and a mel spectrogram (0 to 16 kHz) of the window of that most confident "
            f"detection, read back from its recording where that is still on this machine. Audio: {clips_note}."
            "</p><table><tr><th>species</th><th>windows</th><th>minutes</th><th>first heard</th>"
            "<th>last heard</th><th>max confidence</th><th>best detection</th><th>audio</th></tr>"
            + "".join(rows) + "</table></section>")


def _indices_table(data: ReportData) -> str:
    head = "<section id='indices'><h2>Acoustic indices</h2>"
    if not data.indices:
        return (head + "<p class='what'>No window in this range has acoustic indices (indices.enabled was off, or "
                "the store was written before soundmond computed them).</p></section>")
    rows = "".join(f"<tr><td>{escape(name)}</td><td class='num'>{n}</td><td class='num'>{mean:.3f}</td>"
                   f"<td class='num'>{low:.3f}</td><td class='num'>{high:.3f}</td></tr>"
                   for name, (n, mean, low, high) in data.indices.items())
    return (head + "<p class='what'>Each window's acoustic indices (scikit-maad's definitions, computed on the "
            "sensor): NDSI from -1 (anthropophony) to 1 (biophony), ACI, ADI, AEI, BI, spectral (hf), temporal (ht) "
            "and total (h) entropy, and the level Leq (dBFS, dB SPL with source.calibration_db), over the windows of "
            "this range that have them (Leq here is the plain mean of the windows' levels, not an energy mean).</p>"
            "<table><tr><th>index</th><th>windows</th><th>mean</th><th>min</th><th>max</th></tr>"
            f"{rows}</table></section>")


def _health_table(data: ReportData) -> str:
    rtfs = [v for v in data.rtf if v is not None]
    empty = sum(1 for i in range(data.span.bins)
                if not sum(data.shares[g][i] for g in SHARE_GROUPS) and not data.unanalysed[i])
    lost = sum(1 for a in data.capture_events if a.type == "CAPTURE_LOST")
    rows = [("windows that failed", str(sum(data.failed))),
            ("windows without a group (failed or models skipped)", str(sum(data.unanalysed))),
            (f"{data.span.bin_s // 60}-minute bins with no window stored", f"{empty} of {data.span.bins}"),
            ("capture lost (alerts)", str(lost)),
            ("median real-time factor", f"{sorted(rtfs)[len(rtfs) // 2]:.3f}" if rtfs else "no window"),
            ("highest real-time factor in a bin", f"{max(rtfs):.3f}" if rtfs else "no window")]
    rows += [(f"{name} (counter, since the store was made)", str(v)) for name, v in sorted(data.counters.items())]
    body = "".join(f"<tr><td>{escape(k)}</td><td class='num'>{escape(v)}</td></tr>" for k, v in rows)
    return ("<section id='health'><p class='what'>From what the store holds: windows dropped before the store (a full "
            "backlog) are counted by the daemon's heartbeat, not stored; the store's own drop counters cover the "
            "store's whole life, not only this range.</p>"
            f"<table>{body}</table></section>")


def _models_table(models: dict[str, str | None]) -> str:
    if not models:
        return ("<section id='models'><h2>Models</h2><p class='what'>The store does not record which models wrote it "
                "(it was written before soundmond recorded them).</p></section>")
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v or 'off')}</td></tr>" for k, v in models.items())
    return ("<section id='models'><h2>Models</h2><p class='what'>The models of the last run that wrote this store."
            f"</p><table>{body}</table></section>")
