"""One measured viewer process for viewer_bench.py: `startup`, `session` or `memory` mode; prints one JSON line.

    python benchmarks/viewer_probe.py startup|session|memory SERIES_FOLDER DEVICE   (CONVNEST_BENCH_LAUNCH: launch time)
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

LAUNCH = float(os.environ.get("CONVNEST_BENCH_LAUNCH", time.time()))
PAIRS = 5  # passes over the series, each batch timed bare and through the pipeline one right after the other


def wait(app, condition, timeout: float = 600.0, step: float = 0.002) -> None:
    """Let the event loop run until condition() holds (sleeping between turns), or raise after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the viewer did not get there in time")
        app.processEvents()
        time.sleep(step)


def open_window(device: str, on_shown=None):
    """Start the app's window as convnest-viewer does (on_shown(window) runs right after show(), where the app
    opens its paths) and return (app, window, seconds from launch to visible)."""
    from PySide6.QtWidgets import QApplication

    app = QApplication([sys.argv[0]])
    from convnest_viewer.ui.main_window import MainWindow

    window = MainWindow(device=device)
    window.interactive = False
    window.resize(1400, 900)
    window.show()
    if on_shown is not None:
        on_shown(window)
    wait(app, lambda: window.windowHandle() is not None and window.windowHandle().isExposed())
    app.processEvents()  # the first paint
    return app, window, time.time() - LAUNCH


def startup(series: str, device: str) -> dict:
    """Time the window, the series index, the first slice (a preview while indexing) and the model, from launch
    (the series opened as `convnest-viewer SERIES` opens it)."""
    marks = {}

    def open_series(window) -> None:
        window.studyLoaded.connect(lambda _result: marks.setdefault("indexed", time.perf_counter()))
        window.sliceShown.connect(lambda *_: marks.setdefault("shown", time.perf_counter()))
        window.previewShown.connect(lambda: marks.setdefault("preview", time.perf_counter()))
        marks["start"] = time.perf_counter()
        window.open_paths([series])

    app, window, visible = open_window(device, open_series)
    start = marks["start"]
    wait(app, lambda: "shown" in marks)
    wait(app, lambda: window.state.model is not None or window.state.model_error is not None)
    model_ready = time.time() - LAUNCH
    window.close()
    return {"window visible after launch": visible, "model ready after launch": model_ready,
            "series indexed": marks["indexed"] - start,
            "first slice shown": min(marks.get("preview", marks["shown"]), marks["shown"]) - start,
            "series shown (indexed and opened)": marks["shown"] - start}


def peak_gb() -> float:
    """Return this process's peak resident memory so far, in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def memory(series_path: str, device: str) -> dict:
    """Peak memory of a viewer launched on the series (as `convnest-viewer SERIES`): once the series is classified,
    then once the default heatmap of the slice on screen has arrived."""
    app, window, _ = open_window(device, lambda shown: shown.open_paths([series_path]))
    state, store = window.state, window.store
    wait(app, lambda: state.model_error is not None or (state.model is not None and state.series is not None))
    if state.model_error is not None:
        raise RuntimeError(f"the model did not load: {state.model_error}")
    series = state.series
    total = series.n_slices * series.n_volumes
    wait(app, lambda: len(store.finished(state.model_id, series.key)) >= total)
    classified = peak_gb()
    state.set_overlay_mode(state.default_heatmap)  # what H shows first
    wait(app, lambda: (key := state.heatmap_key(store)) is not None and store.heatmap(key) is not None)
    with_heatmap = peak_gb()
    state.set_overlay_mode("none")
    window.close()
    return {"peak RSS, series open and classified": classified,
            "peak RSS, with the default heatmap of one slice": with_heatmap}


def _slice_changes(app, state, count: int) -> list[float]:
    """Move one slice at a time (bouncing at the ends) and time each change including its repaint."""
    times, step = [], 1
    for _ in range(count):
        if not 0 <= state.index + step < state.series.n_slices:
            step = -step
        begin = time.perf_counter()
        state.set_slice(state.index + step)
        app.processEvents()
        times.append(time.perf_counter() - begin)
        time.sleep(0.01)  # a person scrolling: the worker gets its turns in between
    return times


def session(series_path: str, device: str) -> dict:
    """Time slice changes (idle, while classifying, with an overlay), a whole series, inference and memory."""
    import numpy as np

    app, window, _ = open_window(device)
    state, store = window.state, window.store
    wait(app, lambda: state.model is not None)
    window.open_paths([series_path])
    wait(app, lambda: state.series is not None)
    series = state.series
    opened = time.perf_counter()
    busy = _slice_changes(app, state, 60)
    total = series.n_slices * series.n_volumes
    wait(app, lambda: len(store.finished(state.model_id, series.key)) >= total)
    classified = time.perf_counter() - opened
    idle = _slice_changes(app, state, 120)
    state.set_overlay_mode(state.default_heatmap)  # what H shows first
    overlay = _slice_changes(app, state, 40)
    state.set_overlay_mode("none")
    window.close()

    from convnest_viewer.inference.classifier import Classifier
    from convnest_viewer.inference.explain import explain
    from convnest_viewer.batch import classify_series
    import torch

    classifier = Classifier(None, device=device)
    prepared, _ = classifier.prepare_slices(series, [(0, i) for i in range(series.n_slices)])
    batch = torch.from_numpy(np.stack([p.model_input for p in prepared])).to(classifier.device)
    model = classifier.model
    with torch.inference_mode():
        model(batch[:32])  # warm-up
        one = []
        for i in range(20):
            begin = time.perf_counter()
            model(batch[i:i + 1])
            one.append(time.perf_counter() - begin)
    worker_batch = 32 if classifier.device.type != "cpu" else 4

    def pipeline(batch_size: int) -> float:
        begin = time.perf_counter()
        for _ in classify_series(classifier, series, batch_size):
            pass
        return total / (time.perf_counter() - begin)

    from convnest_viewer.batch import classify_positions

    positions = [(item.volume, item.index) for item in prepared]  # the rows of `batch`, slice for slice

    def bare_forward(start: int) -> float:
        # the forward pass of the backend the pipeline runs (ONNX Runtime when the app picks it, else torch)
        begin = time.perf_counter()
        classifier.logits(batch[start:start + 32])
        return time.perf_counter() - begin

    def pipeline_batch(start: int) -> float:
        begin = time.perf_counter()
        for _ in classify_positions(classifier, series, positions[start:start + 32], 32):
            pass
        return time.perf_counter() - begin

    # each batch of 32 timed bare and through the whole pipeline (read, preprocess, gate, forward) back to back,
    # in alternating order, so a slower spell of this shared machine touches both sides of a ratio; one ratio per
    # pass over the series (the sums of its batches)
    bares, wholes, ratios = [], [], []
    for turn in range(PAIRS):
        bare_seconds = pipeline_seconds = 0.0
        for number, start in enumerate(range(0, len(batch), 32)):
            if (turn + number) % 2:
                pipeline_seconds += pipeline_batch(start)
                bare_seconds += bare_forward(start)
            else:
                bare_seconds += bare_forward(start)
                pipeline_seconds += pipeline_batch(start)
        bares.append(len(batch) / bare_seconds)
        wholes.append(len(batch) / pipeline_seconds)
        ratios.append(bare_seconds / pipeline_seconds)
    bare, whole = float(np.median(bares)), float(np.median(wholes))
    in_worker_batches = pipeline(worker_batch)
    forward = float(np.median(one))
    values, window_ = series.pixels(series.n_slices // 2), series.window(series.n_slices // 2)
    gradcam, layercam, shap, occlusion = [], [], [], []
    for _ in range(5):
        for method, times in (("gradcam", gradcam), ("layercam", layercam)):
            begin = time.perf_counter()
            explain(classifier, values, window_, method)
            times.append((time.perf_counter() - begin) / forward)
    for _ in range(3):
        for method, times in (("shap", shap), ("occlusion", occlusion)):
            begin = time.perf_counter()
            explain(classifier, values, window_, method)
            times.append((time.perf_counter() - begin) / forward)
    return {"samples": {"slice change, while classifying": busy, "slice change, idle": idle,
                        "slice change, with the default heatmap overlay": overlay, "whole series classified": [classified],
                        "classification throughput / bare batched forward": ratios,
                        "Grad-CAM / one forward pass": gradcam, "LayerCAM / one forward pass": layercam,
                        "Gradient SHAP (default samples) / one forward pass": shap,
                        "Occlusion / one forward pass": occlusion},
            "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "model": classifier.card.name,
                        "backend": classifier.backend,
                        "bare forward slices/s (batch 32)": round(bare, 1), "pipeline slices/s (batch 32)": round(whole, 1),
                        "pipeline slices/s (the worker's batches)": round(in_worker_batches, 1),
                        "worker batch": worker_batch, "one forward ms": round(forward * 1000, 1)}}


if __name__ == "__main__":
    mode, series_path, device = sys.argv[1:4]
    print(json.dumps({"startup": startup, "session": session, "memory": memory}[mode](series_path, device)))
