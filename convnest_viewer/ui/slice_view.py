"""The slice view: a pyqtgraph image with window/level, zoom, pan, orientation letters, corner text, overlay."""

from __future__ import annotations

import numpy as np
from convnest_viewer.ui.pyqtgraph_import import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QWidget

from convnest_viewer.io import Series, Window
from convnest_viewer.render import heatmap_rgba

_WINDOW_SENSITIVITY = 1.0  # fraction of the current width per 100 screen pixels of drag


class SliceViewBox(pg.ViewBox):
    """A ViewBox with radiology mouse bindings: wheel slices, left-drag W/L, right-drag zoom, middle-drag pan."""

    sliceStep = Signal(int)
    windowDrag = Signal(float, float)  # dx, dy in screen pixels

    def __init__(self) -> None:
        super().__init__(invertY=True, lockAspect=True, enableMenu=False)
        self.setMouseMode(pg.ViewBox.PanMode)

    def wheelEvent(self, ev, axis=None) -> None:
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        ev.accept()
        self.sliceStep.emit(-1 if ev.delta() > 0 else 1)

    def mouseDragEvent(self, ev, axis=None) -> None:
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            delta = ev.screenPos() - ev.lastScreenPos()
            self.windowDrag.emit(float(delta.x()), float(delta.y()))
            return
        super().mouseDragEvent(ev, axis)  # middle: pan, right: zoom


class SliceView(pg.GraphicsLayoutWidget):
    """Shows one slice of a series at true aspect, with its heatmap overlay and annotations."""

    sliceStep = Signal(int)
    windowChanged = Signal(object)  # Window

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setBackground("k")
        self.ci.layout.setContentsMargins(0, 0, 0, 0)
        self.view = SliceViewBox()
        self.addItem(self.view)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.overlay = pg.ImageItem(axisOrder="row-major")
        self.overlay.setZValue(10)
        self.view.addItem(self.image)
        self.view.addItem(self.overlay)
        self.view.sliceStep.connect(self.sliceStep)
        self.view.windowDrag.connect(self._drag_window)
        self.series: Series | None = None
        self.window = Window(0.5, 1.0)
        self.values: np.ndarray | None = None
        self.heatmap: np.ndarray | None = None
        self.overlay_opacity = 0.45
        self.colormap = "jet"
        self._letters = {edge: self._label(edge) for edge in ("left", "right", "top", "bottom")}
        self._corners = {corner: self._label(corner) for corner in ("top_left", "top_right", "bottom_left", "bottom_right")}
        self.message = self._label("center")
        self.view.sigResized.connect(self._place_labels)
        self.view.sigRangeChanged.connect(self._place_labels)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    # --- content -------------------------------------------------------------------------
    def show_series(self, series: Series | None) -> None:
        """Prepare the view for a series: geometry, letters, and a reset zoom."""
        self.series = series
        self.values = None
        self.clear_overlay()
        if series is None:
            self.image.clear()
            for label in self._letters.values():
                label.setText("")
            return
        letters = series.orientation_letters() or {}
        for edge, label in self._letters.items():
            label.setText(letters.get(edge, ""))
        self._rect = self._slice_rect(series)
        self.reset_view()

    def show_slice(self, values: np.ndarray, window: Window | None = None) -> None:
        """Show a slice's values through the current (or a given) window."""
        self.values = values
        if window is not None:
            self.window = window
        self.image.setImage(values, levels=(self.window.low, self.window.high), autoLevels=False)
        self.image.setRect(self._rect)
        self.message.setText("")

    def set_window(self, window: Window) -> None:
        """Change the display window (levels) and announce it."""
        self.window = Window(window.center, max(window.width, 1e-3))
        if self.values is not None:
            self.image.setLevels((self.window.low, self.window.high))
        self.windowChanged.emit(self.window)

    def set_overlay(self, heatmap: np.ndarray | None) -> None:
        """Show a [0, 1] heatmap over the slice (same shape as the slice), or remove it."""
        self.heatmap = heatmap
        if heatmap is None:
            self.overlay.clear()
            self.overlay.setVisible(False)
            return
        self.overlay.setImage(heatmap_rgba(heatmap, self.colormap, self.overlay_opacity), autoLevels=False, levels=(0, 255))
        self.overlay.setRect(self._rect)
        self.overlay.setVisible(True)

    def clear_overlay(self) -> None:
        """Remove the heatmap overlay."""
        self.set_overlay(None)

    def set_overlay_style(self, opacity: float | None = None, colormap: str | None = None) -> None:
        """Change the overlay's opacity and colormap, redrawing it if shown."""
        if opacity is not None:
            self.overlay_opacity = opacity
        if colormap is not None:
            self.colormap = colormap
        if self.heatmap is not None:
            self.set_overlay(self.heatmap)

    def set_corner_text(self, corner: str, text: str) -> None:
        """Set one of the four corner annotations (top_left, top_right, bottom_left, bottom_right)."""
        self._corners[corner].setText(text)
        self._place_labels()

    def corner_text(self, corner: str) -> str:
        """Return the text shown in a corner (top_left, top_right, bottom_left, bottom_right)."""
        return self._corners[corner].toPlainText()

    def orientation_labels(self) -> dict[str, str]:
        """Return the patient direction shown at each image edge (left, right, top, bottom)."""
        return {edge: label.toPlainText() for edge, label in self._letters.items()}

    def show_message(self, text: str) -> None:
        """Show a centred message in place of a slice (e.g. why it cannot be shown)."""
        self.image.clear()
        self.clear_overlay()
        self.message.setText(text)
        self._place_labels()

    def reset_view(self) -> None:
        """Fit the slice to the view (R)."""
        if self.series is not None:
            self.view.setRange(self._rect, padding=0.02)

    def zoom(self, factor: float) -> None:
        """Zoom about the view centre (factor > 1 zooms in)."""
        self.view.scaleBy((1 / factor, 1 / factor))

    def displayed_levels(self) -> tuple[float, float]:
        """Return the (black, white) levels the image is drawn with."""
        levels = self.image.getLevels()
        return float(levels[0]), float(levels[1])

    # --- helpers ----------------------------------------------------------------------------
    def _slice_rect(self, series: Series) -> QRectF:
        row_mm, col_mm = series.pixel_spacing or (1.0, 1.0)
        return QRectF(0, 0, series.columns * col_mm, series.rows * row_mm)

    def _drag_window(self, dx: float, dy: float) -> None:
        width = max(self.window.width, 1e-3)
        step = width * _WINDOW_SENSITIVITY / 100.0
        # right: wider window (less contrast); down: higher centre (darker), as in most PACS viewers
        self.set_window(Window(self.window.center + dy * step, max(width + dx * step, 1e-3)))

    def _label(self, place: str) -> pg.TextItem:
        anchors = {"left": (0, 0.5), "right": (1, 0.5), "top": (0.5, 0), "bottom": (0.5, 1), "center": (0.5, 0.5),
                   "top_left": (0, 0), "top_right": (1, 0), "bottom_left": (0, 1), "bottom_right": (1, 1)}
        color = (255, 215, 0) if place in ("left", "right", "top", "bottom") else (230, 230, 230)
        item = pg.TextItem("", color=color, anchor=anchors[place])
        font = QFont()
        font.setPointSize(11 if place in ("left", "right", "top", "bottom") else 9)
        font.setBold(place in ("left", "right", "top", "bottom"))
        item.setFont(font)
        item.setParentItem(self.view)
        item.setZValue(20)
        item.place = place
        return item

    def _place_labels(self, *_) -> None:
        rect = self.view.boundingRect()
        w, h, m = rect.width(), rect.height(), 4
        spots = {"left": (m, h / 2), "right": (w - m, h / 2), "top": (w / 2, m), "bottom": (w / 2, h - m),
                 "top_left": (m, m), "top_right": (w - m, m), "bottom_left": (m, h - m), "bottom_right": (w - m, h - m),
                 "center": (w / 2, h / 2)}
        for item in [*self._letters.values(), *self._corners.values(), self.message]:
            item.setPos(*spots[item.place])

    _rect = QRectF(0, 0, 1, 1)
