"""Broken and hostile inputs: size limits checked before allocating, notes instead of warnings, a mutation subset."""

from __future__ import annotations

import gzip
import shutil
import struct
import warnings
import zlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from convnest_viewer.io import PixelReadError, load_study
from convnest_viewer.io.raster import header_size
from tests import mutations
from tests.paths import DICOM, NIFTI, pydicom_file

MPRAGE_FILE = sorted((DICOM / "sagittal-mprage").glob("*.dcm"))[100]


def _study_with(tmp_path: Path, name: str, data: bytes) -> Path:
    folder = tmp_path / "study"
    folder.mkdir()
    shutil.copy(MPRAGE_FILE, folder / MPRAGE_FILE.name)
    (folder / name).write_bytes(data)
    return folder


def _reason(result, name: str) -> str:
    return next(s.reason for s in result.skipped if s.path.name == name)


def test_a_header_claiming_65535_squared_by_1000_frames_is_refused_before_pixels_are_read(tmp_path):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 1000
    ds.save_as(tmp_path / "huge.dcm", enforce_file_format=False)
    folder = _study_with(tmp_path, "huge.dcm", (tmp_path / "huge.dcm").read_bytes())

    result = load_study([folder])

    assert "refused before reading pixels" in _reason(result, "huge.dcm")
    assert "65535 x 65535" in _reason(result, "huge.dcm")
    assert [s.n_slices for s in result.series] == [1], "the good file still loads"


@pytest.mark.parametrize("keyword, value, expected", [
    ("BitsAllocated", 12, "BitsAllocated 12"),
    ("SamplesPerPixel", 2, "SamplesPerPixel 2"),
    ("NumberOfFrames", -3, "NumberOfFrames -3"),
    ("NumberOfFrames", 100000, "NumberOfFrames 100000 exceeds"),
    ("Rows", 0, "is empty"),
])
def test_impossible_pixel_descriptions_are_refused_with_the_value_named(tmp_path, keyword, value, expected):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    setattr(ds, keyword, value)
    ds.save_as(tmp_path / "odd.dcm", enforce_file_format=False)

    result = load_study([tmp_path / "odd.dcm"])

    assert expected in _reason(result, "odd.dcm")


def test_nifti_truncated_or_absurd_is_refused_and_a_broken_gzip_fails_once_with_its_reason(tmp_path):
    zipped = (NIFTI / "healthy-volunteer" / "chris_PD.nii.gz").read_bytes()
    plain = bytearray(gzip.decompress(zipped))
    (tmp_path / "short.nii").write_bytes(plain[: len(plain) // 2])
    absurd = bytearray(plain)
    absurd[40:56] = struct.pack("<8h", 4, 32767, 32767, 32767, 1000, 1, 1, 1)
    (tmp_path / "absurd.nii").write_bytes(absurd)
    (tmp_path / "cut.nii.gz").write_bytes(zipped[: len(zipped) // 2])

    result = load_study([tmp_path])

    assert _reason(result, "short.nii").startswith("truncated: the header declares 2640384 bytes")
    assert "32767 x 32767 exceeds the limit" in _reason(result, "absurd.nii")
    [series] = result.series
    errors = []
    for index in range(series.n_slices):
        with pytest.raises(PixelReadError) as caught:
            series.pixels(index)
        errors.append(str(caught.value))
    assert len(set(errors)) == 1 and "truncated or damaged gzip data" in errors[0]
    assert "cut.nii.gz" in errors[0]


def test_image_sizes_come_from_the_header_and_huge_ones_are_refused(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (37, 91), dtype=np.uint8)
    for suffix in (".png", ".jpg", ".bmp"):
        path = tmp_path / f"wide{suffix}"
        cv2.imwrite(str(path), image)
        assert header_size(path.read_bytes()[:65536]) == (37, 91), suffix
    png = bytearray((tmp_path / "wide.png").read_bytes())
    png[16:24] = struct.pack(">II", 100000, 100000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))  # a valid CRC: only the size is absurd
    folder = _study_with(tmp_path, "huge.png", bytes(png))

    result = load_study([folder])

    assert "refused before decoding: image size 100000 x 100000" in _reason(result, "huge.png")
    assert len(result.series) == 1


def test_header_warnings_become_notes_on_the_file_not_stderr_output():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load_study([pydicom_file("badVR.dcm"), pydicom_file("MR_small.dcm")])

    assert caught == []
    [note] = result.notes
    assert note.path.name == "badVR.dcm" and "Invalid value for VR IS: '1A'" in note.text
    assert "Please see" not in note.text


def test_a_mutation_subset_has_no_crash_hang_huge_allocation_or_lost_file():
    count = 3 * (len(mutations.DICOM_OPERATIONS) + 1 + len(mutations.NIFTI_OPERATIONS) + len(mutations.IMAGE_OPERATIONS))

    records = mutations.run(count, seed=7)

    failures = [(r["mutant"], r["outcome"], r["reason"][-300:]) for r in records if r["outcome"] in mutations.FAILURES]
    assert failures == []
    covered = {(r["format"], r["operation"]) for r in records}
    assert len(covered) >= len(mutations.DICOM_OPERATIONS) + len(mutations.NIFTI_OPERATIONS) + len(mutations.IMAGE_OPERATIONS) - 2
    outcomes = Counter(r["outcome"] for r in records)
    assert outcomes["skipped"] > count // 5 and outcomes["read"] > 0, outcomes
    assert max(r["seconds"] for r in records) < mutations.TIME_BOUND_SECONDS
    assert sum(bool(r.get("stray_warnings")) for r in records) == 0


def test_native_library_complaints_become_notes_and_reasons_not_terminal_output(tmp_path, capfd):
    from tests.paths import BRAIN_TUMOR_MRI

    jpeg = sorted((BRAIN_TUMOR_MRI / "Testing" / "glioma").glob("*.jpg"))[0].read_bytes()
    half = len(jpeg) // 2
    (tmp_path / "zeroed.jpg").write_bytes(jpeg[:half] + bytes(300) + jpeg[half + 300:])  # decodes, damaged below
    png = (mutations.REPO / "resources" / "icons" / "convnest.png").read_bytes()
    damaged = bytearray(png)
    damaged[len(png) // 2] ^= 0xFF
    (tmp_path / "damaged.png").write_bytes(bytes(damaged))
    zipped = gzip.decompress((NIFTI / "healthy-volunteer" / "chris_PD.nii.gz").read_bytes())
    odd = bytearray(zipped)
    odd[280:328] = struct.pack("<12f", 10, 0, 0, 0, 0, 10, 0, 0, 0, 0, 10, 0)  # 10 mm voxels; pixdim says 0.86-2.4
    (tmp_path / "odd-sform.nii").write_bytes(bytes(odd))

    result = load_study([tmp_path])

    assert capfd.readouterr().err == ""
    notes = {note.path.name: note.text for note in result.notes}
    assert notes["zeroed.jpg"] == "Corrupt JPEG data: premature end of data segment"
    assert "libpng error" in _reason(result, "damaged.png")
    assert notes["odd-sform.nii"].endswith("odd-sform.nii has unexpected scales in sform")


def test_mutants_chosen_by_hypothesis_have_no_crash_hang_or_lost_file():
    records = mutations.search(40)  # derandomized: the same 40 mutants every run; a failure is shrunk and raised

    assert len(records) >= 40 and {r["format"] for r in records} == {"dicom", "nifti", "image"}
