"""Build the bundled demo DICOM study from test-split images of the brain-tumor-mri dataset.

Run as ``.venv/bin/python scripts/make_demo_study.py [--out DIR]`` (default ``resources/demo/``).

Four fictitious example patients, one per class (glioma, meningioma, notumor, pituitary), each with
one study of one MR series holding the first six "Te-" images of that class in natural file-name
order as axial slices: the viewer gives each example its own study verdict. The output is deterministic: UIDs are
derived from fixed strings and no dates or times depend on the clock, so re-running the
script reproduces the same files. Every file names its source image in ImageComments and
DerivationDescription; ``<out>/README.md`` lists them all.

The stored values are 4 * gray (0..1020) with WindowCenter 510 / WindowWidth 1020, so that
windowing them to 8 bits gives back exactly the source image's grayscale values.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "resources" / "demo"
CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
SLICES_PER_SERIES = 6
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
UID_SEED = "convnest_viewer demo study v2"
STORED_SCALE = 4  # stored value = 4 * gray, 0..1020 in 12 bits
SLICE_STEP_MM = 5.0
DATASET_CREDIT = "brain-tumor-mri dataset (Nickparvar, Kaggle 'Brain Tumor MRI Dataset')"
STUDY_DESCRIPTION = "ConvNeXt viewer demo: {} examples"


@dataclass(frozen=True)
class SourceImage:
    """One source JPEG: its class, file and position in the demo study."""

    series_number: int  # 1-based
    class_name: str
    slice_index: int  # 0-based
    path: Path


def find_dataset() -> Path:
    """Return the brain-tumor-mri dataset folder (../shared, $CONVNEST_SHARED, /work/shared)."""
    candidates = [REPO.parent / "shared"]
    if os.environ.get("CONVNEST_SHARED"):
        candidates.append(Path(os.environ["CONVNEST_SHARED"]))
    candidates.append(Path("/work/shared"))
    for shared in candidates:
        dataset = shared / "data" / "brain-tumor-mri"
        if (dataset / "Testing").is_dir():
            return dataset
    raise SystemExit("brain-tumor-mri dataset not found (looked in ../shared, $CONVNEST_SHARED, /work/shared)")


def natural_key(name: str) -> list:
    """Return a sort key ordering digit runs by number, text case-insensitively."""
    return [int(token) if token.isdigit() else token.lower() for token in re.split(r"(\d+)", name)]


def select_sources(dataset: Path) -> list[SourceImage]:
    """Return the chosen images: per class, the first six "Te-" JPEGs in natural order."""
    sources = []
    for number, class_name in enumerate(CLASSES, start=1):
        folder = dataset / "Testing" / class_name
        names = sorted((p.name for p in folder.glob("*.jpg") if p.name.startswith("Te-")), key=natural_key)
        if len(names) < SLICES_PER_SERIES:
            raise SystemExit(f"{folder}: fewer than {SLICES_PER_SERIES} Te-*.jpg images")
        for index, name in enumerate(names[:SLICES_PER_SERIES]):
            sources.append(SourceImage(number, class_name, index, folder / name))
    return sources


def read_gray(path: Path) -> np.ndarray:
    """Decode a JPEG to 8-bit grayscale exactly as the viewer's raster reader does."""
    image = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SystemExit(f"{path}: not a decodable image")
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    if image.dtype != np.uint8:
        raise SystemExit(f"{path}: expected 8-bit pixels, got {image.dtype}")
    return image


def demo_uid(*parts: object) -> str:
    """Return a UID derived only from fixed strings, so every run gives the same one."""
    return generate_uid(entropy_srcs=[UID_SEED, *(str(part) for part in parts)])


def series_description(source: SourceImage) -> str:
    """Return the SeriesDescription of the source's series (names the class)."""
    return f"Demo {source.series_number}: {source.class_name} (brain-tumor-mri test images)"


def source_comment(source: SourceImage) -> str:
    """Return the ImageComments text naming the source image."""
    return (
        f"Source: {DATASET_CREDIT}, Testing/{source.class_name}/{source.path.name}; "
        "research data, not a real patient"
    )


def file_meta(sop_uid: str) -> FileMetaDataset:
    """Return the file meta information for one MR image (transfer syntax set later)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def patient_name(source: SourceImage) -> str:
    """Return the placeholder PatientName of the source's example patient (names the class)."""
    return f"DEMO^{source.class_name.capitalize()} examples"


def patient_id(source: SourceImage) -> str:
    """Return the placeholder PatientID of the source's example patient."""
    return f"DEMO-{source.series_number:04d}"


def add_patient_study(ds: Dataset, source: SourceImage) -> None:
    """Set the attributes of the source's example patient and its one study."""
    ds.PatientName = patient_name(source)
    ds.PatientID = patient_id(source)
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.StudyInstanceUID = demo_uid("study", source.series_number, source.class_name)
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.StudyID = f"DEMO{source.series_number}"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = STUDY_DESCRIPTION.format(source.class_name)


def add_series(ds: Dataset, source: SourceImage) -> None:
    """Set the series, equipment and frame-of-reference attributes of the source's series."""
    ds.Modality = "MR"
    ds.SeriesInstanceUID = demo_uid("series", source.series_number, source.class_name)
    ds.SeriesNumber = source.series_number
    ds.SeriesDate = "20260101"
    ds.SeriesTime = "120000"
    ds.SeriesDescription = series_description(source)
    ds.BodyPartExamined = "BRAIN"
    ds.Manufacturer = "ConvNeXt viewer demo generator"
    ds.FrameOfReferenceUID = demo_uid("frame-of-reference", source.series_number)
    ds.PositionReferenceIndicator = ""


def add_image(ds: Dataset, source: SourceImage) -> None:
    """Set the image, MR and provenance attributes of one slice."""
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.InstanceNumber = source.slice_index + 1
    ds.ContentDate = "20260101"
    ds.ContentTime = "120000"
    ds.ScanningSequence = "RM"  # research mode: the acquisition is unknown
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTime = None
    ds.EchoTrainLength = None
    ds.ImageComments = source_comment(source)
    ds.DerivationDescription = (
        f"Converted from JPEG Testing/{source.class_name}/{source.path.name} of the {DATASET_CREDIT}; "
        f"grayscale, stored value = {STORED_SCALE} * gray"
    )
    ds.LossyImageCompression = "01"  # the source JPEGs were lossy
    ds.LossyImageCompressionMethod = "ISO_10918_1"


def add_geometry(ds: Dataset, source: SourceImage) -> None:
    """Set an axial plane at 5 mm steps, 1 mm pixels, centred on the 224 x 224 image."""
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-112, -112, SLICE_STEP_MM * source.slice_index]
    ds.SliceLocation = SLICE_STEP_MM * source.slice_index
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = SLICE_STEP_MM
    ds.SpacingBetweenSlices = SLICE_STEP_MM


def add_pixels(ds: Dataset, gray: np.ndarray) -> None:
    """Store 4 * gray as 12-bit unsigned MONOCHROME2 with a window that maps it back to gray."""
    stored = gray.astype(np.uint16) * STORED_SCALE
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope = 1
    ds.RescaleIntercept = 0
    ds.RescaleType = "US"
    ds.WindowCenter = 255 * STORED_SCALE // 2
    ds.WindowWidth = 255 * STORED_SCALE
    ds.PixelData = stored.tobytes()


def compress(ds: Dataset) -> None:
    """RLE-compress the pixel data, checking it decodes back; else keep Explicit VR Little Endian."""
    original = ds.pixel_array.copy()
    try:
        ds.compress(RLELossless, generate_instance_uid=False)  # keep the deterministic UID
    except Exception as exc:  # no RLE encoder available: keep the data uncompressed
        print(f"RLE compression unavailable ({type(exc).__name__}); writing uncompressed", file=sys.stderr)
        return
    if not np.array_equal(pydicom.pixels.pixel_array(ds), original):
        raise SystemExit("RLE round trip changed the pixel data")


def build_dataset(source: SourceImage) -> Dataset:
    """Return the complete DICOM dataset of one slice."""
    sop_uid = demo_uid("instance", source.series_number, source.class_name, source.slice_index)
    ds = Dataset()
    ds.file_meta = file_meta(sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    add_patient_study(ds, source)
    add_series(ds, source)
    add_image(ds, source)
    add_geometry(ds, source)
    add_pixels(ds, read_gray(source.path))
    compress(ds)
    return ds


def slice_path(out: Path, source: SourceImage) -> Path:
    """Return where a slice is written: <out>/series_<n>_<class>/slice_<k>.dcm."""
    return out / f"series_{source.series_number}_{source.class_name}" / f"slice_{source.slice_index + 1:02d}.dcm"


def readme_text(sources: list[SourceImage], transfer_syntax: str) -> str:
    """Return the README.md describing the demo study and listing every slice's source."""
    rows = "\n".join(
        f"| {s.series_number} | {s.slice_index + 1} | {s.class_name} | `Testing/{s.class_name}/{s.path.name}` |"
        for s in sources
    )
    return f"""# Demo study

A small DICOM study bundled with the viewer so it can be tried without any data of your own
(`make run` opens it). It is **generated** by `scripts/make_demo_study.py` from test-split images
of the {DATASET_CREDIT}; re-running the script reproduces these files exactly (same pixels, same UIDs).

**For research use, not for diagnosis.**

## Contents

- Four fictitious example patients, one per class of the dataset (`DEMO^Glioma examples`,
  ID `DEMO-0001`; `DEMO^Meningioma examples`, `DEMO-0002`; `DEMO^Notumor examples`, `DEMO-0003`;
  `DEMO^Pituitary examples`, `DEMO-0004`; no birth dates), each with one study
  ("{STUDY_DESCRIPTION.format('glioma')}", ..., 2026-01-01) of one MR series: 1 glioma,
  2 meningioma, 3 notumor, 4 pituitary. The viewer gives each its own study verdict.
  Each series has {SLICES_PER_SERIES} slices: the first
  {SLICES_PER_SERIES} images whose names start with `Te-` in the class's `Testing/` folder, in natural
  file-name order.
- Files: `series_<n>_<class>/slice_<k>.dcm`, MR Image Storage, 224 x 224 pixels, transfer syntax
  {transfer_syntax}. Pixels are 16-bit unsigned (12 bits stored), stored value = {STORED_SCALE} x the source
  JPEG's 8-bit grayscale value; WindowCenter {255 * STORED_SCALE // 2} / WindowWidth {255 * STORED_SCALE}
  maps them back to exactly the original grayscale.
- Geometry is made up: axial slices, 1 mm pixels, 5 mm apart. The source images come from
  **different patients**, so the slices of a "series" are not anatomically contiguous; the stack
  is only a convenient way to page through examples.
- Every file names its source image in ImageComments and DerivationDescription, and its class in
  SeriesDescription.

## Source and licence

The images are from the Kaggle "Brain Tumor MRI Dataset" by Masoud Nickparvar (a combination of
the figshare, SARTAJ and Br35H collections). The dataset is commonly described as CC0 / public
domain, but the copy used here carries no licence file, so treat it as third-party research data.
These are not real patients of ours; the patient name and ID in the files are placeholders. The
JPEG sources were lossy-compressed (LossyImageCompression is set to 01).

## Slices

| Series | Slice | Class | Source file |
|---|---|---|---|
{rows}
"""


def write_study(out: Path, sources: list[SourceImage]) -> str:
    """Write every slice under out and return the transfer syntax name used."""
    syntax = ""
    for source in sources:
        ds = build_dataset(source)
        path = slice_path(out, source)
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        syntax = ds.file_meta.TransferSyntaxUID.name
    return syntax


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: resources/demo)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the demo study into --out."""
    args = parse_args(argv)
    sources = select_sources(find_dataset())
    args.out.mkdir(parents=True, exist_ok=True)
    syntax = write_study(args.out, sources)
    (args.out / "README.md").write_text(readme_text(sources, syntax), encoding="utf-8")
    print(f"wrote {len(sources)} slices in {len(CLASSES)} series to {args.out} ({syntax})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
