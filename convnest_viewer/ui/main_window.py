"""The main window: menus, docks, the slice view, and the wiring to the loader and inference threads."""

from __future__ import annotations

from html import escape as html_escape
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (QComboBox, QDockWidget, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QMainWindow,
                               QMessageBox, QProgressBar, QSlider, QVBoxLayout, QWidget)

from convnest_viewer import __version__
from convnest_viewer.inference.explain import METHOD_NAMES
from convnest_viewer.io import LoadResult, PixelReadError, Series, Window, percentile_window
from convnest_viewer.results import HeatmapKey, ResultStore
from convnest_viewer.ui import settings as prefs
from convnest_viewer.ui.inference_worker import InferenceWorker
from convnest_viewer.ui.probability_panel import ProbabilityPanel
from convnest_viewer.ui.series_browser import SeriesBrowser, format_dicom_date
from convnest_viewer.ui.slice_view import SliceView
from convnest_viewer.ui.study_loader import StudyLoader

OVERLAY_MODES = ("none", "gradcam", "shap")
OVERLAY_LABELS = {"none": "No heatmap", **METHOD_NAMES}
DISCLAIMER = "For research use, not for diagnosis."


class MainWindow(QMainWindow):
    """The viewer: open a study, scroll its slices, see the model's opinion and evidence."""

    studyLoaded = Signal(object)  # LoadResult
    sliceShown = Signal(str, int, int)  # series key, volume, index
    overlayShown = Signal(object)  # HeatmapKey or None
    crashReported = Signal(str, str)  # crash report path, redacted one-line error (emitted from any thread)

    def __init__(self, model_dir: Path | None = None, device: str | None = None) -> None:
        super().__init__()
        self.setWindowTitle(f"ConvNeXt Brain MRI Viewer {__version__}")
        self.resize(1400, 900)
        self.setAcceptDrops(True)
        self.settings = prefs.app_settings()
        self.store = ResultStore()
        self.model_dir = model_dir
        self.device_choice = device or prefs.get_str(self.settings, "device", "auto")
        self.result = LoadResult()
        self.series: Series | None = None
        self.volume = 0
        self.index = 0
        self.model_id = ""
        self.model_name = ""
        self.class_ids: list[str] = []
        self.display_names: list[str] = []
        self.model_error: str | None = None
        self.card = None  # the loaded model's card
        self.overlay_mode = prefs.get_str(self.settings, "overlay/mode", "none")
        if self.overlay_mode not in OVERLAY_MODES:
            self.overlay_mode = "none"
        self.overlay_target: int | None = None  # None: the predicted class
        self.interactive = True  # False in the self-test: no modal dialogs
        self.show_identifiers = prefs.get_str(self.settings, "view/identifiers", "true") == "true"
        self._windows: dict[str, Window] = {}
        self._loader: StudyLoader | None = None
        self._build_central()
        self._build_docks()
        self._build_menus()
        self._build_status()
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(120)
        self._refresh_timer.timeout.connect(self._refresh_series_plot)
        self.worker: InferenceWorker | None = None
        self._start_worker()

    # --- layout ----------------------------------------------------------------------------
    def _build_central(self) -> None:
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        self.view = SliceView()
        self.view.sliceStep.connect(lambda step: self.set_slice(self.index + step))
        self.view.windowChanged.connect(self._window_changed)
        layout.addWidget(self.view, stretch=1)
        row = QHBoxLayout()
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setMinimum(0)
        self.slider.valueChanged.connect(self.set_slice)
        self.slice_label = QLabel("–")
        self.volume_combo = QComboBox()
        self.volume_combo.currentIndexChanged.connect(self.set_volume)
        self.volume_combo.setVisible(False)
        row.addWidget(QLabel("Slice"))
        row.addWidget(self.slider, stretch=1)
        row.addWidget(self.slice_label)
        row.addWidget(self.volume_combo)
        layout.addLayout(row)
        self.setCentralWidget(central)
        self.view.show_message("File > Open DICOM Study…  (or drop a folder here)")

    def _build_docks(self) -> None:
        self.browser = SeriesBrowser()
        self.browser.seriesSelected.connect(self.show_series)
        left = QDockWidget("Series", self)
        left.setObjectName("series-dock")
        left.setWidget(self.browser)
        self.browser.setMinimumWidth(280)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, left)
        self.series_dock = left

        right_widget = QWidget()
        right = QVBoxLayout(right_widget)
        self.panel = ProbabilityPanel()
        self.panel.sliceClicked.connect(self.set_slice)
        self.panel.study_summary.linkActivated.connect(self._open_link)
        right.addWidget(self.panel, stretch=1)
        controls = QFormLayout()
        self.overlay_combo = QComboBox()
        for mode in OVERLAY_MODES:
            self.overlay_combo.addItem(OVERLAY_LABELS[mode], mode)
        self.overlay_combo.setCurrentIndex(OVERLAY_MODES.index(self.overlay_mode))
        self.overlay_combo.currentIndexChanged.connect(lambda i: self.set_overlay_mode(OVERLAY_MODES[i]))
        controls.addRow("Heatmap (H)", self.overlay_combo)
        self.target_combo = QComboBox()
        self.target_combo.addItem("Predicted class", None)
        self.target_combo.currentIndexChanged.connect(self._target_changed)
        controls.addRow("Explain", self.target_combo)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(5, 100)
        self.opacity_slider.setValue(round(prefs.get_float(self.settings, "overlay/opacity", 0.45) * 100))
        self.opacity_slider.valueChanged.connect(self._opacity_changed)
        controls.addRow("Opacity", self.opacity_slider)
        self.colormap_combo = QComboBox()
        self.colormap_combo.addItems(["jet", "inferno", "hot", "viridis"])
        self.colormap_combo.setCurrentText(prefs.get_str(self.settings, "overlay/colormap", "jet"))
        self.colormap_combo.currentTextChanged.connect(self._colormap_changed)
        controls.addRow("Colormap", self.colormap_combo)
        self.overlay_status = QLabel("")
        controls.addRow("", self.overlay_status)
        right.addLayout(controls)
        disclaimer = QLabel(f"<i>{DISCLAIMER}</i>")
        right.addWidget(disclaimer)
        dock = QDockWidget("Model", self)
        dock.setObjectName("model-dock")
        dock.setWidget(right_widget)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.model_dock = dock
        self.resizeDocks([self.series_dock, dock], [300, 400], Qt.Orientation.Horizontal)
        self.view.set_overlay_style(self.opacity_slider.value() / 100, self.colormap_combo.currentText())

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "Open DICOM &Study…", self.open_study_dialog, QKeySequence.StandardKey.Open)
        self._action(file_menu, "Open &Files…", self.open_files_dialog, "Ctrl+Shift+O")
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self._fill_recent_menu()
        file_menu.addSeparator()
        self._action(file_menu, "Export &Screenshot…", self.export_screenshot_dialog, "Ctrl+Shift+S")
        self._action(file_menu, "Export &Report…", self.export_report_dialog, "Ctrl+Shift+R")
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        view_menu = bar.addMenu("&View")
        self._action(view_menu, "&Reset View", self.view.reset_view, "R")
        self._action(view_menu, "Zoom &In", lambda: self.view.zoom(1.25), "Ctrl++")
        self._action(view_menu, "Zoom &Out", lambda: self.view.zoom(0.8), "Ctrl+-")
        presets = view_menu.addMenu("&Window Preset")
        self._action(presets, "File VOI", lambda: self.apply_window_preset("voi"), "F1")
        self._action(presets, "Auto (0.5–99.5 percentile)", lambda: self.apply_window_preset("auto"), "F2")
        self._action(presets, "Full Range", lambda: self.apply_window_preset("full"), "F3")
        view_menu.addSeparator()
        self._action(view_menu, "Cycle &Heatmap (none / Grad-CAM / Gradient SHAP)", self.cycle_overlay, "H")
        self._action(view_menu, "DICOM &Tags…", self.show_tags, "Ctrl+T")
        identifiers = self._action(view_menu, "Show &Patient Identifiers", self._toggle_identifiers)
        identifiers.setCheckable(True)
        identifiers.setChecked(self.show_identifiers)
        view_menu.addSeparator()
        view_menu.addAction(self.series_dock.toggleViewAction())
        view_menu.addAction(self.model_dock.toggleViewAction())
        for key, step in ((Qt.Key.Key_Up, -1), (Qt.Key.Key_Down, 1), (Qt.Key.Key_Left, -1), (Qt.Key.Key_Right, 1),
                          (Qt.Key.Key_PageUp, -10), (Qt.Key.Key_PageDown, 10)):
            action = QAction(self)
            action.setShortcut(QKeySequence(key))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            action.triggered.connect(lambda _=False, s=step: self.set_slice(self.index + s))
            self.addAction(action)
        home = QAction(self)
        home.setShortcuts([QKeySequence(Qt.Key.Key_Home)])
        home.triggered.connect(lambda: self.set_slice(0))
        self.addAction(home)
        end = QAction(self)
        end.setShortcuts([QKeySequence(Qt.Key.Key_End)])
        end.triggered.connect(lambda: self.set_slice(self.series.n_slices - 1 if self.series else 0))
        self.addAction(end)

        model_menu = bar.addMenu("&Model")
        device_menu = model_menu.addMenu("&Device")
        group = QActionGroup(self)
        for choice, label in (("auto", "Automatic (GPU when present)"), ("cpu", "CPU"), ("cuda", "CUDA GPU"), ("mps", "Apple GPU (MPS)")):
            action = device_menu.addAction(label)
            action.setCheckable(True)
            action.setChecked(choice == self.device_choice)
            action.setEnabled(choice in ("auto", "cpu") or _device_available(choice))
            action.triggered.connect(lambda _=False, c=choice: self.set_device(c))
            group.addAction(action)
        self._action(model_menu, "Model &Card…", self.show_model_card)

        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "&About", self.show_about)

    def _build_status(self) -> None:
        self.device_label = QLabel("Model: loading…")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setVisible(False)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.device_label)

    def _action(self, menu, text, slot, shortcut=None) -> QAction:
        action = menu.addAction(text)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(lambda _=False: slot())
        return action

    # --- the inference worker -----------------------------------------------------------------
    def _start_worker(self) -> None:
        device = None if self.device_choice == "auto" else self.device_choice
        self.worker = InferenceWorker(self.store, self.model_dir, device)
        self.worker.modelReady.connect(self._model_ready)
        self.worker.modelFailed.connect(self._model_failed)
        self.worker.sliceClassified.connect(self._slice_classified)
        self.worker.sliceFailed.connect(self._slice_failed)
        self.worker.heatmapReady.connect(self._heatmap_ready)
        self.worker.heatmapFailed.connect(self._heatmap_failed)
        self.worker.progress.connect(self._progress)
        self.worker.seriesDone.connect(self._series_done)
        self.worker.start()

    def _stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker.deleteLater()
            self.worker = None

    def set_device(self, choice: str) -> None:
        """Switch the inference device (restarts the worker; cached results stay valid per model)."""
        self.device_choice = choice
        self.settings.setValue("device", choice)
        self._stop_worker()
        self.model_id = ""
        self.device_label.setText("Model: loading…")
        self._start_worker()
        if self.series is not None:
            self.worker.classify_series(self.series, self.index, self.volume)

    def _model_ready(self, model_id: str, name: str, device_name: str) -> None:
        if self.worker is None or self.worker.classifier is None:
            return  # the window is closing
        self.model_id, self.model_name, self.model_error = model_id, name, None
        card = self.card = self.worker.classifier.card
        self.class_ids, self.display_names = card.class_ids, card.display_names
        self.panel.set_classes(self.class_ids, self.display_names)
        self.target_combo.blockSignals(True)
        self.target_combo.clear()
        self.target_combo.addItem("Predicted class", None)
        for index, name_ in enumerate(self.display_names):
            self.target_combo.addItem(name_, index)
        self.target_combo.blockSignals(False)
        self.device_label.setText(f"{device_name} · model {name}")
        self.panel.set_model_text(f"<b>{name}</b> ({card.architecture}, {card.preprocessing.size} px) on {device_name}")
        if self.series is not None:
            self.worker.classify_series(self.series, self.index, self.volume)
            self._show_current_results()

    def _model_failed(self, message: str) -> None:
        self.model_error = message
        self.device_label.setText("No model: viewing only")
        self.panel.set_model_text(f"<b>No classifier available.</b> {message}")
        self.statusBar().showMessage(f"Model not loaded: {message}", 15000)

    def _slice_classified(self, generation: int, key: str, volume: int, index: int, probabilities) -> None:
        if self.series is None or key != self.series.key:
            return  # a result for another series: kept in the store, never shown here
        if volume == self.volume and index == self.index:
            self.panel.show_slice(probabilities, self._not_assessed_reason(key, volume, index))
            if self.overlay_mode != "none" and self.overlay_target is None:
                self._update_overlay()
        self._refresh_timer.start()

    def _series_done(self, generation: int, key: str) -> None:
        series = self.result.find(key)
        if series is not None and self.class_ids:
            self.browser.set_finding(key, self._summary(series).short(dict(zip(self.class_ids, self.display_names))))
            self._refresh_study_summary()
        if self.series is not None and self._is_classified(self.series):
            self._classify_next_in_background()

    def _summary(self, series: Series, volume: int = 0):
        return self.store.series_summary(self.model_id, series.key, volume, series.n_slices, self.class_ids)

    def _not_assessed_reason(self, key: str, volume: int, index: int) -> str | None:
        return self.store.not_assessed_reason(self.model_id, key, volume, index) if self.model_id else None

    def _is_classified(self, series: Series) -> bool:
        return len(self.store.finished(self.model_id, series.key)) >= series.n_slices * series.n_volumes

    def _classify_next_in_background(self) -> None:
        """Once the shown series is done, classify the study's other series one after another."""
        if self.worker is None or not self.model_id:
            return
        waiting = next((s for s in self.result.series if not self._is_classified(s)), None)
        if waiting is not None:
            self.worker.classify_series(waiting, waiting.n_slices // 2, 0, background=True)

    def _verdict(self, series: Series, volume: int = 0):
        return self.store.series_verdict(self.model_id, series.key, volume, series.n_slices, self.class_ids)

    def _refresh_study_summary(self) -> None:
        from convnest_viewer.verdict import study_verdict

        names = dict(zip(self.class_ids, self.display_names))
        verdicts = {series.key: self._verdict(series) for series in self.result.series if self._is_classified(series)}
        lines = []
        for series in self.result.series:
            verdict = verdicts.get(series.key)
            if verdict is None:
                continue
            label = f"{series.number}: " if series.number is not None else ""
            line = html_escape(f"{label}{series.description or '(no description)'}: {verdict.text(names)}")
            if verdict.finding is not None:  # the key slice, one click away
                line += f' <a href="slice:{html_escape(series.key)}:{verdict.finding.key_slice}">key slice {verdict.finding.key_slice + 1}</a>'
            lines.append(line)
        study = study_verdict(verdicts)
        text = (f"<b>Study verdict:</b> {html_escape(study.text(names))}"
                f"<br><small>{len(verdicts)} of {len(self.result.series)} series classified</small>")
        if lines:
            text += "<br><small>" + "<br>".join(lines[:12]) + "</small>"
        self.panel.set_study_summary(text)

    def _open_link(self, link: str) -> None:
        """Follow a link of the study verdict: "slice:<series key>:<index>" shows that slice."""
        kind, _, rest = link.partition(":")
        key, _, index = rest.rpartition(":")
        if kind == "slice" and self.result.find(key) is not None:
            self.browser.select(key)
            self.set_slice(int(index))

    def _slice_failed(self, generation: int, key: str, volume: int, index: int, reason: str) -> None:
        if self.series is not None and key == self.series.key:
            self.statusBar().showMessage(f"Slice {index + 1}: {reason}", 10000)
            self._refresh_series_plot()

    def _progress(self, generation: int, key: str, done: int, total: int) -> None:
        if self.series is None or key != self.series.key:
            return
        self.progress.setVisible(done < total)
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat("classifying %v/%m")

    def _heatmap_ready(self, generation: int, key: HeatmapKey, heatmap) -> None:
        if self._wanted_heatmap_key(heatmap.target_index) == key:
            self.view.set_overlay(heatmap.values)
            self.overlay_status.setText(self._overlay_text(key))
            self.overlayShown.emit(key)

    def _overlay_text(self, key: HeatmapKey) -> str:
        text = f"{METHOD_NAMES[key.method]} for {self.display_names[key.target_index]}"
        if key.method == "gradcam" and self.card is not None:
            cells = max(1, self.card.preprocessing.size // 32)
            text += f" (coarse: {cells}×{cells} grid)"
        return text

    def _heatmap_failed(self, generation: int, message: str) -> None:
        self.overlay_status.setText("Heatmap failed")
        self.statusBar().showMessage(f"Heatmap failed: {message.splitlines()[0]}", 10000)

    # --- opening studies ----------------------------------------------------------------------
    def open_paths(self, paths: list[str]) -> None:
        """Open folders/files/DICOMDIRs as the current study (scanned in a background thread)."""
        paths = [str(p) for p in paths]
        if not paths:
            return
        if self._loader is not None:
            self._loader.cancel()
            self._loader.wait(5000)
        self.statusBar().showMessage("Opening " + ", ".join(Path(p).name for p in paths) + "…")
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self._loader = StudyLoader(paths, self)
        self._loader.progress.connect(self._scan_progress)
        self._loader.loaded.connect(self._study_loaded)
        self._loader.start()

    def _scan_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat("reading headers %v/%m")

    def _study_loaded(self, result: LoadResult, paths: list[str]) -> None:
        self._loader = None
        self.progress.setVisible(False)
        self.set_result(result)
        if result.series:
            prefs.add_recent_study(self.settings, paths)
            self._fill_recent_menu()
        self.studyLoaded.emit(result)

    def set_result(self, result: LoadResult) -> None:
        """Show a load result: fill the browser and open its first series.

        A result without images is reported and leaves the study on screen as it was.
        """
        if not result.series:
            self._report_nothing_found(result)
            return
        if self.worker is not None:
            self.worker.cancel()
        self.result = result
        self.series = None
        self._windows.clear()
        self.browser.set_result(result)
        self.panel.set_study_summary("")
        self.browser.select(result.series[0].key)
        message = f"{len(result.series)} series"
        if result.skipped:
            message += f", {len(result.skipped)} file(s) skipped (see the Series panel)"
        self.statusBar().showMessage(message, 10000)

    def _report_nothing_found(self, result: LoadResult) -> None:
        reasons = "\n".join(f"• {s.path.name}: {s.reason}" for s in result.skipped[:12])
        more = f"\n… and {len(result.skipped) - 12} more" if len(result.skipped) > 12 else ""
        message = f"Nothing in what you opened could be shown as an image.\n\n{reasons}{more}"
        if self.result.series:
            message += "\n\nThe study that was open stays open."
        else:
            self.browser.set_result(result)  # an empty tree and the skipped files with their reasons
            self.view.show_message("No images found")
        self.statusBar().showMessage("No images found in what was opened", 15000)
        if self.interactive:
            QMessageBox.warning(self, "No images found", message)

    def show_series(self, key: str) -> None:
        """Show a series of the current study, from its middle slice."""
        series = self.result.find(key)
        if series is None:
            return
        self.series = series
        self.volume = 0
        self.view.show_series(series)
        self.slider.blockSignals(True)
        self.slider.setMaximum(max(series.n_slices - 1, 0))
        self.slider.blockSignals(False)
        self.volume_combo.blockSignals(True)
        self.volume_combo.clear()
        self.volume_combo.addItems([f"Volume {v + 1}/{series.n_volumes}" for v in range(series.n_volumes)])
        self.volume_combo.setVisible(series.n_volumes > 1)
        self.volume_combo.blockSignals(False)
        self.index = -1
        if self.worker is not None:
            generation = self.worker.classify_series(series, series.n_slices // 2, 0)
            if self.model_id:
                done = len(self.store.finished(self.model_id, series.key))
                self._progress(generation, series.key, done, series.n_slices * series.n_volumes)
                if self._is_classified(series):
                    self._classify_next_in_background()
        self.set_slice(series.n_slices // 2)
        self._refresh_series_plot()

    def set_volume(self, volume: int) -> None:
        """Show another volume (time point) of a 4-D series."""
        if self.series is None or not 0 <= volume < self.series.n_volumes:
            return
        self.volume = volume
        index, self.index = self.index, -1
        self.set_slice(index)
        self._refresh_series_plot()

    def set_slice(self, index: int) -> None:
        """Show slice `index` of the current volume (clamped), with its results and overlay."""
        if self.series is None:
            return
        index = int(np.clip(index, 0, self.series.n_slices - 1))
        if index == self.index:
            return
        self.index = index
        self.slider.blockSignals(True)
        self.slider.setValue(index)
        self.slider.blockSignals(False)
        self.slice_label.setText(f"{index + 1}/{self.series.n_slices}")
        try:
            values = self.series.pixels(index, self.volume)
        except PixelReadError as exc:
            self.view.show_message(f"Cannot show slice {index + 1}:\n{exc}")
            self.statusBar().showMessage(str(exc), 10000)
        else:
            window = self._windows.get(self.series.key)
            if window is None:
                window = self._windows[self.series.key] = self.series.default_window()
            self.view.show_slice(values, window)
        if self.worker is not None:
            self.worker.set_focus(index, self.volume)
        self.panel.set_current(index)
        self._show_current_results()
        self._update_corner_text()
        self.sliceShown.emit(self.series.key, self.volume, index)

    def _show_current_results(self) -> None:
        probabilities = self.store.probabilities(self.model_id, self.series.key, self.volume, self.index) if self.model_id else None
        self.panel.show_slice(probabilities, self._not_assessed_reason(self.series.key, self.volume, self.index))
        self._update_overlay()

    def _refresh_series_plot(self) -> None:
        if self.series is None or not self.class_ids:
            return
        table = self.store.series_probabilities(self.model_id, self.series.key, self.volume, self.series.n_slices, len(self.class_ids))
        withheld = self.store.not_assessed_mask(self.model_id, self.series.key, self.volume, self.series.n_slices)
        self.panel.show_series(table, self.index, self.store.failed_count(self.model_id, self.series.key, self.volume),
                               withheld)

    # --- window / level -------------------------------------------------------------------------
    def _window_changed(self, window: Window) -> None:
        if self.series is not None:
            self._windows[self.series.key] = window
        self._update_corner_text()

    def apply_window_preset(self, preset: str) -> None:
        """Apply a window preset: the file's VOI, an automatic percentile window, or the full range."""
        if self.series is None or self.view.values is None:
            return
        values = self.view.values
        if preset == "voi":
            window = self.series.window(self.index, self.volume)
        elif preset == "auto":
            window = percentile_window(values)
        else:
            window = Window.from_range(float(np.nanmin(values)), float(np.nanmax(values)))
        self.view.set_window(window)

    # --- overlays ---------------------------------------------------------------------------------
    def set_overlay_mode(self, mode: str) -> None:
        """Show no heatmap, Grad-CAM or Gradient SHAP over the current slice."""
        if mode not in OVERLAY_MODES:
            return
        self.overlay_mode = mode
        self.settings.setValue("overlay/mode", mode)
        if self.overlay_combo.currentIndex() != OVERLAY_MODES.index(mode):
            self.overlay_combo.blockSignals(True)
            self.overlay_combo.setCurrentIndex(OVERLAY_MODES.index(mode))
            self.overlay_combo.blockSignals(False)
        self._update_overlay()

    def cycle_overlay(self) -> None:
        """Step through none → Grad-CAM → Gradient SHAP (the H key)."""
        self.set_overlay_mode(OVERLAY_MODES[(OVERLAY_MODES.index(self.overlay_mode) + 1) % len(OVERLAY_MODES)])

    def _target_changed(self, _index: int) -> None:
        self.overlay_target = self.target_combo.currentData()
        self._update_overlay()

    def _opacity_changed(self, value: int) -> None:
        self.view.set_overlay_style(opacity=value / 100)
        self.settings.setValue("overlay/opacity", value / 100)

    def _colormap_changed(self, name: str) -> None:
        self.view.set_overlay_style(colormap=name)
        self.settings.setValue("overlay/colormap", name)

    def _wanted_heatmap_key(self, predicted_fallback: int | None = None) -> HeatmapKey | None:
        if self.series is None or self.overlay_mode == "none" or not self.model_id:
            return None
        target = self.overlay_target
        if target is None:
            probabilities = self.store.probabilities(self.model_id, self.series.key, self.volume, self.index)
            target = int(np.argmax(probabilities)) if probabilities is not None else predicted_fallback
        if target is None:
            return None
        return HeatmapKey(self.model_id, self.series.key, self.volume, self.index, self.overlay_mode, target)

    def _update_overlay(self) -> None:
        if self.overlay_mode == "none" or self.series is None or not self.model_id or self.worker is None:
            self.view.clear_overlay()
            self.overlay_status.setText("" if self.overlay_mode == "none" else "waiting for the model…")
            self.overlayShown.emit(None)
            return
        key = self._wanted_heatmap_key()
        cached = self.store.heatmap(key) if key else None
        if cached is not None:
            self.view.set_overlay(cached.values)
            self.overlay_status.setText(self._overlay_text(key))
            self.overlayShown.emit(key)
            return
        self.view.clear_overlay()
        if key is None and self.overlay_target is None:
            self.overlay_status.setText("waiting for the slice's prediction…")
            return
        self.overlay_status.setText(f"computing {METHOD_NAMES[self.overlay_mode]}…")
        self.worker.request_heatmap(self.series, self.volume, self.index, self.overlay_mode,
                                    key.target_index if key else self.overlay_target)

    # --- annotations ----------------------------------------------------------------------------
    def _toggle_identifiers(self) -> None:
        self.show_identifiers = not self.show_identifiers
        self.settings.setValue("view/identifiers", "true" if self.show_identifiers else "false")
        self._update_corner_text()

    def _update_corner_text(self) -> None:
        series = self.series
        if series is None:
            return
        patient, study = series.patient, series.study
        if self.show_identifiers:
            top_left = [patient.name.replace("^", " ").strip() or "(no name)", f"ID {patient.id}" if patient.id else ""]
        else:
            top_left = ["(patient identifiers hidden)"]
        top_left += [format_dicom_date(study.date), study.description]
        top_right = [series.description, " · ".join(t for t in (series.modality, f"Se {series.number}" if series.number is not None else "", series.sequence) if t)]
        location = series.slice_location(self.index, self.volume)
        bottom_left = [f"Slice {self.index + 1}/{series.n_slices}" + (f"  Vol {self.volume + 1}/{series.n_volumes}" if series.n_volumes > 1 else "")]
        if location is not None:
            bottom_left.append(f"Pos {location:.1f} mm")
        beside = series.gap_beside(self.index, self.volume)
        if beside:
            where, gap = beside
            bottom_left += [f"⚠ Gap {where} this slice:", f"{gap.missing_mm:.1f} mm, ~{gap.missing_slices} missing"]
        if series.slice_thickness:
            bottom_left.append(f"Thk {series.slice_thickness:.2g} mm")
        if series.pixel_spacing:
            bottom_left.append(f"{series.pixel_spacing[0]:.3g}×{series.pixel_spacing[1]:.3g} mm")
        window = self.view.window
        bottom_right = [f"W {window.width:.0f}  L {window.center:.0f}"]
        for corner, lines in (("top_left", top_left), ("top_right", top_right), ("bottom_left", bottom_left), ("bottom_right", bottom_right)):
            self.view.set_corner_text(corner, "\n".join(_elide(line) for line in lines if line))

    # --- dialogs and exports -----------------------------------------------------------------------
    def open_study_dialog(self) -> None:
        """Ask for a study folder (DICOM, DICOMDIR, NIfTI or images inside) and open it."""
        folder = QFileDialog.getExistingDirectory(self, "Open DICOM Study", prefs.get_str(self.settings, "last_folder", ""))
        if folder:
            self.settings.setValue("last_folder", folder)
            self.open_paths([folder])

    def open_files_dialog(self) -> None:
        """Ask for files (DICOM, DICOMDIR, NIfTI, PNG/JPEG) and open them as one study."""
        files, _ = QFileDialog.getOpenFileNames(self, "Open Files", prefs.get_str(self.settings, "last_folder", ""),
                                                "Images (*.dcm *.DCM DICOMDIR *.nii *.nii.gz *.png *.jpg *.jpeg *.IMA);;All files (*)")
        if files:
            self.settings.setValue("last_folder", str(Path(files[0]).parent))
            self.open_paths(files)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        entries = prefs.recent_studies(self.settings)
        for paths in entries:
            label = ", ".join(Path(p).name or p for p in paths)
            action = self.recent_menu.addAction(label)
            action.setToolTip("\n".join(paths))
            action.triggered.connect(lambda _=False, p=paths: self.open_paths(p))
        self.recent_menu.setEnabled(bool(entries))

    def export_screenshot(self, path: str | Path) -> Path:
        """Save the slice view (with its overlay and annotations) as a PNG."""
        path = Path(path)
        if not self.view.grab().save(str(path), "PNG"):
            raise OSError(f"{path}: could not write the screenshot")
        return path

    def export_screenshot_dialog(self) -> None:
        """Ask where to save a screenshot of the view."""
        path, _ = QFileDialog.getSaveFileName(self, "Export Screenshot", "slice.png", "PNG image (*.png)")
        if path:
            try:
                self.statusBar().showMessage(f"Saved {self.export_screenshot(path)}", 8000)
            except OSError as exc:
                QMessageBox.warning(self, "Export Screenshot", str(exc))

    def export_report_dialog(self) -> None:
        """Ask where to write the study report (HTML + CSV) and whether to include identifiers."""
        if not self.result.series or not self.model_id:
            QMessageBox.information(self, "Export Report", "Open a study and wait for the model first.")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export Report", "report.html", "HTML report (*.html)")
        if not path:
            return
        answer = QMessageBox.question(self, "Export Report", "Include patient identifiers (name, ID, dates, UIDs) in the report?",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        include = answer == QMessageBox.StandardButton.Yes
        self.statusBar().showMessage("Writing report (classifying any slices not done yet)…")
        self.worker.reportWritten.connect(self._report_written, Qt.ConnectionType.SingleShotConnection)
        self.worker.request_report(list(self.result.series), Path(path), include,
                                   self.overlay_mode if self.overlay_mode != "none" else "gradcam")

    def _report_written(self, html_path: str, csv_path: str, error: str) -> None:
        if error:
            QMessageBox.warning(self, "Export Report", error)
        else:
            self.statusBar().showMessage(f"Report written: {html_path} and {csv_path}", 12000)

    def show_tags(self) -> None:
        """Open the searchable tag browser for the current slice's file."""
        if self.series is None:
            return
        from convnest_viewer.ui.tag_browser import TagBrowser

        ref = self.series.slice_ref(self.index, self.volume)
        self._tags = TagBrowser(self.series.tags(self.index, self.volume), ref.path.name, self)
        self._tags.show()

    def show_model_card(self) -> None:
        """Show the model card: what the model is, how it was trained, how well it does."""
        card = self.card
        if card is None:
            QMessageBox.information(self, "Model Card", self.model_error or "The model is still loading.")
            return
        from convnest_viewer.ui.model_card_dialog import model_card_html

        box = QMessageBox(self)
        box.setWindowTitle("Model Card")
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setText(model_card_html(card, self.model_id, self.worker.classifier.device_name if self.worker and self.worker.classifier else ""))
        box.exec()

    def show_about(self) -> None:
        """Show the version, the model and the intended use."""
        QMessageBox.about(self, "About", f"<h3>ConvNeXt Brain MRI Viewer {__version__}</h3>"
                          f"<p>Model: {self.model_name or 'none loaded'} ({self.model_id[:12] or '-'})</p>"
                          f"<p><b>{DISCLAIMER}</b> The classifier was trained on public 2-D slice datasets and "
                          "has not been validated clinically.</p>")

    # --- drag and drop, closing ------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_paths(paths)

    def closeEvent(self, event) -> None:
        if self._loader is not None:
            self._loader.cancel()
            self._loader.wait(5000)
        self._stop_worker()
        self.settings.sync()
        super().closeEvent(event)


def _elide(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _device_available(choice: str) -> bool:
    from convnest_viewer.inference.classifier import pick_device

    try:
        pick_device(choice)
    except RuntimeError:
        return False
    return True
