"""The full run's report: the levers (each off and on) and the targets drawn from the figures; `bench.md`, `soak.md`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from soundmond.speed.report import header_lines, ms_cell, pipeline_and_daemon_lines, table
from soundmond.workbench.bench.budget import budget_markdown
from soundmond.workbench.bench.common import PIPELINE_BASES, SIDE_BY_SIDE_SUFFIX, TARGETS
from soundmond.workbench.bench.measure import find_row


def _lever(name: str, off: str, on: str, off_v: float, on_v: float, unit: str, note: str = "") -> dict[str, Any]:
    return {"lever": name, "off": off, "on": on, "off_value": off_v, "on_value": on_v, "unit": unit,
            "gain": round(off_v / on_v, 2) if on_v else None, "note": note}


def _agree_note(row: dict[str, Any]) -> str:
    a = row.get("agreement_vs_fp32_original")
    if not a:
        return ""
    return f"vs fp32 original: top-1 {a['top1']:.2f}, top-5 {a['top5']:.2f}, max prob diff {a['max_prob_diff']:.3g}"


def _pipeline_pairs(pipe: Sequence[dict[str, Any]], off: str, on: str
                    ) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(base, row "<base><off>", row "<base><on>") for each of PIPELINE_BASES measured with both suffixes."""
    for base in PIPELINE_BASES:
        try:
            yield base, find_row(pipe, "config", base + off), find_row(pipe, "config", base + on)
        except KeyError:
            continue


def collect_levers(report: dict[str, Any]) -> list[dict[str, Any]]:
    levers = []
    pipe = report.get("pipeline", [])
    for base, t1, t2 in _pipeline_pairs(pipe, ", 1 thread", ", 2 threads"):
        levers.append(_lever(f"threads per session ({base})", "1 thread", "2 threads", t1["rtf"], t2["rtf"], "RTF"))
    for base, seq, sbs in _pipeline_pairs(pipe, ", 1 thread", SIDE_BY_SIDE_SUFFIX):
        levers.append(_lever(f"tagger and BirdNET side by side, 1 thread each ({base})", "one after the other",
                             "side by side", seq["rtf"], sbs["rtf"], "RTF"))
    for base, seq2, sbs in _pipeline_pairs(pipe, ", 2 threads", SIDE_BY_SIDE_SUFFIX):
        levers.append(_lever(f"side by side on 1 thread each vs one after the other on 2 threads ({base})",
                             "2 threads, one after the other", "1 thread each, side by side", seq2["rtf"],
                             sbs["rtf"], "RTF"))
    ast_rows = report.get("ast", {}).get("rows", [])
    if ast_rows:
        ms = {r["key"]: float(r["ms"]["median"]) for r in ast_rows}
        by = {r["key"]: r for r in ast_rows}
        levers.append(_lever("512-frame export (AST fp32)", "1024 frames", "512 frames", ms["fp32-1024"],
                             ms["fp32-512"], "ms / window", _agree_note(by["fp32-512"])))
        levers.append(_lever("512-frame export (AST int8)", "1024 frames", "512 frames", ms["int8-1024"],
                             ms["int8-512"], "ms / window", _agree_note(by["int8-512"])))
        levers.append(_lever("int8 (AST, 1024 frames)", "fp32", "int8", ms["fp32-1024"], ms["int8-1024"],
                             "ms / window", _agree_note(by["int8-1024"])))
        levers.append(_lever("int8 (AST, 512 frames)", "fp32", "int8", ms["fp32-512"], ms["int8-512"],
                             "ms / window", _agree_note(by["int8-512"])))
        if "int8att-512" in ms:
            levers.append(_lever("int8 attention products (AST int8, 512 frames)", "fp32 attention",
                                 "int8 attention", ms["int8-512"], ms["int8att-512"], "ms / window",
                                 _agree_note(by["int8att-512"])))
    for base, off, on in _pipeline_pairs(pipe, ", 2 threads", ", 2 threads, RMS gate"):
        levers.append(_lever(f"RMS gate at {on['gate_dbfs']} dBFS ({base})", "no gate", "gate", off["rtf"], on["rtf"],
                             "RTF", f"{on['windows_skipped_quiet']} of {on['windows'] * on['repeats']} windows "
                             "skipped (counted as skipped_quiet)"))
    shared = report.get("shared_audio", {}).get("rows", [])
    if shared:
        levers.append(_lever("shared decode/resample between models", "each model decodes + resamples",
                             "decode once, resample once per rate", float(shared[0]["ms"]["median"]),
                             float(shared[1]["ms"]["median"]), "ms / window"))
    birdnet = report.get("birdnet", {})
    batching = birdnet.get("batching_lever", [])
    memory = {(m["mem_pattern"], m["chunks_per_call"]): m["peak_rss_mb"] for m in birdnet.get("session_memory", [])}
    if batching:
        levers.append(_lever("BirdNET chunks of a window in one call", "one call per chunk", "one batched call",
                             float(batching[1]["ms"]["median"]), float(batching[0]["ms"]["median"]), "ms / window",
                             "soundmond calls once per chunk: batching costs peak memory, see the next row"))
    if memory.get((False, 1)) and memory.get((False, 2)):
        levers.append(_lever("BirdNET chunks of a window in one call: peak RSS of a BirdNET-only process",
                             "one call per chunk", "one batched call", memory[(False, 1)], memory[(False, 2)], "MB",
                             "memory-pattern planning off, as in soundmond"))
    if memory.get((False, 2)) and memory.get((True, 2)):
        levers.append(_lever("ORT memory-pattern planning: peak RSS of a BirdNET-only process, 2 chunks per call",
                             "pattern off", "pattern on (ORT default)", memory[(False, 2)], memory[(True, 2)], "MB",
                             "soundmond turns it off"))
    spinning = birdnet.get("spinning_lever", [])
    if spinning:
        levers.append(_lever("ORT idle-thread spinning, two BirdNET sessions in turn (as the daemon's models)",
                             "spinning off", "spinning on (ORT default)", float(spinning[0]["ms"]["median"]),
                             float(spinning[1]["ms"]["median"]), "ms / chunk", "soundmond turns it off"))
    return levers


def gemm_ceilings(report: dict[str, Any]) -> dict[str, float]:
    """The most each AST target can reach on this CPU by its GEMM probe: the notebook path's time over the time the
    variant's arithmetic would take at the probe's rate (fp32: fp32-1024 at the fp32 rate; int8: the best int8
    variant with all of its operations at the int8 rate, which is generous: its attention products and the
    operators around them run slower). Empty without the probe or the FLOP counts."""
    gemm = report.get("gemm") or {}
    rows = {r["key"]: r for r in report.get("ast", {}).get("rows", []) if "gflop_per_window" in r}
    if not gemm or "notebook" not in rows:
        return {}
    notebook_s = float(rows["notebook"]["ms"]["median"]) / 1000.0
    out: dict[str, float] = {}
    if "fp32-1024" in rows and gemm.get("fp32_gflop_per_s"):
        out["fp32"] = round(notebook_s / (rows["fp32-1024"]["gflop_per_window"] / gemm["fp32_gflop_per_s"]), 2)
    int8 = [k for k in ("int8-1024", "int8-512", "int8att-512") if k in rows]
    if int8 and gemm.get("int8_gop_per_s"):
        out["int8"] = round(max(notebook_s / (rows[k]["gflop_per_window"] / gemm["int8_gop_per_s"]) for k in int8), 2)
    return out


def ceiling_note(ceiling: float | None, limit: float) -> str:
    """What the GEMM probe says of a speed-up target: out of reach on this CPU, or how much room it leaves."""
    if ceiling is None:
        return ""
    if ceiling < limit:
        return (f"ruled out on this CPU by its GEMM probe: at most {ceiling:g}x even with every operation at the "
                "probe's matrix-product rate")
    return f"the GEMM probe allows up to {ceiling:g}x"


def check_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []

    def add(name: str, value: float | None, limit: float, higher_is_better: bool, note: str = "") -> None:
        met = None if value is None else (value >= limit if higher_is_better else value <= limit)
        out.append({"target": name, "value": value, "limit": limit, "met": met, "note": note})

    ast_rows = report.get("ast", {}).get("rows", [])
    if ast_rows:
        sp = {r["key"]: r.get("speedup_vs_baseline") for r in ast_rows}
        ceilings = gemm_ceilings(report)
        fp32_limit, int8_limit = TARGETS["ast_onnx_fp32_speedup_min"], TARGETS["ast_best_int8_speedup_min"]
        add("AST ONNX fp32 (1024) speed-up vs notebook path, x", sp.get("fp32-1024"), fp32_limit, True,
            ceiling_note(ceilings.get("fp32"), fp32_limit))
        add("AST best int8 speed-up vs notebook path, x",
            max(sp.get("int8-1024") or 0, sp.get("int8-512") or 0, sp.get("int8att-512") or 0), int8_limit, True,
            ceiling_note(ceilings.get("int8"), int8_limit))
    pipe = report.get("pipeline", [])
    ast_p = [r["rtf"] for r in pipe if r["config"].startswith("AST int8-512") and r["gate_dbfs"] is None]
    yam_p = [r["rtf"] for r in pipe if r["config"].startswith("YAMNet") and r["gate_dbfs"] is None]
    if ast_p:
        add("pipeline RTF, AST int8 + BirdNET + head + aggregation + store (best configuration)", min(ast_p),
            TARGETS["pipeline_rtf_ast_max"], False)
    if yam_p:
        add("pipeline RTF, YAMNet + BirdNET + head + aggregation + store (best configuration)", min(yam_p),
            TARGETS["pipeline_rtf_yamnet_max"], False)
    if "onnx_over_tflite" in report.get("birdnet", {}):
        add("BirdNET ONNX / TFLite time per chunk", report["birdnet"]["onnx_over_tflite"],
            TARGETS["birdnet_onnx_vs_tflite_max"], False)
    for base, key in zip(PIPELINE_BASES, ("daemon_peak_rss_ast_mb_max", "daemon_peak_rss_yamnet_mb_max"), strict=True):
        runs = [d for d in report.get("daemon", []) if d.get("sensor_like") and d["config"].startswith(base)]
        if runs:  # the most memory-hungry of its configurations (threads, side by side)
            worst = max(runs, key=lambda d: d.get("peak_rss_mb") or 0)
            add(f"daemon peak RSS MB, {base} (sensor-like; highest of {len(runs)}: {worst['config'][len(base) + 2:]})",
                worst.get("peak_rss_mb"), TARGETS[key], False)
    return out


def _agree_cell(row: dict[str, Any], key: str = "agreement_vs_fp32_original") -> str:
    a = row.get(key)
    return f"{a['top1']:.2f} / {a['top5']:.2f} / {a['max_prob_diff']:.3g}" if a else ""


def _model_section(title: str, sec: dict[str, Any], baseline_label: str) -> list[str]:
    lines = [f"### {title}", ""]
    for key in ("model", "agreement_reference"):
        if sec.get(key):
            lines.append(f"- {key.replace('_', ' ')}: {sec[key]}")
    lines.append(f"- threads per session: {sec['threads']}")
    lines.append("")
    same = any("agreement_vs_onnx_fp32_same_frames" in r for r in sec["rows"])
    flops = any("gflop_per_s" in r for r in sec["rows"])
    rows = [[r["variant"], r["per"], ms_cell(r["ms"]), r["rtf"], r.get("speedup_vs_baseline"), r.get("load_s"),
             _agree_cell(r)] + ([_agree_cell(r, "agreement_vs_onnx_fp32_same_frames")] if same else [])
            + ([f"{r['gflop_per_window']} / {r['gflop_per_s']}"] if flops else [])
            for r in sec["rows"]]
    return lines + table(["variant", "per", "ms median (p10-p90, n)", "RTF", f"speed-up vs {baseline_label}",
                          "load s", "agreement vs fp32 original: top-1 / top-5 / max prob diff"]
                         + (["int8 vs ONNX fp32, same frames"] if same else [])
                         + (["GFLOP per window / GFLOP/s reached"] if flops else []), rows)


def markdown(report: dict[str, Any]) -> str:
    """`bench.md` (the full run) or `soak.md`."""
    lines = header_lines(report)
    if report["mode"] == "soak":
        return "\n".join(lines + soak_markdown(report))
    if report["mode"] == "budget":
        return "\n".join(lines + budget_markdown(report["budget"]))
    lines += ["## Per model, side by side (same run, interleaved)", ""]
    lines += _model_section("AST tagger", report["ast"], "notebook path")
    lines.append(f"numpy feature extraction (soundmond): {ms_cell(report['ast']['numpy_features_ms'])} ms per "
                 "window, included in the ONNX rows.\n")
    if report.get("gemm"):
        g = report["gemm"]
        shape = " x ".join(str(d) for d in g["shape_mkn"])
        lines.append(f"This CPU's matrix-product rate in ONNX Runtime at the AST's shapes ({shape}, {g['threads']} "
                     f"threads): fp32 {g['fp32_gflop_per_s']} GFLOP/s, int8 {g['int8_gop_per_s']} GOP/s: "
                     f"**int8 {g['int8_speedup']}x fp32**. These products are almost all of an AST window's time, "
                     "so this caps what the int8 exports can gain on this machine.\n")
    lines += _model_section("BirdNET V2.4", report["birdnet"], "TFLite")
    if "onnx_over_tflite" in report["birdnet"]:
        lines.append(f"BirdNET ONNX / TFLite per chunk: **{report['birdnet']['onnx_over_tflite']}x**\n")
    lines += _model_section("YAMNet", report["yamnet"], "TFLite")
    lines += pipeline_and_daemon_lines(report)
    if report.get("throughput"):
        lines += ["## Batch throughput (replay as fast as possible)", ""]
        lines += table(["configuration", "workers x threads", "audio s", "wall s", "hours of audio per hour",
                        "same, model loading excluded"],
                       [[t["config"], f"{t['workers']} x {t['threads_per_session']}", t["audio_s"], t["wall_s"],
                         t["audio_hours_per_hour"], t.get("audio_hours_per_hour_after_load")]
                        for t in report["throughput"]])
    if report.get("levers"):
        lines += ["## Levers, each off and on", ""]
        lines += table(["lever", "off", "on", "off value", "on value", "unit", "gain (off/on)", "note"],
                       [[lv["lever"], lv["off"], lv["on"], lv["off_value"], lv["on_value"], lv["unit"], lv["gain"],
                         lv["note"]] for lv in report["levers"]])
    if report.get("budget"):
        lines += budget_markdown(report["budget"])
    if report.get("target_checks"):
        lines += ["## Targets", ""]
        lines += table(["target", "measured", "limit", "met", "note"],
                       [[t["target"], t["value"], t["limit"], {True: "yes", False: "NO", None: "-"}[t["met"]],
                         t.get("note", "")] for t in report["target_checks"]])
    return "\n".join(lines)


def soak_markdown(report: dict[str, Any]) -> list[str]:
    d = report["daemon"]
    rss, fds = report["rss_mb"], report["open_fds"]
    lines = [f"Configuration: {report['config']}; {report['files']} files looped {report['loops']}x "
             f"({report['audio_s_planned']} s of distinct audio; {d.get('windows')} windows = {d.get('audio_s')} "
             "window-seconds, tail windows of short files overlapping), "
             f"as fast as possible through `soundmond run --source`; sampled every {report['sample_every_s']} s, "
             f"warm-up {report['warmup_s']} s.", ""]
    lines += table(["figure", "after warm-up", "end", "max after warm-up", "growth (end)", "growth (max)"],
                   [["RSS MB", rss.get("after_warmup"), rss.get("end"), rss.get("max_after_warmup"),
                     rss.get("growth"), rss.get("max_growth")],
                    ["open fds", fds.get("after_warmup"), fds.get("end"), fds.get("max_after_warmup"),
                     fds.get("growth"), fds.get("max_growth")]])
    lines += [f"- peak RSS {d.get('peak_rss_mb')} MB; wall RTF {d.get('wall_rtf')}; daemon-reported RTF (status "
              f"line) {d.get('daemon_reported_rtf')}; exit code {d.get('returncode')}",
              f"- **flat (growth < {TARGETS['soak_growth_max']:.0%} after warm-up): {report['flat']}**", ""]
    return lines
