"""The one preprocessing shared by training and the app: window to 8 bits, crop to the head, letterbox, normalise.

Versions (named in every model card; `load_card` refuses others):
- `letterbox-v1`: window to 8 bits, resize keeping the aspect, pad to the square input.
- `letterbox-v2`: the same after cropping the 8-bit slice to the head's bounding box (so the head's scale no
  longer depends on the field of view) and brightening a dim head so its 99th percentile reaches 250 (gain 1-4).
  Blank slices are not cropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from convnest_viewer.inference.card import PreprocessSpec
from convnest_viewer.inference.foreground import Box, head_box, head_mask, uint8_percentile
from convnest_viewer.io.window import Window
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
    crop: Box | None = None  # the part of the slice that was letterboxed (None: all of it)

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


HEAD_TARGET = 250.0  # letterbox-v2: the head's 99th percentile is brightened up to this value
MAX_GAIN = 4.0


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


def crop_to_head(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, Box | None]:
    """Return the 8-bit slice cut to the head's box, a dim head brightened, and the box (None: no head found);
    `mask` is the slice's head_mask when the caller has it already."""
    mask = head_mask(image) if mask is None else mask
    box = head_box(mask)
    if box is None:
        return image, None
    cropped = image[box.slices]
    top = uint8_percentile(image, 99, mask)
    gain = min(MAX_GAIN, HEAD_TARGET / max(top, 1.0))
    if gain > 1.0:
        cropped = np.clip(np.rint(cropped.astype(np.float32) * np.float32(gain)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(cropped), box


def model_uint8(values: np.ndarray, window: Window, spec: PreprocessSpec) -> tuple[np.ndarray, Letterbox]:
    """Return the 8-bit square model image of a slice and the geometry to undo the letterbox."""
    return model_uint8_from_image(to_uint8(values, window), spec)


def model_uint8_from_image(image: np.ndarray, spec: PreprocessSpec, mask: np.ndarray | None = None
                           ) -> tuple[np.ndarray, Letterbox]:
    """Return the 8-bit square model image of an already windowed 8-bit slice (and its head mask, if known)."""
    if spec.version == "letterbox-v1":
        return letterbox_uint8(image, spec)
    if spec.version != "letterbox-v2":
        raise ValueError(f"unknown preprocessing version {spec.version!r}")
    cropped, box = crop_to_head(image, mask)
    canvas, inner = letterbox_uint8(cropped, spec)
    geometry = Letterbox(image.shape[0], image.shape[1], spec.size, inner.top, inner.left, inner.height, inner.width, box)
    return canvas, geometry


def normalize_uint8(images, spec: PreprocessSpec):
    """Normalise 8-bit images (numpy (N,H,W) or torch (N,1,H,W)) to float model input."""
    mean = np.float32(spec.mean[0])
    std = np.float32(spec.std[0])
    if isinstance(images, np.ndarray):
        return ((images.astype(np.float32) / np.float32(255.0)) - mean) / std
    return ((images.float() / 255.0) - float(mean)) / float(std)


def preprocess(values: np.ndarray, window: Window, spec: PreprocessSpec) -> tuple[np.ndarray, Letterbox]:
    """Return the float32 (channels, size, size) model input of a slice and its letterbox."""
    return preprocess_image(to_uint8(values, window), spec)


def preprocess_image(image: np.ndarray, spec: PreprocessSpec, mask: np.ndarray | None = None
                     ) -> tuple[np.ndarray, Letterbox]:
    """Return the float32 model input of an already windowed 8-bit slice (and its head mask, if known)."""
    image, geometry = model_uint8_from_image(image, spec, mask)
    tensor = normalize_uint8(image, spec)[None]
    if spec.channels > 1:
        tensor = np.repeat(tensor, spec.channels, axis=0)
    return tensor, geometry


def unletterbox(heatmap: np.ndarray, geometry: Letterbox) -> np.ndarray:
    """Map a size x size input-space map back onto the original slice's pixel grid (zero outside the crop)."""
    inside = np.ascontiguousarray(heatmap[geometry.box], dtype=np.float32)
    crop = geometry.crop or Box(0, 0, geometry.rows, geometry.columns)
    resized = cv2.resize(inside, (crop.width, crop.height), interpolation=cv2.INTER_LINEAR)
    if geometry.crop is None:
        return resized
    full = np.zeros((geometry.rows, geometry.columns), np.float32)
    full[crop.slices] = resized
    return full
