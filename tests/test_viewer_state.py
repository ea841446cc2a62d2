"""The Qt-free viewer state: clamped setters, change events only on real changes, windows per series."""

from __future__ import annotations

import numpy as np
import pytest

from convnest_viewer.inference.card import ModelCard, default_classes
from convnest_viewer.io import LoadResult, Window, load_study
from convnest_viewer.results import HeatmapKey, ResultStore
from convnest_viewer.viewer_state import ModelInfo, ViewerState
from tests.paths import DICOM


@pytest.fixture(scope="module")
def two_series():
    return load_study([str(DICOM / "patient-positions")])  # HFP and HFS, 35 slices each


def _recording(state: ViewerState) -> list[tuple]:
    seen = []
    for name in state.events.names:
        state.events.connect(name, lambda *args, n=name: seen.append((n, *args)))
    return seen


def test_a_study_opens_its_first_series_at_the_middle_slice(two_series):
    state = ViewerState()
    seen = _recording(state)
    assert state.set_result(two_series)
    first = two_series.series[0]
    assert state.series is first and state.index == 17 and state.volume == 0
    assert [event[0] for event in seen] == ["study", "series"]
    assert not state.set_result(LoadResult()), "a result without images changes nothing"
    assert state.result is two_series and [event[0] for event in seen] == ["study", "series"]


def test_slices_are_clamped_and_only_real_changes_are_announced(two_series):
    state = ViewerState()
    state.set_result(two_series)
    seen = _recording(state)
    assert state.set_slice(40) and state.index == 34
    assert not state.set_slice(99), "already at the last slice"
    assert state.step_slice(-50) and state.index == 0
    assert not state.step_slice(-1)
    assert not state.set_volume(1), "a 3-D series has one volume"
    assert seen == [("index", 34), ("index", 0)]
    assert state.select_series(two_series.series[1].key) and state.index == 17
    assert not state.select_series(two_series.series[1].key) and not state.select_series("no such key")


def test_windows_are_kept_per_series_while_the_study_is_open(two_series):
    state = ViewerState()
    state.set_result(two_series)
    first, second = two_series.series
    assert state.window == first.default_window()
    narrow = Window(100.0, 50.0)
    assert state.set_window(narrow) and not state.set_window(narrow)
    state.select_series(second.key)
    assert state.window == second.default_window()
    state.select_series(first.key)
    assert state.window == narrow
    state.set_result(load_study([str(DICOM / "ge-epi-4d")]))
    state.set_result(two_series)
    assert state.window == first.default_window(), "a newly opened study starts from its own windows"


def test_overlay_mode_and_target_and_the_heatmap_the_slice_needs(two_series):
    state = ViewerState(overlay_mode="bogus")
    assert state.overlay_mode == "none"
    state.set_result(two_series)
    store = ResultStore()
    assert state.heatmap_key(store) is None, "no overlay chosen"
    assert state.cycle_overlay() and state.overlay_mode == "gradcam"
    assert state.heatmap_key(store) is None, "no model yet"
    card = ModelCard("m", "test_convnext", default_classes())
    state.set_model(ModelInfo("sha", card, "CPU"))
    assert state.heatmap_key(store) is None, "the predicted class is not known yet"
    store.put_probabilities("sha", state.series.key, 0, state.index, np.array([0.1, 0.7, 0.1, 0.1]))
    assert state.heatmap_key(store) == HeatmapKey("sha", state.series.key, 0, 17, "gradcam", 1)
    assert state.set_overlay_target(2)
    assert state.heatmap_key(store).target_index == 2
    for mode in ("layercam", "shap", "occlusion", "tumour_occlusion", "none"):  # the other methods, then none
        assert state.cycle_overlay() and state.overlay_mode == mode
    assert not state.set_overlay_mode("bogus")


def test_the_cards_best_measured_heatmap_comes_first(two_series):
    state = ViewerState()
    state.set_result(two_series)
    card = ModelCard("m", "test_convnext", default_classes())
    card.explanation.default_method = "layercam"
    state.set_model(ModelInfo("sha", card, "CPU"))
    assert state.default_heatmap == "layercam"
    assert state.overlay_order() == ("none", "layercam", "gradcam", "shap", "occlusion", "tumour_occlusion")
    assert state.cycle_overlay() and state.overlay_mode == "layercam", "H shows the best-measured map first"


def test_the_model_gives_the_class_meaning(two_series):
    state = ViewerState()
    assert state.class_ids == [] and state.model_id == ""
    card = ModelCard("m", "test_convnext", default_classes())
    state.set_overlay_target(3)
    state.set_model(ModelInfo("sha", card, "CPU"))
    assert state.class_ids == card.class_ids and state.display_names["notumor"] == "No tumour"
    assert state.overlay_target == 3
    two_classes = ModelCard("m2", "test_convnext", default_classes()[1:3])
    state.set_model(ModelInfo("sha2", two_classes, "CPU"))
    assert state.overlay_target is None, "a class the new model lacks falls back to the predicted one"
    state.set_model_failed("no model folder")
    assert state.model is None and state.model_error == "no model folder" and state.class_ids == []
