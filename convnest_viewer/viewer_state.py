"""The viewer's state outside any widget: study, series, volume, slice, windows, overlay and model; no Qt.

Setters clamp their value and announce only real changes (like napari's Dims), so a widget can write
what the user did into the state and redraw from the state's events without echo loops.
Events (see STATE_EVENTS) carry the new value: study (LoadResult), series (Series), volume (int),
index (int), window (Window), overlay (mode, target), model (ModelInfo or None), identifiers (bool).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convnest_viewer.events import Events
from convnest_viewer.inference.card import ModelCard
from convnest_viewer.inference.heatmap import METHODS
from convnest_viewer.io import LoadResult, Series, Window
from convnest_viewer.results import HeatmapKey, ResultStore

OVERLAY_MODES = ("none", *METHODS)
STATE_EVENTS = ("study", "series", "volume", "index", "window", "overlay", "model", "identifiers")


@dataclass(frozen=True)
class ModelInfo:
    """The loaded model as the viewer knows it: its id (weights sha256), card and device."""

    model_id: str
    card: ModelCard
    device_name: str

    @property
    def name(self) -> str:
        """Return the model's name from its card."""
        return self.card.name


class ViewerState:
    """What the viewer shows; widgets observe `events` and call the setters."""

    def __init__(self, overlay_mode: str = "none", show_identifiers: bool = True) -> None:
        self.events = Events(*STATE_EVENTS)
        self.result = LoadResult()
        self.series: Series | None = None
        self.volume = 0
        self.index = 0
        self._windows: dict[str, Window] = {}
        self.overlay_mode = overlay_mode if overlay_mode in OVERLAY_MODES else "none"
        self.overlay_target: int | None = None  # None: the predicted class
        self.model: ModelInfo | None = None
        self.model_error: str | None = None
        self.show_identifiers = show_identifiers

    # --- the model ------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """Return the loaded model's id, or "" while none is loaded."""
        return self.model.model_id if self.model else ""

    @property
    def card(self) -> ModelCard | None:
        """Return the loaded model's card, or None."""
        return self.model.card if self.model else None

    @property
    def class_ids(self) -> list[str]:
        """Return the model's class ids ([] while none is loaded)."""
        return self.model.card.class_ids if self.model else []

    @property
    def display_names(self) -> dict[str, str]:
        """Return {class id: display name} of the model's classes."""
        return {c.id: c.display for c in self.model.card.classes} if self.model else {}

    def set_model(self, model: ModelInfo) -> None:
        """Record the loaded model (an explained class it lacks falls back to the predicted one)."""
        self.model, self.model_error = model, None
        if self.overlay_target is not None and self.overlay_target >= model.card.num_classes:
            self.overlay_target = None
        self.events.emit("model", model)

    def set_model_failed(self, message: str) -> None:
        """Record that no model could be loaded, and why."""
        self.model, self.model_error = None, message
        self.events.emit("model", None)

    # --- study, series, volume, slice -------------------------------------------------------------
    def set_result(self, result: LoadResult) -> bool:
        """Make a load result the current study and show its first series; False (nothing changes) if it
        holds no images."""
        if not result.series:
            return False
        self.result = result
        self.series = None
        self._windows.clear()
        self.events.emit("study", result)
        self.select_series(result.series[0].key)
        return True

    def select_series(self, key: str) -> bool:
        """Show a series of the study from its middle slice; False if unknown or already shown."""
        series = self.result.find(key)
        if series is None or series is self.series:
            return False
        self.series, self.volume, self.index = series, 0, series.n_slices // 2
        self.events.emit("series", series)
        return True

    def set_volume(self, volume: int) -> bool:
        """Show another volume (time point) of a 4-D series; False if out of range or unchanged."""
        if self.series is None or not 0 <= volume < self.series.n_volumes or volume == self.volume:
            return False
        self.volume = volume
        self.events.emit("volume", volume)
        return True

    def set_slice(self, index: int) -> bool:
        """Show slice `index` (clamped to the series); False if nothing changes."""
        if self.series is None:
            return False
        index = int(np.clip(index, 0, self.series.n_slices - 1))
        if index == self.index:
            return False
        self.index = index
        self.events.emit("index", index)
        return True

    def step_slice(self, step: int) -> bool:
        """Move by `step` slices (clamped)."""
        return self.set_slice(self.index + step)

    def last_slice(self) -> int:
        """Return the index of the series' last slice (0 without a series)."""
        return self.series.n_slices - 1 if self.series else 0

    # --- window ----------------------------------------------------------------------------------
    @property
    def window(self) -> Window | None:
        """Return the current series' window: the one the user set, else the series' default."""
        if self.series is None:
            return None
        window = self._windows.get(self.series.key)
        if window is None:
            window = self._windows[self.series.key] = self.series.default_window()
        return window

    def set_window(self, window: Window) -> bool:
        """Set the current series' window (kept per series while the study is open)."""
        if self.series is None or window == self._windows.get(self.series.key):
            return False
        self._windows[self.series.key] = window
        self.events.emit("window", window)
        return True

    # --- overlay ---------------------------------------------------------------------------------
    def set_overlay_mode(self, mode: str) -> bool:
        """Show no heatmap or one of the heatmap methods; False for an unknown or unchanged mode."""
        if mode not in OVERLAY_MODES or mode == self.overlay_mode:
            return False
        self.overlay_mode = mode
        self.events.emit("overlay", mode, self.overlay_target)
        return True

    @property
    def default_heatmap(self) -> str:
        """Return the heatmap method the model's card measured best (Grad-CAM while no model or card says)."""
        return self.model.card.explanation.default_method if self.model else METHODS[0]

    def overlay_order(self) -> tuple[str, ...]:
        """Return the overlay modes as offered: none, the model's best-measured heatmap, then the others."""
        best = self.default_heatmap
        return ("none", best, *(m for m in METHODS if m != best))

    def cycle_overlay(self) -> bool:
        """Step to the next overlay mode in overlay_order (none, the best-measured heatmap, the others)."""
        order = self.overlay_order()
        return self.set_overlay_mode(order[(order.index(self.overlay_mode) + 1) % len(order)])

    def set_overlay_target(self, target: int | None) -> bool:
        """Explain a class by its output index (None: each slice's predicted class)."""
        if target == self.overlay_target:
            return False
        self.overlay_target = target
        self.events.emit("overlay", self.overlay_mode, target)
        return True

    def heatmap_key(self, store: ResultStore) -> HeatmapKey | None:
        """Return which heatmap the current slice needs, or None (no overlay, no model, prediction pending)."""
        if self.series is None or self.overlay_mode == "none" or not self.model_id:
            return None
        target = self.overlay_target
        if target is None:
            probabilities = store.probabilities(self.model_id, self.series.key, self.volume, self.index)
            if probabilities is None:
                return None
            target = int(np.argmax(probabilities))
        return HeatmapKey(self.model_id, self.series.key, self.volume, self.index, self.overlay_mode, target)

    # --- annotations -----------------------------------------------------------------------------
    def set_show_identifiers(self, show: bool) -> bool:
        """Show or hide the patient's name and ID on the view."""
        if show == self.show_identifiers:
            return False
        self.show_identifiers = show
        self.events.emit("identifiers", show)
        return True
