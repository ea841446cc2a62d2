"""Read a slice with its neighbours: each slice's probabilities averaged with those of the slices beside it.

A tumour spans several slices and noise does not, so a Gaussian over slice positions (its width on the model card, in
slice steps) ranks tumour slices better than the slice alone. Positions count the slices missing from a series, so a
slice across a gap weighs as little as the distance says. Only slices with an answer count: pending, unreadable and
withheld ones (the gate's) neither contribute nor change. No Qt, no torch.
"""

from __future__ import annotations

import math

import numpy as np


def context_reach(sigma: float) -> int:
    """Return how many slice steps on either side a slice's answer is read with, ceil(3 sigma) (0: the slice alone)."""
    return int(math.ceil(3 * sigma)) if sigma > 0 else 0


def in_context(table: np.ndarray, usable: np.ndarray | None, sigma: float,
               positions: np.ndarray | None = None) -> np.ndarray:
    """Return (slices, classes) probabilities with each usable slice averaged over its usable neighbours (Gaussian
    weights over positions in slice steps, default the row numbers; sigma 0: unchanged); other rows as they are."""
    table = np.asarray(table, np.float64)
    result = table.copy()
    if sigma <= 0 or len(table) == 0:
        return result
    usable = np.isfinite(table).all(axis=1) & (True if usable is None else np.asarray(usable, bool))
    radius = context_reach(sigma)
    positions = np.arange(len(table), dtype=float) if positions is None else np.asarray(positions, float)
    values = np.where(usable[:, None], table, 0.0)
    padded_values = np.pad(values, ((radius, radius), (0, 0)))
    padded_usable = np.pad(usable.astype(float), radius)
    padded_positions = np.pad(positions, radius, constant_values=np.inf)  # beyond the ends: no weight
    total = np.zeros_like(values)
    weight = np.zeros(len(table))
    for offset in range(2 * radius + 1):
        distance = np.abs(padded_positions[offset:offset + len(table)] - positions)
        w = np.exp(-distance ** 2 / (2 * sigma ** 2)) * (distance <= radius)
        total += w[:, None] * padded_values[offset:offset + len(table)]
        weight += w * padded_usable[offset:offset + len(table)]
    result[usable] = total[usable] / weight[usable, None]
    return result
