"""`convnest-viewer --self-test`: drive the real window end to end and print a JSON summary."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PySide6.QtCore import QEventLoop
from PySide6.QtWidgets import QApplication

from convnest_viewer import __version__
from convnest_viewer.inference.heatmap import METHODS


class SelfTestFailure(RuntimeError):
    """The self-test found something that does not work."""


def wait_until(predicate: Callable[[], bool], deadline: float, what: str) -> None:
    """Process Qt events until predicate() is true; raise SelfTestFailure at the deadline."""
    app = QApplication.instance()
    while not predicate():
        if time.monotonic() > deadline:
            raise SelfTestFailure(f"timed out waiting for {what}")
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.002)


def run_self_test(window, paths: list[str], screenshot: Path | None, timeout: float) -> int:
    """Open paths, classify every slice through the GUI worker, make every kind of heatmap; return 0 or 1."""
    started = time.monotonic()
    deadline = started + timeout
    summary: dict = {"ok": False, "version": __version__, "paths": paths}
    window.interactive = False
    try:
        _run(window, paths, deadline, summary)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            if not window.grab().save(str(screenshot), "PNG"):
                raise SelfTestFailure(f"{screenshot}: could not save the screenshot")
            summary["screenshot"] = str(screenshot)
        summary["ok"] = True
    except SelfTestFailure as exc:
        summary["error"] = str(exc)
    except Exception as exc:  # report anything unexpected as a failure, never a hang
        summary["error"] = f"{type(exc).__name__}: {exc}"
    summary["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(summary, indent=2))
    sys.stdout.flush()
    window.close()
    return 0 if summary["ok"] else 1


def _run(window, paths: list[str], deadline: float, summary: dict) -> None:
    loaded = []
    window.studyLoaded.connect(loaded.append)
    window.open_paths(paths)
    wait_until(lambda: bool(loaded), deadline, "the study to load")
    result = loaded[0]
    summary["skipped"] = len(result.skipped)
    if not result.series:
        raise SelfTestFailure("no image series found in " + ", ".join(paths))
    wait_until(lambda: bool(window.state.model_id) or window.state.model_error is not None, deadline, "the model to load")
    if window.state.model_error:
        raise SelfTestFailure(f"model not loaded: {window.state.model_error}")
    summary["model"] = {"name": window.state.model.name, "sha256": window.state.model_id}
    summary["device"] = window.state.model.device_name
    summary["series"] = [_classify_series(window, series, deadline) for series in result.series]
    readable = [(series, row) for series, row in zip(result.series, summary["series"]) if row["classified"]]
    if not readable:
        summary["heatmaps"] = "no slice could be read"
        return
    explained = [(series, assessed) for series, _ in readable if (assessed := _assessed_slices(window, series))]
    if not explained:  # a withheld slice gets no heatmap in the viewer
        summary["heatmaps"] = "no slice was assessed (the model's gate withheld every readable slice)"
        return
    series, assessed = explained[0]
    window.browser.select(series.key)
    wait_until(lambda: window.state.series is series, deadline, "the first assessed series to show")
    if window.state.index not in assessed:
        window.state.set_slice(min(assessed, key=lambda i: abs(i - window.state.index)))
    summary["heatmaps"] = {method: _heatmap(window, method, deadline) for method in METHODS}


def _assessed_slices(window, series) -> list[int]:
    """Return the first volume's slices that were read and not withheld by the gate."""
    left_out = window.store.left_out_mask(window.state.model_id, series.key, 0, series.n_slices)
    return [int(i) for i in np.flatnonzero(~left_out)]


def _classify_series(window, series, deadline: float) -> dict:
    window.browser.select(series.key)
    wait_until(lambda: window.state.series is series, deadline, f"series {series.description!r} to show")
    total = series.n_slices * series.n_volumes
    wait_until(lambda: len(window.store.finished(window.state.model_id, series.key)) >= total, deadline,
               f"every slice of {series.description!r} to be classified")
    wait_until(lambda: bool(window.browser.item_finding(series.key)), deadline,  # the window has heard the end
               f"the verdict on {series.description!r}")
    failures = window.store.failures(window.state.model_id, series.key)
    withheld = window.store.not_assessed(window.state.model_id, series.key)
    predicted: dict[str, int] = {}
    for volume in range(series.n_volumes):
        for index in range(series.n_slices):
            if (volume, index) in failures:
                continue
            probabilities = window.store.probabilities(window.state.model_id, series.key, volume, index)
            if probabilities is None or not np.isclose(probabilities.sum(), 1.0, atol=1e-4):
                raise SelfTestFailure(f"slice {index + 1} of {series.description!r} has no valid probabilities")
            class_id = window.state.class_ids[int(np.argmax(probabilities))]
            if (volume, index) in withheld:
                class_id = "not assessed"
            predicted[class_id] = predicted.get(class_id, 0) + 1
    return {"description": series.description, "slices": series.n_slices, "volumes": series.n_volumes,
            "classified": total - len(failures), "predicted": predicted,
            "failed": [{"volume": v + 1, "slice": i + 1, "reason": reason} for (v, i), reason in sorted(failures.items())]}


def _heatmap(window, method: str, deadline: float) -> dict:
    shown = []
    window.overlayShown.connect(lambda key: shown.append(key) if key is not None and key.method == method else None)
    window.state.set_overlay_mode("none")  # the mode the settings restored may already be this one: no change, no signal
    window.state.set_overlay_mode(method)
    wait_until(lambda: bool(shown), deadline, f"the {method} overlay")
    heatmap = window.view.heatmap
    expected = (window.state.series.rows, window.state.series.columns)
    if heatmap is None or heatmap.shape != expected:
        raise SelfTestFailure(f"{method} overlay has shape {None if heatmap is None else heatmap.shape}, slice is {expected}")
    if not (np.isfinite(heatmap).all() and 0.0 <= heatmap.min() and heatmap.max() <= 1.0):
        raise SelfTestFailure(f"{method} overlay is not a map in [0, 1]")
    key = shown[-1]
    return {"slice": key.index + 1, "target": window.state.class_ids[key.target_index], "shape": list(heatmap.shape),
            "max_at": [int(v) for v in np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)]}
