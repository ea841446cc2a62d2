"""The background QThread that loads the model, classifies slices (current first) and makes heatmaps."""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QThread, Signal

from convnest_viewer.io import Series
from convnest_viewer.results import HeatmapKey, ResultStore


@dataclass
class HeatmapRequest:
    """A heatmap the viewer wants for one slice."""

    series: Series
    volume: int
    index: int
    method: str
    target_index: int | None  # None: the predicted class
    generation: int


@dataclass
class _Job:
    series: Series
    generation: int
    pending: set[tuple[int, int]]
    focus: tuple[int, int]
    total: int


class InferenceWorker(QThread):
    """Runs the classifier off the main thread; all results arrive as queued signals."""

    modelReady = Signal(str, str, str)  # model id (sha256), model name, device description
    modelFailed = Signal(str)
    sliceClassified = Signal(int, str, int, int, object)  # generation, series key, volume, index, probabilities
    sliceFailed = Signal(int, str, int, int, str)
    heatmapReady = Signal(int, object, object)  # generation, HeatmapKey, Heatmap
    heatmapFailed = Signal(int, str)
    progress = Signal(int, str, int, int)  # generation, series key, done, total
    seriesDone = Signal(int, str)
    reportWritten = Signal(str, str, str)  # html path, csv path, error ("" when written)

    def __init__(self, store: ResultStore, model_dir: Path | None = None, device: str | None = None,
                 batch_size: int | None = None, parent=None) -> None:
        super().__init__(parent)
        self.store = store
        self.model_dir = model_dir
        self.device = device
        self.batch_size = batch_size
        self.classifier = None
        self.model_id = ""
        self._lock = threading.Condition()
        self._job: _Job | None = None
        self._heatmap: HeatmapRequest | None = None
        self._report: tuple | None = None
        self._stopping = False
        self._generation = 0

    # --- called from the main thread -------------------------------------------------------
    def classify_series(self, series: Series, focus_index: int = 0, focus_volume: int = 0, background: bool = False) -> int:
        """Replace the current job with this series (current slice first); return its generation.

        A background job (another series of the study, while the shown one is done) keeps any
        heatmap request of the shown slice.
        """
        with self._lock:
            self._generation += 1
            if not background:
                self._heatmap = None
            done = self.store.finished(self.model_id, series.key) if self.model_id else set()
            pending = {(v, i) for v in range(series.n_volumes) for i in range(series.n_slices)} - done
            self._job = _Job(series, self._generation, pending, (focus_volume, focus_index),
                             series.n_volumes * series.n_slices)
            self._lock.notify_all()
            return self._generation

    def set_focus(self, index: int, volume: int = 0) -> None:
        """Classify outward from this slice next."""
        with self._lock:
            if self._job is not None:
                self._job.focus = (volume, index)

    def request_heatmap(self, series: Series, volume: int, index: int, method: str, target_index: int | None) -> int:
        """Ask for one heatmap (replacing any not yet started); return the current generation."""
        with self._lock:
            self._heatmap = HeatmapRequest(series, volume, index, method, target_index, self._generation)
            self._lock.notify_all()
            return self._generation

    def request_report(self, series_list: list[Series], path: Path, include_identifiers: bool, method: str) -> None:
        """Classify what is missing of these series (first volumes), then write the HTML and CSV report."""
        with self._lock:
            self._report = (list(series_list), Path(path), include_identifiers, method)
            self._lock.notify_all()

    def cancel(self) -> None:
        """Drop the current job and heatmap request; results in flight are marked stale."""
        with self._lock:
            self._generation += 1
            self._job = None
            self._heatmap = None

    def stop(self, timeout_ms: int = 10000) -> None:
        """Stop the thread cleanly and wait for it."""
        with self._lock:
            self._stopping = True
            self._job = None
            self._heatmap = None
            self._lock.notify_all()
        self.wait(timeout_ms)

    @property
    def generation(self) -> int:
        """Return the number of the current job (results of older jobs are stale)."""
        return self._generation

    # --- the worker thread ------------------------------------------------------------------
    def run(self) -> None:  # noqa: D401 - Qt entry point
        if not self._load_model():
            return
        while True:
            with self._lock:
                while (not self._stopping and self._heatmap is None and self._report is None
                       and not (self._job and self._job.pending)):
                    self._lock.wait()
                if self._stopping:
                    return
                heatmap, self._heatmap = self._heatmap, None
                report = None
                if heatmap is None and self._report is not None:
                    report, self._report = self._report, None
                batch = None if heatmap or report else self._next_batch()
            if heatmap is not None:
                self._make_heatmap(heatmap)
            elif report is not None:
                self._write_report(*report)
            elif batch is not None:
                self._classify(*batch)

    def _load_model(self) -> bool:
        try:
            from convnest_viewer.inference.classifier import Classifier

            self.classifier = Classifier(self.model_dir, device=self.device)
        except Exception as exc:  # a missing or refused model must not kill the app
            self.modelFailed.emit(str(exc))
            return False
        self.model_id = self.classifier.weights_sha256
        if self.batch_size is None:
            self.batch_size = 32 if self.classifier.device.type != "cpu" else 4
        self.modelReady.emit(self.model_id, self.classifier.card.name, self.classifier.device_name)
        with self._lock:  # the job may have been set before the model id was known
            if self._job is not None:
                self._job.pending -= self.store.finished(self.model_id, self._job.series.key)
        return True

    def _next_batch(self):
        job = self._job
        focus_volume, focus_index = job.focus
        ordered = sorted(job.pending, key=lambda vi: (vi[0] != focus_volume, abs(vi[0] - focus_volume), abs(vi[1] - focus_index), vi[1]))
        chosen = ordered[: self.batch_size]
        job.pending.difference_update(chosen)
        return job, chosen

    def _classify(self, job: _Job, chosen: list[tuple[int, int]]) -> None:
        self._classify_slices(job.series, job.generation, chosen)
        with self._lock:
            remaining = len(job.pending)
        self.progress.emit(job.generation, job.series.key, job.total - remaining, job.total)
        if remaining == 0:
            self.seriesDone.emit(job.generation, job.series.key)

    def _classify_slices(self, series: Series, generation: int, chosen: list[tuple[int, int]]) -> None:
        """Classify (volume, index) slices of a series in one batch; store and announce each result."""
        prepared, failed = self.classifier.prepare_slices(series, chosen)
        for volume, index, reason in failed:
            self.store.put_failure(self.model_id, series.key, volume, index, reason)
            self.sliceFailed.emit(generation, series.key, volume, index, reason)
        if not prepared:
            return
        try:
            probabilities, decisions = self.classifier.assess_inputs(
                np.stack([p.model_input for p in prepared]), [p.blank for p in prepared], batch_size=len(prepared))
        except Exception as exc:
            for item in prepared:
                self.store.put_failure(self.model_id, series.key, item.volume, item.index, f"model error: {exc}")
                self.sliceFailed.emit(generation, series.key, item.volume, item.index, f"model error: {exc}")
            return
        for item, probs, decision in zip(prepared, probabilities, decisions):
            if not decision.assessed:  # stored before the probabilities: a reader never sees them without it
                self.store.put_not_assessed(self.model_id, series.key, item.volume, item.index, decision.reason)
            self.store.put_probabilities(self.model_id, series.key, item.volume, item.index, probs)
            self.sliceClassified.emit(generation, series.key, item.volume, item.index, probs)

    def _make_heatmap(self, request: HeatmapRequest) -> None:
        from convnest_viewer.inference.explain import explain

        series = request.series
        try:
            values = series.pixels(request.index, request.volume)
            heatmap = explain(self.classifier, values, series.window(request.index, request.volume), request.method,
                              target=request.target_index)
        except Exception as exc:
            self.heatmapFailed.emit(request.generation, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=2)}")
            return
        key = HeatmapKey(self.model_id, series.key, request.volume, request.index, request.method, heatmap.target_index)
        self.store.put_heatmap(key, heatmap)
        self.heatmapReady.emit(request.generation, key, heatmap)

    def _write_report(self, series_list: list[Series], path: Path, include_identifiers: bool, method: str) -> None:
        from convnest_viewer.inference.explain import explain
        from convnest_viewer.report import write_csv, write_html

        try:
            for series in series_list:
                done = self.store.finished(self.model_id, series.key)
                missing = [i for i in range(series.n_slices) if (0, i) not in done]
                for start in range(0, len(missing), self.batch_size):
                    self._classify_slices(series, -1, [(0, i) for i in missing[start:start + self.batch_size]])

            def heatmap_for(series: Series, volume: int, index: int):
                probabilities = self.store.probabilities(self.model_id, series.key, volume, index)
                if probabilities is None:
                    return None  # the slice could not be read
                target = int(np.argmax(probabilities))
                key = HeatmapKey(self.model_id, series.key, volume, index, method, target)
                cached = self.store.heatmap(key)
                if cached is not None:
                    return cached
                heatmap = explain(self.classifier, series.pixels(index, volume), series.window(index, volume), method, target=target)
                self.store.put_heatmap(key, heatmap)
                return heatmap

            card = self.classifier.card
            html = write_html(path, series_list, self.store, self.model_id, card, heatmap_for, include_identifiers,
                              self.classifier.device_name, method)
            csv_path = write_csv(path.with_suffix(".csv"), series_list, self.store, self.model_id, card.class_ids, include_identifiers)
        except Exception as exc:
            self.reportWritten.emit("", "", f"Could not write the report to {path}: {type(exc).__name__}: {exc}")
            return
        self.reportWritten.emit(str(html), str(csv_path), "")
