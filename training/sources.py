"""List the labelled slices of each source: folder-per-class sets, tcga-lgg scans with masks, NIfTI volumes.

Slice labels from masks follow one rule for every source with masks (tcga-lgg, brats label maps):
- tumour (glioma) when the mask covers at least MIN_TUMOUR_MM2 on the slice;
- no tumour when the slice's mask is empty, the slice lies at least MIN_GAP_MM from every slice with tumour,
  and enough head is visible (at least MIN_HEAD_FRACTION of the scan's largest head section in that plane);
- left out otherwise (a small or partial tumour, a slice next to the tumour, little head), and counted.
tcga-lgg tumour slices whose mask stays on one side of the head's midline also give a synthetic no-tumour slice:
the free half mirrored across the midline (training.mirror), tagged so it never enters validation or test.
Whole healthy heads (NIfTI volumes, DICOM series) give no-tumour slices wherever some head is visible, in every
plane their voxels sample well.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from convnest_viewer.inference.card import CLASS_IDS
from convnest_viewer.io.contrast import guess_contrast
from convnest_viewer.inference.foreground import MIN_HEAD_SHARE, head_mask, head_share
from convnest_viewer.io.pixels import apply_window, percentile_window
from training.data import ImageRecord, list_dataset
from training.mirror import MIRROR_MARGIN_MM, mask_midline, synthetic_name, tumour_free_side
from training.volumes import PLANES, plane_length, sampled_planes, slice_stride, take_slice, volume_array

GLIOMA, NOTUMOR = CLASS_IDS.index("glioma"), CLASS_IDS.index("notumor")
MIN_TUMOUR_MM2 = 100.0  # about a 1 cm x 1 cm lesion
MIN_GAP_MM = 8.0
MIN_HEAD_FRACTION = 0.4
TCGA_PIXEL_MM = 0.9  # tcga-lgg slices are 256 x 256 over a field of view of about 22-24 cm
TCGA_SLICE_MM = 5.0  # typical slice spacing of the tcga-lgg scans (20-40 slices over the head)
VOLUME_STRIDE = 2  # mm between slices taken from a volume (every second 1 mm slice): neighbours are near-copies
TCGA_SEQUENCES = ("t1", "flair", "t1c")
HEALTHY_SOURCE = "healthy-heads"
BRATS_SEQUENCES = {"Flair": "flair", "T1c": "t1c"}


@dataclass
class SourceListing:
    """The labelled slices of one source and, per reason, how many slices were left out."""

    source: str
    records: list[ImageRecord] = field(default_factory=list)
    left_out: Counter = field(default_factory=Counter)

    def summary(self) -> dict:
        """Return counts per class and per reason left out."""
        return {"source": self.source, "images": len(self.records),
                "per_class": dict(Counter(CLASS_IDS[r.label] for r in self.records)),
                "per_sequence": dict(Counter(r.sequence or "unknown" for r in self.records)),
                "synthetic": dict(Counter(r.synthetic for r in self.records if r.synthetic)),
                "left_out": dict(self.left_out)}


def detect_source(path: Path) -> str:
    """Return which kind of source a path holds: folder-per-class, tcga-lgg, label volumes or a healthy volume."""
    path = Path(path)
    if path.is_file() and path.name.lower().endswith((".nii", ".nii.gz")):
        return "healthy-volume"
    if (path / "Training").is_dir() and (path / "Testing").is_dir():
        return "folder-per-class"
    if (path / "cases.csv").is_file():
        return "tcga-lgg"
    if any(path.glob("*/*/OTMultiClass.nii*")):
        return "label-volumes"
    raise ValueError(f"{path}: not a known dataset (folder-per-class, tcga-lgg, label volumes or a NIfTI volume)")


def list_source(path: Path, healthy: bool = False) -> SourceListing:
    """List the labelled slices of any known source; healthy=True reads the path as a whole healthy head."""
    kind = "healthy-volume" if healthy else detect_source(path)
    if kind == "folder-per-class":
        return SourceListing(Path(path).name, list_dataset(path))
    if kind == "tcga-lgg":
        return list_tcga_lgg(path)
    if kind == "label-volumes":
        return list_label_volumes(path)
    return list_healthy_volume(path)


def slice_labels(tumour_mm2: np.ndarray, head: np.ndarray, slice_mm: float) -> tuple[np.ndarray, list[str]]:
    """Label a scan's slices in order: GLIOMA, NOTUMOR or -1 (left out), and say why each was left out."""
    tumour_slices = np.flatnonzero(tumour_mm2 > 0)
    head_ok = head >= MIN_HEAD_FRACTION * max(float(head.max()), 1e-9)
    labels, reasons = np.full(len(tumour_mm2), -1), [""] * len(tumour_mm2)
    for i, area in enumerate(tumour_mm2):
        if area >= MIN_TUMOUR_MM2:
            labels[i] = GLIOMA
        elif area > 0:
            reasons[i] = "tumour smaller than the minimum area"
        elif len(tumour_slices) and np.abs(tumour_slices - i).min() * slice_mm < MIN_GAP_MM:
            reasons[i] = "no tumour, but next to a tumour slice"
        elif not head_ok[i]:
            reasons[i] = "no tumour, but too little head visible"
        else:
            labels[i] = NOTUMOR
    return labels, reasons


def _raster_head(path: Path) -> np.ndarray | None:
    """Return the head mask of an 8-bit raster slice, None when the file cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return head_mask(image) if image is not None else None


def tcga_mask_path(record: ImageRecord) -> Path:
    """Return the tumour mask file of a tcga-lgg slice record."""
    return record.path.with_name(record.path.name.replace(f"_{record.sequence}.jpg", "_mask.png"))


def list_tcga_lgg(root: Path, only: tuple[str, ...] = ()) -> SourceListing:
    """List tcga-lgg slices per sequence, labelled from their masks (see the module docstring); all or some cases."""
    root = Path(root)
    listing = SourceListing("tcga-lgg")
    with open(root / "cases.csv", newline="") as handle:
        cases = [row for row in csv.DictReader(handle) if not only or row["case"] in only]
    pattern = re.compile(r"_(\d+)_mask\.png$")
    for row in cases:
        case, folder = row["case"], root / row["case"]
        numbers = sorted(int(m.group(1)) for p in folder.glob("*_mask.png") if (m := pattern.search(p.name)))
        if not numbers:
            listing.left_out["case without masks"] += 1
            continue
        masks = [cv2.imread(str(folder / f"{case}_{n}_mask.png"), cv2.IMREAD_GRAYSCALE) for n in numbers]
        tumour_mm2 = np.array([(m > 127).sum() * TCGA_PIXEL_MM ** 2 for m in masks])
        for sequence in row["sequences"].split():
            paths = [folder / f"{case}_{n}_{sequence}.jpg" for n in numbers]
            heads = [_raster_head(p) if p.is_file() else None for p in paths]
            head = np.array([float(h.mean()) if h is not None and h.size else 0.0 for h in heads])
            labels, reasons = slice_labels(tumour_mm2, head, TCGA_SLICE_MM)
            for i, (path, label) in enumerate(zip(paths, labels)):
                if not path.is_file():
                    listing.left_out["image file missing"] += 1
                elif label < 0:
                    listing.left_out[reasons[i]] += 1
                else:
                    record = ImageRecord(path, int(label), "", listing.source, case, row["institution"], sequence,
                                         "axial", i, len(numbers))
                    listing.records.append(record)
                    if label == GLIOMA:
                        _add_mirrored(listing, record, masks[i], heads[i])
    return listing


def _add_mirrored(listing: SourceListing, record: ImageRecord, mask: np.ndarray, head: np.ndarray) -> None:
    """Add the tumour-free half of a tumour slice, mirrored, as a no-tumour record when the mask allows it."""
    midline = mask_midline(head)
    side = tumour_free_side(mask > 127, midline, MIRROR_MARGIN_MM / TCGA_PIXEL_MM) if midline is not None else None
    if side is None:
        listing.left_out["tumour on both sides of the midline (not mirrored)"] += 1
        return
    listing.records.append(replace(record, label=NOTUMOR, synthetic=synthetic_name(side)))


def list_label_volumes(root: Path) -> SourceListing:
    """List slices of NIfTI volumes with label maps (brats layout: split/case/*.nii.gz) in all three planes."""
    root = Path(root)
    listing = SourceListing(root.name)
    for labels_path in sorted(root.glob("*/*/OTMultiClass.nii*")):
        case_dir = labels_path.parent
        split = case_dir.parent.name
        tumour = volume_array(labels_path) > 0
        brain = volume_array(next(case_dir.glob("brainmask.nii*"))) > 0
        for prefix, sequence in BRATS_SEQUENCES.items():
            image_path = next(case_dir.glob(f"{prefix}_*.nii*"), None)
            if image_path is None:
                listing.left_out[f"{sequence} volume missing"] += 1
                continue
            for plane in PLANES:
                count = plane_length(tumour.shape, plane)
                tumour_mm2 = np.array([take_slice(tumour, plane, i).sum() for i in range(count)], float)
                head = np.array([take_slice(brain, plane, i).mean() for i in range(count)])
                labels, reasons = slice_labels(tumour_mm2, head, 1.0)
                for i in range(0, count, VOLUME_STRIDE):
                    if labels[i] < 0:
                        listing.left_out[reasons[i]] += 1
                        continue
                    listing.records.append(ImageRecord(image_path, int(labels[i]), split, listing.source, case_dir.name,
                                                       "", sequence, plane, i, count))
    return listing


def _volume_head_share(values: np.ndarray) -> float:
    return head_share(apply_window(values, percentile_window(values)))


def list_healthy_volume(path: Path) -> SourceListing:
    """List the slices of a healthy head (NIfTI file or DICOM series) in the planes it samples well, as no tumour.

    Blank slices and slices with less head than MIN_HEAD_FRACTION of the largest section in their plane (beside
    or below the head: the slices the gate is meant to withhold) are left out, as for the sources with masks.
    The case is the file or folder's name (with its parent's for a DICOM folder, whose own name is often only
    the series').
    """
    path = Path(path)
    listing = SourceListing(HEALTHY_SOURCE)
    try:
        volume, planes = volume_array(path), sampled_planes(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable healthy head volume: {exc}") from exc
    case = path.name.split(".")[0] if path.is_file() else f"{path.parent.name}_{path.name}"
    sequence = guess_contrast(case)  # the app's rule, from the file or folder name
    for plane in planes:
        count = plane_length(volume.shape, plane)
        taken = range(0, count, slice_stride(path, plane, VOLUME_STRIDE))
        head = {i: _volume_head_share(take_slice(volume, plane, i)) for i in taken}
        largest = max(head.values(), default=0.0)
        for i in taken:
            if head[i] < MIN_HEAD_SHARE:
                listing.left_out["blank slice"] += 1
                continue
            if head[i] < MIN_HEAD_FRACTION * largest:
                listing.left_out["too little head visible"] += 1
                continue
            listing.records.append(ImageRecord(path, NOTUMOR, "", listing.source, case, "", sequence, plane, i, count))
    listing.left_out.update({f"{plane} plane not sampled finely enough": 1 for plane in PLANES if plane not in planes})
    return listing
