"""Near-duplicate search (correlation of 32x32 thumbnails), duplicate groups and the leak table."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

NEAR_DUPLICATE = 0.99  # correlation at or above which two slices count as the same image
STRICT_NEAR_DUPLICATE = 0.97


def unit_vectors(thumbs: np.ndarray) -> np.ndarray:
    """Return thumbnails as zero-mean unit vectors, so a dot product is their correlation."""
    flat = thumbs.reshape(len(thumbs), -1).astype(np.float32)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.maximum(norms, 1e-6)


def max_correlation(query: np.ndarray, reference: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Return, for each query thumbnail, its best correlation with any reference and that index."""
    q, r = unit_vectors(query), unit_vectors(reference)
    best = np.full(len(q), -1.0, np.float32)
    where = np.full(len(q), -1, np.int64)
    if len(r) == 0:
        return best, where
    for start in range(0, len(q), block):
        corr = q[start:start + block] @ r.T
        where[start:start + block] = corr.argmax(axis=1)
        best[start:start + block] = corr.max(axis=1)
    return best, where


def near_duplicate_pairs(thumbs: np.ndarray, threshold: float = NEAR_DUPLICATE, block: int = 2048) -> np.ndarray:
    """Return index pairs (i < j) whose thumbnails correlate at or above threshold."""
    v = unit_vectors(thumbs)
    pairs = []
    for start in range(0, len(v), block):
        corr = v[start:start + block] @ v.T
        rows, cols = np.nonzero(corr >= threshold)
        rows = rows + start
        keep = rows < cols
        pairs.append(np.stack([rows[keep], cols[keep]], axis=1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)


def duplicate_groups(n: int, pairs: np.ndarray) -> np.ndarray:
    """Return a group id per item: connected components of the near-duplicate pairs."""
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = find(int(i)), find(int(j))
        if a != b:
            parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(n)])
    _, groups = np.unique(roots, return_inverse=True)
    return groups


def file_digest(path: Path) -> str:
    """Return the sha1 of a file's bytes."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def identical_files(query: Sequence[str], reference: Sequence[str]) -> list[tuple[str, str]]:
    """Return (query, reference) path pairs whose bytes are identical."""
    by_digest: dict[str, str] = {}
    for path in reference:
        by_digest.setdefault(file_digest(Path(path)), path)
    return [(path, by_digest[d]) for path in query if (d := file_digest(Path(path))) in by_digest]


def leak_table(test_thumbs, test_labels, train_thumbs, class_ids, thresholds=(NEAR_DUPLICATE, STRICT_NEAR_DUPLICATE)) -> list[dict]:
    """Return per-class rows: test images, and how many have a training near-duplicate per threshold."""
    best, _ = max_correlation(test_thumbs, train_thumbs)
    rows = []
    for index, class_id in enumerate([*class_ids, "all"]):
        mask = np.ones(len(test_labels), bool) if class_id == "all" else test_labels == index
        row = {"class": class_id, "test_images": int(mask.sum())}
        for threshold in thresholds:
            row[f"near_duplicates_{threshold}"] = int((best[mask] >= threshold).sum())
        rows.append(row)
    return rows
