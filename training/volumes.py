"""Slices of 3-D NIfTI volumes in all three planes, oriented as a viewer shows them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

PLANES = ("axial", "coronal", "sagittal")


@lru_cache(maxsize=6)
def volume_array(path: Path) -> np.ndarray:
    """Return a NIfTI volume as a read-only float32 (z, y, x) array, read once (the loader's own reader)."""
    from convnest_viewer.io.pixels import read_nifti_volume

    array = np.asarray(read_nifti_volume(Path(path)), dtype=np.float32)
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D volume, got shape {array.shape}")
    array.setflags(write=False)
    return array


def plane_length(shape: tuple[int, int, int], plane: str) -> int:
    """Return how many slices a (z, y, x) volume has in a plane."""
    return shape[PLANES.index(plane)]


def take_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """Return one slice of a (z, y, x) volume in a plane.

    Axial slices are the file's own slices, as the app's loader shows them; coronal and sagittal ones are
    resliced with the volume's first z slice at the bottom (inferior down when z runs foot to head) and x or
    y along the columns, matching the axial slices' left-right and front-back directions.
    """
    if plane == "axial":
        return volume[index]
    if plane == "coronal":
        return volume[::-1, index, :]
    if plane == "sagittal":
        return volume[::-1, :, index]
    raise ValueError(f"unknown plane {plane!r}; choose one of {', '.join(PLANES)}")


def volume_slice(path: Path, plane: str, index: int) -> np.ndarray:
    """Return one slice of a NIfTI file's volume in a plane, as contiguous float32."""
    return np.ascontiguousarray(take_slice(volume_array(Path(path)), plane, index))
