"""Mutation suite for the loader: damaged and hostile variants of real DICOM, NIfTI and image files.

Each mutant is copied into a folder beside one good DICOM file; a worker process loads the folder with the
app's loader, reads every slice it offers and runs the model preprocessing on it. The parent process bounds
each mutant's time and watches the worker, so a native crash, a hang or a huge allocation is counted, not
suffered. Run the full suite (default 2,400 mutants) with

    .venv/bin/python -m tests.mutations --count 2400 --json mutation-report.json
    .venv/bin/python -m tests.mutations --engine hypothesis --count 1000   # hypothesis picks and shrinks

A fast subset of both runs with the tests (`tests/test_loader_robustness.py`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import random
import shutil
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Callable, Iterator

from tests.paths import BRAIN_TUMOR_MRI, DICOM, NIFTI, REPO, pydicom_file

TIME_BOUND_SECONDS = 40.0  # per mutant: above the decoder worker's own 15 s bound plus a worker restart
MEMORY_HEADROOM_BYTES = 2 * 1024**3  # the worker's address space beyond what it holds after its imports
FAILURES = ("crash", "hang", "memory", "exception", "unexpected error", "good file lost", "vanished", "no reason")


@dataclass
class Mutant:
    """One damaged file: its name, format, the mutation applied, the real file it came from and its bytes."""

    name: str
    fmt: str
    operation: str
    seed: Path
    data: bytes


# ----------------------------------------------------------------------------------------------- seeds


def dicom_seeds() -> list[Path]:
    """Return the real DICOM files mutants are made from (scanner files in ../shared and pydicom's own)."""
    shared = [
        DICOM / "sagittal-mprage" / sorted(os.listdir(DICOM / "sagittal-mprage"))[95],
        *sorted((DICOM / "transfer-syntaxes" / "In").glob("*.dcm")),
        next((DICOM / "ge-epi-4d").rglob("*.dcm")),
        next((DICOM / "patient-positions").rglob("*.dcm")),
        next((DICOM / "enhanced-multiframe").rglob("*.dcm")),
    ]
    bundled = [pydicom_file(name) for name in (
        "MR_small.dcm", "CT_small.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm", "JPEG-lossy.dcm",
        "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "SC_rgb_rle_2frame.dcm",
        "rtdose.dcm", "image_dfl.dcm", "liver_1frame.dcm", "examples_palette.dcm", "SC_rgb_jpeg_gdcm.dcm",
        "JPEGLSNearLossless_16.dcm", "examples_ybr_color.dcm", "nested_priv_SQ.dcm",
    )]
    return shared + bundled


def nifti_seeds(scratch: Path) -> list[Path]:
    """Return the NIfTI seeds: the healthy volunteer's PD volume, gzipped as shipped and uncompressed."""
    gzipped = NIFTI / "healthy-volunteer" / "chris_PD.nii.gz"
    plain = scratch / "chris_PD.nii"
    if not plain.exists():
        plain.write_bytes(gzip.decompress(gzipped.read_bytes()))
    return [gzipped, plain]


def raster_seeds() -> list[Path]:
    """Return the image seeds: dataset JPEGs and the app's PNG icon."""
    return [
        sorted((BRAIN_TUMOR_MRI / "Testing" / "glioma").glob("*.jpg"))[0],
        sorted((BRAIN_TUMOR_MRI / "Testing" / "notumor").glob("*.jpg"))[0],
        REPO / "resources" / "icons" / "convnest.png",
    ]


def good_file() -> Path:
    """Return the good DICOM file placed beside every mutant (it must always load)."""
    return DICOM / "sagittal-mprage" / sorted(os.listdir(DICOM / "sagittal-mprage"))[100]


# ------------------------------------------------------------------------------------ byte mutations


def truncate(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Cut the file at a random point (often inside the header)."""
    cut = rng.choice([rng.randrange(0, min(len(data), 2048)), rng.randrange(0, len(data))])
    return data[:cut]


def flip_bytes(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Flip 1-32 random bytes anywhere in the file."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 32)):
        out[rng.randrange(len(out))] ^= rng.randint(1, 255)
    return bytes(out)


def flip_header(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Flip 1-8 bytes in the first 2 KiB, where headers live."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(min(len(out), 2048))] ^= rng.randint(1, 255)
    return bytes(out)


def zero_run(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Zero a random run of up to 4 KiB."""
    start = rng.randrange(len(data))
    end = min(len(data), start + rng.randint(1, 4096))
    return data[:start] + bytes(end - start) + data[end:]


def splice(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Insert or delete a random run of bytes, shifting everything after it."""
    at = rng.randrange(len(data))
    if rng.random() < 0.5:
        return data[:at] + rng.randbytes(rng.randint(1, 512)) + data[at:]
    return data[:at] + data[at + rng.randint(1, 512):]


BYTE_OPERATIONS = [truncate, flip_bytes, flip_header, zero_run, splice]


# ----------------------------------------------------------------------------------- DICOM mutations


def _dataset(seed: Path):
    import pydicom

    return pydicom.dcmread(seed, force=True)


def _write(ds) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def _set_text(ds, tag: int, text: str) -> None:
    """Store any text in a numeric-string element (written as LO), so values pydicom would refuse still reach the file."""
    if tag in ds:
        del ds[tag]
    ds.add_new(tag, "LO", text)


def absurd_size(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Claim an absurd image size or frame count (up to 65535 x 65535 x 1000 frames)."""
    ds = _dataset(seed)
    choice = rng.randrange(4)
    if choice == 0:
        ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 1000
    elif choice == 1:
        ds.Rows = rng.choice([0, 1, 3, 40000, 65535])
    elif choice == 2:
        ds.Columns = rng.choice([0, 1, 7, 40000, 65535])
    else:
        ds.Rows, ds.Columns = ds.Columns, ds.Rows  # transposed: the pixel data no longer matches the shape
    return _write(ds)


def absurd_bits(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Claim impossible bit depths, sample counts or pixel representations."""
    ds = _dataset(seed)
    keyword, values = rng.choice([
        ("BitsAllocated", [0, 1, 7, 12, 24, 33, 64, 255]),
        ("BitsStored", [0, 1, 17, 33, 255]),
        ("HighBit", [0, 31, 255]),
        ("PixelRepresentation", [1, 2, 255]),
        ("SamplesPerPixel", [0, 2, 3, 4, 255]),
        ("PlanarConfiguration", [1, 5]),
    ])
    setattr(ds, keyword, rng.choice(values))
    return _write(ds)


def absurd_frames(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Claim a frame count that is negative, zero, huge or not a number."""
    ds = _dataset(seed)
    _set_text(ds, 0x00280008, rng.choice(["0", "-1", "-2147483648", "2", "1000", "2147483647", "abc", "1e9", ""]))
    return _write(ds)


def bad_photometric(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Name a photometric interpretation that does not fit the pixel data."""
    ds = _dataset(seed)
    ds.PhotometricInterpretation = rng.choice(["RGB", "PALETTE COLOR", "YBR_FULL_422", "MONOCHROME1", "BOGUS", ""])
    return _write(ds)


def bad_pixel_data(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Remove, empty, shorten, lengthen or scramble the pixel data element."""
    ds = _dataset(seed)
    if "PixelData" not in ds:
        return truncate(rng, data, seed)
    value = ds.PixelData
    choice = rng.randrange(6)
    if choice == 0:
        del ds.PixelData
    elif choice == 1:
        ds.PixelData = b""
    elif choice == 2:
        ds.PixelData = value[: len(value) // 2 & ~1]
    elif choice == 3:
        ds.PixelData = value[:2]
    elif choice == 4:
        ds.PixelData = value + value
    else:
        ds.PixelData = rng.randbytes(len(value) & ~1)
    if "PixelData" in ds and ds.file_meta.TransferSyntaxUID.is_encapsulated and choice != 4:
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([bytes(ds.PixelData) or b"\x00\x00"])  # well-formed fragments of damaged data
    return _write(ds)


def wrong_transfer_syntax(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Relabel the data set with another transfer syntax (the bytes stay as they were encoded)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info

    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        return flip_header(rng, data, seed)
    body = 132 + 12 + struct.unpack("<I", data[140:144])[0]
    ds = _dataset(seed)
    meta = FileMetaDataset(ds.file_meta)
    meta.TransferSyntaxUID = rng.choice([
        "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.5", "1.2.3.4.5.6", "",
    ])
    buffer = BytesIO()
    buffer.write(data[:132])
    write_file_meta_info(buffer, meta, enforce_standard=False)
    return buffer.getvalue() + data[body:]


def wrong_element_length(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Patch the length field of an element (Rows, a UID, pixel data ...) to a wrong value."""
    tags = [(0x0028, 0x0010), (0x0028, 0x0011), (0x0028, 0x0100), (0x0020, 0x000E), (0x0020, 0x0032),
            (0x0010, 0x0010), (0x7FE0, 0x0010), (0x0028, 0x0030), (0x0008, 0x0060)]
    out = bytearray(data)
    for group, element in rng.sample(tags, len(tags)):
        for order in "<>":
            at = data.find(struct.pack(order + "HH", group, element), 132)
            if at < 0:
                continue
            vr = data[at + 4:at + 6]
            if vr.isalpha() and vr.isupper():
                if vr in (b"OB", b"OW", b"OF", b"SQ", b"UN", b"UT", b"UC", b"UR"):
                    out[at + 8:at + 12] = struct.pack(order + "I", rng.choice([0, 1, 3, 0xFFFFFFFE, 0x7FFFFFFF, 0xFFFFFFFF]))
                else:
                    out[at + 6:at + 8] = struct.pack(order + "H", rng.choice([0, 1, 3, 0x1FFF, 0xFFFF]))
            else:
                out[at + 4:at + 8] = struct.pack(order + "I", rng.choice([0, 1, 3, 0x00FFFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            return bytes(out)
    return flip_header(rng, data, seed)


def nested_sequences(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Add a private sequence nested tens to hundreds of levels deep."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = _dataset(seed)
    depth = rng.choice([16, 64, 150])
    inner = Dataset()
    inner.add_new(0x00091012, "LO", "leaf")
    for _ in range(depth):
        outer = Dataset()
        outer.add_new(0x00091011, "SQ", Sequence([inner]))
        inner = outer
    ds.add_new(0x00090010, "LO", "CONVNEST MUTATION")
    ds.add_new(0x00091011, "SQ", Sequence([inner]))
    try:
        return _write(ds)
    except RecursionError:
        return absurd_numbers(rng, data, seed)


def huge_element(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Add a private element of 4-16 MiB before the pixel data."""
    ds = _dataset(seed)
    ds.add_new(0x00090010, "LO", "CONVNEST MUTATION")
    ds.add_new(0x00091010, "OB", bytes(rng.randint(4, 16) << 20))
    return _write(ds)


def absurd_numbers(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Give windows, rescale, positions, spacing or orientation values that are nan, inf, zero or huge."""
    ds = _dataset(seed)
    odd = ["nan", "inf", "-inf", "1e308", "-1e308", "1e400", "0", "-0", "abc", ""]
    keyword = rng.choice(["WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept", "ImagePositionPatient",
                          "PixelSpacing", "ImageOrientationPatient", "SliceThickness", "SpacingBetweenSlices"])
    count = {"ImagePositionPatient": 3, "PixelSpacing": 2, "ImageOrientationPatient": 6}.get(keyword, 1)
    values = [rng.choice(odd) for _ in range(rng.choice([count, count, 1, 7]))]
    from pydicom.datadict import tag_for_keyword

    _set_text(ds, tag_for_keyword(keyword), "\\".join(values))
    return _write(ds)


def per_frame_mismatch(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Shorten or empty the per-frame functional groups of a multi-frame file."""
    ds = _dataset(seed)
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return absurd_frames(rng, data, seed)
    groups = ds.PerFrameFunctionalGroupsSequence
    keep = rng.choice([0, 1, len(groups) // 2])
    del groups[keep:]
    return _write(ds)


def mosaic_damage(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Give a Siemens mosaic an absurd image count, or damage or truncate its CSA header."""
    ds = _dataset(seed)
    if 0x0019100A not in ds or 0x00291010 not in ds:
        return absurd_frames(rng, data, seed)
    choice = rng.randrange(3)
    if choice == 0:
        ds[0x0019100A].value = rng.choice([0, 1, 2, 36, 37, 1000, 65535])
    else:
        csa = bytearray(ds[0x00291010].value)
        if choice == 1:
            for _ in range(rng.randint(1, 64)):
                csa[rng.randrange(len(csa))] ^= rng.randint(1, 255)
        else:
            del csa[rng.randrange(len(csa)):]
        ds[0x00291010].value = bytes(csa) + b"\0" * (len(csa) % 2)
    return _write(ds)


def mosaic_seeds() -> list[Path]:
    """Return the Siemens EPI mosaics (every transfer syntax) in ../shared."""
    return sorted((DICOM / "transfer-syntaxes" / "In").glob("*.dcm"))


DICOM_OPERATIONS = BYTE_OPERATIONS + [
    absurd_size, absurd_bits, absurd_frames, bad_photometric, bad_pixel_data, wrong_transfer_syntax,
    wrong_element_length, nested_sequences, huge_element, absurd_numbers, per_frame_mismatch,
]


# ----------------------------------------------------------------------------------- NIfTI mutations


def _nifti_header_edit(edit: Callable[[bytearray], None]) -> Callable:
    def mutate(rng: random.Random, data: bytes, seed: Path) -> bytes:
        zipped = seed.name.endswith(".gz")
        raw = bytearray(gzip.decompress(data) if zipped else data)
        edit(raw, rng)
        return gzip.compress(bytes(raw), compresslevel=1) if zipped else bytes(raw)

    mutate.__name__ = edit.__name__
    mutate.__doc__ = edit.__doc__
    return mutate


@_nifti_header_edit
def nifti_dims(raw: bytearray, rng: random.Random) -> None:
    """Write absurd dims: a wrong rank, zero, negative or 32767-wide axes, a huge time axis."""
    dims = list(struct.unpack("<8h", raw[40:56]))
    axis = rng.randrange(8)
    dims[axis] = rng.choice([-1, 0, 1, 7, 8, 9, 1000, 32767])
    if rng.random() < 0.3:
        dims = [4, 32767, 32767, 32767, 1000, 1, 1, 1]
    raw[40:56] = struct.pack("<8h", *dims)


@_nifti_header_edit
def nifti_datatype(raw: bytearray, rng: random.Random) -> None:
    """Write a datatype or bit depth that is unknown or does not match the voxels."""
    raw[70:72] = struct.pack("<h", rng.choice([0, 1, 2, 16, 32, 128, 255, 1536, 1792, 2304, -1]))
    if rng.random() < 0.5:
        raw[72:74] = struct.pack("<h", rng.choice([0, 1, 7, 64, 255]))


@_nifti_header_edit
def nifti_offsets(raw: bytearray, rng: random.Random) -> None:
    """Move vox_offset before the header's end, far past the file's end, or to nan."""
    raw[108:112] = struct.pack("<f", rng.choice([0.0, 100.0, 351.0, 1e9, -352.0, float("nan"), float("inf")]))


@_nifti_header_edit
def nifti_scaling(raw: bytearray, rng: random.Random) -> None:
    """Write pixdim, scl_slope/scl_inter, qform or sform values that are nan, inf, zero or negative."""
    odd = [float("nan"), float("inf"), 0.0, -1.0, 1e38]
    field = rng.choice([(76, 8), (112, 2), (252, 2), (256, 3), (280, 12)])  # pixdim, scl, codes, quatern, srow
    start, count = field
    if start == 252:
        raw[252:256] = struct.pack("<2h", rng.choice([-5, 0, 1, 99]), rng.choice([-5, 0, 2, 99]))
        return
    raw[start:start + 4 * count] = struct.pack(f"<{count}f", *(rng.choice(odd) for _ in range(count)))


def gzip_damage(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Damage a gzip stream: cut it, flip bytes in the compressed body, or break its checksum."""
    if not seed.name.endswith(".gz"):
        return truncate(rng, data, seed)
    choice = rng.randrange(3)
    if choice == 0:
        return data[: rng.randrange(20, len(data) - 8)]
    if choice == 1:
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(20, len(out) - 8)] ^= rng.randint(1, 255)
        return bytes(out)
    return data[:-8] + struct.pack("<I", zlib.crc32(data) ^ 0xDEADBEEF) + data[-4:]


NIFTI_OPERATIONS = BYTE_OPERATIONS + [nifti_dims, nifti_datatype, nifti_offsets, nifti_scaling, gzip_damage]


# ----------------------------------------------------------------------------------- image mutations


def huge_dimensions(rng: random.Random, data: bytes, seed: Path) -> bytes:
    """Claim enormous width and height in a PNG header (with or without a valid CRC) or a JPEG frame header."""
    side = rng.choice([65500, 100000, 1 << 20, 0x7FFFFFFF])
    out = bytearray(data)
    if data.startswith(b"\x89PNG"):
        out[16:24] = struct.pack(">II", side, side)
        if rng.random() < 0.7:
            out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
        return bytes(out)
    at = 2
    while at + 9 < len(data) and data[at] == 0xFF:
        if data[at + 1] in (0xC0, 0xC1, 0xC2):
            out[at + 5:at + 9] = struct.pack(">HH", min(side, 65535), min(side, 65535))
            return bytes(out)
        at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
    return truncate(rng, data, seed)


IMAGE_OPERATIONS = BYTE_OPERATIONS + [huge_dimensions]


# ---------------------------------------------------------------------------------------- generation


Plan = tuple  # (format, operation, seed files, file suffix or None)


def plans(scratch: Path) -> list[Plan]:
    """Return every (format, operation, seed files, suffix) the suite draws mutants from."""
    return ([("dicom", op, dicom_seeds(), ".dcm") for op in DICOM_OPERATIONS]
            + [("dicom", mosaic_damage, mosaic_seeds(), ".dcm")]
            + [("nifti", op, nifti_seeds(scratch), None) for op in NIFTI_OPERATIONS]
            + [("image", op, raster_seeds(), None) for op in IMAGE_OPERATIONS])


def make_mutant(index: int, plan: Plan, source: Path, data: bytes, mutation_seed: int) -> Mutant:
    """Apply one plan's operation to a seed file's bytes with its own random stream."""
    import pydicom.config

    fmt, operation, _, suffix = plan
    settings = pydicom.config.settings
    mutation_rng = random.Random(mutation_seed)
    name = operation.__name__
    modes = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.IGNORE
    try:  # pydicom must write invalid values here; the app's own reads keep their validation
        data = operation(mutation_rng, data, source)
    except Exception:  # noqa: BLE001 - pydicom cannot write this variant; damage the bytes instead
        data, name = flip_bytes(mutation_rng, data, source), "flip_bytes"
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = modes
    ending = suffix or ("".join(source.suffixes[-2:]) if source.name.endswith(".nii.gz") else source.suffix)
    return Mutant(f"mutant-{index:05d}-{name}{ending}", fmt, name, source, data)


def generate(count: int, scratch: Path, seed: int = 0) -> Iterator[Mutant]:
    """Yield `count` mutants deterministically; every prefix cycles through every (format, operation) pair."""
    all_plans = plans(scratch)
    rng = random.Random(seed)
    contents: dict[Path, bytes] = {}
    for index in range(count):
        plan = all_plans[index % len(all_plans)]
        source = rng.choice(plan[2])
        data = contents.setdefault(source, source.read_bytes())
        yield make_mutant(index, plan, source, data, rng.getrandbits(64))


# ---------------------------------------------------------------------------------------- checking


def check_folder(folder: Path, mutant_name: str, good_name: str) -> dict:
    """Load a folder with the app's loader, read and preprocess every slice; return what happened to the mutant."""
    import warnings

    import numpy as np

    from convnest_viewer.inference.card import load_card
    from convnest_viewer.inference.preprocess import preprocess
    from convnest_viewer.io import PIXEL_CACHE, PixelReadError, load_study
    from convnest_viewer.io.loader import UNEXPECTED_ERROR
    from convnest_viewer.paths import models_dir

    spec = load_card(models_dir() / (models_dir() / "DEFAULT").read_text().strip()).preprocessing
    PIXEL_CACHE.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load_study([folder])
        mutant_state, reasons, good_ok = None, [], False
        for entry in result.skipped:
            if entry.path.name == mutant_name:
                mutant_state = "skipped"
                reasons.append(entry.reason)
        for series in result.series:
            names = {ref.path.name for volume in series.volumes for ref in volume}
            read = failed = 0
            for volume in range(series.n_volumes):
                for index in range(series.n_slices):
                    try:
                        values = series.pixels(index, volume)
                        window = series.window(index, volume)
                    except PixelReadError as exc:
                        failed += 1
                        reasons.append(str(exc))
                        continue
                    model_input, _ = preprocess(values, window, spec)
                    if not np.all(np.isfinite(model_input)):
                        raise ValueError(f"non-finite model input from {sorted(names)}")
                    read += 1
            if good_name in names and read:
                good_ok = True
            if mutant_name in names:
                mutant_state = "read" if not failed else ("partly read" if read else "no slice read")
    PIXEL_CACHE.clear()
    outcome = mutant_state or "vanished"
    if any(UNEXPECTED_ERROR in entry.reason for entry in result.skipped):
        outcome = "unexpected error"  # the loader's safety net caught a reader's bug: a finding
    if not good_ok:
        outcome = "good file lost"
    elif mutant_state in ("skipped", "partly read", "no slice read") and not all(r.strip() for r in reasons):
        outcome = "no reason"
    stray = [str(w.message)[:200] for w in caught]
    return {"outcome": outcome, "reason": reasons[0][:300] if reasons else "", "stray_warnings": stray[:3]}


def _worker_main(connection) -> None:
    """Check folders sent over the pipe until it closes; runs in the worker process."""
    import resource

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # native libraries print on stderr; the outcome carries the reason
    import cv2  # noqa: F401 - imported before measuring the address space the worker starts with
    import SimpleITK  # noqa: F401

    from convnest_viewer.io import load_study  # noqa: F401

    with open("/proc/self/status") as status:
        vm_size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm_size + MEMORY_HEADROOM_BYTES, hard))
    while True:
        try:
            request = json.loads(connection.recv_bytes())
        except (EOFError, OSError):
            return
        started = time.perf_counter()
        try:
            reply = check_folder(Path(request["folder"]), request["mutant"], request["good"])
        except MemoryError:
            reply = {"outcome": "memory", "reason": "MemoryError"}
        except BaseException as exc:  # noqa: BLE001 - an exception escaping the loader is a finding
            reply = {"outcome": "exception", "reason": "".join(traceback.format_exception(exc))[-1500:]}
        reply["seconds"] = round(time.perf_counter() - started, 3)
        connection.send_bytes(json.dumps(reply).encode())


class Checker:
    """A worker process that checks one folder at a time, replaced when it dies or overruns the time bound."""

    def __init__(self, time_bound: float = TIME_BOUND_SECONDS) -> None:
        self.time_bound = time_bound
        self.context = multiprocessing.get_context("spawn")
        self.process = None

    def _start(self) -> None:
        self.connection, child = self.context.Pipe(duplex=True)
        self.process = self.context.Process(target=_worker_main, args=(child,), name="convnest-mutation-check")
        self.process.start()
        child.close()

    def check(self, folder: Path, mutant: str, good: str) -> dict:
        """Return the worker's outcome for one folder, or a crash or hang found by watching it."""
        if self.process is None or not self.process.is_alive():
            self._start()
        self.connection.send_bytes(json.dumps({"folder": str(folder), "mutant": mutant, "good": good}).encode())
        started = time.perf_counter()
        # the first request also pays the worker's start-up (imports), so it gets a longer bound
        if self.connection.poll(self.time_bound + (30 if not getattr(self, "_warm", False) else 0)):
            try:
                reply = json.loads(self.connection.recv_bytes())
                self._warm = True
                return reply
            except (EOFError, OSError):
                pass
            self.process.join(5)
            code = self.process.exitcode
            self.process = None
            self._warm = False
            return {"outcome": "crash", "reason": f"worker died with exit code {code}",
                    "seconds": round(time.perf_counter() - started, 3)}
        self.close()
        return {"outcome": "hang", "reason": f"no answer in {self.time_bound:.0f} s", "seconds": self.time_bound}

    def close(self) -> None:
        """Stop the worker."""
        if self.process is not None:
            self.process.kill()
            self.process.join(5)
            self.process = None
        self._warm = False


def run(count: int, seed: int = 0, progress: bool = False) -> list[dict]:
    """Generate and check `count` mutants; return one record per mutant."""
    good = good_file()
    records = []
    checker = Checker()
    with tempfile.TemporaryDirectory(prefix="convnest-mutations-") as scratch_name:
        scratch = Path(scratch_name)
        folder = scratch / "study"
        try:
            for number, mutant in enumerate(generate(count, scratch, seed)):
                records.append(check_mutant(checker, folder, good, mutant))
                if progress and (number + 1) % 100 == 0:
                    print(f"{number + 1}/{count}", file=sys.stderr, flush=True)
        finally:
            checker.close()
    return records


def check_mutant(checker: Checker, folder: Path, good: Path, mutant: Mutant) -> dict:
    """Put one mutant beside the good file in a fresh folder, check it, and return its record."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    shutil.copy(good, folder / good.name)
    (folder / mutant.name).write_bytes(mutant.data)
    reply = checker.check(folder, mutant.name, good.name)
    return {"mutant": mutant.name, "format": mutant.fmt, "operation": mutant.operation, "seed": mutant.seed.name,
            "bytes": len(mutant.data), **reply}


def search(examples: int, derandomize: bool = True) -> list[dict]:
    """Let hypothesis choose the operation, seed file and random stream of each mutant; a failure is shrunk to the
    simplest (operation, file, seed) that still fails and raised as an AssertionError naming it."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    good = good_file()
    records: list[dict] = []
    checker = Checker()
    with tempfile.TemporaryDirectory(prefix="convnest-mutations-") as scratch_name:
        scratch = Path(scratch_name)
        all_plans = plans(scratch)
        contents: dict[Path, bytes] = {}

        @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
                  suppress_health_check=list(HealthCheck))
        @given(plan=st.sampled_from(all_plans), data=st.data(), mutation_seed=st.integers(0, 2**64 - 1))
        def one_mutant(plan, data, mutation_seed):
            source = data.draw(st.sampled_from(plan[2]), label="seed file")
            mutant = make_mutant(len(records), plan, source, contents.setdefault(source, source.read_bytes()),
                                 mutation_seed)
            record = check_mutant(checker, scratch / "study", good, mutant)
            records.append(record)
            assert record["outcome"] not in FAILURES, (
                f"{record['mutant']} from {source.name}: {record['outcome']}: {record['reason'][-500:]}")

        try:
            one_mutant()
        finally:
            checker.close()
    return records


def summary_table(records: list[dict]) -> str:
    """Return a table: per format and operation, inputs and outcomes, failures last."""
    from convnest_viewer.text_table import format_table

    groups: dict[tuple[str, str], Counter] = defaultdict(Counter)
    slowest: dict[tuple[str, str], float] = defaultdict(float)
    for record in records:
        key = (record["format"], record["operation"])
        groups[key][record["outcome"]] += 1
        slowest[key] = max(slowest[key], record.get("seconds", 0.0))
    columns = ["skipped", "read", "partly read", "no slice read", *FAILURES]
    rows = [[fmt, op, str(sum(c.values())), *(str(c[name]) for name in columns), f"{slowest[(fmt, op)]:.1f}"]
            for (fmt, op), c in sorted(groups.items())]
    total = Counter(record["outcome"] for record in records)
    rows.append(["all", "", str(len(records)), *(str(total[name]) for name in columns),
                 f"{max((r.get('seconds', 0.0) for r in records), default=0.0):.1f}"])
    return format_table(["Format", "Mutation", "Inputs", *columns, "Max s"], rows)


def main(argv: list[str] | None = None) -> int:
    """Run the mutation suite and print its table; exit 1 if any mutant crashed, hung or was lost."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every mutant's record here")
    parser.add_argument("--engine", choices=["sweep", "hypothesis"], default="sweep",
                        help="sweep: every mutation in turn, seeded; hypothesis: hypothesis chooses the mutants and "
                             "shrinks a failure to its simplest case")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.engine == "hypothesis":
        try:
            records = search(args.count, derandomize=False)
        except AssertionError as failure:  # hypothesis has shrunk it: print the simplest failing mutant
            print(f"hypothesis found a failure:\n{failure}")
            return 1
    else:
        records = run(args.count, args.seed, progress=True)
    print(summary_table(records))
    failures = [r for r in records if r["outcome"] in FAILURES]
    stray = sum(1 for r in records if r.get("stray_warnings"))
    print(f"\n{len(records)} inputs in {time.perf_counter() - started:.0f} s; failures: {len(failures)}; "
          f"inputs that let a warning escape the loader: {stray}")
    for record in failures[:20]:
        print(f"  {record['mutant']}: {record['outcome']}: {record['reason'][:400]}")
    if args.json:
        args.json.write_text(json.dumps({"count": len(records), "seed": args.seed, "records": records}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
