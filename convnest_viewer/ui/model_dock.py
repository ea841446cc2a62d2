"""The right-hand dock: the probability panel and the heatmap controls, wired to the viewer state."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QDockWidget, QFormLayout, QLabel, QMainWindow, QSlider, QVBoxLayout, QWidget

from convnest_viewer.inference.card import ClassInfo
from convnest_viewer.inference.heatmap import METHOD_NAMES
from convnest_viewer.ui import settings as prefs
from convnest_viewer.ui.probability_panel import ProbabilityPanel
from convnest_viewer.ui.model_card_dialog import pointing_game_text
from convnest_viewer.viewer_state import ViewerState

OVERLAY_LABELS = {"none": "No heatmap", **METHOD_NAMES}
DISCLAIMER = "For research use, not for diagnosis."
COLORMAPS = ("jet", "inferno", "hot", "viridis")


class ModelDock:
    """Builds the model dock in a main window; its controls write into the state and follow its overlay events."""

    def __init__(self, window: QMainWindow, state: ViewerState, settings) -> None:
        self.window, self.state, self.settings = window, state, settings
        content = QWidget()
        layout = QVBoxLayout(content)
        self.panel = ProbabilityPanel()
        layout.addWidget(self.panel, stretch=1)
        controls = QFormLayout()
        self.overlay_combo = QComboBox()
        self.fill_heatmap_methods()
        self.overlay_combo.currentIndexChanged.connect(lambda _i: state.set_overlay_mode(self.overlay_combo.currentData()))
        controls.addRow("Heatmap (H)", self.overlay_combo)
        self.target_combo = QComboBox()
        self.target_combo.addItem("Predicted class", None)
        self.target_combo.currentIndexChanged.connect(lambda _i: state.set_overlay_target(self.target_combo.currentData()))
        controls.addRow("Explain", self.target_combo)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(5, 100)
        self.opacity_slider.setValue(round(prefs.get_float(settings, "overlay/opacity", 0.45) * 100))
        self.opacity_slider.valueChanged.connect(self._opacity_changed)
        controls.addRow("Opacity", self.opacity_slider)
        self.colormap_combo = QComboBox()
        self.colormap_combo.addItems(list(COLORMAPS))
        self.colormap_combo.setCurrentText(prefs.get_str(settings, "overlay/colormap", "jet"))
        self.colormap_combo.currentTextChanged.connect(self._colormap_changed)
        controls.addRow("Colormap", self.colormap_combo)
        self.overlay_status = QLabel("")
        self.overlay_status.setWordWrap(True)
        controls.addRow("", self.overlay_status)
        layout.addLayout(controls)
        layout.addWidget(QLabel(f"<i>{DISCLAIMER}</i>"))
        self.dock = QDockWidget("Model", window)
        self.dock.setObjectName("model-dock")
        self.dock.setWidget(content)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        state.events.connect("overlay", self._overlay_changed)

    def add_series_dock(self, browser: QWidget) -> QDockWidget:
        """Put the series browser in a dock on the left and size both docks."""
        dock = QDockWidget("Series", self.window)
        dock.setObjectName("series-dock")
        dock.setWidget(browser)
        browser.setMinimumWidth(280)
        self.window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
        self.window.resizeDocks([dock, self.dock], [300, 400], Qt.Orientation.Horizontal)
        return dock

    def overlay_style(self) -> tuple[float, str]:
        """Return the chosen heatmap opacity (0-1) and colormap name."""
        return self.opacity_slider.value() / 100, self.colormap_combo.currentText()

    def fill_heatmap_methods(self) -> None:
        """Offer no heatmap, the model's best-measured method (marked, with its figure), then the others."""
        card = self.state.card
        measured = card.explanation.evaluation if card else {}
        self.overlay_combo.blockSignals(True)  # refilling is not a user choice
        self.overlay_combo.clear()
        for mode in self.state.overlay_order():
            best = mode == self.state.default_heatmap and bool(measured)
            self.overlay_combo.addItem(OVERLAY_LABELS[mode] + (" (best measured)" if best else ""), mode)
            figures = measured.get(mode)
            if figures:
                self.overlay_combo.setItemData(self.overlay_combo.count() - 1, pointing_game_text(figures, card),
                                               Qt.ItemDataRole.ToolTipRole)
        self.overlay_combo.setCurrentIndex(max(self.overlay_combo.findData(self.state.overlay_mode), 0))
        self.overlay_combo.blockSignals(False)

    def set_classes(self, classes: list[ClassInfo]) -> None:
        """Offer the model's classes as heatmap targets (keeping the state's target)."""
        self.target_combo.blockSignals(True)  # refilling is not a user choice
        self.target_combo.clear()
        self.target_combo.addItem("Predicted class", None)
        for index, info in enumerate(classes):
            self.target_combo.addItem(info.display, index)
        self.target_combo.blockSignals(False)
        self.show_overlay_choice(self.state.overlay_mode, self.state.overlay_target)

    def show_overlay_choice(self, mode: str, target: int | None) -> None:
        """Make the combos show a heatmap mode and target (the state ignores the echo)."""
        self.overlay_combo.setCurrentIndex(max(self.overlay_combo.findData(mode), 0))
        position = self.target_combo.findData(target) if target is not None else 0
        self.target_combo.setCurrentIndex(max(position, 0))

    def _overlay_changed(self, mode: str, target: int | None) -> None:
        self.settings.setValue("overlay/mode", mode)
        self.show_overlay_choice(mode, target)

    def _opacity_changed(self, value: int) -> None:
        self.window.view.set_overlay_style(opacity=value / 100)
        self.settings.setValue("overlay/opacity", value / 100)

    def _colormap_changed(self, name: str) -> None:
        self.window.view.set_overlay_style(colormap=name)
        self.settings.setValue("overlay/colormap", name)
