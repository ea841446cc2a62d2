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
    ("cross_dataset", "Cross-dataset: SARTAJ without training near-duplicates"),
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
    if history:
        from training.train import plot_curves

        plot_curves(history, out_dir / "curves.png")
        (out_dir / "training_log.json").write_text(json.dumps(history, indent=1))
    clean = _without_arrays(report)
    path = out_dir / "report.json"
    path.write_text(json.dumps(clean, indent=2))
    (out_dir / "report.md").write_text(markdown(clean))
    if run_dir and (Path(run_dir) / "log.csv").is_file():
        shutil.copy(Path(run_dir) / "log.csv", out_dir / "training_log.csv")
    return path


def markdown(report: dict) -> str:
    """Return the report as Markdown tables."""
    lines = ["# Evaluation report", ""]
    training = report.get("training")
    if training:
        config = training["config"]
        lines += [
            f"Model: `{config['architecture']}` at {config['size']} px, {training['epochs_completed']} epochs "
            f"({training['train_seconds'] / 60:.1f} min on {training['device']}), {training['final_weights']} weights; "
            f"{training['train_images']} training, {training['validation_images']} validation images "
            f"(split by near-duplicate groups), {training['test_images']} official test images.",
            "",
        ]
    lines += [f"Temperature (fitted on validation): {report['temperature']:.3f}", "",
              "| set | n | accuracy | macro F1 | Cohen's kappa | macro AUC (OvR) | ECE | ECE before scaling |",
              "|---|---|---|---|---|---|---|---|"]
    for key, title in SECTIONS:
        s = report.get(key)
        if s and s.get("n"):
            auc = f"{s['macro_auc_ovr']:.4f}" if s.get("macro_auc_ovr") is not None else "-"
            lines.append(f"| {title} | {s['n']} | {s['accuracy']:.4f} | {s['macro_f1']:.4f} | {s['cohen_kappa']:.4f} | "
                         f"{auc} | {s['ece']:.4f} | {s['ece_uncalibrated']:.4f} |")
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


def _without_arrays(value):
    if isinstance(value, dict):
        return {k: _without_arrays(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [_without_arrays(v) for v in value]
    return value
