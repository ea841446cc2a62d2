"""Load a study off the main thread, so opening a large folder never freezes the window."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QThread, Signal

from convnest_viewer.io import LoadResult, Skipped, load_study


class StudyLoader(QThread):
    """Scans the given paths in a thread and emits the LoadResult."""

    progress = Signal(int, int)
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
            result = load_study(self.paths, progress=self.progress.emit, cancelled=lambda: self._cancelled)
        except Exception as exc:  # the loader reports bad files itself; this guards the unexpected
            result = LoadResult(skipped=[Skipped(Path(str(self.paths[0])), f"load failed: {type(exc).__name__}: {exc}")])
        if not self._cancelled:
            self.loaded.emit(result, self.paths)
