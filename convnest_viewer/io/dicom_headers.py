"""Read one DICOM file's header (never its pixels) into the slices it holds, or a skip reason.

Longer than 400 lines: every check a header passes before its slices are trusted (size limits, truncation,
transfer syntax, per-frame groups, mosaics) sits beside the reading it guards, so that no slice escapes one.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder

from convnest_viewer.io.contrast import guess_contrast
from convnest_viewer.io.limits import dicom_size_problem
from convnest_viewer.io.model import PatientInfo, SliceRef, Skipped, StudyInfo
from convnest_viewer.io.window import Window
from convnest_viewer.io.orientation import slice_normal
from convnest_viewer.io.siemens import mosaic_layout, tile_positions

_PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, FloatPixelData, Double...
_UNDEFINED_LENGTH = 0xFFFFFFFF
_NON_IMAGE_MODALITIES = {
    "SR": "structured report",
    "PR": "presentation state",
    "KO": "key object selection",
    "RTSTRUCT": "RT structure set",
    "RTPLAN": "RT plan",
    "RTRECORD": "RT treatment record",
    "REG": "registration object",
    "SEG": "segmentation object",
    "DOC": "encapsulated document",
}
_DEFER_BYTES = 2048  # values longer than this are read only when needed
_MIN_SLOPE, _MAX_SLOPE = 1e-6, 1e6  # a rescale slope outside this range cannot map stored values to real ones
_MAX_VALUE = 1e9  # no rescale intercept or window centre of a real image is larger


@dataclass
class DicomRecord:
    """What one DICOM file contributes: its series identity, display metadata and slices."""

    path: Path
    series_uid: str
    series_number: int | None
    patient: PatientInfo
    study: StudyInfo
    description: str
    modality: str
    sequence: str
    contrast: str  # guessed from the names: "t1", "t1c", "flair", ... or ""
    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    orientation: tuple[float, ...] | None
    photometric: str
    pixel_range: tuple[float, float] | None
    invert_pivot: float | None
    slices: list[SliceRef] = field(default_factory=list)


def read_dataset_header(path: Path) -> Dataset:
    """Read a DICOM header with long values deferred; raise InvalidDicomError if not DICOM."""
    try:
        return pydicom.dcmread(path, defer_size=_DEFER_BYTES)
    except InvalidDicomError:
        ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES, force=True)
        if "SOPClassUID" not in ds and "Rows" not in ds:
            raise
        return ds


def read_dicom_record(path: Path) -> DicomRecord | Skipped:
    """Read the header of one file into a DicomRecord, or return why it is skipped."""
    try:
        ds = read_dataset_header(path)
    except InvalidDicomError:
        return Skipped(path, "not a DICOM file")
    except (OSError, EOFError) as exc:
        return Skipped(path, f"unreadable: {exc}")
    except Exception as exc:  # pydicom raises many kinds of errors on damaged headers
        return Skipped(path, f"damaged DICOM header: {type(exc).__name__}: {exc}")
    try:
        return _record_from_dataset(path, ds)
    except AttributeProblem as exc:
        return Skipped(path, f"invalid DICOM attribute {exc}")
    except Exception as exc:
        return Skipped(path, f"invalid DICOM attributes: {type(exc).__name__}: {exc}")


class AttributeProblem(ValueError):
    """A header element whose value cannot be read; the message names the element and its tag."""


def _get(ds: Dataset, keyword: str, default=None):
    """Return ds.get(keyword, default), naming the element and its tag if its value cannot be converted."""
    try:
        return ds.get(keyword, default)
    except Exception as exc:
        tag = tag_for_keyword(keyword)
        where = f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})" if tag is not None else keyword
        raise AttributeProblem(f"{where}: {type(exc).__name__}: {exc}") from exc


def is_dicomdir(ds: Dataset) -> bool:
    """Return True if the dataset is a DICOMDIR (media directory)."""
    return "DirectoryRecordSequence" in ds


def _record_from_dataset(path: Path, ds: Dataset) -> DicomRecord | Skipped:
    modality = str(_get(ds, "Modality", "") or "")
    reason = _non_image_reason(path, ds, modality)
    if reason:
        return Skipped(path, reason)
    rows, columns = int(_get(ds, "Rows")), int(_get(ds, "Columns"))
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    spacing = _pixel_spacing(ds, shared)
    thickness = _float(_get(ds, "SliceThickness")) or _float(_functional_value(ds, shared, "PixelMeasuresSequence", "SliceThickness"))
    orientation = _orientation(ds, shared)
    photometric = str(_get(ds, "PhotometricInterpretation", "MONOCHROME2"))
    slope, intercept = _rescale(ds, shared)
    pixel_range = _stored_range(ds, slope, intercept)
    invert = sum(pixel_range) if photometric == "MONOCHROME1" and pixel_range else None
    series_description = str(_get(ds, "SeriesDescription", "") or "")
    protocol = str(_get(ds, "ProtocolName", "") or "")
    sequence = _sequence_name(ds)
    record = DicomRecord(
        path=path,
        series_uid=str(_get(ds, "SeriesInstanceUID", "") or f"no-series-uid:{path.parent}"),
        series_number=_int(_get(ds, "SeriesNumber")),
        patient=PatientInfo(
            name=str(_get(ds, "PatientName", "") or ""),
            id=str(_get(ds, "PatientID", "") or ""),
            birth_date=str(_get(ds, "PatientBirthDate", "") or ""),
            sex=str(_get(ds, "PatientSex", "") or ""),
        ),
        study=StudyInfo(
            uid=str(_get(ds, "StudyInstanceUID", "") or ""),
            date=str(_get(ds, "StudyDate", "") or ""),
            time=str(_get(ds, "StudyTime", "") or ""),
            description=str(_get(ds, "StudyDescription", "") or ""),
            accession=str(_get(ds, "AccessionNumber", "") or ""),
        ),
        description=series_description or protocol,
        modality=modality,
        sequence=sequence,
        contrast=guess_contrast(series_description, protocol, sequence_name=sequence,
                                contrast_agent=bool(str(_get(ds, "ContrastBolusAgent", "") or "").strip())),
        rows=rows,
        columns=columns,
        pixel_spacing=spacing,
        slice_thickness=thickness,
        orientation=orientation,
        photometric=photometric,
        pixel_range=pixel_range,
        invert_pivot=invert,
    )
    n_frames = _int(_get(ds, "NumberOfFrames")) or 1
    if "PerFrameFunctionalGroupsSequence" in ds:
        record.slices = _enhanced_frames(path, ds, shared, n_frames, slope, intercept)
    else:
        record.slices = _classic_frames(path, ds, n_frames, orientation, slope, intercept)
    layout = mosaic_layout(ds, rows, columns) if "PerFrameFunctionalGroupsSequence" not in ds else None
    if layout is not None:
        _split_mosaic(record, ds, layout)
    syntax = _transfer_syntax(ds)
    if syntax is not None and syntax.is_encapsulated:
        record.slices = [replace(ref, compressed=True) for ref in record.slices]
    return record


def _split_mosaic(record: DicomRecord, ds: Dataset, layout) -> None:
    """Replace each mosaic frame by its tiles, each a slice with its own position; the record takes the tile size."""
    step = _float(_get(ds, "SpacingBetweenSlices")) or record.slice_thickness
    positions = tile_positions(record.slices[0].position if record.slices else None, record.orientation,
                               record.pixel_spacing, record.rows, record.columns, layout, step)
    tiles = []
    for ref in record.slices:
        for index in range(layout.count):
            row, column = divmod(index, layout.grid)
            box = (row * layout.tile_rows, column * layout.tile_columns, layout.tile_rows, layout.tile_columns)
            uid = f"{ref.sop_instance_uid}#tile{index}" if ref.sop_instance_uid else None
            tiles.append(replace(ref, tile=box, position=positions[index], sop_instance_uid=uid))
    record.slices = tiles
    record.rows, record.columns = layout.tile_rows, layout.tile_columns


def _non_image_reason(path: Path, ds: Dataset, modality: str) -> str | None:
    sop_name = _sop_class_name(ds)
    if modality in _NON_IMAGE_MODALITIES:
        return f"{_NON_IMAGE_MODALITIES[modality]} ({sop_name}), not an image"
    if is_dicomdir(ds):
        return "DICOMDIR (media directory), not an image"
    pixel_tag = next((tag for tag in _PIXEL_DATA_TAGS if tag in ds), None)
    if pixel_tag is None or "Rows" not in ds or "Columns" not in ds:
        if "Image Storage" in sop_name:
            return f"no pixel data in an image object ({sop_name}): the file may be truncated"
        return f"no pixel data ({sop_name})"
    size_problem = _size_problem(ds)
    if size_problem:
        return f"refused before reading pixels: {size_problem}"
    syntax = _transfer_syntax(ds)
    if syntax is not None:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            return f"unsupported encoding: {syntax.name} ({syntax})"
        if not decoder.is_available:
            return f"unsupported encoding: {syntax.name} (no decoder installed)"
    return _truncation_reason(path, ds, pixel_tag, syntax)


def _size_problem(ds: Dataset) -> str | None:
    """Return why the header's image size, frame count or bit depth is refused, before anything is allocated."""
    return dicom_size_problem(
        rows=int(_get(ds, "Rows")),
        columns=int(_get(ds, "Columns")),
        frames=_int(_get(ds, "NumberOfFrames")) or 1,  # 0 or absent: one frame, as the pixel decoders read it
        bits_allocated=int(_get(ds, "BitsAllocated", 16) or 16),
        samples=int(_get(ds, "SamplesPerPixel", 1) or 1),
    )


def _truncation_reason(path: Path, ds: Dataset, pixel_tag: int, syntax) -> str | None:
    raw = ds.get_item(pixel_tag, keep_deferred=True)  # the raw element: its length is known without reading it
    length = getattr(raw, "length", None)
    offset = getattr(raw, "value_tell", None)
    if length is None or offset is None or length == _UNDEFINED_LENGTH:
        return None
    file_size = path.stat().st_size
    if offset + length > file_size:
        return f"truncated: pixel data declares {length} bytes, file holds {max(file_size - offset, 0)}"
    if syntax is not None and not syntax.is_compressed:
        expected = _expected_native_bytes(ds)
        if expected and length < expected:
            return f"truncated: {length} bytes of pixel data, {expected} expected from the header"
    return None


def _expected_native_bytes(ds: Dataset) -> int:
    bits = int(_get(ds, "BitsAllocated", 16) or 16)
    frames = _int(_get(ds, "NumberOfFrames")) or 1
    samples = int(_get(ds, "SamplesPerPixel", 1) or 1)
    total_bits = int(_get(ds, "Rows")) * int(_get(ds, "Columns")) * frames * samples * bits
    return (total_bits + 7) // 8


def _transfer_syntax(ds: Dataset):
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None:
        return None
    return pydicom.uid.UID(str(syntax))


def _sop_class_name(ds: Dataset) -> str:
    uid = _get(ds, "SOPClassUID")
    if not uid:
        return "unknown SOP class"
    uid = pydicom.uid.UID(str(uid))
    return uid.name if uid.is_valid else str(uid)


def _enhanced_frames(path, ds, shared, n_frames, slope, intercept) -> list[SliceRef]:
    frames = []
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence")
    for index in range(n_frames):
        item = per_frame[index] if index < len(per_frame) else Dataset()
        position = _group_value(item, "PlanePositionSequence", "ImagePositionPatient")
        frame_slope = _float(_group_value(item, "PixelValueTransformationSequence", "RescaleSlope"))
        frame_intercept = _float(_group_value(item, "PixelValueTransformationSequence", "RescaleIntercept"))
        voi = _window(_group_value(item, "FrameVOILUTSequence", "WindowCenter"),
                      _group_value(item, "FrameVOILUTSequence", "WindowWidth"))
        if voi is None:
            voi = _window(_group_value(shared, "FrameVOILUTSequence", "WindowCenter"),
                          _group_value(shared, "FrameVOILUTSequence", "WindowWidth"))
        frames.append(SliceRef(
            path=path,
            frame=index,
            position=_triple(position),
            instance_number=_int(_get(ds, "InstanceNumber")),
            temporal_index=_int(_group_value(item, "FrameContentSequence", "TemporalPositionIndex")),
            acquisition_number=_int(_get(ds, "AcquisitionNumber")),
            voi=voi,
            slope=frame_slope if frame_slope is not None else slope,
            intercept=frame_intercept if frame_intercept is not None else intercept,
            sop_instance_uid=_frame_uid(ds, index, n_frames),
        ))
    return frames


def _classic_frames(path, ds, n_frames, orientation, slope, intercept) -> list[SliceRef]:
    position = _triple(_get(ds, "ImagePositionPatient"))
    voi = _window(_get(ds, "WindowCenter"), _get(ds, "WindowWidth"))
    step = _float(_get(ds, "SpacingBetweenSlices"))
    normal = slice_normal(orientation) if n_frames > 1 and position and step else None
    frames = []
    for index in range(n_frames):
        frame_position = position
        if normal is not None:
            frame_position = tuple(float(p + index * step * n) for p, n in zip(position, normal))
        elif n_frames > 1:
            frame_position = None  # frames without per-frame geometry are ordered by index
        frames.append(SliceRef(
            path=path,
            frame=index if n_frames > 1 else None,
            position=frame_position,
            instance_number=_int(_get(ds, "InstanceNumber")),
            temporal_index=_int(_get(ds, "TemporalPositionIdentifier")),
            acquisition_number=_int(_get(ds, "AcquisitionNumber")),
            voi=voi,
            slope=slope,
            intercept=intercept,
            sop_instance_uid=_frame_uid(ds, index, n_frames),
        ))
    return frames


def _frame_uid(ds: Dataset, index: int, n_frames: int) -> str | None:
    uid = str(_get(ds, "SOPInstanceUID", "") or "")
    if not uid:
        return None
    return f"{uid}#{index}" if n_frames > 1 else uid


def _first(ds: Dataset | None, keyword: str) -> Dataset | None:
    if ds is None:
        return None
    seq = _get(ds, keyword)
    return seq[0] if seq else None


def _group_value(item: Dataset | None, sequence: str, keyword: str):
    inner = _first(item, sequence)
    return inner.get(keyword) if inner is not None else None


def _functional_value(ds: Dataset, shared: Dataset | None, sequence: str, keyword: str):
    """Return a functional-group value from the shared groups, else from the first frame's."""
    value = _group_value(shared, sequence, keyword)
    if value is None:
        value = _group_value(_first(ds, "PerFrameFunctionalGroupsSequence"), sequence, keyword)
    return value


def _pixel_spacing(ds: Dataset, shared: Dataset | None) -> tuple[float, float] | None:
    value = _get(ds, "PixelSpacing") or _functional_value(ds, shared, "PixelMeasuresSequence", "PixelSpacing")
    if value is None:
        value = _get(ds, "ImagerPixelSpacing")
    numbers = _floats(value, 2)
    if numbers is None or min(numbers) <= 0:
        return None  # missing, malformed, zero or negative spacing: shown without a scale
    return numbers[0], numbers[1]


def _orientation(ds: Dataset, shared: Dataset | None) -> tuple[float, ...] | None:
    value = _get(ds, "ImageOrientationPatient") or _functional_value(ds, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
    numbers = _floats(value, 6)
    if numbers is None or not any(numbers[:3]) or not any(numbers[3:]):
        return None  # missing, malformed or degenerate: the slices are ordered without geometry
    return numbers


def _rescale(ds: Dataset, shared: Dataset | None) -> tuple[float, float]:
    slope = _float(_get(ds, "RescaleSlope"))
    intercept = _float(_get(ds, "RescaleIntercept"))
    if slope is None:
        slope = _float(_group_value(shared, "PixelValueTransformationSequence", "RescaleSlope"))
        intercept = _float(_group_value(shared, "PixelValueTransformationSequence", "RescaleIntercept"))
    slope, intercept = (slope if slope not in (None, 0.0) else 1.0), (intercept or 0.0)
    if not (_MIN_SLOPE <= abs(slope) <= _MAX_SLOPE) or abs(intercept) > _MAX_VALUE:
        warnings.warn(f"rescale slope {slope:g} / intercept {intercept:g} cannot describe image values; ignored")
        return 1.0, 0.0
    return slope, intercept


def _stored_range(ds: Dataset, slope: float, intercept: float) -> tuple[float, float] | None:
    bits = _int(_get(ds, "BitsStored")) or _int(_get(ds, "BitsAllocated"))
    if not bits:
        return None
    if int(_get(ds, "PixelRepresentation", 0) or 0) == 1:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        low, high = 0, 2**bits - 1
    values = sorted((low * slope + intercept, high * slope + intercept))
    return float(values[0]), float(values[1])


def _sequence_name(ds: Dataset) -> str:
    for keyword in ("SequenceName", "PulseSequenceName", "ScanningSequence"):
        value = _get(ds, keyword)
        if value:
            return "\\".join(value) if isinstance(value, pydicom.multival.MultiValue) else str(value)
    return ""


def _window(center, width) -> Window | None:
    center, width = _float(_first_value(center)), _float(_first_value(width))
    if center is None or width is None or width <= 0 or abs(center) > _MAX_VALUE or width > 2 * _MAX_VALUE:
        return None  # absent or absurd: the viewer falls back to a window from the slice's own values
    return Window(center, width)


def _first_value(value):
    if isinstance(value, (pydicom.multival.MultiValue, list, tuple)):
        return value[0] if len(value) else None
    return value


def _triple(value) -> tuple[float, float, float] | None:
    return _floats(value, 3)


def _floats(value, count: int) -> tuple[float, ...] | None:
    """Return a multi-valued header value as `count` finite floats, or None if it is anything else."""
    if value is None or isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != count:
        return None
    numbers = tuple(_float(v) for v in value)
    return None if any(n is None for n in numbers) else numbers


def _float(value) -> float | None:
    """Return a header value as a finite float; absent, malformed, nan and infinite values are None."""
    try:
        number = None if value is None or value == "" else float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _int(value) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None
