"""The report `soundmond evaluate` writes (see `soundmond.workbench.evaluate`): `report.md` with its figures,
`report.json`, `species_results.csv`, `group_errors.csv`, written atomically into the output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from soundmond.head.meta import HEAD_CLASSES
from soundmond.workbench.report import (
    atomic_dir,
    markdown_table,
    plot_confusion,
    plot_frequency,
    write_csv,
    write_json,
)


def species_markdown(sp: dict[str, Any]) -> list[str]:
    """The species section: figures, the per-species table, the location filter (or why it does not apply)."""
    u = sp["unfiltered"]
    model = sp.get("model", "BirdNET")
    lines = [f"## Species ({model})", "", sp["method"] + ".", ""]
    if not u.get("files"):
        return [*lines, "No file with a known species was evaluated.", ""]
    lines += [
        f"- files: {u['files']} ({u['species_labelled']} species)",
        f"- top-1 accuracy: **{u['top1_accuracy']:.3f}** ({u['top1_correct']}/{u['files']})",
        f"- top-3 accuracy: **{u['top3_accuracy']:.3f}** ({u['top3_correct']}/{u['files']})",
        f"- macro F1: {u['macro_f1']:.3f}, weighted F1: {u['weighted_f1']:.3f}",
    ]
    if sp.get("left_out"):
        lines.append(f"- labelled species {model} cannot name (left out): " + "; ".join(
            f"{e['species']} ({e['files']} files: {e['reason']})" for e in sp["left_out"]))
    lines.append(f"- in-sample: {sp['in_sample_basis']}")
    lf = sp["location_filter"]
    if not lf["applies"]:
        lines += ["", f"Location / season filter: does not apply - {lf['reason']}"
                  + (f" ({lf['files_with_coordinates']} files have coordinates)." if lf["files_with_coordinates"]
                     else ".")]
    elif not lf["available"]:
        lines += ["", f"Location / season filter: not evaluated - {lf['reason'] or 'the model has no meta model'}."]
    elif lf["files_with_coordinates"]:
        wo, wi = lf["without_filter"], lf["with_filter"]
        lines += ["", f"Location / season filter (threshold {lf['threshold']}), on the "
                  f"{lf['files_with_coordinates']} files with coordinates:", "",
                  "| | top-1 | top-3 | macro F1 |", "|---|---|---|---|",
                  f"| without filter | {wo['top1_accuracy']:.3f} | {wo['top3_accuracy']:.3f} | {wo['macro_f1']:.3f} |",
                  f"| with filter | {wi['top1_accuracy']:.3f} | {wi['top3_accuracy']:.3f} | {wi['macro_f1']:.3f} |"]
    else:
        lines += ["", "Location / season filter: not evaluated - no labelled file has coordinates "
                  "(`latitude` / `longitude` columns)."]
    per = u["per_species"]
    lines += ["", "Per species (true and predicted top-1 species; support = labelled files):", "",
              markdown_table(["species", "precision", "recall", "F1", "support", "predicted"],
                             [[name, v["precision"], v["recall"], v["f1"], v["support"], v["predicted"]]
                              for name, v in sorted(per.items(), key=lambda kv: (-kv[1]["support"], kv[0]))])]
    lines += ["", "![Most-confused species](species_confusion.png)", "",
              "![Species frequency](species_frequency.png)", "",
              "Per-file results: [species_results.csv](species_results.csv).", ""]
    return lines


def f3(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def quiet_markdown(gr: dict[str, Any]) -> list[str]:
    """The quiet windows (not scored, as the daemon runs no model on them) and the files that are quiet throughout."""
    quiet = gr.get("quiet")
    if not quiet:
        return []
    per_group = ", ".join(f"{g} {n}" for g, n in quiet["per_group"].items()) or "none"
    lines = [f"- quiet windows (not scored): {quiet['windows']} (per labelled group: {per_group}); rule: "
             f"{quiet['rule']}"]
    return lines + [f"- **warning**: {w}" for w in gr.get("warnings", [])]


def groups_markdown(gr: dict[str, Any]) -> list[str]:
    lines = ["## Groups (natural / industrial / other: tagger + head)", ""]
    if not gr.get("windows"):
        return [*lines, "No window with a group was scored.", "", *quiet_markdown(gr), ""]
    ni = gr["natural_vs_industrial"]
    lines += [
        f"Head: `{gr['head']['path']}` ({gr['head']['tagger_family']}, features `{gr['head']['features']}`).",
        "",
        f"- windows scored: {gr['windows']} from {gr['files']} files",
        *quiet_markdown(gr),
        f"- accuracy (3 classes): {gr['accuracy_3class']:.3f}, balanced accuracy: {gr['balanced_accuracy_3class']:.3f}",
        f"- natural vs industrial balanced accuracy: **{f3(ni['balanced_accuracy'])}** "
        f"(natural recall {f3(ni['natural_recall'])}, industrial recall {f3(ni['industrial_recall'])})",
        f"- calibration: log loss {gr['calibration']['log_loss']:.3f}, "
        f"ECE {gr['calibration']['ece_top_probability']:.3f}",
    ]
    if gr.get("in_sample") is True:
        lines.append("- **in-sample**: the head was trained on these files; these figures are not a test")
    elif gr.get("in_sample") == "partial":
        files = gr["in_sample_files"]
        lines.append(f"- **partly in-sample**: the head was trained on {files['in']} of these files "
                     f"({files['out']} it never saw); only the out-of-sample part is a test")
    if gr.get("in_sample_files", {}).get("by_audio"):
        files = gr["in_sample_files"]
        lines.append(f"- {files['by_audio']} of the in-sample files are known by their audio only (other bytes, the "
                     f"same decoded samples: a re-encoded training file): {', '.join(files['files_by_audio'])}")
    if "in_sample_basis" in gr:
        lines.append(f"- in-sample basis: {gr['in_sample_basis']}")
    for key, title in (("in_sample_part", "in-sample part (trained on)"),
                       ("out_of_sample_part", "out-of-sample part (never seen)")):
        part = gr.get(key)
        if part and part["windows"]:
            ni = part["natural_vs_industrial_balanced_accuracy"]
            lines.append(f"- {title}: {part['files']} files, {part['windows']} windows, accuracy "
                         f"{part['accuracy_3class']:.3f}, natural vs industrial "
                         + ("n/a" if ni is None else f"{ni:.3f}"))
    lines += ["", markdown_table(["class", "precision", "recall", "F1", "windows"],
                                 [[c, v["precision"], v["recall"], v["f1"], v["support"]]
                                  for c, v in gr["per_class"].items()]),
              "", "![Group confusion matrix](group_confusion.png)", "",
              f"Windows it got wrong: {gr['wrong_windows']} ([group_errors.csv](group_errors.csv)).", ""]
    return lines


def write_report(out: Path, report: dict[str, Any], species_rows: list[dict[str, Any]],
                 group_errors: list[dict[str, Any]]) -> None:
    with atomic_dir(out) as tmp:
        sp = report.get("species")
        figures = []
        if sp is not None:
            model = sp.get("model", "BirdNET")
            rows_, cols, matrix = sp.pop("_confusion")
            truth_counts, pred_counts = sp.pop("_frequency")
            if rows_:
                plot_confusion(matrix, rows_, cols, tmp / "species_confusion.png",
                               title=f"Most-confused species ({model} top-1; {len(rows_)} true species)",
                               xlabel="predicted species (top-1)", ylabel="true species", unit="files")
            else:
                plot_confusion([[0]], ["(no confusions)"], ["(no confusions)"], tmp / "species_confusion.png",
                               title="Most-confused species: none", xlabel="predicted species (top-1)",
                               ylabel="true species")
            names = sorted(set(truth_counts) | set(pred_counts),
                           key=lambda n: (-max(truth_counts[n], pred_counts[n]), n))[:30]
            plot_frequency(names, {"labelled": [truth_counts[n] for n in names],
                                   f"{model} top-1": [pred_counts[n] for n in names]},
                           tmp / "species_frequency.png",
                           title=f"Species frequency (top {len(names)} of {len(set(truth_counts) | set(pred_counts))})",
                           xlabel="files")
            fields = ["file", "species", "predicted", "score", "top3", "correct_top1", "correct_top3",
                      "score_of_true", "filtered_predicted", "filtered_top3", "true_occurrence", "week"]
            write_csv(tmp / "species_results.csv", species_rows, fields)
            figures += ["species_confusion.png", "species_frequency.png"]
        gr = report.get("groups")
        if gr is not None and gr.get("per_file"):
            write_csv(tmp / "group_files.csv", gr["per_file"],
                      ["file", "group", "windows", "quiet_windows", "scored_windows", "in_sample", "in_sample_by"])
        if gr is not None and gr.get("windows"):
            plot_confusion(gr["confusion_matrix"]["rows_true_columns_predicted"], HEAD_CLASSES, HEAD_CLASSES,
                           tmp / "group_confusion.png", title="Groups: true vs predicted (5-s windows)",
                           xlabel="predicted group", ylabel="true group", unit="windows")
            write_csv(tmp / "group_errors.csv", group_errors,
                      ["file", "start_s", "end_s", "true", "predicted", "p_industrial", "p_natural", "p_other",
                       "in_sample", "in_sample_by"])
            figures.append("group_confusion.png")
        report["figures"] = figures
        write_json(tmp / "report.json", report)
        md = [f"# soundmond evaluate: {report['labels']}", "", f"Created {report['created_utc']}.", ""]
        if sp is not None:
            md += species_markdown(sp)
        if gr is not None:
            md += groups_markdown(gr)
        if report["problems"]:
            md += ["## Rows not evaluated", ""] + [f"- {p['problem']}" for p in report["problems"]] + [""]
        (tmp / "report.md").write_text("\n".join(md))


