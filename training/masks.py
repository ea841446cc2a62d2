"""Tumour masks in model-input coordinates, for mask-guided training.

A packed slice's mask is where its tumour lies in the square the model sees: the source's mask (tcga-lgg PNG,
brats label map) cut to the same head box and letterboxed the same way as the slice, then averaged down to
MASK_SIZE x MASK_SIZE cells (0 = no tumour in the cell, 255 = all tumour). A mask is known for every slice of a
source with masks and every healthy head (empty), and unknown for folder-per-class sets (brain-tumor-mri), whose
tumour slices come without outlines.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from convnest_viewer.inference.preprocess import Letterbox

MASK_SIZE = 48  # cells per side of a packed mask (a quarter of a 192 px input)
HEALTHY_SOURCE = "healthy-heads"  # whole healthy heads: every mask is empty
LABEL_MAP_GLOB = "OTMultiClass.nii*"  # brats label maps beside the case's image volumes


def model_mask(mask: np.ndarray, geometry: Letterbox, cells: int = MASK_SIZE) -> np.ndarray:
    """Return a slice's boolean tumour mask as the model input sees it: cropped, letterboxed, cells x cells, 0-255."""
    if mask.shape != (geometry.rows, geometry.columns):
        raise ValueError(f"mask is {mask.shape} but its slice is {(geometry.rows, geometry.columns)}")
    region = mask[geometry.crop.slices] if geometry.crop is not None else mask
    canvas = np.zeros((geometry.size, geometry.size), np.float32)
    canvas[geometry.box] = cv2.resize(region.astype(np.float32), (geometry.width, geometry.height),
                                      interpolation=cv2.INTER_AREA)
    small = cv2.resize(canvas, (cells, cells), interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(small * 255), 0, 255).astype(np.uint8)


def record_tumour_mask(record, shape: tuple[int, int]) -> np.ndarray | None:
    """Return a record's boolean tumour mask on its slice (of that shape); None where the source has no masks."""
    from training.sources import tcga_mask_path
    from training.volumes import take_slice, volume_array

    if record.source == HEALTHY_SOURCE or record.synthetic:  # mirrored halves are tumour-free by construction
        return np.zeros(shape, bool)
    if record.source == "tcga-lgg":
        path = tcga_mask_path(record)
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise ValueError(f"{path}: tumour mask unreadable")
        return mask > 127
    if record.plane and str(record.path).lower().endswith((".nii", ".nii.gz")):
        labels = next(Path(record.path).parent.glob(LABEL_MAP_GLOB), None)
        if labels is not None:
            return take_slice(volume_array(labels), record.plane, record.slice_index) > 0
    return None

