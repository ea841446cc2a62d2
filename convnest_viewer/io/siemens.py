"""Siemens mosaics: one DICOM image holding a grid of slices (EPI, diffusion), split into real slices.

The grid is ceil(sqrt(n)) tiles a side, n from (0019,100A) NumberOfImagesInMosaic; ImagePositionPatient names
the mosaic's corner, so the first tile's centre is shifted by half the unused border, and later tiles step along
the CSA header's SliceNormalVector (else the row x column normal) by the slice spacing.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

_IMAGES_IN_MOSAIC = 0x0019100A
_CSA_IMAGE_HEADER = 0x00291010
_MAX_CSA_TAGS = 1000


@dataclass(frozen=True)
class MosaicLayout:
    """How slices are tiled in a mosaic: their count, tiles per side, tile size and slice normal if known."""

    count: int
    grid: int
    tile_rows: int
    tile_columns: int
    normal: tuple[float, float, float] | None


def mosaic_layout(ds, rows: int, columns: int) -> MosaicLayout | None:
    """Return the mosaic layout of a Siemens MOSAIC image, or None if the image is not one (or is inconsistent)."""
    image_type = [str(value).upper() for value in (ds.get("ImageType") or [])]
    if "MOSAIC" not in image_type or _IMAGES_IN_MOSAIC not in ds:
        return None
    try:
        count = int(ds[_IMAGES_IN_MOSAIC].value)
    except (TypeError, ValueError):
        return None
    grid = math.ceil(math.sqrt(count)) if count > 0 else 0
    if count < 2 or rows % grid or columns % grid:
        return None
    normal = None
    if _CSA_IMAGE_HEADER in ds:
        values = csa_values(bytes(ds[_CSA_IMAGE_HEADER].value or b"")).get("SliceNormalVector", [])
        normal = _unit(values)
    return MosaicLayout(count, grid, rows // grid, columns // grid, normal)


def tile_positions(corner, orientation, pixel_spacing, rows: int, columns: int, layout: MosaicLayout,
                   step: float | None) -> list[tuple[float, float, float] | None]:
    """Return each tile's ImagePositionPatient (its first pixel's centre), or None for all if geometry is missing."""
    if corner is None or orientation is None or pixel_spacing is None or not step:
        return [None] * layout.count
    row_cosines, column_cosines = np.asarray(orientation[:3]), np.asarray(orientation[3:6])
    shift_rows = (rows - layout.tile_rows) / 2
    shift_columns = (columns - layout.tile_columns) / 2
    first = (np.asarray(corner) + column_cosines * pixel_spacing[0] * shift_rows
             + row_cosines * pixel_spacing[1] * shift_columns)
    normal = np.asarray(layout.normal) if layout.normal is not None else np.cross(row_cosines, column_cosines)
    positions = [first + k * step * normal for k in range(layout.count)]
    if not all(np.all(np.isfinite(position)) for position in positions):
        return [None] * layout.count
    return [tuple(float(v) for v in position) for position in positions]


def tile(image: np.ndarray, index: int, layout: MosaicLayout) -> np.ndarray:
    """Return tile `index` (row-major in the grid) of a decoded mosaic."""
    row, column = divmod(index, layout.grid)
    return image[row * layout.tile_rows:(row + 1) * layout.tile_rows,
                 column * layout.tile_columns:(column + 1) * layout.tile_columns]


def csa_values(data: bytes) -> dict[str, list[str]]:
    """Return the text values of a Siemens CSA2 ("SV10") header by tag name; {} for anything else or damage."""
    if len(data) < 16 or data[:4] != b"SV10":
        return {}
    try:
        count = struct.unpack_from("<I", data, 8)[0]
        if count > _MAX_CSA_TAGS:
            return {}
        offset, values = 16, {}
        for _ in range(count):
            name = data[offset:offset + 64].split(b"\0", 1)[0].decode("latin-1")
            items = struct.unpack_from("<i", data, offset + 76)[0]
            offset += 84
            found = []
            for _ in range(max(items, 0)):
                length = struct.unpack_from("<i", data, offset + 4)[0]
                if length < 0 or offset + 16 + length > len(data):
                    return values
                text = data[offset + 16:offset + 16 + length].split(b"\0", 1)[0].decode("latin-1").strip()
                if text:
                    found.append(text)
                offset += 16 + (length + 3) // 4 * 4
            values[name] = found
        return values
    except struct.error:
        return {}


def _unit(values: list[str]) -> tuple[float, float, float] | None:
    try:
        vector = np.array([float(v) for v in values], float)
    except ValueError:
        return None
    if vector.shape != (3,) or not np.all(np.isfinite(vector)) or np.linalg.norm(vector) < 1e-6:
        return None
    return tuple(float(v) for v in vector / np.linalg.norm(vector))
