"""Read slice pixels on demand (DICOM frames, NIfTI volumes, PNG/JPEG), with a memory-bounded cache."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Hashable

import numpy as np

from convnest_viewer.io.native_output import captured_stderr, caught_warnings, last_line
from convnest_viewer.io.window import Window, percentile_window

if TYPE_CHECKING:
    from convnest_viewer.io.model import Series, SliceRef

__all__ = ["PIXEL_CACHE", "PixelCache", "PixelReadError", "apply_window", "percentile_window", "slice_pixels"]

DEFAULT_CACHE_BYTES = 512 * 1024 * 1024
_MAX_ABS_VALUE = 1e30  # larger magnitudes are damage, not signal (and overflow float32 arithmetic)


class PixelReadError(RuntimeError):
    """A slice's pixels could not be read; the message names the file and the reason."""


class PixelCache:
    """A thread-safe least-recently-used cache of arrays, bounded by total bytes."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Return the bytes currently held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get_or_load(self, key: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
        """Return the cached array for key, loading and caching it on a miss."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        array = load()
        array.setflags(write=False)
        with self._lock:
            if key not in self._items:
                self._items[key] = array
                self._bytes += array.nbytes
            self._evict()
        return array

    def clear(self) -> None:
        """Drop every cached array."""
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, array = self._items.popitem(last=False)
            self._bytes -= array.nbytes


PIXEL_CACHE = PixelCache()


def slice_pixels(series: "Series", ref: SliceRef) -> np.ndarray:
    """Return one slice as float32 values in the series' units, brighter meaning higher."""
    key = (series.kind, str(ref.path), ref.frame, ref.volume_index, ref.tile)
    return PIXEL_CACHE.get_or_load(key, lambda: _load_slice(series, ref))


def _load_slice(series: "Series", ref: SliceRef) -> np.ndarray:
    try:
        if series.kind == "dicom" and ref.tile is not None:
            mosaic = read_once(ref.path, ("mosaic", ref.frame),
                               lambda: read_dicom_frame(ref.path, ref.frame, ref.compressed))
            row, column, rows, columns = ref.tile
            stored = mosaic[row:row + rows, column:column + columns]
        elif series.kind == "dicom":
            stored = read_dicom_frame(ref.path, ref.frame, ref.compressed)
        elif series.kind == "nifti":
            stored = read_nifti_slice(ref.path, ref.frame or 0, ref.volume_index)
        else:
            stored = read_raster(ref.path)
    except PixelReadError:
        raise
    except Exception as exc:
        raise PixelReadError(f"{ref.path}: cannot read pixels: {type(exc).__name__}: {exc}") from exc
    values = to_grayscale(stored).astype(np.float32)
    if ref.slope != 1.0 or ref.intercept != 0.0:
        values = values * np.float32(ref.slope) + np.float32(ref.intercept)
    if series.invert_pivot is not None:
        values = np.float32(series.invert_pivot) - values
    if not np.isfinite(values).all() or np.abs(values).max(initial=0.0) > _MAX_ABS_VALUE:
        # damaged float data (nan, inf, 1e38): such voxels are not image values; show them as 0
        values = np.where(np.isfinite(values) & (np.abs(values) <= _MAX_ABS_VALUE), values, np.float32(0.0))
    if values.shape != (series.rows, series.columns):
        raise PixelReadError(
            f"{ref.path}: pixel array is {values.shape}, header says {(series.rows, series.columns)}"
        )
    return values


def read_dicom_frame(path: Path, frame: int | None, compressed: bool = False) -> np.ndarray:
    """Decode one frame of a DICOM file to stored values; compressed data is decoded in a worker process."""
    if compressed:
        from convnest_viewer.io.decoder import DecodeFailed, decoder_pool

        try:
            array, _warnings = decoder_pool().decode(path, frame)
        except DecodeFailed as exc:
            raise PixelReadError(f"{path}: cannot decode pixel data: {exc}") from exc
        return array
    from pydicom.pixels import pixel_array

    try:
        with caught_warnings():  # dropped: the header's oddities were noted when the study was loaded
            return pixel_array(str(path), index=frame)
    except Exception as exc:
        raise PixelReadError(f"{path}: cannot decode pixel data: {exc}") from exc


_FAILED_READS: dict[tuple, str] = {}  # (path, size, mtime, part) -> why that part of the file could not be read


def read_once(path: Path, part: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
    """Return a whole-file array (a NIfTI volume, a mosaic) many slices share: read once, cached, and a failure
    remembered, so a damaged file fails once instead of once per slice."""
    stat = path.stat()
    failure_key = (str(path), stat.st_size, stat.st_mtime_ns, part)
    if failure_key in _FAILED_READS:
        raise PixelReadError(_FAILED_READS[failure_key])
    try:
        return PIXEL_CACHE.get_or_load((part, str(path)), load)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, PixelReadError) else f"{path}: cannot read pixels: {last_line(exc)}"
        _FAILED_READS[failure_key] = reason
        raise PixelReadError(reason) from exc


def read_nifti_slice(path: Path, z: int, t: int | None) -> np.ndarray:
    """Return slice z (of volume t) of a NIfTI file, reading the file once per cache lifetime."""
    volume = read_once(path, "nifti-volume", lambda: read_nifti_volume(path))
    if volume.ndim == 2:
        return volume
    if volume.ndim == 4:
        return volume[t or 0, z]
    return volume[z]


def read_nifti_volume(path: Path) -> np.ndarray:
    """Return a NIfTI file's voxels as a numpy array ((t,) z, y, x), as SimpleITK reads them."""
    import SimpleITK as sitk

    if path.name.lower().endswith(".gz"):
        _check_gzip_stream(path)  # ITK fills a truncated stream with zeros and carries on
    with captured_stderr():  # its complaints were noted when the header was read
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _check_gzip_stream(path: Path) -> None:
    """Raise PixelReadError if a gzip file is truncated or damaged (decompressed and discarded in chunks)."""
    import gzip
    import zlib

    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 22):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        raise PixelReadError(f"{path}: truncated or damaged gzip data: {exc}") from exc


def read_raster(path: Path) -> np.ndarray:
    """Decode a PNG/JPEG/BMP/TIFF file to a 2-D or colour array."""
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    with captured_stderr() as messages:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise PixelReadError(f"{path}: not a decodable image" + (f": {messages[-1]}" if messages else ""))
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    return image


def to_grayscale(array: np.ndarray) -> np.ndarray:
    """Return a 2-D array: colour (rows, cols, 3|4) becomes ITU-R 601 luminance."""
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        rgb = array[..., :3].astype(np.float32)
        return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    raise PixelReadError(f"unexpected pixel array shape {array.shape}")


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Map values through a window to uint8 (low -> 0, high -> 255), clipping outside."""
    scaled = np.subtract(values, np.float32(window.low), dtype=np.float32)
    np.multiply(scaled, np.float32(255.0 / window.width), out=scaled)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)  # +-inf clip to 255 / 0
    nan = np.isnan(scaled)
    if nan.any():
        scaled[nan] = 0.0  # nan voxels (float volumes) show black
    return scaled.astype(np.uint8)
