"""The gate's series rule: slices at the edge of the head (less head than a share of the series' largest section) are
not assessed. Numpy only, so the result store applies it without loading torch."""

from __future__ import annotations

import numpy as np

from convnest_viewer.inference.reasons import HEAD_EDGE_REASON


def largest_assessed_section(head_shares: np.ndarray, assessed: np.ndarray) -> float:
    """Return the largest head share among a volume's assessed slices whose share is known (0 when there is none)."""
    shares = np.asarray(head_shares, np.float64)
    known = np.asarray(assessed, bool) & ~np.isnan(shares)
    return float(shares[known].max()) if known.any() else 0.0


def at_head_edge(head_shares: np.ndarray, assessed: np.ndarray, fraction: float) -> np.ndarray:
    """Return which slices of one volume show less head than `fraction` of the largest section among its assessed
    slices (head_shares: NaN where not known yet; assessed: what the per-slice gate let through)."""
    shares = np.asarray(head_shares, np.float64)
    largest = largest_assessed_section(shares, assessed)
    if fraction <= 0 or largest <= 0:
        return np.zeros(len(shares), bool)
    with np.errstate(invalid="ignore"):
        return shares < fraction * largest


def head_edge_reason(share: float, largest: float, fraction: float) -> str:
    """Return why a slice at the edge of the head is not assessed, in words."""
    return HEAD_EDGE_REASON.format(share=share / largest if largest > 0 else 0.0, fraction=fraction)
