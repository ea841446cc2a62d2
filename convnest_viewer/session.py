"""The inference session: the model, a job queue (current slice first), heatmaps and reports; no Qt.

The GUI runs `InferenceSession.run` in a QThread (ui/inference_worker.py); `convnest classify` and the
training module's scan evaluation use its batch loop (`classify_positions`) directly. Work that a newer
request supersedes is dropped by design: results already computed are stored (they are still true), but
their announcements are not sent, so a stale heatmap or its failure never reaches the slice now shown.
"""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from convnest_viewer.events import Events
from convnest_viewer.io import Series
from convnest_viewer.results import HeatmapKey, ResultStore

SESSION_EVENTS = ("devices_probed", "model_ready", "model_failed", "slice_classified", "slice_failed", "heatmap_ready",
                  "heatmap_failed", "progress", "series_done", "report_written")


@dataclass
class SliceOutcome:
    """One slice's classification: its probabilities and the gate's decision, or why it could not be read."""

    volume: int
    index: int
    probabilities: np.ndarray | None = None
    error: str | None = None
    prepared: object = None  # the SliceInput (pixels, window, model input) when read
    decision: object = None  # the gate's GateDecision: whether the model's answer counts for this slice


def classify_positions(classifier, series: Series, positions: Sequence[tuple[int, int]],
                       batch_size: int = 16) -> Iterator[SliceOutcome]:
    """Classify (volume, index) slices of a series in batches, yielding each slice's outcome."""
    for start in range(0, len(positions), batch_size):
        chunk = list(positions[start:start + batch_size])
        prepared, failed = classifier.prepare_slices(series, chunk)
        for volume, index, reason in failed:
            yield SliceOutcome(volume, index, error=reason)
        if not prepared:
            continue
        try:
            probabilities, decisions = classifier.assess_inputs(
                np.stack([p.model_input for p in prepared]), [p.blank for p in prepared], batch_size)
        except Exception as exc:  # noqa: BLE001 - a model error fails these slices, not the session
            for item in prepared:
                yield SliceOutcome(item.volume, item.index, error=f"model error: {exc}")
            continue
        for item, probs, decision in zip(prepared, probabilities, decisions):
            yield SliceOutcome(item.volume, item.index, probs, prepared=item, decision=decision)


def classify_series(classifier, series: Series, batch_size: int = 16, on_batch=None) -> Iterator[SliceOutcome]:
    """Classify every slice of every volume of a series; on_batch(count) reports progress after each batch."""
    positions = [(v, i) for v in range(series.n_volumes) for i in range(series.n_slices)]
    for start in range(0, len(positions), batch_size):
        yield from classify_positions(classifier, series, positions[start:start + batch_size], batch_size)
        if on_batch is not None:
            on_batch(len(positions[start:start + batch_size]))


def store_outcome(store: ResultStore, model_id: str, series_key: str, outcome: SliceOutcome) -> None:
    """Put one slice's outcome in the store: its failure, or its probabilities (with the gate's withholding)."""
    if outcome.error is not None:
        store.put_failure(model_id, series_key, outcome.volume, outcome.index, outcome.error)
        return
    if not outcome.decision.assessed:  # stored before the probabilities: a reader never sees them without it
        store.put_not_assessed(model_id, series_key, outcome.volume, outcome.index, outcome.decision.reason)
    store.put_probabilities(model_id, series_key, outcome.volume, outcome.index, outcome.probabilities)


def write_report(classifier, store: ResultStore, series_list: Sequence[Series], path: Path,
                 include_identifiers: bool, method: str, batch_size: int = 16) -> tuple[Path, Path]:
    """Classify what is missing of these series (first volumes), then write the HTML and CSV report."""
    from convnest_viewer.inference.explain import explain
    from convnest_viewer.report import write_csv, write_html

    model_id = classifier.weights_sha256
    for series in series_list:
        done = store.finished(model_id, series.key)
        missing = [(0, i) for i in range(series.n_slices) if (0, i) not in done]
        for outcome in classify_positions(classifier, series, missing, batch_size):
            store_outcome(store, model_id, series.key, outcome)

    def heatmap_for(series: Series, volume: int, index: int):
        probabilities = store.probabilities(model_id, series.key, volume, index)
        if probabilities is None:
            return None  # the slice could not be read
        key = HeatmapKey(model_id, series.key, volume, index, method, int(np.argmax(probabilities)))
        cached = store.heatmap(key)
        if cached is None:
            cached = explain(classifier, series.pixels(index, volume), series.window(index, volume), method,
                             target=key.target_index)
            store.put_heatmap(key, cached)
        return cached

    html = write_html(path, series_list, store, model_id, classifier.card, heatmap_for, include_identifiers,
                      classifier.device_name, method)
    csv_path = write_csv(Path(path).with_suffix(".csv"), series_list, store, model_id, classifier.card.class_ids,
                         include_identifiers)
    return html, csv_path


@dataclass
class HeatmapRequest:
    """A heatmap the viewer wants for one slice."""

    series: Series
    volume: int
    index: int
    method: str
    target_index: int | None  # None: the predicted class
    generation: int = 0


@dataclass
class _Job:
    series: Series
    generation: int
    pending: set[tuple[int, int]]
    focus: tuple[int, int]
    total: int = 0


@dataclass
class _ReportRequest:
    series_list: list[Series]
    path: Path
    include_identifiers: bool
    method: str


@dataclass
class _Work:
    heatmap: HeatmapRequest | None = None
    report: _ReportRequest | None = None
    batch: tuple[_Job, list[tuple[int, int]]] | None = None


class InferenceSession:
    """Loads the model, then classifies the wanted series (the shown slice outward) and makes heatmaps.

    Requests come from any thread; `run` (or `run_until_idle` in tests) does the work on the calling thread
    and announces results through `events` (see SESSION_EVENTS) on that thread.
    """

    def __init__(self, store: ResultStore, model_dir: Path | None = None, device: str | None = None,
                 batch_size: int | None = None) -> None:
        self.store = store
        self.model_dir = model_dir
        self.device = device
        self.batch_size = batch_size
        self.classifier = None
        self.model_id = ""
        self.events = Events(*SESSION_EVENTS)
        self._lock = threading.Condition()
        self._job: _Job | None = None
        self._study: list[Series] = []  # classified one after another once the wanted series is done
        self._heatmap: HeatmapRequest | None = None
        self._report: _ReportRequest | None = None
        self._stopping = False
        self._job_generation = 0
        self._heatmap_generation = 0

    # --- requests (any thread) -----------------------------------------------------------------
    def classify_series(self, series: Series, focus_index: int = 0, focus_volume: int = 0, background: bool = False) -> None:
        """Replace the current job with this series, the focus slice first.

        A background job (another series of the study, once the shown one is done) keeps any heatmap request
        of the shown slice; a foreground one drops it.
        """
        with self._lock:
            self._job_generation += 1
            if not background:
                self._heatmap_generation += 1
                self._heatmap = None
            self._job = self._new_job(series, (focus_volume, focus_index))
            if not self._job.pending and self.model_id:  # done already: go on with the study's next series
                waiting = self._next_unfinished()
                if waiting is not None:
                    self._job = self._new_job(waiting, (0, waiting.n_slices // 2))
            self._lock.notify_all()

    def _new_job(self, series: Series, focus: tuple[int, int]) -> _Job:
        done = self.store.finished(self.model_id, series.key) if self.model_id else set()
        pending = {(v, i) for v in range(series.n_volumes) for i in range(series.n_slices)} - done
        return _Job(series, self._job_generation, pending, focus, series.n_volumes * series.n_slices)

    def set_study(self, series_list: Sequence[Series]) -> None:
        """Name the open study's series: once a job is done, the next unclassified one is classified in the
        background (from its middle slice), until every series is."""
        with self._lock:
            self._study = list(series_list)

    def set_focus(self, index: int, volume: int = 0) -> None:
        """Classify outward from this slice next."""
        with self._lock:
            if self._job is not None:
                self._job.focus = (volume, index)

    def request_heatmap(self, series: Series, volume: int, index: int, method: str, target_index: int | None) -> None:
        """Ask for one heatmap, superseding any asked for before (its result will not be announced)."""
        with self._lock:
            self._heatmap_generation += 1
            self._heatmap = HeatmapRequest(series, volume, index, method, target_index, self._heatmap_generation)
            self._lock.notify_all()

    def request_report(self, series_list: Sequence[Series], path: Path, include_identifiers: bool, method: str) -> None:
        """Classify what is missing of these series, then write the HTML and CSV report (announced when done)."""
        with self._lock:
            self._report = _ReportRequest(list(series_list), Path(path), include_identifiers, method)
            self._lock.notify_all()

    def cancel(self) -> None:
        """Drop the current job, the study and the heatmap request; results in flight are stored, not announced."""
        with self._lock:
            self._job_generation += 1
            self._heatmap_generation += 1
            self._job = None
            self._study = []
            self._heatmap = None

    def stop(self) -> None:
        """Ask `run` to return after the work in hand."""
        with self._lock:
            self._stopping = True
            self._job = None
            self._heatmap = None
            self._lock.notify_all()

    # --- the work (one thread) -------------------------------------------------------------------
    def load_model(self) -> bool:
        """Load the classifier (probing the device); announce model_ready or model_failed."""
        try:
            from convnest_viewer.inference.classifier import Classifier

            self.classifier = Classifier(self.model_dir, device=self.device)
        except Exception as exc:  # noqa: BLE001 - a missing or refused model must not end the app
            self.events.emit("model_failed", str(exc))
            return False
        self.model_id = self.classifier.weights_sha256
        if self.batch_size is None:
            self.batch_size = 32 if self.classifier.device.type != "cpu" else 4
        with self._lock:  # a job set before the model id was known may hold slices already done
            if self._job is not None:
                self._job.pending -= self.store.finished(self.model_id, self._job.series.key)
        self.events.emit("model_ready", self.model_id, self.classifier.card, self.classifier.device_name)
        return True

    def probe_devices(self) -> list[str]:
        """Return and announce the device choices that work here (auto and cpu always; cuda, mps if present)."""
        from convnest_viewer.inference.classifier import pick_device

        working = ["auto", "cpu"]
        for choice in ("cuda", "mps"):
            try:
                pick_device(choice)
            except RuntimeError:
                continue
            working.append(choice)
        self.events.emit("devices_probed", working)
        return working

    def run(self) -> None:
        """Probe the devices, load the model, then do the requested work until `stop` (waiting while idle)."""
        self.probe_devices()
        if not self.load_model():
            return
        while self._do_next(wait=True):
            pass

    def run_until_idle(self) -> None:
        """Do every piece of requested work now, without waiting for more (for tests and scripts)."""
        if self.classifier is None and not self.load_model():
            return
        while self._do_next(wait=False):
            pass

    def _do_next(self, wait: bool) -> bool:
        work = self._take_work(wait)
        if work is None:
            return False
        if work.heatmap is not None:
            self._make_heatmap(work.heatmap)
        elif work.report is not None:
            self._write_report(work.report)
        elif work.batch is not None:
            self._classify(*work.batch)
        return True

    def _take_work(self, wait: bool) -> _Work | None:
        with self._lock:
            while (not self._stopping and self._heatmap is None and self._report is None
                   and not (self._job and self._job.pending)):
                if not wait:
                    return None
                self._lock.wait()
            if self._stopping:
                return None
            if self._heatmap is not None:
                work, self._heatmap = _Work(heatmap=self._heatmap), None
            elif self._report is not None:
                work, self._report = _Work(report=self._report), None
            else:
                work = _Work(batch=self._next_batch())
            return work

    def _next_batch(self) -> tuple[_Job, list[tuple[int, int]]]:
        job = self._job
        focus_volume, focus_index = job.focus
        ordered = sorted(job.pending, key=lambda vi: (vi[0] != focus_volume, abs(vi[0] - focus_volume),
                                                      abs(vi[1] - focus_index), vi[1]))
        chosen = ordered[: self.batch_size]
        job.pending.difference_update(chosen)
        return job, chosen

    def _current(self, job: _Job) -> bool:
        with self._lock:
            return job.generation == self._job_generation

    def _classify(self, job: _Job, chosen: list[tuple[int, int]]) -> None:
        key = job.series.key
        for outcome in classify_positions(self.classifier, job.series, chosen, len(chosen)):
            store_outcome(self.store, self.model_id, key, outcome)
            if not self._current(job):
                continue  # superseded: stored, not announced
            if outcome.error is not None:
                self.events.emit("slice_failed", key, outcome.volume, outcome.index, outcome.error)
            else:
                self.events.emit("slice_classified", key, outcome.volume, outcome.index, outcome.probabilities)
        if not self._current(job):
            return
        with self._lock:
            remaining = len(job.pending)
        self.events.emit("progress", key, job.total - remaining, job.total)
        if remaining == 0:
            self.events.emit("series_done", key)
            self._continue_study(job)

    def _continue_study(self, finished: _Job) -> None:
        """Start the study's next unclassified series in the background, unless a newer job came meanwhile."""
        with self._lock:
            if finished.generation != self._job_generation:
                return
            waiting = self._next_unfinished()
        if waiting is not None:
            self.classify_series(waiting, waiting.n_slices // 2, 0, background=True)

    def _next_unfinished(self) -> Series | None:
        """Return the study's first series not yet finished for the model (call with the lock held)."""
        return next((s for s in self._study if not self.store.series_finished(self.model_id, s)), None)

    def _make_heatmap(self, request: HeatmapRequest) -> None:
        from convnest_viewer.inference.explain import explain

        series = request.series
        try:
            heatmap = explain(self.classifier, series.pixels(request.index, request.volume),
                              series.window(request.index, request.volume), request.method, target=request.target_index)
        except Exception as exc:  # noqa: BLE001 - reported to the user, the session goes on
            if self._heatmap_wanted(request):
                self.events.emit("heatmap_failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=2)}")
            return
        key = HeatmapKey(self.model_id, series.key, request.volume, request.index, request.method, heatmap.target_index)
        self.store.put_heatmap(key, heatmap)
        if self._heatmap_wanted(request):
            self.events.emit("heatmap_ready", key, heatmap)

    def _heatmap_wanted(self, request: HeatmapRequest) -> bool:
        with self._lock:
            return request.generation == self._heatmap_generation

    def _write_report(self, request: _ReportRequest) -> None:
        try:
            html, csv_path = write_report(self.classifier, self.store, request.series_list, request.path,
                                          request.include_identifiers, request.method, self.batch_size)
        except Exception as exc:  # noqa: BLE001 - reported to the user, the session goes on
            self.events.emit("report_written", "", "",
                             f"Could not write the report to {request.path}: {type(exc).__name__}: {exc}")
            return
        self.events.emit("report_written", str(html), str(csv_path), "")
