"""Choose a model's slice context (how widely a slice is read with its neighbours) on its run's validation patients.

The width is fitted on tcga-lgg patients the run held out for validation (never the held-out test institutions):
every validation scan is classified once, slice by slice, and read with its neighbours at each candidate width; the
chosen width is the narrowest whose mean tumour-slice ROC AUC over the sequences lies within a tolerance of the best.
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np

from convnest_viewer.inference.card import SliceContextSpec, load_card
from convnest_viewer.inference.context import in_context
from training import options

WIDTHS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)  # candidate Gaussian widths, in slices
TOLERANCE = 0.005  # the narrowest width within this of the best mean ROC AUC is chosen


def validation_cases(tcga_root: Path, run_config: Path) -> list[Path]:
    """Return the tcga-lgg case folders a run's split held out for validation (whole patients, outside its
    held-out test institutions), rebuilt from its run_config.json as training.train splits them."""
    from training.train import _patient_split

    config = json.loads(Path(run_config).read_text())
    held_out = set(options.names(config.get("holdout_institutions", "CS")))
    with open(Path(tcga_root) / "cases.csv", newline="") as handle:
        names = np.array([row["case"] for row in csv.DictReader(handle) if row["institution"] not in held_out])
    _, validation = _patient_split(names, np.arange(len(names)), config["val_fraction"], config["seed"])
    return [Path(tcga_root) / name for name in sorted(names[validation])]


def scans_alone(classifier, cases: list[Path]) -> list:
    """Classify every sequence of the cases with each slice read alone (the card's slice context switched off)."""
    from training.sources import TCGA_SEQUENCES
    from training.volume_eval import evaluate_tcga_case

    saved = classifier.card.slice_context
    classifier.card.slice_context = SliceContextSpec()
    try:
        return [scan for case in cases for sequence in TCGA_SEQUENCES
                if (scan := evaluate_tcga_case(classifier, case, sequence)) is not None]
    finally:
        classifier.card.slice_context = saved


def width_table(scans: list, widths=WIDTHS) -> dict[float, dict[str, float]]:
    """Return, per width, each sequence's tumour-slice ROC AUC (the packing rule's labels) and their mean."""
    from training.volume_eval import summarise_tumour_scans

    table = {}
    for width in widths:
        read = []
        for scan in scans:
            copied = copy.copy(scan)
            copied.probabilities = in_context(scan.probabilities, scan.assessed, width)
            read.append(copied)
        summary = summarise_tumour_scans(read)
        row = {sequence: summary[sequence]["labelled"]["roc_auc"] for sequence in summary}
        row["mean"] = float(np.mean(list(row.values())))
        table[float(width)] = row
    return table


def chosen_width(table: dict[float, dict[str, float]], tolerance: float = TOLERANCE) -> float:
    """Return the narrowest width whose mean ROC AUC is within tolerance of the best width's."""
    best = max(row["mean"] for row in table.values())
    return min(width for width, row in table.items() if row["mean"] >= best - tolerance)


def fit_markdown(name: str, cases: list[Path], table: dict, width: float) -> str:
    """Return the fit as a Markdown table, the chosen width marked."""
    sequences = [key for key in next(iter(table.values())) if key != "mean"]
    lines = [f"# Slice context of {name}", "",
             f"Fitted on {len(cases)} tcga-lgg validation patients of its run ({', '.join(c.name for c in cases)}); "
             f"tumour-slice ROC AUC per sequence, each slice read with its neighbours by a Gaussian of this width "
             f"(slices). Chosen: the narrowest width within {TOLERANCE} of the best mean.", "",
             "| width (slices) | " + " | ".join(sequences) + " | mean | chosen |",
             "|---|" + "---|" * (len(sequences) + 2)]
    for w, row in table.items():
        cells = " | ".join(f"{row[s]:.3f}" for s in sequences)
        lines.append(f"| {w:g} | {cells} | {row['mean']:.4f} | {'yes' if w == width else ''} |")
    return "\n".join(lines) + "\n"


def run_context_fit(model_dir: Path, tcga_root: Path, run_config: Path, report: Path | None, write_card: bool,
                    device: str = "auto") -> str:
    """Fit the slice context of a model folder on its run's validation patients; return the Markdown table."""
    from convnest_viewer.inference.classifier import Classifier

    classifier = Classifier(Path(model_dir), device=device)
    cases = validation_cases(tcga_root, run_config)
    table = width_table(scans_alone(classifier, cases))
    width = chosen_width(table)
    markdown = fit_markdown(classifier.card.name, cases, table, width)
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        (report / "context.md").write_text(markdown)
        (report / "context.json").write_text(json.dumps({"cases": [c.name for c in cases], "widths": table,
                                                         "chosen": width, "tolerance": TOLERANCE}, indent=2) + "\n")
    if write_card:
        card = load_card(model_dir)
        card.slice_context = SliceContextSpec(
            sigma_slices=width, evaluation={f"{w:g}": row for w, row in table.items()},
            chosen_on=f"tumour-slice ROC AUC on {len(cases)} tcga-lgg validation patients of its run (all sequences); "
                      f"the narrowest width within {TOLERANCE} of the best mean")
        card.save(Path(model_dir))
    return markdown
