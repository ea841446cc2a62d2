"""Leakage-aware splits: groups of near-duplicates never straddle train, validation and test."""

from __future__ import annotations

import numpy as np


def group_split(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held_out) with about `fraction` held out, stratified, by whole groups."""
    from sklearn.model_selection import StratifiedGroupKFold

    smallest_class = int(np.bincount(labels)[np.unique(labels)].min())
    n_splits = max(2, min(round(1 / fraction), smallest_class))  # small sets hold out more than asked
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rest, held_out = next(splitter.split(np.zeros(len(labels)), labels, groups))
    return np.sort(rest), np.sort(held_out)


def group_kfold(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return k (train, test) index folds, stratified by class, keeping duplicate groups whole."""
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(a), np.sort(b)) for a, b in splitter.split(np.zeros(len(labels)), labels, groups)]


def groups_straddle(groups: np.ndarray, *index_sets: np.ndarray) -> bool:
    """Return True if any duplicate group has members in more than one of the index sets."""
    seen: dict[int, int] = {}
    for set_id, indices in enumerate(index_sets):
        for group in np.unique(groups[indices]):
            if seen.setdefault(int(group), set_id) != set_id:
                return True
    return False
