"""The report of a run: `bench-quick.json` + `.md` (and the parts of `bench.md` every mode shares: the machine, the
whole pipeline, the daemon processes)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from soundmond.speed.processes import SENSOR_ABSENT


def ms_cell(s: dict[str, Any]) -> str:
    return f"{s['median']:.1f} ({s['p10']:.1f}-{s['p90']:.1f}, n={s['n']})"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join("" if c is None else str(c) for c in r) + " |")
    return lines + [""]


def header_lines(report: dict[str, Any]) -> list[str]:
    """The title, the machine, the load and the audio a report was measured with."""
    m = report["machine"]
    return [f"# soundmond bench ({report['mode']})", "",
            f"- date (UTC): {m['date_utc']}; machine: {m['cpu']}, {m['cores']} cores, {m['memory_mb']} MB; "
            f"{m['platform']}; SIMD: {', '.join(m.get('cpu_features') or ['unknown'])}",
            f"- versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}",
            f"- load average at start {m['loadavg_start']}, at end {m.get('loadavg_end')}: the machine may be shared; "
            "variants are interleaved so ratios hold, absolute ms carry the load of the moment",
            f"- audio: {report.get('audio', {}).get('source')}", ""]


def pipeline_and_daemon_lines(report: dict[str, Any]) -> list[str]:
    """The whole pipeline in process and the `soundmond run` processes (quick and full reports)."""
    lines: list[str] = []
    if report.get("pipeline"):
        lines += ["## Whole pipeline", "", report.get("pipeline_note", ""), ""]
        lines += table(["configuration", "windows", "ms per window median (p10-p90, n)", "RTF", "load s",
                        "skipped quiet"],
                       [[r["config"], r["windows"] * r["repeats"], ms_cell(r["ms_per_window"]), r["rtf"],
                         r["load_s"], r["windows_skipped_quiet"]] for r in report["pipeline"]])
    if report.get("pipeline_error"):
        lines += [f"Pipeline not measured: {report['pipeline_error']}", ""]
    if report.get("daemon"):
        lines += ["## Daemon process (`soundmond run --source`, fresh process per configuration)", ""]
        lines += [f"sensor-like: {', '.join(SENSOR_ABSENT)} made unimportable in the daemon process, as on a sensor "
                  "(nothing the daemon imports should reach them: the two environments should agree); as installed: "
                  "this venv as it is.", ""]
        lines += table(["configuration", "environment", "peak RSS MB", "start -> models loaded s", "windows",
                        "wall RTF", "analysis RTF", "exit"],
                       [[d["config"], "sensor-like" if d.get("sensor_like") else "as installed", d.get("peak_rss_mb"),
                         d.get("start_to_running_s"), d.get("windows"), d.get("wall_rtf"), d.get("analysis_rtf"),
                         d.get("returncode")] for d in report["daemon"]])
    return lines


def quick_markdown(report: dict[str, Any]) -> str:
    """`bench-quick.md`: the verdict and its suggestions, the models, the pipeline, the daemon process."""
    v = report["verdict"]
    lines = header_lines(report) + [f"**Verdict: {v['text']}**", ""]
    lines += [f"- suggestion: {s}" for s in v["suggestions"]] + [""]
    lines += ["## Models (per 5-s window)", ""]
    lines += table(["model", "ms median (p10-p90, n)", "RTF", "load s"],
                   [[r["variant"], ms_cell(r["ms"]), r["rtf"], r["load_s"]] for r in report["models"]])
    if report.get("birds_stride"):
        lines += ["", report["birds_stride"]["text"]]
    return "\n".join(lines + pipeline_and_daemon_lines(report))


def write_report(report: dict[str, Any], text: str, out: Path, stem: str) -> tuple[Path, Path]:
    """`<stem>.json` (the figures) and `<stem>.md` (`text`, the report's markdown) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    j, md = out / f"{stem}.json", out / f"{stem}.md"
    j.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md.write_text(text + "\n")
    return j, md
