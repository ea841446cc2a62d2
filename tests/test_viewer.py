"""The desktop viewer, offscreen with pytest-qt, on real fixtures and a tiny random model."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt, QTimer
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication, QMessageBox

from convnest_viewer.inference.classifier import Classifier
from convnest_viewer.paths import demo_study_dir
from convnest_viewer.ui.main_window import MainWindow
from convnest_viewer.ui.series_browser import THUMB, SeriesBrowser
from tests.paths import DICOM
from tests.tiny_model import write_tiny_model

TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("viewer-model") / "tiny")


@pytest.fixture
def window(qtbot, model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CONVNEST_SETTINGS_FILE", str(tmp_path / "settings.ini"))  # each test starts afresh
    win = MainWindow(model_dir=model_dir, device="cpu")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: bool(win.state.model_id), timeout=TIMEOUT_MS)
    yield win
    win.close()


def _open(qtbot, win, *paths):
    with qtbot.waitSignal(win.studyLoaded, timeout=TIMEOUT_MS) as blocker:
        win.open_paths([str(p) for p in paths])
    return blocker.args[0]


def _wait_classified(qtbot, win, series):
    total = series.n_slices * series.n_volumes
    qtbot.waitUntil(lambda: len(win.store.classified(win.state.model_id, series.key)) >= total, timeout=TIMEOUT_MS)


@pytest.mark.parametrize("folder, n_series, slices", [
    (DICOM / "sagittal-mprage", 1, 192),
    (DICOM / "enhanced-multiframe", 1, 96),
    (DICOM / "ge-epi-4d", 1, 15),
    (DICOM / "patient-positions", 2, 35),
    (DICOM / "transfer-syntaxes", 9, 35),  # Siemens mosaics: 35 slices each
])
def test_each_fixture_folder_opens_and_shows_its_first_series(qtbot, window, folder, n_series, slices):
    result = _open(qtbot, window, folder)
    assert len(result.series) == n_series
    assert window.browser.series_keys() == [s.key for s in result.series]
    assert window.state.series is result.series[0] and window.state.series.n_slices == slices
    assert window.state.index == slices // 2
    shown = window.view.image.image
    assert shown is not None and shown.shape == (window.state.series.rows, window.state.series.columns)
    assert np.array_equal(shown, window.state.series.pixels(window.state.index))
    assert window.browser.skipped.topLevelItemCount() == len(result.skipped)


def test_scrolling_with_keys_wheel_slider_and_limits(qtbot, window):
    _open(qtbot, window, DICOM / "patient-positions" / "In" / "HFS")
    start = window.state.index
    qtbot.keyClick(window, Qt.Key.Key_Down)
    assert window.state.index == start + 1
    qtbot.keyClick(window, Qt.Key.Key_PageUp)
    assert window.state.index == start + 1 - 10
    window.view.view.sliceStep.emit(1)  # one wheel notch
    assert window.state.index == start + 1 - 10 + 1
    window.slider.setValue(34)
    assert window.state.index == 34 and window.slice_label.text() == "35/35"
    qtbot.keyClick(window, Qt.Key.Key_Down)
    assert window.state.index == 34, "scrolling stops at the last slice"
    assert np.array_equal(window.view.image.image, window.state.series.pixels(34))


def _drag(widget, start: QPointF, end: QPointF, button=Qt.MouseButton.LeftButton, steps: int = 8):
    viewport = widget.viewport()
    QApplication.sendEvent(viewport, QMouseEvent(QMouseEvent.Type.MouseButtonPress, start, viewport.mapToGlobal(start),
                                                 button, button, Qt.KeyboardModifier.NoModifier))
    for k in range(1, steps + 1):
        point = start + (end - start) * (k / steps)
        QApplication.sendEvent(viewport, QMouseEvent(QMouseEvent.Type.MouseMove, point, viewport.mapToGlobal(point),
                                                     Qt.MouseButton.NoButton, button, Qt.KeyboardModifier.NoModifier))
    QApplication.sendEvent(viewport, QMouseEvent(QMouseEvent.Type.MouseButtonRelease, end, viewport.mapToGlobal(end),
                                                 button, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier))


def test_left_drag_changes_window_level_and_presets_restore_it(qtbot, window):
    _open(qtbot, window, DICOM / "sagittal-mprage")
    qtbot.waitUntil(lambda: window.view.isVisible())
    before = window.view.displayed_levels()
    voi = window.state.series.window(window.state.index)
    assert before == pytest.approx((voi.low, voi.high))
    centre = QPointF(window.view.width() / 2, window.view.height() / 2)
    _drag(window.view, centre, centre + QPointF(80, 40))
    after = window.view.displayed_levels()
    assert after != pytest.approx(before)
    assert after[1] - after[0] > before[1] - before[0], "dragging right widens the window"
    assert f"W {window.view.window.width:.0f}" in window.view.corner_text("bottom_right")
    window.apply_window_preset("voi")
    assert window.view.displayed_levels() == pytest.approx(before)
    window.apply_window_preset("full")
    values = window.state.series.pixels(window.state.index)
    assert window.view.displayed_levels() == pytest.approx((values.min(), values.max()))


def test_zoom_pan_reset_and_true_aspect(qtbot, window):
    _open(qtbot, window, DICOM / "ge-epi-4d")
    series = window.state.series
    rect = window.view.image.mapRectToParent(window.view.image.boundingRect())
    assert rect.width() == pytest.approx(series.columns * series.pixel_spacing[1])
    assert rect.height() == pytest.approx(series.rows * series.pixel_spacing[0])
    full = window.view.view.viewRange()
    window.view.zoom(2.0)
    zoomed = window.view.view.viewRange()
    assert zoomed[0][1] - zoomed[0][0] == pytest.approx((full[0][1] - full[0][0]) / 2, rel=0.05)
    qtbot.keyClick(window, Qt.Key.Key_R)
    assert window.view.view.viewRange()[0] == pytest.approx(full[0], rel=0.02)
    assert window.view.orientation_labels() == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert window.volume_combo.isVisible() and window.volume_combo.count() == 10


def test_worker_classifies_the_whole_series_and_the_panel_shows_its_numbers(qtbot, window, model_dir):
    result = _open(qtbot, window, DICOM / "patient-positions" / "In" / "HFS")
    series = result.series[0]
    _wait_classified(qtbot, window, series)
    window.state.set_slice(5)
    reference = Classifier(model_dir, device="cpu")
    (expected,) = reference.predict([(series.pixels(5), series.window(5))])
    assert window.panel.bar_values() == [round(p * 1000) for p in expected.probabilities]
    assert window.panel.bar_texts()[expected.predicted_index] == f"{expected.probabilities[expected.predicted_index] * 100:.1f}%"
    assert window.panel.highlighted_class() == expected.predicted_index
    qtbot.waitUntil(lambda: len(window.panel.curve(0)[0]) == 35)  # the strip plot redraws shortly after results
    xs, ys = window.panel.curve(0)
    assert len(xs) == 35 and np.allclose(ys, [window.store.probabilities(window.state.model_id, series.key, 0, i)[0] for i in range(35)])
    verdict = window.store.series_verdict(window.state.model_id, series, window.state.model.card).text(window.state.display_names)
    assert verdict and verdict != "not classified yet"
    summary = window.panel.summary.text()
    assert summary.startswith("<b>Series verdict:</b> " + verdict[:1].upper() + verdict[1:]), summary
    assert "Per slice: " in summary, "the single slices' calls come after the verdict, labelled as such"
    legend, plot = window.panel.legend, window.panel.plot
    assert all(name in legend.text() for name in window.state.display_names.values())
    assert legend.isVisible() and not legend.geometry().intersects(plot.geometry()), "the legend sits outside the curves"


def test_clicking_the_strip_plot_jumps_to_a_slice(qtbot, window):
    result = _open(qtbot, window, DICOM / "patient-positions" / "In" / "HFS")
    _wait_classified(qtbot, window, result.series[0])
    window.panel.sliceClicked.emit(3)
    assert window.state.index == 3 and window.panel.cursor.value() == 4


@pytest.mark.parametrize("method", ["gradcam", "layercam", "shap", "occlusion", "tumour_occlusion"])
def test_heatmap_toggle_sets_an_overlay_with_the_slice_shape(qtbot, window, method):
    _open(qtbot, window, DICOM / "ge-epi-4d")
    presses = window.state.overlay_order().index(method)
    window.state.set_overlay_mode("none")
    with qtbot.waitSignal(window.overlayShown, timeout=TIMEOUT_MS, check_params_cb=lambda key: key is not None and key.method == method):
        for _ in range(presses):
            qtbot.keyClick(window, Qt.Key.Key_H)
    assert window.state.overlay_mode == method
    assert window.view.heatmap.shape == (window.state.series.rows, window.state.series.columns)
    assert window.view.overlay.image.shape[:2] == (window.state.series.rows, window.state.series.columns)
    assert window.view.overlay.mapRectToParent(window.view.overlay.boundingRect()) == window.view.image.mapRectToParent(window.view.image.boundingRect())
    window.state.set_overlay_mode("none")
    assert not window.view.overlay.isVisible()


def test_self_test_makes_a_heatmap_when_that_heatmap_is_already_shown(qtbot, window):
    from convnest_viewer.ui.self_test import _heatmap

    result = _open(qtbot, window, DICOM / "ge-epi-4d")
    _wait_classified(qtbot, window, result.series[0])
    with qtbot.waitSignal(window.overlayShown, timeout=TIMEOUT_MS, check_params_cb=lambda key: key is not None):
        window.state.set_overlay_mode("gradcam")  # as the settings restore it for a user who last looked at Grad-CAM
    qtbot.wait(500)  # nothing left to classify: no further refresh shows the map again
    summary = _heatmap(window, "gradcam", time.monotonic() + 30)
    assert summary["shape"] == [window.state.series.rows, window.state.series.columns]


def test_scrolling_past_slices_asks_for_a_heatmap_only_where_the_user_stops(qtbot, window, monkeypatch):
    result = _open(qtbot, window, DICOM / "ge-epi-4d")
    _wait_classified(qtbot, window, result.series[0])
    asked = []
    original = window.session.request_heatmap
    monkeypatch.setattr(window.session, "request_heatmap",
                        lambda series, volume, index, *rest: (asked.append(index), original(series, volume, index, *rest)))
    window.state.set_overlay_mode("gradcam")
    for index in range(1, 7):  # faster than a heatmap is asked for
        window.state.set_slice(index)
        qtbot.wait(20)
    with qtbot.waitSignal(window.overlayShown, timeout=TIMEOUT_MS, check_params_cb=lambda key: key is not None and key.index == 6):
        pass
    assert asked == [6]


def test_explaining_a_chosen_class(qtbot, window):
    _open(qtbot, window, DICOM / "ge-epi-4d")
    window.state.set_overlay_mode("gradcam")
    with qtbot.waitSignal(window.overlayShown, timeout=TIMEOUT_MS, check_params_cb=lambda key: key is not None and key.target_index == 2):
        window.model_dock.target_combo.setCurrentIndex(3)  # "No tumour" is class index 2
    assert window.state.overlay_target == 2
    assert "No tumour" in window.model_dock.overlay_status.text()
    with qtbot.waitSignal(window.overlayShown, timeout=TIMEOUT_MS,
                          check_params_cb=lambda key: key is not None and key.method == "tumour_occlusion"):
        window.state.set_overlay_mode("tumour_occlusion")
    assert window.model_dock.overlay_status.text() == "Tumour occlusion for No tumour"
    with qtbot.waitSignal(window.overlayShown, timeout=TIMEOUT_MS, check_params_cb=lambda key: key is not None and key.target_index == 0):
        window.model_dock.target_combo.setCurrentIndex(1)  # Glioma: tumour occlusion shows any tumour against none
    assert "any tumour against no tumour" in window.model_dock.overlay_status.text()


def test_switching_series_never_shows_the_first_series_results_on_the_second(qtbot, window):
    result = _open(qtbot, window, DICOM / "sagittal-mprage", DICOM / "patient-positions" / "In" / "HFS")
    first, second = result.series
    shown = []
    original = window.panel.show_slice

    def record(probabilities, not_assessed=None, alone=None):
        shown.append((window.state.series.key, window.state.volume, window.state.index, None if probabilities is None else np.array(probabilities)))
        original(probabilities, not_assessed, alone)

    window.panel.show_slice = record
    emitted = []  # on the worker thread, as the session announces each result (before Qt queues it)
    window.session.events.connect("slice_classified", lambda key, volume, index, probs: emitted.append(key))
    qtbot.waitUntil(lambda: len(window.store.classified(window.state.model_id, first.key)) >= 4, timeout=TIMEOUT_MS)
    window.browser.select(second.key)
    assert window.state.series is second
    switched_at = len(emitted)
    _wait_classified(qtbot, window, second)
    after_switch = list(emitted[switched_at:])
    last_second = max(i for i, key in enumerate(after_switch) if key == second.key)
    late_first = [i for i, key in enumerate(after_switch[:last_second]) if key == first.key]
    # the job checks for a newer one before announcing each result: at most the one it was announcing at the
    # switch gets through (results already queued to the main thread are counted before the switch, not here)
    assert len(late_first) <= 1, "the first series' job stopped announcing at the switch"
    for key, volume, index, probabilities in shown:
        if probabilities is not None:
            assert np.array_equal(probabilities, window.store.probabilities(window.state.model_id, key, volume, index))
    on_second = [entry for entry in shown if entry[0] == second.key]
    assert on_second and on_second[-1][3] is not None
    qtbot.waitUntil(lambda: len(window.panel.curve(0)[0]) == second.n_slices)
    _, ys = window.panel.curve(0)
    assert np.allclose(ys, [window.store.probabilities(window.state.model_id, second.key, 0, i)[0] for i in range(second.n_slices)])


def test_the_whole_study_is_classified_in_the_background_and_summarised(qtbot, window):
    result = _open(qtbot, window, DICOM / "patient-positions")
    first, second = result.series
    _wait_classified(qtbot, window, second)  # never shown: classified after the first one
    assert window.state.series is first
    # the folder holds two studies (two StudyInstanceUIDs) of one series each: a verdict per study
    qtbot.waitUntil(lambda: window.panel.study_summary.text().count("1 of 1 series classified") == 2, timeout=TIMEOUT_MS)
    assert "Study 1 of 2 (Rorden^Rorden_Prisma) verdict:" in window.panel.study_summary.text()
    item_text = window.browser.item_text(second.key)
    assert "→ " in item_text and "slices" in item_text
    card = window.state.card
    verdict = window.store.series_verdict(window.state.model_id, second, card)
    assert verdict.label in ("tumour", "no tumour"), "a finished series gets its verdict in the series list"
    assert window.browser.item_finding(second.key) == verdict.text(window.state.display_names)
    # shown whole, broken onto lines at spaces to fit the panel's width (Qt would cut a long line off)
    assert item_text.split("\n→ ", 1)[1].replace("\n", " ") == verdict.text(window.state.display_names)
    metrics, panel_width = window.browser.tree.fontMetrics(), window.browser.tree.viewport().width()
    assert all(metrics.horizontalAdvance(line) <= max(panel_width - THUMB, 80) for line in item_text.split("\n")[2:])
    tooltip = window.browser.item_tooltip(second.key)
    assert f"→ {verdict.text(window.state.display_names)}\nSeries UID {second.uid}" in tooltip
    assert verdict.text(window.state.display_names) in window.panel.study_summary.text().replace("&nbsp;", " ")


def test_files_read_with_a_note_are_listed_beside_the_skipped_ones(qtbot, window, tmp_path):
    import shutil

    from tests.paths import pydicom_file

    shutil.copy(pydicom_file("badVR.dcm"), tmp_path)
    shutil.copy(pydicom_file("MR_small.dcm"), tmp_path)
    (tmp_path / "cut.dcm").write_bytes(pydicom_file("MR_small.dcm").read_bytes()[:4000])
    result = _open(qtbot, window, tmp_path)
    assert len(result.series) == 2 and len(result.skipped) == 1 and len(result.notes) == 1
    rows = [window.browser.skipped.topLevelItem(i) for i in range(window.browser.skipped.topLevelItemCount())]
    assert [(r.text(0), r.text(1).split(":")[0]) for r in rows] == [
        ("cut.dcm", "truncated"), ("badVR.dcm", "read, with a note")]
    assert "Invalid value for VR IS: '1A'" in rows[1].toolTip(1)
    skipped = window.browser.skipped
    metrics, room = skipped.fontMetrics(), skipped.viewport().width() - skipped.columnWidth(0)
    for row in rows:  # every reason is readable in full: wrapped onto lines that fit its column, nothing cut
        assert row.text(1).replace("\n", " ") == row.data(1, Qt.ItemDataRole.UserRole + 1)
        assert all(metrics.horizontalAdvance(line) <= room for line in row.text(1).splitlines())
    assert "\n" in rows[0].text(1), "the truncation reason is longer than the column"
    assert window.browser.skipped_label.text() == "1 file(s) skipped, 1 read with a note"


def test_a_gap_in_a_series_is_marked_in_the_browser_and_on_the_slices_beside_it(qtbot, window, tmp_path):
    files = sorted((DICOM / "sagittal-mprage").glob("*.dcm"))
    for path in files[:100] + files[103:]:
        (tmp_path / path.name).symlink_to(path)
    result = _open(qtbot, window, tmp_path)
    assert "189 slices · 1 gap" in window.browser.tree.topLevelItem(0).child(0).child(0).text(0)
    window.state.set_slice(100)
    assert "⚠ Gap before this slice:\n2.7 mm, ~3 missing" in window.view.corner_text("bottom_left")
    window.state.set_slice(98)
    assert "Gap" not in window.view.corner_text("bottom_left")
    assert result.series[0].n_slices == 189


def test_a_folder_of_garbage_shows_a_message_and_the_app_stays_usable(qtbot, window, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("nothing here")
    (tmp_path / "noise.dcm").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "empty.dcm").write_bytes(b"")
    warnings = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *args, **kwargs: warnings.append(args[2]))
    result = _open(qtbot, window, tmp_path)
    assert result.series == [] and len(result.skipped) == 3
    assert warnings and "noise.dcm" in warnings[0] and "not a DICOM file" in warnings[0]
    assert window.browser.skipped.topLevelItemCount() == 3
    study = _open(qtbot, window, DICOM / "ge-epi-4d")
    assert window.state.series is study.series[0]
    window.state.set_slice(3)
    _open(qtbot, window, tmp_path)  # garbage again, now with a study open: nothing is lost
    assert "stays open" in warnings[-1]
    assert window.state.result is study and window.state.series is study.series[0] and window.state.index == 3
    assert window.browser.series_keys() == [study.series[0].key]
    assert np.array_equal(window.view.image.image, study.series[0].pixels(3))


def test_the_main_thread_stays_responsive_while_the_worker_runs(qtbot, tmp_path):
    window = MainWindow(model_dir=write_tiny_model(tmp_path / "tiny224", size=224), device="cpu")
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: bool(window.state.model_id), timeout=TIMEOUT_MS)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    result = _open(qtbot, window, DICOM / "sagittal-mprage")
    series = result.series[0]
    _wait_classified(qtbot, window, series)
    timer.stop()
    window.close()
    gaps = np.diff(ticks)
    assert len(ticks) >= 0.5 * (ticks[-1] - ticks[0]) / 0.02, "the 20 ms timer must keep firing"
    assert gaps.max() < 0.5, f"the event loop stalled for {gaps.max():.2f} s"


def test_tag_browser_search_filters_rows(qtbot, window):
    _open(qtbot, window, DICOM / "ge-epi-4d")
    window.show_tags()
    browser = window.tag_browser
    qtbot.addWidget(browser)
    total = browser.visible_rows()
    assert total > 50
    browser.search.setText("ImagePositionPatient")
    assert 1 <= browser.visible_rows() < total
    browser.search.setText("")
    assert browser.visible_rows() == total


def test_screenshot_and_report_export(qtbot, window, tmp_path):
    result = _open(qtbot, window, DICOM / "ge-epi-4d")
    shot = window.export_screenshot(tmp_path / "view.png")
    import cv2

    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (window.view.height(), window.view.width())
    with qtbot.waitSignal(window.worker.reportWritten, timeout=TIMEOUT_MS) as blocker:
        window.request_report(tmp_path / "report.html", False)
    html_path, csv_path, error = blocker.args
    assert error == ""
    html = open(html_path, encoding="utf-8").read()
    assert "For research use, not for diagnosis" in html and "data:image/png;base64," in html
    import csv

    with open(csv_path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    first_volume = {row["slice"] for row in rows if row["volume"] == "1"}
    assert len(first_volume) == 15, "every slice of the first volume is classified for the report"
    # the background worker may already have classified slices of later volumes: they are reported too
    assert 15 <= len(rows) <= len(window.store.classified(window.state.model_id, result.series[0].key))


def test_recent_studies_are_remembered(qtbot, window):
    _open(qtbot, window, DICOM / "ge-epi-4d")
    from convnest_viewer.ui.settings import recent_studies

    assert recent_studies(window.settings)[0] == [str(DICOM / "ge-epi-4d")]
    assert window.recent_menu.actions()[0].text() == "ge-epi-4d"


def test_closing_while_the_worker_is_busy_is_clean(qtbot, window):
    result = _open(qtbot, window, DICOM / "sagittal-mprage")
    window.state.set_overlay_mode("gradcam")
    window.close()
    assert window.worker is None
    qtbot.wait(1500)  # late results from the stopped worker must not raise (pytest-qt fails on any)
    assert len(window.store.classified(window.state.model_id, result.series[0].key)) < result.series[0].n_slices


def test_no_model_installed_still_views_images(qtbot, tmp_path):
    win = MainWindow(model_dir=tmp_path / "no-such-model", device="cpu")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.state.model_error is not None, timeout=TIMEOUT_MS)
    assert "No classifier available" in win.panel.title.text()
    result = _open(qtbot, win, DICOM / "ge-epi-4d")
    assert win.state.series is result.series[0] and win.view.image.image is not None
    win.close()


def test_self_test_runs_the_demo_study_offscreen(model_dir, tmp_path):
    shot = tmp_path / "self-test.png"
    completed = subprocess.run([sys.executable, "-m", "convnest_viewer.app", "--self-test", "--model", str(model_dir),
                                "--device", "cpu", "--screenshot", str(shot)],
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    summary = json.loads(completed.stdout[completed.stdout.index("{"):])
    assert summary["ok"] and summary["paths"] == [str(demo_study_dir())]
    assert [s["classified"] for s in summary["series"]] == [6, 6, 6, 6]
    assert summary["heatmaps"]["gradcam"]["shape"] == [224, 224] and summary["heatmaps"]["shap"]["shape"] == [224, 224]
    assert shot.stat().st_size > 10_000


def test_self_test_fails_cleanly_on_nothing_usable(model_dir, tmp_path):
    (tmp_path / "x.txt").write_text("no images")
    completed = subprocess.run([sys.executable, "-m", "convnest_viewer.app", "--self-test", str(tmp_path), "--model", str(model_dir),
                                "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1
    assert json.loads(completed.stdout[completed.stdout.index("{"):])["ok"] is False


def test_a_study_opened_at_launch_is_shown_before_the_model_starts_loading(qtbot, model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CONVNEST_SETTINGS_FILE", str(tmp_path / "settings.ini"))
    win = MainWindow(model_dir=model_dir, device="cpu")
    qtbot.addWidget(win)
    win.show()
    win.open_paths([str(DICOM / "ge-epi-4d")])  # as convnest-viewer PATH does, before its event loop runs
    sessions_at_first_slice = []
    win.sliceShown.connect(lambda *_: sessions_at_first_slice.append(win.session))
    qtbot.waitUntil(lambda: bool(sessions_at_first_slice), timeout=TIMEOUT_MS)
    assert sessions_at_first_slice[0] is None, "importing torch would have slowed the first slice down"
    qtbot.waitUntil(lambda: bool(win.state.model_id), timeout=TIMEOUT_MS)
    _wait_classified(qtbot, win, win.state.series)
    win.close()


def test_a_large_folder_shows_a_preview_slice_while_it_indexes_and_then_the_study(qtbot, window):
    order = []
    window.previewShown.connect(lambda: order.append(("preview", window.view.image.image.shape,
                                                      window.view.corner_text("bottom_left"))))
    window.studyLoaded.connect(lambda _result: order.append(("loaded",)))
    result = _open(qtbot, window, DICOM / "sagittal-mprage")
    assert [event[0] for event in order] == ["preview", "loaded"]
    assert order[0][1] == (result.series[0].rows, result.series[0].columns)
    assert "Indexing" in order[0][2]
    assert window.view.corner_text("bottom_left").startswith("Slice 97/192"), "the study replaces the preview"
    assert "MR · Se 5 · T1 · *tfl3d1_16ns" in window.view.corner_text("top_right"), "the contrast read from its names"
    order.clear()
    _open(qtbot, window, DICOM / "ge-epi-4d")  # a study on screen stays until the next one has loaded
    assert [event[0] for event in order] == ["loaded"]


def test_a_long_finding_is_wrapped_to_the_series_panel_width_not_cut_off(qtbot):
    from convnest_viewer.io import load_study

    browser = SeriesBrowser()
    qtbot.addWidget(browser)
    result = load_study([str(DICOM / "sagittal-mprage")])
    browser.set_result(result)
    browser.resize(260, 500)
    browser.show()
    qtbot.waitExposed(browser)
    key = result.series[0].key
    finding = "Tumour, type uncertain on slices 15-21 of 54 (glioma called; the model knows meningioma and pituitary only from T1c)"
    browser.set_finding(key, finding)
    lines = browser.item_text(key).split("\n")
    finding_lines = lines[lines.index(next(line for line in lines if line.startswith("→ "))):]
    assert len(finding_lines) > 1 and " ".join(finding_lines) == "→ " + finding
    advance, width = browser.tree.fontMetrics().horizontalAdvance, browser.tree.viewport().width()
    assert all(advance(line) <= width - THUMB for line in finding_lines)
    browser.resize(900, 500)  # wider: fewer lines, the same words
    qtbot.waitUntil(lambda: len(browser.item_text(key).split("\n")) < len(lines))
    assert browser.item_finding(key) == finding and browser.item_text(key).endswith(finding.split()[-1])


def test_cycles_holding_qt_objects_are_collected_in_the_gui_thread_not_in_a_worker(qtbot, window):
    import gc
    import threading
    import weakref

    from PySide6.QtCore import QObject

    assert not gc.isenabled(), "the window turns automatic collection off (a worker thread could run it)"

    class Holder:
        def __init__(self) -> None:
            self.qobject = QObject()
            self.itself = self  # a cycle: only the cyclic collector frees it

    freed_in = []
    holder = Holder()
    weakref.finalize(holder, lambda: freed_in.append(threading.current_thread()))
    del holder

    kept = []

    def allocate() -> None:  # what a study loader does: many objects that stay (its index), which would start
        kept.extend([[]] for _ in range(300_000))  # automatic collections; the GUI timer collects once they count

    worker = threading.Thread(target=allocate)
    worker.start()
    worker.join()
    qtbot.waitUntil(lambda: bool(freed_in), timeout=5000)  # the GUI thread's timer collects it
    assert freed_in == [threading.main_thread()]
    assert len(kept) == 300_000


def test_model_menu_lists_the_installed_models_and_switches_between_them(qtbot, tmp_path, monkeypatch):
    resources = tmp_path / "resources"
    write_tiny_model(resources / "models" / "cpu-small", name="cpu-small")
    write_tiny_model(resources / "models" / "gpu-large", seed=1, name="gpu-large")
    (resources / "models" / "DEFAULT").write_text("cpu-small\n")
    (resources / "models" / "broken").mkdir()
    (resources / "models" / "broken" / "model_card.json").write_text("{not json")
    monkeypatch.setenv("CONVNEST_RESOURCES", str(resources))
    monkeypatch.setenv("CONVNEST_SETTINGS_FILE", str(tmp_path / "settings.ini"))
    win = MainWindow(device="cpu")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.state.model is not None, timeout=TIMEOUT_MS)
    assert win.state.model.name == "cpu-small"
    labels = {folder.name: action.text() for folder, action in win.model_actions.items()}
    assert labels == {"cpu-small": "cpu-small (test_convnext, 64 px, default)", "gpu-large": "gpu-large (test_convnext, 64 px)"}
    assert [f.name for f, a in win.model_actions.items() if a.isChecked()] == ["cpu-small"]
    _open(qtbot, win, DICOM / "ge-epi-4d")
    _wait_classified(qtbot, win, win.state.series)
    small_id = win.state.model_id
    next(a for f, a in win.model_actions.items() if f.name == "gpu-large").trigger()
    qtbot.waitUntil(lambda: win.state.model is not None and win.state.model.name == "gpu-large", timeout=TIMEOUT_MS)
    assert win.state.model_id != small_id
    _wait_classified(qtbot, win, win.state.series)  # the open series is classified again by the new model
    assert [f.name for f, a in win.model_actions.items() if a.isChecked()] == ["gpu-large"]
    win.close()
    again = MainWindow(device="cpu")  # the choice is remembered
    qtbot.addWidget(again)
    again.show()
    qtbot.waitUntil(lambda: again.state.model is not None, timeout=TIMEOUT_MS)
    assert again.state.model.name == "gpu-large"
    again.close()
