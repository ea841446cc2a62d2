"""Find the head (the imaged foreground) on an 8-bit slice: its mask, its bounding box, how much is visible."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MIN_COMPONENT_SHARE = 0.05  # components smaller than this share of the largest one are noise or labels
MIN_HEAD_SHARE = 0.005  # below this share of the slice there is no head to crop to
BOX_MARGIN = 0.04  # margin around the head's box, as a share of the box's longer side


@dataclass(frozen=True)
class Box:
    """A rectangle of a slice: top-left corner and size in pixels."""

    top: int
    left: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """Return the (rows, columns) slices that cut this box out of an array."""
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def head_mask(image: np.ndarray) -> np.ndarray:
    """Return a boolean mask of the head on an 8-bit slice (Otsu threshold, cleaned of specks)."""
    if image.size == 0 or int(image.max()) == int(image.min()):
        return np.zeros(image.shape, bool)
    threshold, _ = cv2.threshold(image, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Otsu on a dark, low-contrast slice can fall into the background noise; never below 5% of the slice's top
    floor = 0.05 * uint8_percentile(image, 99.5)
    # image > t as 0/1 (for 8-bit input cv2 compares with floor(t), the same test)
    _, binary = cv2.threshold(image, max(threshold * 0.5, floor), 1, cv2.THRESH_BINARY)
    radius = max(1, round(min(image.shape) / 128))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
    # every component left by the opening holds a whole kernel, so there are at most size / kernel area of them:
    # 16-bit labels (twice as fast to write) whenever they cannot overflow
    small = binary.size // int(np.count_nonzero(kernel)) < 65535
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8,
                                                               ltype=cv2.CV_16U if small else cv2.CV_32S)
    if count <= 1:
        return np.zeros(image.shape, bool)
    areas = stats[:, cv2.CC_STAT_AREA]
    kept = areas >= MIN_COMPONENT_SHARE * areas[1:].max()
    kept[0] = False  # the background
    if kept[1:].all():  # the usual case: no speck to drop, the opened slice is the mask (no lookup per pixel)
        return binary.astype(bool)
    return kept[labels]


def uint8_histogram(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Return the 256 counts of 8-bit values (only where a same-shaped boolean `mask` is set, if given)."""
    values = np.ascontiguousarray(values)
    if values.size == 0:
        return np.zeros(256, np.int64)
    if values.dtype == np.uint8 and values.ndim <= 2 and values.size < 1 << 24:  # float32 counts: exact below 2**24
        selected = None if mask is None else np.ascontiguousarray(mask).view(np.uint8)
        return cv2.calcHist([values], [0], selected, [256], [0, 256]).ravel().astype(np.int64)
    return np.bincount((values if mask is None else values[mask]).ravel(), minlength=256)


def uint8_percentile(values: np.ndarray, q: float, mask: np.ndarray | None = None) -> float:
    """Return np.percentile(values, q) (its default, linear method) of 8-bit values, from a histogram, not a sort;
    with a boolean `mask`, of the values where it is set (as np.percentile(values[mask], q))."""
    counts = uint8_histogram(values, mask)
    size = int(counts.sum())
    if size == 0:
        raise ValueError("the percentile of no values")
    cumulative = np.cumsum(counts)
    position = (size - 1) * (q / 100)
    below = int(np.floor(position))
    gamma = position - below
    low = float(np.searchsorted(cumulative, below, side="right"))
    high = float(np.searchsorted(cumulative, min(below + 1, size - 1), side="right"))
    difference = high - low
    return high - difference * (1 - gamma) if gamma >= 0.5 else low + difference * gamma  # numpy's _lerp


def head_share(image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Return the share of the slice covered by the head (0 for a blank slice); `mask`: its head_mask, if known."""
    if not image.size:
        return 0.0
    mask = head_mask(image) if mask is None else mask
    return np.count_nonzero(mask) / mask.size


def head_box(mask: np.ndarray) -> Box | None:
    """Return the bounding box of a head mask with a small margin; None when there is too little head."""
    rows, columns = mask.shape[:2]
    if np.count_nonzero(mask) / mask.size < MIN_HEAD_SHARE:
        return None
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    top, bottom, left, right = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    margin = round(BOX_MARGIN * max(bottom - top, right - left))
    top, left = max(0, top - margin), max(0, left - margin)
    bottom, right = min(rows, bottom + margin), min(columns, right + margin)
    return Box(top, left, bottom - top, right - left)
