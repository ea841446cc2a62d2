"""The viewer under stress: a study opened mid-inference, a 1-slice series, 2,000 small slices, 16-bit 1024 x 1024."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pydicom
from PySide6.QtCore import Qt

from convnest_viewer.io import PIXEL_CACHE
from tests.paths import DICOM, pydicom_file
from tests.test_viewer import TIMEOUT_MS, _open, model_dir, window  # noqa: F401 - the viewer tests' fixtures

MPRAGE = sorted((DICOM / "sagittal-mprage").glob("*.dcm"))


def _classified(win, series) -> int:
    return len(win.store.finished(win.state.model_id, series.key))


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def _write_series(folder, count: int, size: int, dtype=np.uint16, scale: float = 1.0) -> None:
    """Write `count` slices of one series, built from the real MPRAGE's pixels resized to size x size."""
    folder.mkdir()
    template = pydicom.dcmread(MPRAGE[96])
    series_uid = pydicom.uid.generate_uid()
    for index in range(count):
        source = pydicom.dcmread(MPRAGE[index % len(MPRAGE)])
        pixels = cv2.resize(source.pixel_array.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
        ds = copy.deepcopy(template)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = index + 1
        ds.Rows = ds.Columns = size
        ds.BitsStored, ds.HighBit = 16, 15  # the full 16 bits
        for keyword in ("WindowCenter", "WindowWidth"):  # the scanner's window fits 12 bits: use the slice's own
            if keyword in ds:
                delattr(ds, keyword)
        ds.PixelSpacing = [220.0 / size, 220.0 / size]
        position = [float(v) for v in template.ImagePositionPatient]
        position[0] += 0.5 * index  # sagittal: step along x
        ds.ImagePositionPatient = position
        ds.PixelData = (pixels * scale).clip(0, np.iinfo(dtype).max).astype(dtype).tobytes()
        ds.save_as(folder / f"{index:05d}.dcm")


def test_a_second_study_opened_while_inference_runs_replaces_the_first_cleanly(qtbot, window):
    first = _open(qtbot, window, DICOM / "sagittal-mprage").series[0]
    qtbot.waitUntil(lambda: _classified(window, first) >= 8, timeout=TIMEOUT_MS)
    assert _classified(window, first) < first.n_slices, "still classifying when the second study opens"
    second_result = _open(qtbot, window, DICOM / "patient-positions" / "In" / "HFS")
    second = second_result.series[0]
    assert window.state.series is second and window.browser.series_keys() == [second.key]
    qtbot.waitUntil(lambda: _classified(window, second) == second.n_slices, timeout=TIMEOUT_MS)
    frozen = _classified(window, first)
    qtbot.wait(1000)
    assert _classified(window, first) == frozen < first.n_slices, "work for the closed study stopped"
    window.state.set_slice(5)
    expected = window.store.probabilities(window.state.model_id, second.key, 0, 5)
    assert window.panel.bar_values() == [round(p * 1000) for p in expected]


def test_a_one_slice_series_scrolls_classifies_and_explains(qtbot, window):
    series = _open(qtbot, window, pydicom_file("MR_small.dcm")).series[0]
    assert series.n_slices == 1 and window.state.index == 0
    for key in (Qt.Key.Key_Down, Qt.Key.Key_Up, Qt.Key.Key_End, Qt.Key.Key_Home, Qt.Key.Key_PageDown):
        qtbot.keyClick(window, key)
        assert window.state.index == 0
    qtbot.waitUntil(lambda: _classified(window, series) == 1, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(window.overlayShown, timeout=TIMEOUT_MS, check_params_cb=lambda key: key is not None):
        window.state.set_overlay_mode("gradcam")
    assert window.view.overlay.image.shape[:2] == (64, 64)


def test_two_thousand_small_slices_open_scroll_and_classify_in_bounded_memory(qtbot, window, tmp_path):
    folder = tmp_path / "long"
    _write_series(folder, 2000, 48)
    before = _rss_bytes()
    series = _open(qtbot, window, folder).series[0]
    assert series.n_slices == 2000 and series.gaps() == []
    qtbot.keyClick(window, Qt.Key.Key_End)
    assert window.state.index == 1999
    for _ in range(50):
        qtbot.keyClick(window, Qt.Key.Key_PageUp)
    qtbot.waitUntil(lambda: _classified(window, series) == 2000, timeout=TIMEOUT_MS)
    assert PIXEL_CACHE.nbytes <= PIXEL_CACHE.max_bytes
    assert _rss_bytes() - before < 400 * 1024**2


def test_a_16_bit_1024_square_series_opens_classifies_and_explains_in_bounded_memory(qtbot, window, tmp_path):
    folder = tmp_path / "large"
    _write_series(folder, 24, 1024, scale=40.0)  # stored values up to about 40,000: the full 16 bits
    before = _rss_bytes()
    series = _open(qtbot, window, folder).series[0]
    assert (series.n_slices, series.rows, series.columns) == (24, 1024, 1024)
    assert series.pixels(12).max() > 4 * 4096, "values beyond 14 bits are read"
    qtbot.waitUntil(lambda: _classified(window, series) == 24, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(window.overlayShown, timeout=TIMEOUT_MS, check_params_cb=lambda key: key is not None):
        window.state.set_overlay_mode("gradcam")
    assert window.view.overlay.image.shape[:2] == (1024, 1024)
    for index in range(24):
        window.state.set_slice(index)
    assert PIXEL_CACHE.nbytes <= PIXEL_CACHE.max_bytes
    assert _rss_bytes() - before < 700 * 1024**2
