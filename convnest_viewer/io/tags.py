"""Flatten a slice's header into rows for a searchable tag browser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convnest_viewer.io.model import Series, SliceRef

_MAX_VALUE_CHARS = 200


@dataclass(frozen=True)
class TagRow:
    """One header element: tag, keyword, VR, value text, and its nesting depth in sequences."""

    tag: str
    keyword: str
    vr: str
    value: str
    depth: int = 0


def tag_rows(series: "Series", ref: SliceRef) -> list[TagRow]:
    """Return the header elements of the slice's file (DICOM tags, NIfTI keys, image facts)."""
    if series.kind == "dicom":
        return _dicom_rows(ref)
    if series.kind == "nifti":
        return _nifti_rows(ref)
    return [
        TagRow("", "File", "", str(ref.path)),
        TagRow("", "Rows", "", str(series.rows)),
        TagRow("", "Columns", "", str(series.columns)),
    ]


def _dicom_rows(ref: SliceRef) -> list[TagRow]:
    import pydicom

    try:
        ds = pydicom.dcmread(ref.path, stop_before_pixels=True, force=True)
    except Exception as exc:
        return [TagRow("", "Error", "", f"{ref.path}: {exc}")]
    rows: list[TagRow] = []
    if getattr(ds, "file_meta", None):
        _walk(ds.file_meta, 0, rows)
    _walk(ds, 0, rows)
    return rows


def _walk(dataset, depth: int, rows: list[TagRow]) -> None:
    for element in dataset:
        tag = f"({element.tag.group:04X},{element.tag.element:04X})"
        keyword = element.keyword or element.name
        if element.VR == "SQ":
            rows.append(TagRow(tag, keyword, "SQ", f"{len(element.value)} item(s)", depth))
            for index, item in enumerate(element.value):
                rows.append(TagRow("", f"Item {index + 1}", "", "", depth + 1))
                _walk(item, depth + 2, rows)
            continue
        rows.append(TagRow(tag, keyword, str(element.VR), _value_text(element), depth))


def _value_text(element) -> str:
    if element.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") or element.tag == 0x7FE00010:
        length = len(element.value) if element.value is not None else 0
        return f"<{length} bytes>"
    text = str(element.value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 1] + "…"


def _nifti_rows(ref: SliceRef) -> list[TagRow]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(ref.path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        return [TagRow("", "Error", "", f"{ref.path}: {exc}")]
    rows = [
        TagRow("", "Size", "", str(reader.GetSize())),
        TagRow("", "Spacing", "", str(reader.GetSpacing())),
        TagRow("", "Origin (LPS)", "", str(reader.GetOrigin())),
        TagRow("", "Direction (LPS)", "", str(reader.GetDirection())),
    ]
    rows += [TagRow("", key, "", reader.GetMetaData(key)) for key in sorted(reader.GetMetaDataKeys())]
    return rows
