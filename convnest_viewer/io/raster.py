"""Open PNG/JPEG files (such as the dataset's slices) as single-slice series."""

from __future__ import annotations

from pathlib import Path

from convnest_viewer.io.model import Series, SliceRef, Skipped, StudyInfo, Window

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
EIGHT_BIT_WINDOW = Window.from_range(0.0, 255.0)


def is_raster(path: Path) -> bool:
    """Return True if the file name says PNG/JPEG (or BMP/TIFF)."""
    return path.suffix.lower() in RASTER_SUFFIXES


def read_raster_series(path: Path) -> Series | Skipped:
    """Return the image as a one-slice series (header only), or why it is skipped."""
    import cv2
    import numpy as np

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        return Skipped(path, f"unreadable: {exc}")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        return Skipped(path, "not a decodable image (corrupt or truncated)")
    rows, columns = image.shape[:2]
    window = EIGHT_BIT_WINDOW if image.dtype == np.uint8 else None
    return Series(
        key=f"file:{path}",
        uid=f"file:{path}",
        kind="raster",
        volumes=[[SliceRef(path=path, voi=window)]],
        rows=int(rows),
        columns=int(columns),
        study=StudyInfo(uid=f"file:{path.parent}", description=path.parent.name),
        description=path.name,
        modality="OT",
    )


__all__ = ["RASTER_SUFFIXES", "is_raster", "read_raster_series"]
