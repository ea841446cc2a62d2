"""The one preprocessing shared by training and the app: window to 8 bits, letterbox, normalise."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from convnest_viewer.inference.card import PreprocessSpec
from convnest_viewer.io.model import Window
from convnest_viewer.io.pixels import apply_window


@dataclass(frozen=True)
class Letterbox:
    """Where the resized slice sits inside the square model input, to undo the resize and pad."""

    rows: int  # original slice size
    columns: int
    size: int  # model input size (square)
    top: int
    left: int
    height: int  # resized slice size inside the input
    width: int

    @property
    def box(self) -> tuple[slice, slice]:
        """Return the input region that holds the slice."""
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def letterbox_geometry(rows: int, columns: int, size: int) -> Letterbox:
    """Return the aspect-preserving fit of a rows x columns slice into a size x size square."""
    scale = size / max(rows, columns)
    height = max(1, min(size, round(rows * scale)))
    width = max(1, min(size, round(columns * scale)))
    return Letterbox(rows, columns, size, (size - height) // 2, (size - width) // 2, height, width)


def to_uint8(values: np.ndarray, window: Window) -> np.ndarray:
    """Map a slice of any dtype through its window to 8 bits, like the dataset's exports."""
    return apply_window(values, window)


def letterbox_uint8(image: np.ndarray, spec: PreprocessSpec) -> tuple[np.ndarray, Letterbox]:
    """Resize an 8-bit slice keeping its aspect and pad it to the model's square input."""
    geometry = letterbox_geometry(image.shape[0], image.shape[1], spec.size)
    if (geometry.height, geometry.width) == image.shape[:2]:
        resized = image
    else:
        shrinking = geometry.height < image.shape[0] or geometry.width < image.shape[1]
        interpolation = cv2.INTER_AREA if spec.interpolation == "area" and shrinking else cv2.INTER_LINEAR
        resized = cv2.resize(image, (geometry.width, geometry.height), interpolation=interpolation)
    canvas = np.full((spec.size, spec.size), spec.pad_value, dtype=np.uint8)
    canvas[geometry.box] = resized
    return canvas, geometry


def model_uint8(values: np.ndarray, window: Window, spec: PreprocessSpec) -> tuple[np.ndarray, Letterbox]:
    """Return the 8-bit square model image of a slice and the geometry to undo the letterbox."""
    return letterbox_uint8(to_uint8(values, window), spec)


def normalize_uint8(images, spec: PreprocessSpec):
    """Normalise 8-bit images (numpy (N,H,W) or torch (N,1,H,W)) to float model input."""
    mean = np.float32(spec.mean[0])
    std = np.float32(spec.std[0])
    if isinstance(images, np.ndarray):
        return ((images.astype(np.float32) / np.float32(255.0)) - mean) / std
    return ((images.float() / 255.0) - float(mean)) / float(std)


def preprocess(values: np.ndarray, window: Window, spec: PreprocessSpec) -> tuple[np.ndarray, Letterbox]:
    """Return the float32 (channels, size, size) model input of a slice and its letterbox."""
    image, geometry = model_uint8(values, window, spec)
    tensor = normalize_uint8(image, spec)[None]
    if spec.channels > 1:
        tensor = np.repeat(tensor, spec.channels, axis=0)
    return tensor, geometry


def unletterbox(heatmap: np.ndarray, geometry: Letterbox) -> np.ndarray:
    """Map a size x size input-space map back onto the original slice's pixel grid."""
    inside = np.ascontiguousarray(heatmap[geometry.box], dtype=np.float32)
    return cv2.resize(inside, (geometry.columns, geometry.rows), interpolation=cv2.INTER_LINEAR)
