"""The bundled demo study (resources/demo): loads as 4 x 6 slices, shows its source JPEGs exactly, is reproducible."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from convnest_viewer.verdict import studies_of

from convnest_viewer.io import load_study
from convnest_viewer.io.pixels import apply_window
from tests.paths import BRAIN_TUMOR_MRI, REPO

DEMO = REPO / "resources" / "demo"
SCRIPT = REPO / "scripts" / "make_demo_study.py"
CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
SOURCE_RE = re.compile(r"Testing/(glioma|meningioma|notumor|pituitary)/(Te-[^;/\s]+\.jpg)")
UID_KEYWORDS = ["SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"]


def read_gray(path: Path) -> np.ndarray:
    """Decode a JPEG to 8-bit grayscale the way the script and the viewer do."""
    image = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    return image


def source_of(path: Path) -> tuple[str, str]:
    """Return (class, file name) named in a demo file's ImageComments."""
    comments = str(pydicom.dcmread(path, stop_before_pixels=True).ImageComments)
    match = SOURCE_RE.search(comments)
    assert match, f"{path.name}: ImageComments names no source image: {comments!r}"
    return match.group(1), match.group(2)


def natural_key(name: str) -> list:
    """Sort digit runs by number, text case-insensitively."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def demo_files(root: Path) -> list[Path]:
    """Return the demo's DICOM files, relative order by path."""
    return sorted(root.glob("series_*/slice_*.dcm"))


@pytest.fixture(scope="module")
def demo():
    """Load the committed demo study once."""
    assert DEMO.is_dir() and demo_files(DEMO), "resources/demo is missing; run scripts/make_demo_study.py"
    return load_study([DEMO])


def test_demo_loads_as_four_series_of_six(demo):
    assert [s.number for s in demo.series] == [1, 2, 3, 4]
    assert [s.n_slices for s in demo.series] == [6, 6, 6, 6]
    assert all(s.n_volumes == 1 and s.modality == "MR" and s.kind == "dicom" for s in demo.series)
    for series, class_name in zip(demo.series, CLASSES):
        assert class_name in series.description
        assert series.rows == series.columns == 224
    # four example patients, one study each: the viewer gives every example its own study verdict
    assert len({s.study.uid for s in demo.series}) == 4
    assert len({s.uid for s in demo.series}) == 4
    assert len({s.patient.key for s in demo.series}) == 4
    assert [s.study.description for s in demo.series] == [f"ConvNeXt viewer demo: {c} examples" for c in CLASSES]
    assert [len(study) for study in studies_of(demo.series)] == [1, 1, 1, 1]
    assert [(skip.path.name, skip.reason) for skip in demo.skipped] == [("README.md", "not a DICOM file")]


def test_demo_slices_are_in_instance_and_position_order(demo):
    for series in demo.series:
        refs = series.volumes[0]
        assert [ref.instance_number for ref in refs] == [1, 2, 3, 4, 5, 6]
        assert [series.slice_location(i) for i in range(6)] == pytest.approx([0, 5, 10, 15, 20, 25])
        assert [ref.path.name for ref in refs] == [f"slice_{k:02d}.dcm" for k in range(1, 7)]


def test_windowed_pixels_equal_source_grayscale(demo):
    for series, class_name in zip(demo.series, CLASSES):
        for index in range(series.n_slices):
            found_class, name = source_of(series.slice_ref(index).path)
            assert found_class == class_name
            expected = read_gray(BRAIN_TUMOR_MRI / "Testing" / class_name / name)
            shown = apply_window(series.pixels(index), series.window(index))
            assert shown.dtype == np.uint8 and shown.shape == expected.shape
            assert np.array_equal(shown, expected), f"{series.description} slice {index + 1} differs from {name}"


def test_sources_are_first_six_test_images_per_class():
    for number, class_name in enumerate(CLASSES, start=1):
        folder = BRAIN_TUMOR_MRI / "Testing" / class_name
        expected = sorted((p.name for p in folder.glob("*.jpg") if p.name.startswith("Te-")), key=natural_key)[:6]
        files = sorted((DEMO / f"series_{number}_{class_name}").glob("slice_*.dcm"))
        assert [source_of(f) for f in files] == [(class_name, name) for name in expected]


def test_every_file_names_its_source_and_readme_lists_them():
    readme = (DEMO / "README.md").read_text(encoding="utf-8")
    assert "scripts/make_demo_study.py" in readme
    assert "not for diagnosis" in readme.lower()
    files = demo_files(DEMO)
    assert len(files) == 24
    assert sorted(p.name for p in DEMO.iterdir() if p.is_file()) == ["README.md"]
    names = set()
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        class_name, name = source_of(path)
        assert "brain-tumor-mri" in ds.ImageComments and "not a real patient" in ds.ImageComments
        assert name in ds.DerivationDescription
        assert class_name in ds.SeriesDescription and path.parent.name.endswith(class_name)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert "PatientBirthDate" not in ds or not ds.PatientBirthDate
        assert f"Testing/{class_name}/{name}" in readme
        names.add(name)
    assert len(names) == 24


def test_demo_stays_small():
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total < 3 * 1024 * 1024


def test_script_reproduces_committed_study(tmp_path):
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    committed, rebuilt = demo_files(DEMO), demo_files(out)
    assert [p.relative_to(DEMO) for p in committed] == [p.relative_to(out) for p in rebuilt]
    for old_path, new_path in zip(committed, rebuilt):
        old, new = pydicom.dcmread(old_path), pydicom.dcmread(new_path)
        for keyword in UID_KEYWORDS:
            assert old[keyword].value == new[keyword].value, f"{old_path.name}: {keyword} differs"
        assert old.file_meta.TransferSyntaxUID == new.file_meta.TransferSyntaxUID
        assert old.PixelData == new.PixelData
        assert np.array_equal(old.pixel_array, new.pixel_array)
    assert (out / "README.md").read_text(encoding="utf-8") == (DEMO / "README.md").read_text(encoding="utf-8")
