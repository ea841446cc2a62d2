"""Open PNG/JPEG files (such as the dataset's slices) as single-slice series."""

from __future__ import annotations

import warnings
from pathlib import Path

from convnest_viewer.io.contrast import guess_contrast
from convnest_viewer.io.limits import image_size_problem
from convnest_viewer.io.native_output import captured_stderr
from convnest_viewer.io.model import Series, SliceRef, Skipped, StudyInfo
from convnest_viewer.io.window import Window

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
    declared = header_size(data[:1 << 16].tobytes())
    problem = image_size_problem(*declared) if declared else None
    if problem:
        return Skipped(path, f"refused before decoding: {problem}")
    with captured_stderr() as messages:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        detail = f": {messages[-1]}" if messages else ""
        return Skipped(path, f"not a decodable image (corrupt or truncated){detail}")
    for message in messages:
        warnings.warn(message)  # decoded despite damage (a truncated JPEG shows grey): a note on this file
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
        contrast=guess_contrast(path.name),
        modality="OT",
    )


def header_size(head: bytes) -> tuple[int, int] | None:
    """Return (rows, columns) from a PNG, JPEG or BMP header without decoding, or None if not found."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    if head.startswith(b"BM") and len(head) >= 26:
        width = int.from_bytes(head[18:22], "little", signed=True)
        height = int.from_bytes(head[22:26], "little", signed=True)
        return abs(height), width
    if head.startswith(b"\xff\xd8"):
        return _jpeg_frame_size(head)
    return None


def _jpeg_frame_size(head: bytes) -> tuple[int, int] | None:
    """Walk the JPEG markers to the first start-of-frame and return its (rows, columns)."""
    start_of_frame = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
    offset = 2
    while offset + 9 <= len(head):
        if head[offset] != 0xFF:
            return None
        marker = head[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in start_of_frame:
            return int.from_bytes(head[offset + 5:offset + 7], "big"), int.from_bytes(head[offset + 7:offset + 9], "big")
        offset += 2 + int.from_bytes(head[offset + 2:offset + 4], "big")
    return None


__all__ = ["RASTER_SUFFIXES", "header_size", "is_raster", "read_raster_series"]
