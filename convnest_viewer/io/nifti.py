"""Read a NIfTI file's header (via SimpleITK) into a series; pixels are read on demand."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from convnest_viewer.io.contrast import guess_contrast
from convnest_viewer.io.limits import volume_size_problem
from convnest_viewer.io.native_output import captured_stderr, last_line
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
        with captured_stderr() as messages:
            reader.ReadImageInformation()
    except RuntimeError as exc:
        return Skipped(path, f"unreadable NIfTI: {last_line(exc)}")
    for message in messages:
        warnings.warn(message)  # the loader turns it into a note on this file
    size = reader.GetSize()  # x, y, z[, t]
    if len(size) < 2 or reader.GetNumberOfComponents() not in (1, 3, 4):
        return Skipped(path, f"unsupported NIfTI layout: size {size}, {reader.GetNumberOfComponents()} components")
    bytes_per_voxel = _bytes_per_voxel(reader)
    problem = volume_size_problem(tuple(size), bytes_per_voxel)
    if problem:
        return Skipped(path, f"refused before reading voxels: {problem}")
    problem = _truncation_problem(path, int(np.prod(size)) * bytes_per_voxel)
    if problem:
        return Skipped(path, problem)
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
        contrast=guess_contrast(path.name),
        modality="MR",
        pixel_spacing=(float(spacing[1]), float(spacing[0])),
        slice_thickness=float(spacing[2]) if dimension >= 3 else None,
        orientation=orientation,
    )


def _truncation_problem(path: Path, voxel_bytes: int) -> str | None:
    """Return why an uncompressed NIfTI file is too short for the voxels its header declares, or None."""
    if not path.name.lower().endswith(".nii"):
        return None  # a gzip stream is checked when its voxels are read
    with open(path, "rb") as handle:
        head = handle.read(176)
    offset = _voxel_offset(head)
    if offset is None:
        return None
    size = path.stat().st_size
    if offset + voxel_bytes > size:
        return f"truncated: the header declares {voxel_bytes} bytes of voxels from byte {offset}, the file holds {max(size - offset, 0)}"
    return None


def _voxel_offset(head: bytes) -> int | None:
    """Return vox_offset from a NIfTI-1 (348-byte) or NIfTI-2 (540-byte) header in either byte order."""
    import struct

    import math

    for order in "<>":
        if len(head) >= 112 and struct.unpack(order + "i", head[:4])[0] == 348:
            offset = struct.unpack(order + "f", head[108:112])[0]
            return int(offset) if math.isfinite(offset) else None  # ITK falls back to the header's end
        if len(head) >= 176 and struct.unpack(order + "i", head[:4])[0] == 540:
            return int(struct.unpack(order + "q", head[168:176])[0])
    return None


def _bytes_per_voxel(reader) -> int:
    """Return the bytes one voxel takes once read (components times the component type's size)."""
    import re

    import SimpleITK as sitk

    name = sitk.GetPixelIDValueAsString(reader.GetPixelID())  # e.g. "16-bit signed integer", "vector of 32-bit float"
    bits = re.search(r"(\d+)-bit", name)
    return (int(bits.group(1)) // 8 if bits else 8) * max(reader.GetNumberOfComponents(), 1)
