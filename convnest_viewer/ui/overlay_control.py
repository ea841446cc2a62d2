"""The main window's heatmap overlay: show a stored map, ask the session for a missing one, say what is shown."""

from __future__ import annotations

from convnest_viewer.inference.heatmap import METHOD_NAMES
from convnest_viewer.results import HeatmapKey


class OverlayMixin:
    """Heatmap overlay actions of MainWindow (uses its state, store, session, view, model dock and timers)."""

    def _update_overlay(self) -> None:
        state, status = self.state, self.model_dock.overlay_status
        if state.overlay_mode == "none" or state.series is None or not state.model_id or self.session is None:
            self.view.clear_overlay()
            status.setText("" if state.overlay_mode == "none" else "waiting for the model…")
            self.overlayShown.emit(None)
            return
        withheld = self._not_assessed_reason(state.volume, state.index)
        if withheld is not None:  # the model gives this slice no class, so no map explains one
            self.view.clear_overlay()
            status.setText(f"no heatmap: slice not assessed ({withheld})")
            self.overlayShown.emit(None)
            return
        key = state.heatmap_key(self.store)
        cached = self.store.heatmap(key) if key else None
        if cached is not None:
            self.view.set_overlay(cached.values)
            status.setText(self._overlay_text(key))
            self.overlayShown.emit(key)
            return
        self.view.clear_overlay()
        if key is None:
            status.setText("waiting for the slice's prediction…")
            return
        status.setText(f"computing {METHOD_NAMES[state.overlay_mode]}…")
        self._heatmap_timer.start()  # asked once the slice stays: scrolling past slices computes no maps

    def _request_heatmap(self) -> None:
        state = self.state
        key = state.heatmap_key(self.store)
        if key is not None and self._not_assessed_reason(state.volume, state.index) is not None:
            return  # withheld slices get no map
        if key is not None and self.session is not None and self.store.heatmap(key) is None:
            self.session.request_heatmap(state.series, state.volume, state.index, state.overlay_mode, key.target_index)

    def _heatmap_ready(self, key: HeatmapKey, heatmap) -> None:
        if self.state.heatmap_key(self.store) == key:
            self.view.set_overlay(heatmap.values)
            self.model_dock.overlay_status.setText(self._overlay_text(key))
            self.overlayShown.emit(key)

    def _overlay_text(self, key: HeatmapKey) -> str:
        card = self.state.card
        text = f"{METHOD_NAMES[key.method]} for {card.classes[key.target_index].display}"
        if key.method == "tumour_occlusion" and not card.classes[key.target_index].no_finding:
            text = f"{METHOD_NAMES[key.method]}: any tumour against no tumour (the types share the map)"
        if key.method == "gradcam":
            cells = max(1, card.preprocessing.size // 32)
            text += f" (coarse: {cells}×{cells} grid)"
        return text

    def _heatmap_failed(self, message: str) -> None:
        self.model_dock.overlay_status.setText("Heatmap failed")
        self.statusBar().showMessage(f"Heatmap failed: {message.splitlines()[0]}", 10000)
