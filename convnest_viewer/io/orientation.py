"""Slice orientation: the patient-direction letters (A/P, L/R, S/I) of its edges and its normal."""

from __future__ import annotations

from typing import Sequence

import numpy as np

# DICOM patient coordinates (LPS): +x towards the patient's left, +y posterior, +z superior.
_AXIS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))
_OBLIQUE_THRESHOLD = 0.25


def direction_letters(vector: Sequence[float]) -> str:
    """Return the letters of a patient direction, strongest axis first (e.g. 'L', 'LA' if oblique)."""
    v = np.asarray(vector, dtype=float)
    norm = np.linalg.norm(v)
    if norm == 0:
        return ""
    v = v / norm
    letters = []
    for axis in np.argsort(-np.abs(v)):
        if abs(v[axis]) < _OBLIQUE_THRESHOLD and letters:
            break
        letters.append(_AXIS_LETTERS[axis][1 if v[axis] > 0 else 0])
    return "".join(letters)


def orientation_letters(orientation: Sequence[float]) -> dict[str, str]:
    """Return the directions at the left, right, top and bottom edges of a displayed slice."""
    row = np.asarray(orientation[:3], dtype=float)  # direction of increasing column index
    col = np.asarray(orientation[3:6], dtype=float)  # direction of increasing row index
    return {
        "left": direction_letters(-row),
        "right": direction_letters(row),
        "top": direction_letters(-col),
        "bottom": direction_letters(col),
    }


def slice_normal(orientation: Sequence[float] | None) -> np.ndarray | None:
    """Return the unit normal (row cosines x column cosines) of an orientation, or None if absent or degenerate."""
    if orientation is None:
        return None
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float))
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 1e-6 else None
