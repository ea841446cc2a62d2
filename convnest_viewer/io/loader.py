"""Load a study: find files (folders, file lists, DICOMDIR), read headers, build ordered series."""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pydicom

from convnest_viewer.io.dicom_headers import DicomRecord, read_dicom_record
from convnest_viewer.io.model import FileNote, LoadResult, Series, Skipped
from convnest_viewer.io.native_output import caught_warnings
from convnest_viewer.io.nifti import is_nifti, read_nifti_series
from convnest_viewer.io.raster import is_raster, read_raster_series
from convnest_viewer.io.raster_stack import stack_raster_series
from convnest_viewer.io.stacking import stack_volumes
from convnest_viewer.io.window import Window
from convnest_viewer.privacy import remember_patient

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class StudyPreview:
    """One slice of a study still being indexed, decoded, to show until the whole study has loaded."""

    series: Series  # the series of the one file read so far (one slice, or a file's frames)
    index: int
    values: np.ndarray
    window: Window


PreviewCallback = Callable[[StudyPreview], None]

UNEXPECTED_ERROR = "unexpected error while reading"  # a reader raised what it should have turned into a reason


def load_study(
    paths: Iterable[str | os.PathLike],
    progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
    preview: PreviewCallback | None = None,
) -> LoadResult:
    """Load every image series found under the given folders, files and DICOMDIRs.

    With `preview`, the middle file of the first folder is read first and one of its slices handed to
    preview() before the other headers are read, so a viewer can show an image while a large folder indexes.
    """
    files, skipped = find_files(paths)
    records: list[tuple[int, DicomRecord]] = []
    other_series: list[tuple[int, Series]] = []
    notes: list[FileNote] = []
    read_early = _read_preview(files, preview) if preview is not None and len(files) > 1 else {}
    for done, (origin, path) in enumerate(files):
        if cancelled is not None and cancelled():
            break
        item, file_notes = read_early.pop(done) if done in read_early else _read_one_with_notes(path)
        if not isinstance(item, Skipped):
            notes.extend(file_notes)
        if isinstance(item, Skipped):
            skipped.append(item)
        elif isinstance(item, Series):
            other_series.append((origin, item))
        else:
            remember_patient(item.patient)  # before anything about this file can reach a log
            records.append((origin, item))
        if progress is not None:
            progress(done + 1, len(files))
    dicom_series, duplicates = build_dicom_series(records)
    skipped.extend(duplicates)
    ordered = sorted(dicom_series + stack_raster_series(other_series), key=lambda pair: pair[0])
    result = LoadResult(series=[series for _, series in ordered], skipped=skipped, notes=notes)
    log.info("loaded %d series from %d files; %d skipped, %d notes", len(result.series), len(files),
             len(skipped), len(notes))
    for entry in skipped:
        log.info("skipped %s: %s", entry.path, entry.reason)
    return result


def _read_preview(files: list[tuple[int, Path]], preview: PreviewCallback) -> dict[int, tuple]:
    """Read the middle file of the first folder, pass one uncompressed slice of it to preview(), and return
    {its index in files: what reading it gave} so that it is not read twice."""
    folder = files[0][1].parent
    same_folder = [i for i, (_, path) in enumerate(files) if path.parent == folder]
    chosen = same_folder[len(same_folder) // 2]
    item, file_notes = _read_one_with_notes(files[chosen][1])
    series = None
    if isinstance(item, Series):
        series = item
    elif isinstance(item, DicomRecord):
        remember_patient(item.patient)
        built, _ = build_dicom_series([(0, item)])
        series = built[0][1] if built else None
    if series is not None and series.n_slices:
        index = series.n_slices // 2
        if not series.slice_ref(index).compressed:  # compressed data needs the decoder process: not worth a preview
            try:
                values = series.pixels(index)
                window = series.window(index)
            except Exception as exc:  # noqa: BLE001 - the full read reports this file; the preview is dropped
                log.debug("no preview from %s: %s", files[chosen][1].name, type(exc).__name__)
            else:
                preview(StudyPreview(series, index, values, window))
    return {chosen: (item, file_notes)}


def find_files(paths: Iterable[str | os.PathLike]) -> tuple[list[tuple[int, Path]], list[Skipped]]:
    """Expand folders (recursively) and DICOMDIRs into files, each with the index of its input path."""
    found: dict[Path, int] = {}
    skipped: list[Skipped] = []
    for origin, raw in enumerate(paths):
        path = Path(raw).expanduser()
        if not path.exists():
            skipped.append(Skipped(path, "no such file or folder"))
            continue
        if path.is_dir():
            candidates = _walk_folder(path)
        else:
            candidates = [path]
        for candidate in candidates:
            if candidate.name.upper() == "DICOMDIR":
                referenced, missing = read_dicomdir(candidate)
                skipped.extend(missing)
                for ref in referenced:
                    found.setdefault(ref.resolve(), origin)
            else:
                found.setdefault(candidate.resolve(), origin)
    files = sorted(((origin, path) for path, origin in found.items()), key=lambda item: (item[0], _natural_key(item[1])))
    return files, skipped


def read_dicomdir(path: Path) -> tuple[list[Path], list[Skipped]]:
    """Return the image files a DICOMDIR references, and the references that are missing."""
    try:
        ds = pydicom.dcmread(path, force=True)
        records = ds.DirectoryRecordSequence
    except Exception as exc:
        return [], [Skipped(path, f"unreadable DICOMDIR: {exc}")]
    files, missing = [], []
    for record in records:
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        target = _resolve_case_insensitive(path.parent, parts)
        if target is None:
            missing.append(Skipped(path.parent.joinpath(*parts), f"listed in {path.name} but missing"))
        else:
            files.append(target)
    return files, missing


def build_dicom_series(records: Sequence[tuple[int, DicomRecord]]) -> tuple[list[tuple[int, Series]], list[Skipped]]:
    """Group DICOM records into series (by UID, number and plane) with ordered volumes."""
    groups: dict[tuple, list[tuple[int, DicomRecord]]] = defaultdict(list)
    for origin, record in records:
        groups[_group_key(record)].append((origin, record))
    uid_counts = Counter(key[0] for key in groups)  # series UIDs shared by several series numbers or planes
    planes_per_series = Counter(key[:2] for key in groups)
    result: list[tuple[int, Series]] = []
    duplicates: list[Skipped] = []
    plane_counter: dict[tuple, int] = defaultdict(int)
    for key, members in groups.items():
        first = members[0][1]
        slices, seen = [], {}
        for _, record in members:
            for ref in record.slices:
                if ref.sop_instance_uid and ref.sop_instance_uid in seen:
                    duplicates.append(Skipped(record.path, f"duplicate of {seen[ref.sop_instance_uid].name} (same SOP Instance UID)"))
                    break
                if ref.sop_instance_uid:
                    seen[ref.sop_instance_uid] = record.path
                slices.append(ref)
        if not slices:
            continue
        plane_counter[key[:2]] += 1
        description = first.description
        series_key = first.series_uid
        if uid_counts[key[0]] > 1:
            series_key += f"#{first.series_number}" if planes_per_series[key[:2]] == 1 else f"#{first.series_number}.{plane_counter[key[:2]]}"
        if planes_per_series[key[:2]] > 1:
            description = f"{description} ({_split_label(key, groups, plane_counter[key[:2]])})".strip()
        series = Series(
            key=series_key,
            uid=first.series_uid,
            kind="dicom",
            volumes=stack_volumes(slices, first.orientation),
            rows=first.rows,
            columns=first.columns,
            patient=first.patient,
            study=first.study,
            description=description,
            modality=first.modality,
            number=first.series_number,
            sequence=first.sequence,
            contrast=first.contrast,
            pixel_spacing=first.pixel_spacing,
            slice_thickness=first.slice_thickness,
            orientation=first.orientation,
            photometric=first.photometric,
            invert_pivot=first.invert_pivot,
            pixel_range=first.pixel_range,
        )
        origin = min(origin for origin, _ in members)
        result.append((origin, series))
    # per input path: patients by ID, their studies by date, then series by number (UIDs only break ties)
    result.sort(key=lambda pair: (pair[0], pair[1].patient.key, pair[1].study.date, pair[1].study.time, pair[1].study.uid,
                                  pair[1].number if pair[1].number is not None else 1 << 30, pair[1].key))
    return result, duplicates


def _split_label(key: tuple, groups: dict, ordinal: int) -> str:
    """Name what sets one part of a split series apart: its plane (numbered in load order), else its image size."""
    if len({other[2] for other in groups if other[:2] == key[:2]}) > 1:
        return f"plane {ordinal}"
    return f"{key[3]}×{key[4]}"


def _group_key(record: DicomRecord) -> tuple:
    orientation = tuple(round(v, 3) for v in record.orientation) if record.orientation else None
    return (record.series_uid, record.series_number, orientation, record.rows, record.columns)


def _read_one_with_notes(path: Path):
    """Read one file; the warnings its readers raise become notes on that file instead of stderr output."""
    with caught_warnings() as caught:
        try:
            item = _read_one(path)
        except Exception as exc:  # noqa: BLE001 - a reader's bug costs this file, never the study
            item = Skipped(path, f"{UNEXPECTED_ERROR}: {type(exc).__name__}: {exc}")
    texts = dict.fromkeys(_note_text(w.message) for w in caught)
    return item, [FileNote(path, text) for text in texts]


def _note_text(message) -> str:
    text = str(message).split(" Please see <", 1)[0]  # pydicom appends a link to the standard
    return text.strip()


def _read_one(path: Path):
    if is_nifti(path):
        return read_nifti_series(path)
    if is_raster(path):
        return read_raster_series(path)
    return read_dicom_record(path)


def _walk_folder(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(root) / name for name in names if not name.startswith("."))
    return files


def _resolve_case_insensitive(base: Path, parts: Sequence[str]) -> Path | None:
    current = base
    for part in parts:
        candidate = current / part
        if not candidate.exists():
            try:
                matches = [child for child in current.iterdir() if child.name.lower() == part.lower()]
            except OSError:
                return None
            if not matches:
                return None
            candidate = matches[0]
        current = candidate
    return current if current.is_file() else None


def _natural_key(path: Path) -> list:
    import re

    return [int(token) if token.isdigit() else token.lower() for token in re.split(r"(\d+)", str(path))]
