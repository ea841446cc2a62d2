"""Write an evaluation report folder: report.json, report.md, confusion matrices, reliability, curves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

SECTIONS = [
    ("official_test", "Official test split"),
    ("leakage_free_test", "Leakage-free test (no training near-duplicate, r >= 0.99)"),
    ("strict_leakage_free_test", "Strict leakage-free test (r >= 0.97 excluded)"),
    ("validation", "Validation (group split of the training images)"),
]


def write_report(report: dict, out_dir: Path, history: list[dict] | None = None, run_dir: Path | None = None) -> Path:
    """Write the report's JSON, Markdown and figures into out_dir; return the JSON path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    class_ids = report["class_ids"]
    for key, title in SECTIONS:
        section = report.get(key)
        if section and section.get("n"):
            plot_confusion(np.array(section["confusion_matrix"]), class_ids, title, out_dir / f"confusion_{key}.png")
    if report.get("official_test", {}).get("n"):
        plot_reliability(report["official_test"], out_dir / "reliability_official_test.png")
    scans = [scan for key in ("tcga_lgg_held_out", "volumes_held_out", "healthy") for scan in report.get(key, {}).get("_scans", [])]
    if scans:
        from training.compare import SCANS_FILE, save_scans

        plot_slice_profiles(scans, out_dir / "slice_profiles.png")
        save_scans(scans, out_dir / SCANS_FILE)  # per-slice results: `convnest compare` reads them
    if history:
        from training.train import plot_curves

        plot_curves(history, out_dir / "curves.png")
        (out_dir / "training_log.json").write_text(json.dumps(history, indent=1))
    clean = without_arrays(report)
    path = out_dir / "report.json"
    path.write_text(json.dumps(clean, indent=2))
    (out_dir / "report.md").write_text(markdown(clean))
    for name, copy in (("log.csv", "training_log.csv"), ("config.json", "run_config.json")):  # gate-fit, context-fit read it
        if run_dir and (Path(run_dir) / name).is_file():
            shutil.copy(Path(run_dir) / name, out_dir / copy)
    return path


def markdown(report: dict) -> str:
    """Return the report as Markdown tables."""
    lines = ["# Evaluation report", ""]
    training = report.get("training")
    if training:
        config = training["config"]
        lines += [
            f"Model: `{config['architecture']}` at {config['size']} px, {training['epochs_completed']} epochs "
            f"({training['train_seconds'] / 60:.1f} min on {training['device']}), {training['final_weights']} weights, "
            f"preprocessing {config.get('preprocessing', 'letterbox-v1')}; {training['train_images']} training, "
            f"{training['validation_images']} validation and {training['test_images']} test images (brain-tumor-mri split "
            f"by near-duplicate groups, other sources by patient, institution or case).",
            "",
        ]
    if report.get("model"):
        lines += [f"Model: `{report['model']}` (whole scans only)", ""]
    if "temperature" in report:
        flip = " Each slice is classified as the mean of its logits and its left-right mirror's." if report.get("test_time_flip") else ""
        lines += [f"Temperature (fitted on validation): {report['temperature']:.3f}.{flip}", "",
                  "| set | n | accuracy | macro F1 | Cohen's kappa | macro AUC (OvR) | ECE | ECE before scaling |",
                  "|---|---|---|---|---|---|---|---|"]
    for key, title in SECTIONS:
        s = report.get(key)
        if s and s.get("n"):
            auc = f"{s['macro_auc_ovr']:.4f}" if s.get("macro_auc_ovr") is not None else "-"
            lines.append(f"| {title} | {s['n']} | {s['accuracy']:.4f} | {s['macro_f1']:.4f} | {s['cohen_kappa']:.4f} | "
                         f"{auc} | {s['ece']:.4f} | {s['ece_uncalibrated']:.4f} |")
    lines += scan_sections(report)
    for key, title in SECTIONS:
        s = report.get(key)
        if not s or not s.get("n"):
            continue
        lines += ["", f"## {title}", ""]
        if "excluded_near_duplicates" in s:
            lines.append(f"Excluded as near-duplicates of training images: {s['excluded_near_duplicates']}.")
        if s.get("note"):
            lines.append(f"Note: {s['note']}.")
        lines += ["", "| class | precision | recall | F1 | AUC (OvR) | support |", "|---|---|---|---|---|---|"]
        for class_id, c in s["per_class"].items():
            auc = f"{c['auc_ovr']:.4f}" if c.get("auc_ovr") is not None else "-"
            lines.append(f"| {class_id} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {auc} | {c['support']} |")
        lines += ["", f"![confusion matrix](confusion_{key}.png)"]
    return "\n".join(lines) + "\n"


def _share(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _auc(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def scan_sections(report: dict) -> list[str]:
    """Return the Markdown of the whole-scan evaluations: held-out tumour scans per sequence, healthy heads."""
    lines: list[str] = []
    for key, title in (("tcga_lgg_held_out", "tcga-lgg, held-out institutions"), ("volumes_held_out", "Label volumes, held-out cases")):
        section = report.get(key)
        if not section:
            continue
        where = ", ".join(section["institutions"]) + f" ({section['cases']} patients)" if "institutions" in section \
            else ", ".join(section["cases"])
        lines += ["", f"## {title}: {where}", "",
                  "Every slice of every scan, opened by the app's loader and classified by `convnest classify`'s loop. "
                  "Labelled: the packing rule's tumour and no-tumour slices; all slices: any tumour in the mask vs none. "
                  "Tumour probability = 1 - P(no tumour); sensitivity and specificity at the predicted class.", "",
                  "| sequence | scans | slices (tumour) | sensitivity | specificity | ROC AUC | all slices: n (tumour) | sensitivity | specificity | ROC AUC | tumour type called |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for sequence, row in section["per_sequence"].items():
            a, b = row["labelled"], row["all_slices"]
            types = ", ".join(f"{c} {v:.0%}" for c, v in row["tumour_type_shares"].items())
            lines.append(f"| {sequence} | {row['cases']} | {a['slices']} ({a['tumour_slices']}) | {_share(a['sensitivity'])} | "
                         f"{_share(a['specificity'])} | {_auc(a['roc_auc'])} | {b['slices']} ({b['tumour_slices']}) | "
                         f"{_share(b['sensitivity'])} | {_share(b['specificity'])} | {_auc(b['roc_auc'])} | {types} |")
    verdict_rows = [(title, sequence, row) for key, title in (("tcga_lgg_held_out", "tcga-lgg"), ("volumes_held_out", "label volumes"))
                    for sequence, row in report.get(key, {}).get("verdicts", {}).items()]
    if verdict_rows:
        lines += ["", "## Scan verdicts, as the viewer gives them", "",
                  "Per held-out tumour scan, the series verdict the viewer shows (only slices the model's gate assessed "
                  "count; a model without a gate assesses every slice): tumour when 3 neighbouring slices are called a "
                  "tumour class; the key slice is the finding's most confident slice. Last column: slices with tumour "
                  "in the mask that the gate withheld (blank, at the edge of the head, or unlike the training slices).", "",
                  "| source | sequence | scans | tumour | key slice on tumour | equivocal | no tumour | not assessed "
                  "| tumour slices not assessed |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for title, sequence, row in verdict_rows:
            withheld = (f"{row['tumour_slices_not_assessed']} of {row['tumour_slices']}"
                        if "tumour_slices" in row else "not measured")
            lines.append(f"| {title} | {sequence} | {row['scans']} | {row['tumour']} | {row['key_slice_on_tumour']} | "
                         f"{row['equivocal']} | {row['no tumour']} | {row['not assessed']} | {withheld} |")
    healthy = report.get("healthy")
    if healthy:
        lines += ["", "## Healthy heads", "", "Every slice, through the app's loader; the brain's slices are those showing at "
                  "least 40% of the largest head section.", "",
                  "| scan | held out | slices | called no tumour | brain slices | called no tumour | predicted |", "|---|---|---|---|---|---|---|"]
        for name, row in healthy["per_scan"].items():
            counts = ", ".join(f"{c} {n}" for c, n in row["predicted_counts"].items() if n)
            lines.append(f"| {name} | {'yes' if row['held_out'] else 'no (trained on)'} | {row['slices']} | "
                         f"{_share(row['no_tumour_share'])} | {row['brain_slices']} | {_share(row['no_tumour_share_brain'])} | {counts} |")
        if healthy.get("verdicts"):
            lines += ["", "Their verdicts, as the viewer gives them: " + "; ".join(
                f"{name}: {row['text']}" for name, row in healthy["verdicts"].items()) + "."]
    held = report.get("held_out_slices")
    if held:
        lines += ["", "## Held-out packed slices per source, sequence and plane", "",
                  "| source | sequence / plane | slices (tumour) | sensitivity | specificity | ROC AUC |", "|---|---|---|---|---|---|"]
        for source, rows in held.items():
            for key, m in rows.items():
                lines.append(f"| {source} | {key} | {m['slices']} ({m['tumour_slices']}) | {_share(m['sensitivity'])} | "
                             f"{_share(m['specificity'])} | {_auc(m['roc_auc'])} |")
    if any(report.get(k) for k in ("tcga_lgg_held_out", "volumes_held_out", "healthy")):
        lines += ["", "![tumour probability per slice](slice_profiles.png)"]
    return lines


def plot_slice_profiles(scans, path: Path, per_kind: int = 3) -> None:
    """Plot tumour probability against slice position, with the mask's extent shaded, for a few scans."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = []
    for source in dict.fromkeys(s.source for s in scans):
        of_source = [s for s in scans if s.source == source]
        cases = list(dict.fromkeys(s.case for s in of_source))[:per_kind]
        chosen += [s for s in of_source if s.case in cases]
    columns = 3
    rows = (len(chosen) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.4 * rows), squeeze=False)
    for ax, scan in zip(axes.ravel(), chosen):
        position = np.arange(len(scan.tumour))
        for index in np.flatnonzero(scan.tumour == 1):
            ax.axvspan(index - 0.5, index + 0.5, color="tab:red", alpha=0.15, lw=0)
        ax.plot(position, scan.tumour_probability, ".-", color="tab:blue", ms=3, lw=1)
        ax.axhline(0.5, color="grey", lw=0.5, ls="--")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{scan.source} {scan.case[:22]} {scan.sequence}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(chosen):]:
        ax.axis("off")
    fig.supxlabel("slice (first = inferior / first in the file); shaded: slices with tumour in the mask", fontsize=8)
    fig.supylabel("P(tumour)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, class_ids, title: str, path: Path) -> None:
    """Plot a confusion matrix with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_ids)), class_ids, rotation=30)
    ax.set_yticks(range(len(class_ids)), class_ids)
    ax.set(xlabel="predicted", ylabel="true", title=title[:60])
    top = matrix.max() if matrix.size else 1
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(section: dict, path: Path, bins: int = 15) -> None:
    """Plot accuracy against confidence (the reliability diagram) of calibrated probabilities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probabilities, labels = section["_probabilities"], section["_labels"]
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    centres, accuracy = [], []
    for low, high in zip(edges[:-1], edges[1:]):
        mask = (confidence > low) & (confidence <= high)
        if mask.any():
            centres.append(confidence[mask].mean())
            accuracy.append(correct[mask].mean())
    fig, ax = plt.subplots(figsize=(4.6, 4.6))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot(centres, accuracy, "o-", label="model")
    ax.set(xlabel="confidence", ylabel="accuracy", title=f"Reliability (ECE {section['ece']:.3f})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def without_arrays(value):
    """Return a report with its private ("_"-prefixed, array-holding) entries dropped, for JSON and markdown."""
    if isinstance(value, dict):
        return {k: without_arrays(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [without_arrays(v) for v in value]
    return value
