"""Which brats tumour slices a model misses, as the app reads them: by case, label content, tumour area and place
within the tumour's extent (the held-out cases of `convnest scan-eval`). Prints a markdown report.

usage: python brats_misses.py [MODEL_DIR]   (default: the app's default model; run from the repository root)
"""
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from convnest_viewer.inference.classifier import Classifier
from training.volume_eval import evaluate_label_volume
from training.volumes import volume_array

ROOT = Path("../shared/data/brats2013-hgg")
CORE = (1, 3, 4)  # necrosis, non-enhancing and enhancing tumour; 2 is oedema


def slice_rows(classifier) -> list[dict]:
    """Return one row per (case, sequence, slice with any label): its content and whether it read a tumour class."""
    rows = []
    for case in sorted([*ROOT.glob("validation/*"), *ROOT.glob("test/*")]):
        labels = volume_array(next(case.glob("OTMultiClass.nii*")))
        flat = labels.reshape(len(labels), -1)
        extent = np.flatnonzero((flat > 0).any(axis=1))
        low, high = extent.min(), extent.max()
        for scan in evaluate_label_volume(classifier, case):
            for index in extent:
                cells = flat[index]
                rows.append({
                    "case": case.name.replace("brats_2013_", ""), "sequence": scan.sequence, "slice": int(index),
                    "core": bool(np.isin(cells, CORE).any()), "enhancing": bool((cells == 4).any()),
                    "area": int((cells > 0).sum()),
                    "depth": min(index - low, high - index) / max(1.0, (high - low) / 2),  # 0 at the extent's ends
                    "lower_half": index < (low + high) / 2,
                    "found": bool(scan.called_tumour[index]),
                    "assessed": True if scan.assessed is None else bool(scan.assessed[index]),
                })
    return rows


def table(rows: list[dict], title: str, group) -> str:
    """Return a markdown table: per group, the share of tumour slices read a tumour class, per sequence."""
    counts = defaultdict(lambda: defaultdict(list))
    for row in rows:
        counts[group(row)][row["sequence"]].append(row["found"])
    sequences = sorted({row["sequence"] for row in rows})
    lines = [f"| {title} | " + " | ".join(f"{s}: found (slices)" for s in sequences) + " |",
             "|---|" + "---|" * len(sequences)]
    for key in sorted(counts):
        cells = [f"{100 * np.mean(counts[key][s]):.1f}% ({len(counts[key][s])})" if counts[key][s] else "–"
                 for s in sequences]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def missed_runs(rows: list[dict], case: str, sequence: str) -> str:
    """Return the case's missed slices as runs ("29-56, 60")."""
    missed = [r["slice"] for r in rows if r["case"] == case and r["sequence"] == sequence and not r["found"]]
    runs, start = [], None
    for i, value in enumerate(missed):
        start = value if start is None else start
        if i + 1 == len(missed) or missed[i + 1] != value + 1:
            runs.append(f"{start}-{value}" if value > start else f"{value}")
            start = None
    return ", ".join(runs) or "none"


def main() -> None:
    classifier = Classifier(Path(sys.argv[1]) if len(sys.argv) > 1 else None, device="cpu")
    rows = slice_rows(classifier)
    print(f"# brats held-out tumour slices: what {classifier.card.name} misses\n")
    print("Every slice with any label (the target's slices), read as the app reads them (gate, slice context).\n")
    print(table(rows, "case", lambda r: r["case"]) + "\n")
    print(table(rows, "label content", lambda r: "tumour core (labels 1, 3, 4)" if r["core"] else "oedema only") + "\n")
    print(table(rows, "enhancing tumour (label 4)", lambda r: "yes" if r["enhancing"] else "no") + "\n")
    print(table(rows, "labelled area (mm2)", lambda r: "a: < 500" if r["area"] < 500 else
                "b: 500-2000" if r["area"] < 2000 else "c: >= 2000") + "\n")
    print(table(rows, "place in the tumour's extent", lambda r: "a: outer 20%" if r["depth"] < 0.2 else
                "b: 20-50%" if r["depth"] < 0.5 else "c: inner half") + "\n")
    print(table(rows, "half of the extent", lambda r: "inferior" if r["lower_half"] else "superior") + "\n")
    print(table(rows, "assessed by the gate", lambda r: "assessed" if r["assessed"] else "not assessed") + "\n")
    print("| case | sequence | missed slices |\n|---|---|---|")
    for case in sorted({r["case"] for r in rows}):
        for sequence in sorted({r["sequence"] for r in rows}):
            print(f"| {case} | {sequence} | {missed_runs(rows, case, sequence)} |")


if __name__ == "__main__":
    main()
