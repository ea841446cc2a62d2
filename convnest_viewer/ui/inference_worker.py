"""A QThread that runs the Qt-free inference session and turns its events into queued Qt signals."""

from __future__ import annotations

from PySide6.QtCore import QThread, Signal

from convnest_viewer.session import InferenceSession


class InferenceWorker(QThread):
    """Runs `session.run()` off the main thread; every session event arrives as a signal on the main thread."""

    devicesProbed = Signal(object)  # the device choices that work here ("auto", "cpu", "cuda", "mps")
    modelReady = Signal(str, object, str)  # model id (weights sha256), ModelCard, device description
    modelFailed = Signal(str)
    sliceClassified = Signal(str, int, int, object)  # series key, volume, index, probabilities
    sliceFailed = Signal(str, int, int, str)  # series key, volume, index, reason
    heatmapReady = Signal(object, object)  # HeatmapKey, Heatmap
    heatmapFailed = Signal(str)
    progress = Signal(str, int, int)  # series key, done, total
    seriesDone = Signal(str)
    reportWritten = Signal(str, str, str)  # html path, csv path, error ("" when written)

    def __init__(self, session: InferenceSession, parent=None) -> None:
        super().__init__(parent)
        self.session = session
        for name, signal in (("devices_probed", self.devicesProbed), ("model_ready", self.modelReady),
                             ("model_failed", self.modelFailed), ("slice_classified", self.sliceClassified),
                             ("slice_failed", self.sliceFailed), ("heatmap_ready", self.heatmapReady),
                             ("heatmap_failed", self.heatmapFailed), ("progress", self.progress),
                             ("series_done", self.seriesDone), ("report_written", self.reportWritten)):
            session.events.connect(name, signal.emit)

    def run(self) -> None:  # noqa: D401 - Qt entry point
        self.session.run()

    def stop(self, timeout_ms: int = 10000) -> None:
        """Stop the session after the work in hand and wait for the thread."""
        self.session.stop()
        self.wait(timeout_ms)
