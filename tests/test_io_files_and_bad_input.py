"""The loader on pydicom's bundled files, NIfTI, dataset JPEGs, DICOMDIR and broken input."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from convnest_viewer.cli import main as cli_main
from convnest_viewer.io import PixelCache, load_study
from convnest_viewer.io.pixels import PIXEL_CACHE
from tests.paths import BRAIN_TUMOR_MRI, DICOM, pydicom_file

MR_SMALL_VARIANTS = [
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm",
]


def test_pydicom_mr_small_variants_decode_to_the_same_pixels():
    reference = pydicom.dcmread(pydicom_file("MR_small.dcm")).pixel_array.astype(np.float32)
    for name in MR_SMALL_VARIANTS:
        result = load_study([pydicom_file(name)])
        assert not result.skipped, f"{name}: {result.skipped}"
        (series,) = result.series
        assert np.array_equal(series.pixels(0), reference), name


def test_truncated_file_is_skipped_and_the_rest_loads():
    result = load_study([pydicom_file("MR_truncated.dcm"), pydicom_file("MR_small.dcm")])
    assert len(result.series) == 1
    (skipped,) = result.skipped
    assert skipped.path.name == "MR_truncated.dcm"
    assert skipped.reason.startswith("truncated")


def test_non_image_objects_are_skipped_with_a_reason():
    result = load_study([pydicom_file("test-SR.dcm"), pydicom_file("rtplan.dcm"), pydicom_file("liver_1frame.dcm")])
    assert result.series == []
    reasons = {s.path.name: s.reason for s in result.skipped}
    assert reasons["test-SR.dcm"].startswith("structured report")
    assert reasons["rtplan.dcm"].startswith("RT plan")
    assert reasons["liver_1frame.dcm"].startswith("segmentation object")


def test_garbage_in_a_study_folder_is_reported_and_the_series_still_opens(tmp_path):
    source = next((DICOM / "patient-positions" / "In" / "HFS").iterdir())
    study = tmp_path / "study"
    shutil.copytree(source, study)
    (study / "notes.txt").write_text("not an image")
    (study / "empty.dcm").write_bytes(b"")
    (study / "noise.dcm").write_bytes(np.random.default_rng(0).bytes(4096))
    first = sorted(study.glob("*.dcm"))[3]
    cut = study / "cut.dcm"
    cut.write_bytes(first.read_bytes()[:-5000])  # a download that stopped inside the pixel data
    header_cut = study / "header_cut.dcm"
    header_cut.write_bytes(first.read_bytes()[:20000])  # stopped inside the header
    (study / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0not really a jpeg")
    no_pixels = pydicom.dcmread(first)
    del no_pixels.PixelData
    no_pixels.SOPInstanceUID = pydicom.uid.generate_uid()
    no_pixels.save_as(study / "header_only.dcm")
    result = load_study([study])
    assert len(result.series) == 1 and result.series[0].n_slices == 35
    reasons = {s.path.name: s.reason for s in result.skipped}
    assert reasons["notes.txt"] == "not a DICOM file"
    assert reasons["noise.dcm"] == "not a DICOM file"
    assert "empty.dcm" in reasons
    assert reasons["cut.dcm"].startswith("truncated")
    assert reasons["broken.jpg"].startswith("not a decodable image")
    assert reasons["header_only.dcm"].startswith("no pixel data")
    assert "truncated" in reasons["header_cut.dcm"]


def test_missing_path_and_unsupported_encoding_are_reported(tmp_path):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2: no decoder exists here
    ds.save_as(tmp_path / "mpeg.dcm", enforce_file_format=True)
    result = load_study([tmp_path / "does-not-exist", tmp_path / "mpeg.dcm"])
    reasons = [s.reason for s in result.skipped]
    assert reasons[0] == "no such file or folder"
    assert reasons[1].startswith("unsupported encoding")


def test_duplicate_instances_are_loaded_once(tmp_path):
    source = pydicom_file("MR_small.dcm")
    shutil.copy(source, tmp_path / "a.dcm")
    shutil.copy(source, tmp_path / "b.dcm")
    result = load_study([tmp_path])
    assert result.series[0].n_slices == 1
    assert result.skipped[0].reason.startswith("duplicate of a.dcm")


def test_rescale_and_monochrome1_are_applied(tmp_path):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    raw = ds.pixel_array.astype(np.float32)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter, ds.WindowWidth = 1000, 800
    ds.save_as(tmp_path / "mono1.dcm")
    (series,) = load_study([tmp_path / "mono1.dcm"]).series
    assert ds.PixelRepresentation == 1 and ds.BitsStored == 16  # signed: stored range -32768..32767
    low, high = -(2**15) * 2 - 100.0, (2**15 - 1) * 2 - 100.0  # that range after rescale
    pivot = low + high
    assert np.array_equal(series.pixels(0), np.float32(pivot) - (raw * 2 - 100))
    assert np.argmax(raw) == np.argmin(series.pixels(0)), "the brightest stored pixel is shown darkest"
    window = series.window(0)
    # the window moves with the values, so it still covers the same tissue
    assert window.center == pytest.approx(pivot - 1000) and window.width == pytest.approx(800)


def test_percentile_window_when_the_file_has_no_voi(tmp_path):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    del ds.WindowCenter
    del ds.WindowWidth
    ds.save_as(tmp_path / "novoi.dcm")
    (series,) = load_study([tmp_path / "novoi.dcm"]).series
    values = series.pixels(0)
    window = series.default_window()
    assert window.low == pytest.approx(np.percentile(values, 0.5))
    assert window.high == pytest.approx(np.percentile(values, 99.5))


def test_dicomdir_opens_the_series_it_references():
    dicomdir = pydicom_file("dicomdirtests/DICOMDIR")
    result = load_study([dicomdir])
    ds = pydicom.dcmread(dicomdir)
    image_records = [r for r in ds.DirectoryRecordSequence if r.DirectoryRecordType == "IMAGE"]
    assert sum(s.n_slices * s.n_volumes for s in result.series) == len(image_records)
    tree = result.tree()
    patients = [r for r in ds.DirectoryRecordSequence if r.DirectoryRecordType == "PATIENT"]
    studies = [r for r in ds.DirectoryRecordSequence if r.DirectoryRecordType == "STUDY"]
    assert len(tree) == len(patients) == 2
    assert sum(len(p.studies) for p in tree) == len(studies)


def test_scanning_reads_headers_only_and_pixels_are_cached_with_a_bound():
    PIXEL_CACHE.clear()
    series = load_study([DICOM / "sagittal-mprage"]).series[0]
    assert len(PIXEL_CACHE) == 0, "scanning must not decode pixels"
    first = series.pixels(0)
    assert len(PIXEL_CACHE) == 1 and series.pixels(0) is first
    small = PixelCache(max_bytes=3 * first.nbytes)
    for index in range(10):
        small.get_or_load(index, lambda: np.zeros_like(first))
    assert len(small) == 3 and small.nbytes <= 3 * first.nbytes
    assert not first.flags.writeable, "cached arrays are shared, so read-only"


def test_a_preview_slice_comes_before_the_other_headers_and_no_file_is_read_twice(monkeypatch):
    import convnest_viewer.io.loader as loader

    reads, events = [], []
    read_one = loader._read_one
    monkeypatch.setattr(loader, "_read_one", lambda path: (reads.append(path), read_one(path))[1])
    result = load_study([DICOM / "sagittal-mprage"], progress=lambda done, total: events.append(done),
                        preview=events.append)
    (preview,) = [event for event in events if not isinstance(event, int)]
    assert events[0] is preview, "the preview must come before any other header is read"
    assert len(reads) == len(set(reads)) == 194  # 192 slices, LICENSE, README: each read once
    series = result.series[0]
    paths = [ref.path for ref in series.volumes[0]]
    shown = paths.index(preview.series.slice_ref(preview.index).path)
    assert abs(shown - series.n_slices // 2) <= 2, "the preview is near the slice the viewer opens on"
    assert np.array_equal(preview.values, series.pixels(shown))
    assert preview.window.width > 0
    plain = load_study([DICOM / "sagittal-mprage"])
    assert [ref.path for ref in plain.series[0].volumes[0]] == paths
    assert [s.key for s in plain.series] == [s.key for s in result.series]


def test_no_preview_for_a_single_file_or_a_compressed_slice():
    previews = []
    load_study([pydicom_file("MR_small.dcm")], preview=previews.append)
    load_study([pydicom_file("MR_small_RLE.dcm"), pydicom_file("MR_small_jp2klossless.dcm")], preview=previews.append)
    assert previews == []


def test_nifti_written_by_simpleitk_loads_with_the_same_pixels_and_geometry(tmp_path):
    folder = next((DICOM / "patient-positions" / "In" / "HFS").iterdir())
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    sitk.WriteImage(reader.Execute(), str(tmp_path / "t1.nii.gz"))
    dicom_series = load_study([folder]).series[0]
    result = load_study([tmp_path / "t1.nii.gz"])
    (series,) = result.series
    assert series.kind == "nifti" and (series.n_slices, series.rows, series.columns) == (35, 256, 256)
    assert series.orientation_letters() == dicom_series.orientation_letters()
    for index in (0, 17, 34):
        assert np.array_equal(series.pixels(index), dicom_series.pixels(index))
        assert series.slice_location(index) == pytest.approx(dicom_series.slice_location(index), abs=1e-3)


def test_dataset_jpegs_open_as_single_slice_series():
    files = sorted((BRAIN_TUMOR_MRI / "Testing" / "glioma").glob("*.jpg"))[:3]
    result = load_study(files)
    assert [s.n_slices for s in result.series] == [1, 1, 1]
    series = result.series[0]
    assert series.kind == "raster" and (series.rows, series.columns) == (224, 224)
    expected = cv2.imread(str(files[0]), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    assert np.abs(series.pixels(0) - expected).max() <= 1.0
    assert (series.window(0).low, series.window(0).high) == (0.0, 255.0)


def test_info_json_reports_the_fixture_counts(capsys):
    paths = [DICOM / "sagittal-mprage", DICOM / "enhanced-multiframe", DICOM / "ge-epi-4d", DICOM / "patient-positions"]
    assert cli_main(["info", "--json", *map(str, paths)]) == 0
    report = json.loads(capsys.readouterr().out)
    counts = [(s["slices"], s["volumes"]) for s in report["series"]]
    assert counts == [(192, 1), (96, 1), (15, 10), (35, 1), (35, 1)]
    assert {"uid", "description", "modality", "slices", "volumes", "rows", "columns", "gaps"} == set(report["series"][0])
    assert all(s["gaps"] == [] for s in report["series"]), "the fixtures are complete"
    assert all(set(item) == {"path", "reason"} for item in report["skipped"])


def test_info_table_lists_series_and_skips(capsys):
    assert cli_main(["info", str(DICOM / "ge-epi-4d")]) == 0
    out = capsys.readouterr().out
    assert "Axial EPI-FMRI" in out and "64x64" in out and "not a DICOM file" in out


def test_info_on_nothing_usable_exits_non_zero(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("hello")
    assert cli_main(["info", str(tmp_path)]) == 1


def test_an_unreadable_header_value_is_named_by_its_keyword_and_tag(tmp_path):
    from convnest_viewer.io.dicom_headers import read_dicom_record

    original = pydicom_file("MR_small.dcm").read_bytes()
    rows = original.find(bytes([0x28, 0, 0x10, 0]) + b"US" + bytes([2, 0]))  # Rows, explicit VR, 2 bytes
    assert rows > 0
    damaged = original[:rows + 6] + bytes([3, 0]) + original[rows + 8:rows + 10] + b"\x00" + original[rows + 10:]
    path = tmp_path / "rows-of-3-bytes.dcm"
    path.write_bytes(damaged)
    skipped = read_dicom_record(path)
    assert skipped.path == path
    assert skipped.reason.startswith("invalid DICOM attribute Rows (0028,0010): BytesLengthException")


def test_reading_headers_and_pixels_in_two_threads_keeps_every_note_and_leaks_no_warning_state(tmp_path):
    import threading
    import warnings

    from convnest_viewer.io.loader import _read_one_with_notes
    from convnest_viewer.io.pixels import read_dicom_frame

    path = tmp_path / "badVR.dcm"
    shutil.copy(pydicom_file("badVR.dcm"), path)  # InstanceNumber '1A': pydicom warns on every read
    filters, show = list(warnings.filters), warnings.showwarning
    notes, errors = [], []

    def headers():
        for _ in range(150):
            notes.append(len(_read_one_with_notes(path)[1]))

    def pixels():
        for _ in range(150):
            try:
                read_dicom_frame(path, None, False)
            except Exception as exc:  # noqa: BLE001 - the pixel data of this file is not decodable; only warnings matter
                errors.append(type(exc).__name__)

    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=headers), threading.Thread(target=pixels)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert notes == [1] * 150, "every header read keeps its note"
    assert [w for w in escaped if "1A" in str(w.message)] == [], "no reader's warning escaped to the caller"
    assert warnings.filters == filters and warnings.showwarning is show
