"""Mirrored hemispheres: a no-tumour axial slice made from the tumour-free half of a tumour slice of the same scan.

Whole healthy heads are rare in our data, and the real no-tumour slices of tumour scans lie above or below the
tumour (skull base, vertex), so "much brain visible" alone would predict a tumour. Mirroring the half of a mid-brain
slice that the mask leaves free across the head's midline gives no-tumour slices at every level, from the same
scanner and sequence as the tumour slices.
"""

from __future__ import annotations

import numpy as np

from convnest_viewer.inference.foreground import head_mask

MIRROR_MARGIN_MM = 10.0  # the mask must stay at least this far beyond the midline on the side that is replaced
KEEP_SIDES = ("left", "right")  # image columns kept: left = below the midline, right = above it
SYNTHETIC_PREFIX = "mirror-"


def head_midline(image: np.ndarray) -> float | None:
    """Return the head's midline column on an 8-bit slice; None without a head."""
    return mask_midline(head_mask(image))


def mask_midline(head: np.ndarray) -> float | None:
    """Return the midline column of a head mask (the centre of its extent across columns); None without a head."""
    columns = np.flatnonzero(head.any(axis=0))
    if len(columns) < 8:
        return None
    return (columns[0] + columns[-1] + 1) / 2.0


def tumour_free_side(mask: np.ndarray, midline: float, margin_px: float) -> str | None:
    """Return which side of the midline ("left" or "right" columns) holds no tumour, or None when both do."""
    columns = np.flatnonzero(mask.any(axis=0))
    if len(columns) == 0:
        return None
    if columns[0] >= midline + margin_px:
        return "left"
    if columns[-1] < midline - margin_px:
        return "right"
    return None


def mirror_half(values: np.ndarray, midline: float, keep: str) -> np.ndarray:
    """Return the slice with one half (keep = "left" or "right" columns) reflected across the midline."""
    if keep not in KEEP_SIDES:
        raise ValueError(f"keep must be one of {KEEP_SIDES}, not {keep!r}")
    width = values.shape[1]
    columns = np.arange(width)
    source = np.rint(2 * midline - 1 - columns).astype(int)  # column c mirrors to 2m - 1 - c (m between pixels)
    replace = columns >= midline if keep == "left" else columns < midline
    inside = (source >= 0) & (source < width)
    out = values.copy()
    out[:, replace & inside] = values[:, source[replace & inside]]
    out[:, replace & ~inside] = values.min()
    return out


def synthetic_name(keep: str) -> str:
    """Return the record tag of a mirrored slice that keeps one side."""
    return f"{SYNTHETIC_PREFIX}{keep}"


def apply_synthetic(values: np.ndarray, tag: str, image8: np.ndarray | None = None) -> np.ndarray:
    """Return the slice a record's synthetic tag describes ("" = unchanged); image8 (default: values as 8 bits) locates the midline."""
    if not tag:
        return values
    if not tag.startswith(SYNTHETIC_PREFIX):
        raise ValueError(f"unknown synthetic slice kind {tag!r}")
    if image8 is None:
        image8 = np.clip(values, 0, 255).astype(np.uint8)  # an 8-bit raster's own values
    midline = head_midline(image8)
    if midline is None:
        raise ValueError("a mirrored slice needs a head to find its midline")
    return mirror_half(values, midline, tag[len(SYNTHETIC_PREFIX):])
