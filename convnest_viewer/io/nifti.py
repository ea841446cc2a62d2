"""Read a NIfTI file's header (via SimpleITK) into a series; pixels are read on demand."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convnest_viewer.io.model import Series, SliceRef, Skipped, StudyInfo

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """Return True if the file name says NIfTI."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_nifti_series(path: Path) -> Series | Skipped:
    """Return the NIfTI file as one series (4-D files as several volumes), or why it is skipped."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        return Skipped(path, f"unreadable NIfTI: {_first_line(exc)}")
    size = reader.GetSize()  # x, y, z[, t]
    if len(size) < 2 or reader.GetNumberOfComponents() not in (1, 3, 4):
        return Skipped(path, f"unsupported NIfTI layout: size {size}, {reader.GetNumberOfComponents()} components")
    dimension = len(size)
    direction = np.asarray(reader.GetDirection(), float).reshape(dimension, dimension)
    origin = np.asarray(reader.GetOrigin(), float)
    spacing = np.asarray(reader.GetSpacing(), float)
    n_z = size[2] if dimension >= 3 else 1
    n_t = size[3] if dimension >= 4 else 1
    orientation = None
    positions = [None] * n_z
    if dimension >= 3:
        row, col, normal = direction[:3, 0], direction[:3, 1], direction[:3, 2]
        orientation = tuple(float(v) for v in (*row, *col))
        positions = [tuple(float(v) for v in origin[:3] + z * spacing[2] * normal) for z in range(n_z)]
    volumes = [
        [SliceRef(path=path, frame=z, position=positions[z], volume_index=t if n_t > 1 else None) for z in range(n_z)]
        for t in range(n_t)
    ]
    return Series(
        key=f"nifti:{path}",
        uid=f"nifti:{path}",
        kind="nifti",
        volumes=volumes,
        rows=int(size[1]),
        columns=int(size[0]),
        study=StudyInfo(uid=f"file:{path.parent}", description=path.parent.name),
        description=path.name,
        modality="MR",
        pixel_spacing=(float(spacing[1]), float(spacing[0])),
        slice_thickness=float(spacing[2]) if dimension >= 3 else None,
        orientation=orientation,
    )


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
