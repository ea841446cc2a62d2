"""Render slices and heatmap overlays to RGB images (numpy + OpenCV, no Qt)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from convnest_viewer.io.window import Window
from convnest_viewer.io.pixels import apply_window

COLORMAPS = {"jet": cv2.COLORMAP_JET, "inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS, "hot": cv2.COLORMAP_HOT}


def heatmap_rgba(heatmap: np.ndarray, colormap: str = "jet", opacity: float = 0.45) -> np.ndarray:
    """Return an RGBA uint8 image of a [0, 1] map, transparent where the map is zero."""
    index = np.clip(np.rint(heatmap * 255), 0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(index, COLORMAPS.get(colormap, cv2.COLORMAP_JET))
    alpha = np.clip(heatmap * 2.0, 0.0, 1.0) * opacity * 255  # faint evidence fades out
    return np.dstack([bgr[..., ::-1], alpha.astype(np.uint8)])


def overlay_rgb(values: np.ndarray, window: Window, heatmap: np.ndarray | None = None,
                colormap: str = "jet", opacity: float = 0.45, aspect: float = 1.0) -> np.ndarray:
    """Return the windowed slice as RGB with the heatmap blended over it, at true aspect."""
    gray = apply_window(values, window)
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    if heatmap is not None:
        rgba = heatmap_rgba(heatmap, colormap, opacity).astype(np.float32)
        alpha = rgba[..., 3:4] / 255.0
        rgb = rgb * (1 - alpha) + rgba[..., :3] * alpha
    rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if abs(aspect - 1.0) > 1e-3:
        rows = max(1, round(rgb.shape[0] * aspect))
        rgb = cv2.resize(rgb, (rgb.shape[1], rows), interpolation=cv2.INTER_LINEAR)
    return rgb


def png_bytes(rgb: np.ndarray) -> bytes:
    """Return an RGB uint8 image encoded as PNG."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError("PNG encoding failed")
    return data.tobytes()


def save_png(path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG (any path, including non-ASCII)."""
    Path(path).write_bytes(png_bytes(rgb))
