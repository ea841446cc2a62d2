"""Sizes the loader refuses before allocating anything: a header that claims more is skipped with a reason."""

from __future__ import annotations

from math import prod

MAX_DIMENSION = 16384  # rows or columns of one image (no MR, CT or mammogram comes near)
MAX_FRAMES = 20000  # frames in one DICOM file (a long diffusion or perfusion series has a few thousand)
MAX_FRAME_BYTES = 1 << 29  # one decoded frame: 512 MiB (16384 x 16384 at 16 bits)
MAX_VOLUME_BYTES = 1 << 31  # one NIfTI file decoded at once: 2 GiB
DICOM_BITS_ALLOCATED = (1, 8, 16, 32, 64)
DICOM_SAMPLES_PER_PIXEL = (1, 3, 4)


def image_size_problem(rows: int, columns: int) -> str | None:
    """Return why an image of rows x columns is refused, or None if it is acceptable."""
    if rows < 1 or columns < 1:
        return f"image size {rows} x {columns} is empty"
    if rows > MAX_DIMENSION or columns > MAX_DIMENSION:
        return f"image size {rows} x {columns} exceeds the limit of {MAX_DIMENSION} pixels a side"
    return None


def dicom_size_problem(rows: int, columns: int, frames: int, bits_allocated: int, samples: int) -> str | None:
    """Return why a DICOM header's pixel description is refused, or None if it is acceptable."""
    if bits_allocated not in DICOM_BITS_ALLOCATED:
        return f"BitsAllocated {bits_allocated} is not one of {', '.join(map(str, DICOM_BITS_ALLOCATED))}"
    if samples not in DICOM_SAMPLES_PER_PIXEL:
        return f"SamplesPerPixel {samples} is not 1, 3 or 4"
    if frames < 1:
        return f"NumberOfFrames {frames} is not a positive count"
    if frames > MAX_FRAMES:
        return f"NumberOfFrames {frames} exceeds the limit of {MAX_FRAMES}"
    problem = image_size_problem(rows, columns)
    if problem:
        return problem
    frame_bytes = rows * columns * samples * max(bits_allocated, 8) // 8
    if frame_bytes > MAX_FRAME_BYTES:
        return f"one frame would take {frame_bytes >> 20} MiB, over the limit of {MAX_FRAME_BYTES >> 20} MiB"
    return None


def volume_size_problem(size: tuple[int, ...], bytes_per_voxel: int) -> str | None:
    """Return why a volume of this size (x, y, z[, t]) is refused, or None if it is acceptable."""
    if any(n < 1 for n in size):
        return f"volume size {size} has an empty axis"
    problem = image_size_problem(size[1], size[0])
    if problem:
        return problem
    total = prod(size) * bytes_per_voxel
    if total > MAX_VOLUME_BYTES:
        return f"the volume would take {total >> 20} MiB, over the limit of {MAX_VOLUME_BYTES >> 20} MiB"
    return None
