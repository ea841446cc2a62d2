"""Load a study off the main thread, so opening a large folder never freezes the window."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QThread, Signal

from convnest_viewer.io import LoadResult, Skipped, StudyPreview, load_study
from convnest_viewer.ui import settings as prefs


class StudyLoader(QThread):
    """Scans the given paths in a thread and emits the LoadResult."""

    progress = Signal(int, int)
    preview = Signal(object)  # StudyPreview: one slice to show while the rest indexes
    loaded = Signal(object, object)  # LoadResult, the paths

    def __init__(self, paths: list[str], parent=None) -> None:
        super().__init__(parent)
        self.paths = paths
        self._cancelled = False

    def cancel(self) -> None:
        """Stop scanning at the next file."""
        self._cancelled = True

    def run(self) -> None:  # noqa: D401 - Qt entry point
        try:
            result = load_study(self.paths, progress=self.progress.emit, cancelled=lambda: self._cancelled,
                                preview=self.preview.emit)
        except Exception as exc:  # the loader reports bad files itself; this guards the unexpected
            result = LoadResult(skipped=[Skipped(Path(str(self.paths[0])), f"load failed: {type(exc).__name__}: {exc}")])
        if not self._cancelled:
            self.loaded.emit(result, self.paths)


class StudyOpeningMixin:
    """How MainWindow opens studies: paths, drops and recent entries go through a StudyLoader thread."""

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
        self._loader.preview.connect(self._show_preview)
        self._loader.loaded.connect(self._study_loaded)
        self._loader.start()

    def _scan_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat("reading headers %v/%m")

    def _show_preview(self, preview: StudyPreview) -> None:
        """Show a slice of the study being indexed while nothing else is on screen; the study replaces it."""
        if self.state.series is not None or self._loader is None:
            return  # an open study stays on screen (and in charge of the keys) until the new one has loaded
        self.view.show_series(preview.series)
        self.view.show_slice(preview.values, preview.window)
        for corner in ("top_left", "top_right", "bottom_right"):
            self.view.set_corner_text(corner, "")
        self.view.set_corner_text("bottom_left", "Indexing the study… (a preview: no results yet)")
        self.previewShown.emit()

    def _study_loaded(self, result: LoadResult, paths: list[str]) -> None:
        self._loader = None
        self.progress.setVisible(False)
        self.set_result(result)
        if self.state.series is None:  # nothing opened: take down a preview
            self.view.show_series(None)
            for corner in ("top_left", "top_right", "bottom_left", "bottom_right"):
                self.view.set_corner_text(corner, "")
        self.study_opened()
        if result.series:
            prefs.add_recent_study(self.settings, paths)
            self.fill_recent_menu()
        self.studyLoaded.emit(result)

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_paths(paths)
