"""The inference session: the model, a job queue (current slice first), heatmaps and reports; no Qt.

The GUI runs `InferenceSession.run` in a QThread (ui/inference_worker.py); the batch loop it shares with
`convnest classify` and the training module's scan evaluation is in batch.py. Work that a newer
request supersedes is dropped by design: results already computed are stored (they are still true), but
their announcements are not sent, so a stale heatmap or its failure never reaches the slice now shown.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


from convnest_viewer.batch import classify_positions, store_outcome, write_report
from convnest_viewer.events import Events
from convnest_viewer.io import Series
from convnest_viewer.results import HeatmapKey, ResultStore

INTERACTIVE_SECONDS = 0.5  # for this long after the shown slice changes, background batches use one CPU thread
SESSION_EVENTS = ("devices_probed", "model_ready", "model_failed", "slice_classified", "slice_failed", "heatmap_ready",
                  "heatmap_failed", "progress", "series_done", "report_written")


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
        self._last_focus = -INTERACTIVE_SECONDS  # time.monotonic() of the last slice change
        self._cpu_threads = 0  # torch's CPU threads when the model loaded (0: not a CPU model)

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
        """Classify outward from this slice next (a slice change: the viewer gets a core for a moment)."""
        with self._lock:
            self._last_focus = time.monotonic()
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
        if self.classifier.device.type == "cpu":
            import torch

            self._cpu_threads = torch.get_num_threads()
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
        self._share_cores(background=work.batch is not None)
        if work.heatmap is not None:
            self._make_heatmap(work.heatmap)
        elif work.report is not None:
            self._write_report(work.report)
        elif work.batch is not None:
            self._classify(*work.batch)
        return True

    def _share_cores(self, background: bool) -> None:
        """On the CPU, run background batches on one thread while the user is scrolling, else on all of them."""
        if self._cpu_threads <= 1:
            return
        import torch

        with self._lock:
            scrolling = time.monotonic() - self._last_focus < INTERACTIVE_SECONDS
        wanted = 1 if background and scrolling else self._cpu_threads
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)  # OpenMP: applies to the parallel regions this (worker) thread starts

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
