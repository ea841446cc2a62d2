"""Evaluate a classifier on whole scans, opened by the app's own loader and classified by `convnest classify`'s loop.

Three kinds of scan, each reported per sequence:
- tcga-lgg cases of held-out institutions (one JPEG per slice, with masks): tumour vs no tumour per slice;
- label volumes (brats): every axial slice of a held-out case, truth from its label map;
- healthy heads (DICOM series or NIfTI files): the share of slices called no tumour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from convnest_viewer.batch import classify_series
from convnest_viewer.inference.context import in_context
from convnest_viewer.inference.foreground import head_mask
from convnest_viewer.inference.head_edge import at_head_edge
from convnest_viewer.io import apply_window, load_study
from convnest_viewer.inference.card import NO_FINDING
from training.sources import TCGA_PIXEL_MM, TCGA_SLICE_MM, BRATS_SEQUENCES, slice_labels
from training.volumes import volume_array


@dataclass
class ScanResult:
    """One scan in one sequence: per slice, the probabilities and the truth (1 tumour, 0 none, -1 unknown)."""

    source: str
    case: str
    sequence: str
    probabilities: np.ndarray  # (slices, classes)
    tumour: np.ndarray  # (slices,) any tumour on the slice: 1 / 0, -1 where no truth (healthy: all 0)
    labelled: np.ndarray  # (slices,) the training rule's label: 1 tumour, 0 no tumour, -1 left out
    brain: np.ndarray  # (slices,) bool: the slice passes through the brain (enough head visible)
    class_ids: list[str] = field(default_factory=list)
    held_out: bool = True
    assessed: np.ndarray | None = None  # (slices,) bool: the model's gate let the slice be judged (None: all were)

    def verdict(self):
        """Return the scan's verdict as the viewer gives it (only assessed slices count)."""
        from convnest_viewer.verdict import series_verdict

        withheld = None if self.assessed is None else ~self.assessed
        return series_verdict(self.probabilities, self.class_ids, NO_FINDING, withheld)

    @property
    def tumour_probability(self) -> np.ndarray:
        """Return each slice's probability of any tumour class (1 - P(no tumour))."""
        return 1.0 - self.probabilities[:, self.class_ids.index(NO_FINDING)]

    @property
    def called_tumour(self) -> np.ndarray:
        """Return, per slice, whether the most probable class is a tumour."""
        return self.probabilities.argmax(axis=1) != self.class_ids.index(NO_FINDING)


def classify_paths(classifier, paths: Sequence[Path], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Return the probabilities of every slice the loader finds in paths, in the loader's order, and whether the
    model's gate assessed each (the series rule over each series, or over all of them when each file is one image:
    a scan stored as one file per slice)."""
    result = load_study([Path(p) for p in paths])
    if result.skipped:
        reasons = "; ".join(f"{s.path.name}: {s.reason}" for s in result.skipped[:3])
        raise RuntimeError(f"{len(result.skipped)} file(s) could not be read: {reasons}")
    return classify_loaded(classifier, result.series, batch_size)


def classify_loaded(classifier, series_list: Sequence, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Return the probabilities of every slice of loaded series and whether the gate assessed each (its series rule
    over each series, or over all of them when each is one image: a scan stored as one file per slice)."""
    per_series = [list(classify_series(classifier, series, batch_size)) for series in series_list]
    for outcome in (o for outcomes in per_series for o in outcomes):
        if outcome.error is not None:
            raise RuntimeError(outcome.error)
    if all(series.n_slices * series.n_volumes == 1 for series in series_list):
        per_series = [[o for outcomes in per_series for o in outcomes]]  # a stack of image files: one scan's slices
        for row, outcome in enumerate(per_series[0]):
            outcome.step_position = float(row)  # each file is slice 0 of its own series: place them in file order
    sigma = classifier.card.slice_context.sigma_slices
    rows, assessed = [], []
    for outcomes in per_series:
        assessed.append(series_assessed(outcomes))
        rows.append(read_in_context(outcomes, assessed[-1], sigma))
    return np.concatenate(rows), np.concatenate(assessed).astype(bool)


def read_in_context(outcomes: Sequence, assessed: np.ndarray, sigma: float) -> np.ndarray:
    """Return the probabilities of one series' classified slices read with their assessed neighbours, volume by
    volume, as the viewer's result store reads them (sigma: the card's slice context; 0: each slice alone)."""
    rows = np.array([o.probabilities for o in outcomes], np.float64)
    volumes = np.array([o.volume for o in outcomes])
    positions = np.array([o.index if o.step_position is None else o.step_position for o in outcomes], float)
    for volume in np.unique(volumes):
        chosen = volumes == volume
        rows[chosen] = in_context(rows[chosen], assessed[chosen], sigma, positions[chosen])
    return rows


def _assessed(outcome) -> bool:
    """Return whether the gate let a classified slice count (a model without a gate judges every slice)."""
    return outcome.decision is None or bool(outcome.decision.assessed)


def series_assessed(outcomes: Sequence) -> np.ndarray:
    """Return, per classified slice of one series, whether the gate assessed it: its per-slice rules, then its series
    rule (slices at the edge of the head), volume by volume, as the viewer's result store applies them."""
    assessed = np.array([_assessed(o) for o in outcomes], bool)
    fraction = max((o.min_head_fraction for o in outcomes), default=0.0)
    volumes = np.array([o.volume for o in outcomes])
    shares = np.array([np.nan if o.head_share is None else o.head_share for o in outcomes], float)
    for volume in np.unique(volumes):
        rows = np.flatnonzero(volumes == volume)
        assessed[rows] &= ~at_head_edge(shares[rows], assessed[rows], fraction)
    return assessed


def _brain_slices(shares: np.ndarray, fraction: float = 0.4) -> np.ndarray:
    return shares >= fraction * max(float(shares.max()), 1e-9)


def evaluate_tcga_case(classifier, case_dir: Path, sequence: str) -> ScanResult | None:
    """Classify one tcga-lgg case's slices of one sequence (one file per slice) against its masks."""
    case = case_dir.name
    pattern = re.compile(rf"^{re.escape(case)}_(\d+)_{sequence}\.jpg$")
    numbers = sorted(int(m.group(1)) for p in case_dir.iterdir() if (m := pattern.match(p.name)))
    if not numbers:
        return None
    paths = [case_dir / f"{case}_{n}_{sequence}.jpg" for n in numbers]
    masks = [cv2.imread(str(case_dir / f"{case}_{n}_mask.png"), cv2.IMREAD_GRAYSCALE) for n in numbers]
    area = np.array([(m > 127).sum() * TCGA_PIXEL_MM ** 2 for m in masks])
    heads = np.array([head_mask(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)).mean() for p in paths])
    labels, _ = slice_labels(area, heads, TCGA_SLICE_MM)
    probabilities, assessed = classify_paths(classifier, paths)
    return ScanResult("tcga-lgg", case, sequence, probabilities, (area > 0).astype(int), _rule_labels(labels),
                      _brain_slices(heads), list(classifier.class_ids), assessed=assessed)


def evaluate_label_volume(classifier, case_dir: Path, held_out: bool = True) -> list[ScanResult]:
    """Classify every axial slice of a label-volume case (brats) in each sequence, truth from its label map."""
    label_path = next(case_dir.glob("OTMultiClass.nii*"))
    tumour_voxels = volume_array(label_path) > 0
    brain = volume_array(next(case_dir.glob("brainmask.nii*"))) > 0
    area = tumour_voxels.reshape(len(tumour_voxels), -1).sum(axis=1).astype(float)
    shares = brain.reshape(len(brain), -1).mean(axis=1)
    labels, _ = slice_labels(area, shares, 1.0)
    results = []
    for prefix, sequence in BRATS_SEQUENCES.items():
        image = next(case_dir.glob(f"{prefix}_*.nii*"), None)
        if image is None:
            continue
        probabilities, assessed = classify_paths(classifier, [image])
        results.append(ScanResult(case_dir.parent.parent.name, case_dir.name, sequence, probabilities,
                                  (area > 0).astype(int), _rule_labels(labels), _brain_slices(shares),
                                  list(classifier.class_ids), held_out, assessed))
    return results


def evaluate_healthy(classifier, path: Path, sequence: str, held_out: bool = True) -> ScanResult:
    """Classify every slice of a healthy head (a DICOM series folder or a NIfTI file)."""
    result = load_study([Path(path)])
    if len(result.series) != 1:
        raise RuntimeError(f"{path}: expected one series, found {len(result.series)}")
    series = result.series[0]
    shares = []
    outcomes = list(classify_series(classifier, series, 32))
    for outcome in outcomes:
        if outcome.error is not None:
            raise RuntimeError(outcome.error)
        shares.append(head_mask(apply_window(outcome.prepared.values, outcome.prepared.window)).mean())
    assessed = series_assessed(outcomes)
    rows = read_in_context(outcomes, assessed, classifier.card.slice_context.sigma_slices)
    count = len(rows)
    return ScanResult("healthy", Path(path).name.split(".")[0], sequence, rows, np.zeros(count, int),
                      np.zeros(count, int), _brain_slices(np.array(shares)), list(classifier.class_ids), held_out,
                      np.array(assessed, bool))


def _rule_labels(labels: np.ndarray) -> np.ndarray:
    """Map GLIOMA / NOTUMOR / -1 labels to 1 / 0 / -1."""
    from training.sources import GLIOMA, NOTUMOR

    return np.where(labels == GLIOMA, 1, np.where(labels == NOTUMOR, 0, -1))


def tumour_metrics(truth: np.ndarray, probability: np.ndarray, called: np.ndarray) -> dict:
    """Return slices, tumour slices, sensitivity, specificity and ROC AUC of tumour vs no tumour."""
    from sklearn.metrics import roc_auc_score

    keep = truth >= 0
    truth, probability, called = truth[keep], probability[keep], called[keep]
    positives, negatives = truth == 1, truth == 0
    return {
        "slices": int(keep.sum()),
        "tumour_slices": int(positives.sum()),
        "sensitivity": float(called[positives].mean()) if positives.any() else None,
        "specificity": float((~called[negatives]).mean()) if negatives.any() else None,
        "roc_auc": float(roc_auc_score(truth, probability)) if positives.any() and negatives.any() else None,
    }


def type_shares(scans: Sequence[ScanResult]) -> dict:
    """Return, over the tumour slices called a tumour, the share given each tumour class."""
    picked = [s.probabilities[(s.tumour == 1) & s.called_tumour] for s in scans]
    rows = np.concatenate(picked) if picked else np.zeros((0, 0))
    if not len(rows):
        return {}
    class_ids = scans[0].class_ids
    predicted = rows.argmax(axis=1)
    return {c: float((predicted == i).mean()) for i, c in enumerate(class_ids) if c != NO_FINDING}


def summarise_tumour_scans(scans: Sequence[ScanResult]) -> dict:
    """Return per-sequence metrics of tumour scans: on the training rule's labels and on every slice."""
    summary = {}
    for sequence in sorted({s.sequence for s in scans}):
        chosen = [s for s in scans if s.sequence == sequence]
        stack = lambda name: np.concatenate([getattr(s, name) for s in chosen])  # noqa: E731
        probability, called = stack("tumour_probability"), stack("called_tumour")
        summary[sequence] = {
            "cases": len(chosen),
            "labelled": tumour_metrics(stack("labelled"), probability, called),
            "all_slices": tumour_metrics(stack("tumour"), probability, called),
            "tumour_type_shares": type_shares(chosen),
        }
    return summary


def summarise_healthy(scans: Sequence[ScanResult]) -> dict:
    """Return, per healthy scan, the share of all slices and of slices through the brain called no tumour."""
    return {
        f"{s.case} ({s.sequence})": {
            "slices": int(len(s.probabilities)),
            "no_tumour_share": float((~s.called_tumour).mean()),
            "brain_slices": int(s.brain.sum()),
            "no_tumour_share_brain": float((~s.called_tumour[s.brain]).mean()) if s.brain.any() else None,
            "predicted_counts": {c: int((s.probabilities.argmax(axis=1) == i).sum()) for i, c in enumerate(s.class_ids)},
            "held_out": s.held_out,
        }
        for s in scans
    }


VERDICT_LABELS = ("tumour", "equivocal", "no tumour", "not assessed")


def summarise_verdicts(scans: Sequence[ScanResult]) -> dict:
    """Return, per sequence, how many scans each verdict the viewer gives (tumour, equivocal, no tumour, not
    assessed) and how many tumour verdicts have their key slice on a slice with tumour in the mask."""
    summary = {}
    for sequence in sorted({s.sequence for s in scans}):
        verdicts = [(scan, scan.verdict()) for scan in scans if scan.sequence == sequence]
        row = {label: sum(v.label == label for _, v in verdicts) for label in VERDICT_LABELS}
        row["scans"] = len(verdicts)
        row["key_slice_on_tumour"] = int(sum(v.label == "tumour" and scan.tumour[v.finding.key_slice] == 1
                                             for scan, v in verdicts))
        tumour = [(scan.tumour == 1) for scan, _ in verdicts]
        withheld = [t & ~scan.assessed for (scan, _), t in zip(verdicts, tumour) if scan.assessed is not None]
        row["tumour_slices"] = int(sum(t.sum() for t in tumour))
        row["tumour_slices_not_assessed"] = int(sum(w.sum() for w in withheld))
        summary[sequence] = row
    return summary


def healthy_verdicts(scans: Sequence[ScanResult]) -> dict:
    """Return each healthy scan's verdict as the viewer words it, e.g. "Glioma on slices 69-81 (78%)"."""
    return {f"{s.case} ({s.sequence})": {"label": (v := s.verdict()).label, "text": v.text({})} for s in scans}
