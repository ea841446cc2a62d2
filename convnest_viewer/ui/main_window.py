"""The main window: widgets wired to the viewer state (what is shown) and the inference session (the model)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QMainWindow, QProgressBar, QSlider, QVBoxLayout, QWidget

from convnest_viewer import __version__
from convnest_viewer.annotations import corner_texts, study_summary_html
from convnest_viewer.inference.context import context_reach
from convnest_viewer.inference.installed import installed_models
from convnest_viewer.io import LoadResult, PixelReadError, Series, Window, percentile_window
from convnest_viewer.results import ResultStore
from convnest_viewer.session import InferenceSession
from convnest_viewer.ui import settings as prefs
from convnest_viewer.ui.dialogs import DialogsMixin
from convnest_viewer.ui.gui_thread_gc import collect_garbage_in_gui_thread
from convnest_viewer.ui.overlay_control import OverlayMixin
from convnest_viewer.ui.inference_worker import InferenceWorker
from convnest_viewer.ui.model_dock import DISCLAIMER, ModelDock
from convnest_viewer.ui.series_browser import SeriesBrowser
from convnest_viewer.ui.slice_view import SliceView
from convnest_viewer.ui.study_loader import StudyLoader, StudyOpeningMixin
from convnest_viewer.ui.window_menus import build_menus
from convnest_viewer.viewer_state import ModelInfo, ViewerState

__all__ = ["DISCLAIMER", "MainWindow"]

HEATMAP_DELAY_MS = 150  # a heatmap is asked for once the slice has stayed this long
PANEL_INTERVAL_MS = 40  # while scrolling, the model panel (bars, plot marker) follows at most this often


class MainWindow(StudyOpeningMixin, DialogsMixin, OverlayMixin, QMainWindow):
    """The viewer: open a study, scroll its slices, see the model's opinion and evidence.

    `state` holds what is shown (Qt-free); widgets write user actions into it and redraw from its events.
    `session` runs the model in `worker` (a QThread started once the window is on screen).
    """

    studyLoaded = Signal(object)  # LoadResult
    sliceShown = Signal(str, int, int)  # series key, volume, index
    previewShown = Signal()  # a slice of a study still indexing is on screen
    overlayShown = Signal(object)  # HeatmapKey or None
    crashReported = Signal(str, str)  # crash report path, redacted one-line error (emitted from any thread)

    def __init__(self, model_dir: Path | None = None, device: str | None = None) -> None:
        super().__init__()
        collect_garbage_in_gui_thread()  # never in the loader or inference threads (Qt objects die in this thread)
        self.setWindowTitle(f"ConvNeXt Brain MRI Viewer {__version__}")
        self.resize(1400, 900)
        self.setAcceptDrops(True)
        self.settings, self.store = prefs.app_settings(), ResultStore()
        self.installed_models = installed_models()  # the model folders Model > Model offers (cards read once)
        self.model_dir = model_dir or prefs.remembered_model(self.settings, self.installed_models)  # None: the default
        self.device_choice = device or prefs.get_str(self.settings, "device", "auto")
        self.state = ViewerState(prefs.get_str(self.settings, "overlay/mode", "none"),
                                 prefs.get_str(self.settings, "view/identifiers", "true") == "true")
        self.interactive = True  # False in the self-test: no modal dialogs
        self._loader: StudyLoader | None = None
        self._closed, self._worker_after_study = False, False  # the model may wait for the study opened at launch
        self._build_central()
        self.browser = SeriesBrowser()
        self.model_dock = ModelDock(self, self.state, self.settings)
        self.panel = self.model_dock.panel
        self.view.set_overlay_style(*self.model_dock.overlay_style())
        self.series_dock = self.model_dock.add_series_dock(self.browser)
        build_menus(self)
        self._build_status()
        self._refresh_timer = self._single_shot(120, self._refresh_series_plot)
        self._heatmap_timer = self._single_shot(HEATMAP_DELAY_MS, self._request_heatmap)
        self._panel_timer = self._single_shot(PANEL_INTERVAL_MS, self._show_panel_slice)
        self._panel_shown_at = 0.0
        self._connect_state()
        self.worker: InferenceWorker | None = None
        self.session: InferenceSession | None = None
        QTimer.singleShot(0, self._start_worker)  # torch loads in the worker, after the window shows

    def _single_shot(self, interval_ms: int, slot) -> QTimer:
        """Return a single-shot timer of this window that calls slot interval_ms after its (re)start."""
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(interval_ms)
        timer.timeout.connect(slot)
        return timer

    # --- layout ----------------------------------------------------------------------------
    def _build_central(self) -> None:
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        self.view = SliceView()
        layout.addWidget(self.view, stretch=1)
        row = QHBoxLayout()
        self.slider = QSlider(Qt.Orientation.Horizontal)  # its minimum is 0 by default
        self.slice_label = QLabel("–")
        self.volume_combo = QComboBox()
        self.volume_combo.setVisible(False)
        row.addWidget(QLabel("Slice"))
        row.addWidget(self.slider, stretch=1)
        row.addWidget(self.slice_label)
        row.addWidget(self.volume_combo)
        layout.addLayout(row)
        self.setCentralWidget(central)
        self.view.show_message("File > Open DICOM Study…  (or drop a folder here)")

    def _build_status(self) -> None:
        self.device_label = QLabel("Model: loading…")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setVisible(False)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.device_label)

    def _connect_state(self) -> None:
        state = self.state
        # user actions -> state (the state ignores values it already has, so redraws do not echo)
        self.view.sliceStep.connect(state.step_slice)
        self.view.windowChanged.connect(state.set_window)
        self.slider.valueChanged.connect(state.set_slice)
        self.volume_combo.currentIndexChanged.connect(state.set_volume)
        self.browser.seriesSelected.connect(state.select_series)
        self.panel.sliceClicked.connect(state.set_slice)
        self.panel.study_summary.linkActivated.connect(self._open_link)
        # state -> widgets
        state.events.connect("study", self._study_changed)
        state.events.connect("series", self._series_changed)
        state.events.connect("volume", lambda _volume: self._volume_changed())
        state.events.connect("index", lambda _index: self._show_slice())
        state.events.connect("window", self._window_changed)
        state.events.connect("overlay", lambda _mode, _target: self._update_overlay())
        state.events.connect("model", self._model_changed)
        state.events.connect("identifiers", self._identifiers_changed)

    # --- the inference session -------------------------------------------------------------------
    def study_opened(self) -> None:
        """Start the model once the study that was opening at launch is on screen (see _start_worker)."""
        if self._worker_after_study:
            self._worker_after_study = False
            self._start_worker()

    def _start_worker(self) -> None:
        if self.worker is not None or self._closed:
            return  # already running, or the window closed before its first event-loop turn
        if self._loader is not None and not self._worker_after_study:
            # a study is being read: importing torch now would slow its first slice down several times (the GIL)
            self._worker_after_study = True
            return
        device = None if self.device_choice == "auto" else self.device_choice
        self.session = InferenceSession(self.store, self.model_dir, device)
        self.worker = InferenceWorker(self.session)
        self.worker.devicesProbed.connect(self._devices_probed)
        self.worker.modelReady.connect(lambda model_id, card, device_name: self.state.set_model(ModelInfo(model_id, card, device_name)))
        self.worker.modelFailed.connect(self.state.set_model_failed)
        self.worker.sliceClassified.connect(self._slice_classified)
        self.worker.sliceFailed.connect(self._slice_failed)
        self.worker.heatmapReady.connect(self._heatmap_ready)
        self.worker.heatmapFailed.connect(self._heatmap_failed)
        self.worker.progress.connect(self._progress)
        self.worker.seriesDone.connect(self._series_done)
        self.worker.start()
        self.session.set_study(self.state.result.series)
        if self.state.series is not None:
            self.session.classify_series(self.state.series, self.state.index, self.state.volume)

    def _stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker.deleteLater()
            self.worker = self.session = None

    def set_model_folder(self, folder: Path) -> None:
        """Switch to another model folder (restarts the session; stored results stay valid per model); an
        installed model is remembered for the next launch."""
        folder = Path(folder).resolve()
        if self.model_dir is not None and Path(self.model_dir).resolve() == folder:
            return
        self.model_dir = folder
        installed = {m.folder.resolve() for m in self.installed_models}
        self.settings.setValue("model", folder.name if folder in installed else "")
        for path, action in self.model_actions.items():
            action.setChecked(path == folder)
        self._stop_worker()
        self.device_label.setText("Model: loading…")
        self._start_worker()

    def set_device(self, choice: str) -> None:
        """Switch the inference device (restarts the session; stored results stay valid per model)."""
        self.device_choice = choice
        self.settings.setValue("device", choice)
        self._stop_worker()
        self.device_label.setText("Model: loading…")
        self._start_worker()

    def _devices_probed(self, working: list[str]) -> None:
        for choice, action in self.device_actions.items():
            action.setEnabled(choice in working)

    def _model_changed(self, model: ModelInfo | None) -> None:
        if model is None:
            message = self.state.model_error or "no model"
            self.device_label.setText("No model: viewing only")
            self.panel.set_model_text(f"<b>No classifier available.</b> {message}")
            self.statusBar().showMessage(f"Model not loaded: {message}", 15000)
            return
        card = model.card
        self.panel.set_classes(card.classes)
        self.model_dock.set_classes(card.classes)
        self.model_dock.fill_heatmap_methods()
        self.device_label.setText(f"{model.device_name} · model {model.name}")
        self.panel.set_model_text(f"<b>{model.name}</b> ({card.architecture}, {card.preprocessing.size} px) on {model.device_name}")
        if self.state.series is not None and self.session is not None:
            self.session.classify_series(self.state.series, self.state.index, self.state.volume)
            self._show_current_results()

    def _slice_classified(self, key: str, volume: int, index: int, probabilities) -> None:
        state = self.state
        if state.series is None or key != state.series.key:
            return  # a result for another series: kept in the store, shown when that series is
        if volume == state.volume and abs(index - state.index) <= context_reach(self.store.slice_context(state.model_id)):
            self._show_panel_slice(follows_scroll=False)  # this slice, or a neighbour its answer is read with
            if state.overlay_mode != "none" and state.overlay_target is None:
                self._update_overlay()
        self._refresh_timer.start()

    def _series_done(self, key: str) -> None:
        series, card = self.state.result.find(key), self.state.card
        if series is not None and card is not None:
            verdict = self.store.series_verdict(self.state.model_id, series, card)
            self.browser.set_finding(key, verdict.text(self.state.display_names))  # the same words as the study's
            self.panel.set_study_summary(study_summary_html(self.state.result, self.store, self.state.model_id, card))
            if series is self.state.series:  # the gate's series rule and the slice context are final now
                self._show_current_results()

    def _not_assessed_reason(self, volume: int, index: int) -> str | None:
        model_id, series = self.state.model_id, self.state.series
        return self.store.not_assessed_reason(model_id, series.key, volume, index) if model_id and series else None

    def _open_link(self, link: str) -> None:
        """Follow a link of the study verdict: "slice:<series key>:<index>" shows that slice."""
        kind, _, rest = link.partition(":")
        key, _, index = rest.rpartition(":")
        if kind == "slice" and self.state.result.find(key) is not None:
            self.state.select_series(key)
            self.state.set_slice(int(index))

    def _slice_failed(self, key: str, volume: int, index: int, reason: str) -> None:
        if self.state.series is not None and key == self.state.series.key:
            self.statusBar().showMessage(f"Slice {index + 1}: {reason}", 10000)
            self._refresh_series_plot()

    def _progress(self, key: str, done: int, total: int) -> None:
        if self.state.series is None or key != self.state.series.key:
            return
        self.progress.setVisible(done < total)
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat("classifying %v/%m")

    def set_result(self, result: LoadResult) -> None:
        """Show a load result; one without images is reported and leaves the open study as it was."""
        if not self.state.set_result(result):
            self.report_nothing_found(result)

    def _study_changed(self, result: LoadResult) -> None:
        if self.session is not None:
            self.session.cancel()
            self.session.set_study(result.series)
        self.browser.set_result(result)
        self.panel.set_study_summary("")
        message = f"{len(result.series)} series"
        if result.skipped:
            message += f", {len(result.skipped)} file(s) skipped (see the Series panel)"
        self.statusBar().showMessage(message, 10000)

    def _series_changed(self, series: Series) -> None:
        self.browser.select(series.key)
        self.view.show_series(series)
        self.slider.setMaximum(max(series.n_slices - 1, 0))
        self.volume_combo.clear()
        self.volume_combo.addItems([f"Volume {v + 1}/{series.n_volumes}" for v in range(series.n_volumes)])
        self.volume_combo.setVisible(series.n_volumes > 1)
        if self.session is not None:
            self.session.classify_series(series, self.state.index, 0)  # the rest of the study follows in the session
            if self.state.model_id:
                done = len(self.store.finished(self.state.model_id, series.key))
                self._progress(series.key, done, series.n_slices * series.n_volumes)
        self._show_slice()
        self._refresh_series_plot()

    def _volume_changed(self) -> None:
        self.volume_combo.setCurrentIndex(self.state.volume)
        self._show_slice()
        self._refresh_series_plot()

    def _show_slice(self) -> None:
        """Draw the state's current slice with its results, overlay and annotations."""
        state, series, index = self.state, self.state.series, self.state.index
        self.slider.setValue(index)
        self.slice_label.setText(f"{index + 1}/{series.n_slices}")
        try:
            values = series.pixels(index, state.volume)
        except PixelReadError as exc:
            self.view.show_message(f"Cannot show slice {index + 1}:\n{exc}")
            self.statusBar().showMessage(str(exc), 10000)
        else:
            self.view.show_slice(values, state.window)
        if self.session is not None:
            self.session.set_focus(index, state.volume)
        self._follow_in_panel()
        self._update_overlay()
        self._update_corner_text()
        self.sliceShown.emit(series.key, state.volume, index)

    def _follow_in_panel(self) -> None:
        """Show the slice in the model panel now, or, within PANEL_INTERVAL_MS of the last time, once that has
        passed: a fast scroll repaints the panel's bars and plot a few times a second, not on every slice."""
        if self._panel_timer.isActive():
            return
        if (time.monotonic() - self._panel_shown_at) * 1000 >= PANEL_INTERVAL_MS:
            self._show_panel_slice()
        else:
            self._panel_timer.start()

    def _show_panel_slice(self, follows_scroll: bool = True) -> None:
        """Show the current slice's probabilities (or why it was not assessed) and its place in the strip plot;
        only a scroll counts towards the repaint interval (results arriving do not hold the next scroll back)."""
        if follows_scroll:
            self._panel_shown_at = time.monotonic()
        state = self.state
        if state.series is None:
            return
        self.panel.set_current(state.index)
        where = (state.model_id, state.series.key, state.volume, state.index)
        probabilities, alone = (self.store.probabilities(*where), self.store.probabilities(*where, alone=True)) if state.model_id else (None, None)
        self.panel.show_slice(probabilities, self._not_assessed_reason(state.volume, state.index), alone)

    def _show_current_results(self) -> None:
        self._show_panel_slice(follows_scroll=False)
        self._update_overlay()
        self._refresh_series_plot()

    def _refresh_series_plot(self) -> None:
        self._refresh_timer.stop()  # drawn now: a pending timed redraw would only repeat it
        state = self.state
        if state.series is None:
            return
        if not state.class_ids:  # no model yet: the axis already spans the series, the marker on its slice
            self.panel.set_slice_count(state.series.n_slices)
            self.panel.set_current(state.index)
            return
        n_slices, key, volume = state.series.n_slices, state.series.key, state.volume
        table = self.store.series_probabilities(state.model_id, key, volume, n_slices, len(state.class_ids))
        withheld = {i: r for (_, i), r in self.store.not_assessed(state.model_id, key, volume).items() if i < n_slices}
        verdict = self.store.series_verdict(state.model_id, state.series, state.model.card, volume)
        self.panel.show_series(table, state.index, self.store.failed_count(state.model_id, key, volume), withheld, verdict)

    # --- window / level -------------------------------------------------------------------------
    def _window_changed(self, window: Window) -> None:
        self.view.set_window(window)
        self._update_corner_text()

    def apply_window_preset(self, preset: str) -> None:
        """Apply a window preset: the file's VOI, an automatic percentile window, or the full range."""
        state, values = self.state, self.view.values
        if state.series is None or values is None:
            return
        if preset == "voi":
            window = state.series.window(state.index, state.volume)
        elif preset == "auto":
            window = percentile_window(values)
        else:
            window = Window.from_range(float(np.nanmin(values)), float(np.nanmax(values)))
        state.set_window(window)

    # --- annotations ----------------------------------------------------------------------------
    def _identifiers_changed(self, show: bool) -> None:
        self.settings.setValue("view/identifiers", "true" if show else "false")
        self._update_corner_text()

    def _update_corner_text(self) -> None:
        state = self.state
        if state.series is None:
            return
        texts = corner_texts(state.series, state.index, state.volume, self.view.window, state.show_identifiers)
        for corner, text in texts.items():
            self.view.set_corner_text(corner, text)

    # --- closing ---------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        self._closed = True
        if self._loader is not None:
            self._loader.cancel()
            self._loader.wait(5000)
        self._stop_worker()
        self.settings.sync()
        super().closeEvent(event)
