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
    reference = [result.series[0].pixels(i) for i in range(35)]
    assert reference[0].shape == (64, 64) and min(r.max() for r in reference) > 0
    for series in result.series[1:]:
        for index in range(35):
            assert np.array_equal(series.pixels(index), reference[index]), f"{series.slice_ref(0).path.name} differs"
    syntaxes = {pydicom.dcmread(s.slice_ref(0).path, stop_before_pixels=True).file_meta.TransferSyntaxUID for s in result.series}
    assert len(syntaxes) == 7  # explicit/implicit LE, BE, RLE, JPEG lossless, JPEG-LS, JPEG 2000


def test_a_siemens_mosaic_is_split_into_its_slices_with_positions_along_the_csa_normal():
    """1.dcm: a 384 x 384 EPI mosaic of 35 slices (6 x 6 tiles of 64 x 64), 3.25 mm pixels, 3.6 mm apart."""
    [series] = load_study([DICOM / "transfer-syntaxes" / "In" / "1.dcm"]).series
    assert (series.n_slices, series.rows, series.columns) == (35, 64, 64)
    mosaic = pydicom.dcmread(DICOM / "transfer-syntaxes" / "In" / "1.dcm").pixel_array
    assert np.array_equal(series.pixels(0), mosaic[:64, :64]) and np.array_equal(series.pixels(7), mosaic[64:128, 64:128])
    assert np.array_equal(series.pixels(34), mosaic[320:384, 256:320]), "tile 35: row 6, column 5"
    positions = np.array([series.slice_ref(i).position for i in range(35)])
    # the corner (-624, -661.83, -6.53) moves half the unused border, (384 - 64) / 2 = 160 pixels, along rows and columns
    corner = np.array([-624, -661.82658862211, -6.5255017698948])
    row_cosines, column_cosines = np.array([1, -1e-16, 0]), np.array([1e-16, 0.99415096409965, -0.1079993545339])
    assert positions[0] == pytest.approx(corner + 160 * 3.25 * (row_cosines + column_cosines), abs=1e-6)
    steps = np.diff(positions, axis=0)
    assert np.allclose(steps, 3.6 * np.array([0.0, 0.10799944, 0.99415095]), atol=1e-5), "SliceNormalVector from CSA"
    assert np.allclose(np.diff([series.slice_location(i, 0) for i in range(35)]), 3.6, atol=1e-6)


def test_display_metadata_is_read():
    series = load_study([DICOM / "ge-epi-4d"]).series[0]
    assert series.modality == "MR"
    assert series.description == "Axial EPI-FMRI (Interleaved I to S)"
    assert series.study.uid and series.patient.key
    assert series.slice_thickness == pytest.approx(3.0)
    rows = series.tags(0)
    keywords = {row.keyword for row in rows}
    assert {"PatientName", "SeriesDescription", "ImagePositionPatient", "TransferSyntaxUID"} <= keywords


def test_a_series_with_missing_slices_marks_the_gap(tmp_path):
    files = sorted((DICOM / "sagittal-mprage").glob("*.dcm"))
    for path in files[:100] + files[103:]:  # slices 101-103 lost in transfer
        (tmp_path / path.name).symlink_to(path)
    [series] = load_study([tmp_path]).series
    assert series.n_slices == 189
    [gap] = series.gaps()
    assert (gap.after, gap.missing_slices) == (99, 3) and gap.missing_mm == pytest.approx(3 * 0.9, abs=0.01)  # 0.9 mm slices
    assert series.gap_text(100) == "Gap of 2.7 mm (about 3 slices missing) before this slice"
    assert series.gap_text(99).endswith("after this slice") and series.gap_text(50) is None
    assert load_study([DICOM / "sagittal-mprage"]).series[0].gaps() == [], "the complete series has none"


def test_mixed_image_sizes_in_one_series_are_split_and_named_by_size(tmp_path):
    files = sorted((DICOM / "sagittal-mprage").glob("*.dcm"))[90:96]
    for path in files[:3]:
        (tmp_path / path.name).symlink_to(path)
    for path in files[3:]:  # the same series, stored at half the matrix
        ds = pydicom.dcmread(path)
        half = ds.pixel_array[::2, ::2].copy()
        ds.Rows, ds.Columns = half.shape
        ds.PixelData = half.tobytes()
        ds.PixelSpacing = [float(v) * 2 for v in ds.PixelSpacing]
        ds.save_as(tmp_path / path.name)
    result = load_study([tmp_path])
    assert sorted((s.n_slices, s.rows, s.columns) for s in result.series) == [(3, 128, 128), (3, 256, 256)]
    assert len({s.key for s in result.series}) == 2
    descriptions = sorted(s.description for s in result.series)
    assert descriptions[0].endswith("(128×128)") and descriptions[1].endswith("(256×256)")
    assert all(s.pixels(1).shape == (s.rows, s.columns) for s in result.series)
