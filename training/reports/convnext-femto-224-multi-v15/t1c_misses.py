"""Why a model ranks held-out tcga-lgg T1c slices worse than T1 and FLAIR: its tumour probability against how well
the tumour shows on each slice, per scan, and where its false tumour calls lie. Reads a `convnest scan-eval`
folder's scans.json (no inference) and the tcga-lgg slices and masks it was measured on. Prints a markdown report.

Visibility of a tumour slice: |mean inside the mask - mean of the reference region| / standard deviation of the
head's pixels (the app's head mask), with two reference regions: the surround (a 7-pixel band around the mask, inside the head) and the
mirror (the mask flipped left-right, minus the mask: the same place in the other hemisphere).

usage: python t1c_misses.py [SCAN_EVAL_DIR]   (default: v15's scans folder; run from the repository root)
"""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from convnest_viewer.inference.foreground import head_mask

HERE = Path(__file__).resolve().parent
ROOT = Path("../shared/data/tcga-lgg")
SEQUENCES = ("flair", "t1", "t1c")
BINS = ((0.0, 0.25), (0.25, 0.5), (0.5, 1.0), (1.0, np.inf))
NO_TUMOUR = "notumor"


def visibility(case: str, index: int, sequence: str) -> tuple[float, float, int]:
    """Return the tumour's contrast against its surround and against its mirror region, and the mask's area."""
    stem = ROOT / case / f"{case}_{index + 1}"
    image = cv2.imread(f"{stem}_{sequence}.jpg", cv2.IMREAD_GRAYSCALE)
    mask = cv2.imread(f"{stem}_mask.png", cv2.IMREAD_GRAYSCALE)
    if image is None or mask is None:
        raise FileNotFoundError(f"{stem}_{sequence}.jpg or its mask: missing or unreadable")
    head = head_mask(image)  # the head as the app and the packing rule find it
    image, mask = image.astype(float), mask > 0
    spread = image[head].std()
    band = cv2.dilate(mask.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool) & ~mask & head
    mirror = mask[:, ::-1] & ~mask & head
    inside = image[mask].mean()
    against_band = abs(inside - image[band].mean()) / spread if band.any() else np.nan
    against_mirror = abs(inside - image[mirror].mean()) / spread if mirror.sum() >= 20 else np.nan
    return against_band, against_mirror, int(mask.sum())


def slice_rows(scans: list[dict]) -> list[dict]:
    """Return one row per labelled tcga-lgg slice: case, sequence, truth, tumour probability, position, visibility."""
    rows = []
    for scan in scans:
        if scan["source"] != "tcga-lgg":
            continue
        normal = scan["class_ids"].index(NO_TUMOUR)
        count = len(scan["labelled"])
        for index, (label, probabilities) in enumerate(zip(scan["labelled"], scan["probabilities"])):
            if label < 0:
                continue
            row = {"case": scan["case"], "sequence": scan["sequence"], "tumour": int(label), "index": index,
                   "position": index / max(1, count - 1), "probability": 1.0 - probabilities[normal],
                   "called": scan["class_ids"][int(np.argmax(probabilities))]}
            if label == 1:
                row["band"], row["mirror"], row["area"] = visibility(scan["case"], index, scan["sequence"])
            rows.append(row)
    return rows


def auc(positives: list[dict], negatives: list[dict]) -> float:
    """Return the ROC AUC of tumour probability, these tumour slices against these no-tumour slices."""
    if not positives or not negatives:
        return float("nan")
    truth = [1] * len(positives) + [0] * len(negatives)
    return roc_auc_score(truth, [r["probability"] for r in positives + negatives])


def visibility_table(rows: list[dict], measure: str, title: str) -> str:
    """Return a markdown table: per visibility bin and sequence, ROC AUC of its tumour slices against every
    no-tumour slice of that sequence, and the share read a tumour class."""
    lines = [f"| {title} | " + " | ".join(f"{s}: slices, ROC AUC, read tumour" for s in SEQUENCES) + " |",
             "|---|" + "---|" * len(SEQUENCES)]
    for low, high in BINS:
        cells = []
        for sequence in SEQUENCES:
            negatives = [r for r in rows if r["sequence"] == sequence and not r["tumour"]]
            chosen = [r for r in rows if r["sequence"] == sequence and r["tumour"] and low <= r[measure] < high]
            found = np.mean([r["called"] != NO_TUMOUR for r in chosen]) if chosen else np.nan
            cells.append(f"{len(chosen)}, {auc(chosen, negatives):.3f}, {100 * found:.0f}%" if chosen else "0")
        label = f"{low:g}-{high:g}" if np.isfinite(high) else f">= {low:g}"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scan_table(rows: list[dict], sequence: str) -> str:
    """Return a markdown table: per scan, mean tumour probability of its tumour and no-tumour slices, the highest
    no-tumour one, the scan's own ROC AUC and its tumour slices' median visibility."""
    lines = [f"| case | {sequence} tumour slices: mean p | no-tumour slices: mean p | highest | ROC AUC within the scan "
             "| median visibility (surround, mirror) |", "|---|---|---|---|---|---|"]
    for case in sorted({r["case"] for r in rows}):
        mine = [r for r in rows if r["case"] == case and r["sequence"] == sequence]
        tumour = [r for r in mine if r["tumour"]]
        normal = [r for r in mine if not r["tumour"]]
        lines.append(f"| {case} | {np.mean([r['probability'] for r in tumour]):.2f} ({len(tumour)}) "
                     f"| {np.mean([r['probability'] for r in normal]):.2f} ({len(normal)}) "
                     f"| {max(r['probability'] for r in normal):.2f} | {auc(tumour, normal):.2f} "
                     f"| {np.nanmedian([r['band'] for r in tumour]):.2f}, {np.nanmedian([r['mirror'] for r in tumour]):.2f} |")
    return "\n".join(lines)


def centred_auc(rows: list[dict], sequence: str) -> float:
    """Return the ROC AUC after subtracting each scan's median tumour probability (what a per-scan offset costs)."""
    mine = [r for r in rows if r["sequence"] == sequence]
    medians = {case: np.median([r["probability"] for r in mine if r["case"] == case]) for case in {r["case"] for r in mine}}
    return roc_auc_score([r["tumour"] for r in mine], [r["probability"] - medians[r["case"]] for r in mine])


def false_calls_table(rows: list[dict]) -> str:
    """Return a markdown table: no-tumour slices read a tumour class, per sequence and third of the scan's extent."""
    thirds = (("inferior third (skull base)", 0.0, 1 / 3), ("middle third", 1 / 3, 2 / 3), ("superior third", 2 / 3, 1.01))
    lines = ["| part of the scan | " + " | ".join(f"{s}: read tumour (slices), classes" for s in SEQUENCES) + " |",
             "|---|" + "---|" * len(SEQUENCES)]
    for name, low, high in thirds:
        cells = []
        for sequence in SEQUENCES:
            chosen = [r for r in rows if r["sequence"] == sequence and not r["tumour"] and low <= r["position"] < high]
            wrong = [r["called"] for r in chosen if r["called"] != NO_TUMOUR]
            kinds = ", ".join(f"{k} {wrong.count(k)}" for k in sorted(set(wrong)))
            cells.append(f"{100 * len(wrong) / max(1, len(chosen)):.1f}% ({len(chosen)}){', ' + kinds if kinds else ''}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "scans"
    scans = json.loads((folder / "scans.json").read_text())["scans"]
    rows = slice_rows(scans)
    print(f"# tcga-lgg held-out T1c: why it ranks worse than T1 and FLAIR (`{folder}`)\n")
    print("The packing rule's labelled slices of the held-out institution's scans, read as the app reads them. "
          "Each visibility bin's tumour slices are ranked against every no-tumour slice of the sequence.\n")
    print(visibility_table(rows, "band", "tumour against its surround (head SDs)") + "\n")
    print(visibility_table(rows, "mirror", "tumour against the other hemisphere (head SDs)") + "\n")
    print("| sequence | ROC AUC | after removing each scan's median |\n|---|---|---|")
    for sequence in SEQUENCES:
        mine = [r for r in rows if r["sequence"] == sequence]
        print(f"| {sequence} | {auc([r for r in mine if r['tumour']], [r for r in mine if not r['tumour']]):.3f} "
              f"| {centred_auc(rows, sequence):.3f} |")
    print()
    print(scan_table(rows, "t1c") + "\n")
    print("No-tumour slices read a tumour class, by where they lie in the scan (slice 1 is the lowest):\n")
    print(false_calls_table(rows))


if __name__ == "__main__":
    main()
