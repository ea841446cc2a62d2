"""Statistics for comparing architectures over folds: Friedman, Holm-corrected Wilcoxon, Kendall's W."""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np


def friedman(scores: np.ndarray) -> dict:
    """Friedman test over a (blocks x treatments) score matrix (folds x architectures)."""
    from scipy.stats import friedmanchisquare

    n_blocks, n_treatments = scores.shape
    if n_treatments < 3 or n_blocks < 2:
        return {"statistic": None, "p_value": None, "kendall_w": None,
                "note": "needs at least 3 architectures and 2 folds"}
    result = friedmanchisquare(*scores.T)
    statistic = float(result.statistic)
    return {"statistic": statistic, "p_value": float(result.pvalue), "kendall_w": kendall_w(statistic, n_blocks, n_treatments)}


def kendall_w(friedman_statistic: float, n_blocks: int, n_treatments: int) -> float:
    """Kendall's coefficient of concordance from the Friedman statistic: W = chi2 / (n (k - 1))."""
    return float(friedman_statistic / (n_blocks * (n_treatments - 1)))


def mean_ranks(scores: np.ndarray) -> np.ndarray:
    """Return each treatment's mean rank over blocks (1 = best, i.e. highest score; ties averaged)."""
    from scipy.stats import rankdata

    return np.mean([rankdata(-row) for row in scores], axis=0)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Return Holm-adjusted p-values (statsmodels' multipletests)."""
    from statsmodels.stats.multitest import multipletests

    if len(p_values) == 0:
        return np.zeros(0)
    return multipletests(np.asarray(p_values, float), method="holm")[1]


def pairwise_wilcoxon(scores: np.ndarray, names: Sequence[str], reference: str | None = None) -> list[dict]:
    """Wilcoxon signed-rank tests between architectures over folds, Holm-corrected.

    With a reference, compare it against each other architecture; otherwise every pair.
    """
    from scipy.stats import wilcoxon

    index = {name: i for i, name in enumerate(names)}
    pairs = [(reference, other) for other in names if other != reference] if reference else list(combinations(names, 2))
    rows = []
    for a, b in pairs:
        x, y = scores[:, index[a]], scores[:, index[b]]
        if np.allclose(x, y):
            statistic, p_value = 0.0, 1.0
        else:
            result = wilcoxon(x, y)
            statistic, p_value = float(result.statistic), float(result.pvalue)
        rows.append({"a": a, "b": b, "mean_difference": float(np.mean(x - y)), "statistic": statistic, "p_value": p_value})
    for row, adjusted in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_holm"] = float(adjusted)
    return rows
