"""The loader on real scanner DICOM from ../shared/dicom."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from convnest_viewer.io import load_study
from tests.paths import DICOM


def _positions_along_normal(series, volume=0):
    return np.array([series.slice_location(i, volume) for i in range(series.n_slices)])


def test_sagittal_mprage_is_one_series_of_192_ordered_slices():
    result = load_study([DICOM / "sagittal-mprage"])
    assert len(result.series) == 1
    series = result.series[0]
    assert (series.n_slices, series.n_volumes, series.rows, series.columns) == (192, 1, 256, 256)
    steps = np.diff(_positions_along_normal(series))
    assert np.all(steps > 0), "slices must be ordered along the normal"
    assert np.allclose(steps, steps[0], atol=1e-3)
    letters = series.orientation_letters()
    # a (slightly oblique) sagittal slice: anterior/posterior across, superior/inferior down
    assert letters["left"][0] == "A" and letters["right"][0] == "P"
    assert letters["top"][0] == "S" and letters["bottom"][0] == "I"
    assert series.pixel_spacing == pytest.approx((0.859375, 0.859375))
    # non-image files beside the series are reported, not fatal
    assert {s.path.name for s in result.skipped} == {"LICENSE", "README.md"}
    assert all(s.reason == "not a DICOM file" for s in result.skipped)


def test_mprage_pixels_match_pydicom_and_window_comes_from_voi():
    series = load_study([DICOM / "sagittal-mprage"]).series[0]
    ref = series.slice_ref(100)
    ds = pydicom.dcmread(ref.path)
    expected = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    assert np.array_equal(series.pixels(100), expected)
    center = ds.WindowCenter[0] if isinstance(ds.WindowCenter, pydicom.multival.MultiValue) else ds.WindowCenter
    assert series.window(100).center == pytest.approx(float(center))


def test_enhanced_multiframe_file_is_one_series_of_96_frames():
    result = load_study([DICOM / "enhanced-multiframe"])
    assert len(result.series) == 1
    series = result.series[0]
    assert (series.n_slices, series.n_volumes) == (96, 1)
    assert len(series.sources()) == 1, "all frames come from the one enhanced file"
    frames = [series.slice_ref(i).frame for i in range(series.n_slices)]
    assert sorted(frames) == list(range(96))
    assert np.all(np.diff(_positions_along_normal(series)) > 0)
    assert series.pixels(48).shape == (series.rows, series.columns) == (128, 128)
    assert series.pixel_spacing == pytest.approx((2.0, 2.0))
    assert series.orientation_letters() == {"left": "A", "right": "P", "top": "S", "bottom": "I"}


def test_enhanced_frame_pixels_equal_the_files_frames():
    series = load_study([DICOM / "enhanced-multiframe"]).series[0]
    ref = series.slice_ref(10)
    all_frames = pydicom.dcmread(ref.path).pixel_array
    assert np.array_equal(series.pixels(10), all_frames[ref.frame].astype(np.float32))


def test_ge_epi_4d_splits_into_10_volumes_of_15_positions():
    result = load_study([DICOM / "ge-epi-4d"])
    assert len(result.series) == 1
    series = result.series[0]
    assert (series.n_slices, series.n_volumes) == (15, 10)
    first = _positions_along_normal(series, 0)
    assert np.all(np.diff(first) > 0)
    for volume in range(series.n_volumes):
        assert np.allclose(_positions_along_normal(series, volume), first), "every volume covers the same positions"
    # the scanner wrote volume after volume: instances 1-15 are the first volume, 136-150 the last
    assert sorted(ref.instance_number for ref in series.volumes[0]) == list(range(1, 16))
    assert sorted(ref.instance_number for ref in series.volumes[9]) == list(range(136, 151))
    assert series.orientation_letters() == {"left": "R", "right": "L", "top": "A", "bottom": "P"}


@pytest.mark.parametrize("position", ["HFS", "HFP"])
def test_patient_position_series_have_35_slices_and_sagittal_letters(position):
    folder = next((DICOM / "patient-positions" / "In" / position).iterdir())
    result = load_study([folder])
    assert len(result.series) == 1
    series = result.series[0]
    assert series.n_slices == 35 and series.n_volumes == 1
    assert np.all(np.diff(_positions_along_normal(series)) > 0)
    assert series.orientation_letters() == {"left": "A", "right": "P", "top": "S", "bottom": "I"}


def test_both_patient_position_series_load_from_one_folder():
    result = load_study([DICOM / "patient-positions"])
    assert [s.n_slices for s in result.series] == [35, 35]
    assert len({s.uid for s in result.series}) == 2


def test_all_nine_transfer_syntaxes_decode_to_identical_pixels():
    result = load_study([DICOM / "transfer-syntaxes"])
    assert len(result.series) == 9, "one SeriesInstanceUID, nine series numbers: nine series"
    assert len({s.key for s in result.series}) == 9
    reference = result.series[0].pixels(0)
    assert reference.shape == (384, 384) and reference.max() > 0
    for series in result.series[1:]:
        assert np.array_equal(series.pixels(0), reference), f"{series.slice_ref(0).path.name} differs"
    syntaxes = {pydicom.dcmread(s.slice_ref(0).path, stop_before_pixels=True).file_meta.TransferSyntaxUID for s in result.series}
    assert len(syntaxes) == 7  # explicit/implicit LE, BE, RLE, JPEG lossless, JPEG-LS, JPEG 2000


def test_display_metadata_is_read():
    series = load_study([DICOM / "ge-epi-4d"]).series[0]
    assert series.modality == "MR"
    assert series.description == "Axial EPI-FMRI (Interleaved I to S)"
    assert series.study.uid and series.patient.key
    assert series.slice_thickness == pytest.approx(3.0)
    rows = series.tags(0)
    keywords = {row.keyword for row in rows}
    assert {"PatientName", "SeriesDescription", "ImagePositionPatient", "TransferSyntaxUID"} <= keywords
