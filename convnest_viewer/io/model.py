"""The loader's data model: series of slices with geometry, display metadata and lazy pixels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from convnest_viewer.io.orientation import orientation_letters, slice_normal
from convnest_viewer.io.pixels import slice_pixels
from convnest_viewer.io.tags import TagRow, tag_rows
from convnest_viewer.io.window import Window, percentile_window

SourceKind = Literal["dicom", "nifti", "raster"]


@dataclass(frozen=True)
class SliceRef:
    """Where one 2-D slice's pixels live and where the slice sits in the patient."""

    path: Path
    frame: int | None = None  # frame of a multi-frame file, z index of a NIfTI volume
    position: tuple[float, float, float] | None = None  # ImagePositionPatient (LPS, mm)
    instance_number: int | None = None
    temporal_index: int | None = None  # TemporalPositionIdentifier / TemporalPositionIndex
    acquisition_number: int | None = None
    voi: Window | None = None  # the file's first WindowCenter/WindowWidth, rescaled units
    slope: float = 1.0
    intercept: float = 0.0
    sop_instance_uid: str | None = None
    volume_index: int | None = None  # 4-D NIfTI: index along t
    compressed: bool = False  # DICOM with encapsulated (compressed) pixel data: decoded in a worker process
    tile: tuple[int, int, int, int] | None = None  # Siemens mosaic: (first row, first column, rows, columns) to cut


@dataclass(frozen=True)
class Skipped:
    """A file the loader could not use, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class FileNote:
    """Something odd about a file that was still read (a malformed value, a repaired header)."""

    path: Path
    text: str


@dataclass(frozen=True)
class PatientInfo:
    """Who the images belong to (patient identifiers: never log these)."""

    name: str = ""
    id: str = ""
    birth_date: str = ""
    sex: str = ""

    @property
    def key(self) -> str:
        """Return the grouping key of this patient."""
        return f"{self.id}\x00{self.name}"


@dataclass(frozen=True)
class StudyInfo:
    """One imaging study (visit)."""

    uid: str = ""
    date: str = ""
    time: str = ""
    description: str = ""
    accession: str = ""


@dataclass
class Series:
    """One series: one or more volumes of equally oriented 2-D slices, ordered in space."""

    key: str  # unique within a LoadResult
    uid: str
    kind: SourceKind
    volumes: list[list[SliceRef]]
    rows: int
    columns: int
    patient: PatientInfo = field(default_factory=PatientInfo)
    study: StudyInfo = field(default_factory=StudyInfo)
    description: str = ""
    modality: str = ""
    number: int | None = None
    sequence: str = ""
    contrast: str = ""  # guessed from its names (convnest_viewer.io.contrast): "t1", "t1c", "flair", ... or ""
    pixel_spacing: tuple[float, float] | None = None  # (row spacing, column spacing), mm
    slice_thickness: float | None = None
    orientation: tuple[float, float, float, float, float, float] | None = None
    photometric: str = "MONOCHROME2"
    invert_pivot: float | None = None  # MONOCHROME1: displayed value = pivot - value
    pixel_range: tuple[float, float] | None = None  # rescaled range of stored values
    _gaps: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # volume -> its gaps

    @property
    def n_volumes(self) -> int:
        """Return the number of volumes (time points) in the series."""
        return len(self.volumes)

    @property
    def n_slices(self) -> int:
        """Return the number of slices in one volume."""
        return len(self.volumes[0]) if self.volumes else 0

    @property
    def is_multivolume(self) -> bool:
        """Return True for a 4-D series (several volumes)."""
        return self.n_volumes > 1

    def slice_ref(self, index: int, volume: int = 0) -> SliceRef:
        """Return the reference of slice `index` of volume `volume`."""
        return self.volumes[volume][index]

    def pixels(self, index: int, volume: int = 0) -> np.ndarray:
        """Return slice `index` as float32 display values (rescaled, MONOCHROME1 inverted)."""
        return slice_pixels(self, self.slice_ref(index, volume))

    def window(self, index: int, volume: int = 0) -> Window:
        """Return the slice's own window: its VOI, else a robust percentile window."""
        ref = self.slice_ref(index, volume)
        if ref.voi is not None:
            return ref.voi if self.invert_pivot is None else ref.voi.inverted(self.invert_pivot)
        return percentile_window(self.pixels(index, volume))

    def default_window(self) -> Window:
        """Return the series' default display window (that of its middle slice)."""
        return self.window(self.n_slices // 2)

    def slice_location(self, index: int, volume: int = 0) -> float | None:
        """Return the slice's position along the slice normal in mm, if known."""
        ref = self.slice_ref(index, volume)
        normal = self.normal()
        if ref.position is None or normal is None:
            return None
        return float(np.dot(np.asarray(ref.position), normal))

    def gaps(self, volume: int = 0) -> list[Gap]:
        """Return where slices are missing in a volume (from the spacing of slice positions); [] if unknown."""
        if volume not in self._gaps:
            locations = [self.slice_location(index, volume) for index in range(self.n_slices)]
            self._gaps[volume] = [] if any(v is None for v in locations) else find_gaps(locations)
        return self._gaps[volume]

    def slice_step_position(self, index: int, volume: int = 0) -> float:
        """Return the slice's place in the stack in slice steps: its index plus the slices missing before it."""
        return float(index + sum(gap.missing_slices for gap in self.gaps(volume) if gap.after < index))

    def gap_beside(self, index: int, volume: int = 0) -> tuple[str, Gap] | None:
        """Return ("before" | "after", gap) when slices are missing right next to slice `index`, else None."""
        for gap in self.gaps(volume):
            if gap.after == index - 1:
                return "before", gap
            if gap.after == index:
                return "after", gap
        return None

    def gap_text(self, index: int, volume: int = 0) -> str | None:
        """Return a sentence when slices are missing right next to slice `index`, else None."""
        beside = self.gap_beside(index, volume)
        return f"{beside[1].text().capitalize()} {beside[0]} this slice" if beside else None

    def normal(self) -> np.ndarray | None:
        """Return the unit slice normal (row cosines x column cosines), if known."""
        return slice_normal(self.orientation)

    def orientation_letters(self) -> dict[str, str] | None:
        """Return the patient directions at the left, right, top and bottom image edges."""
        if self.orientation is None:
            return None
        return orientation_letters(self.orientation)

    def aspect_ratio(self) -> float:
        """Return the displayed height/width ratio of one pixel (row spacing / column spacing)."""
        if not self.pixel_spacing or min(self.pixel_spacing) <= 0:
            return 1.0
        return self.pixel_spacing[0] / self.pixel_spacing[1]

    def tags(self, index: int = 0, volume: int = 0) -> list[TagRow]:
        """Return every header element of the slice's file, for a tag browser."""
        return tag_rows(self, self.slice_ref(index, volume))

    def sources(self) -> list[Path]:
        """Return the distinct files this series reads from."""
        seen: dict[Path, None] = {}
        for volume in self.volumes:
            for ref in volume:
                seen.setdefault(ref.path, None)
        return list(seen)


@dataclass(frozen=True)
class Gap:
    """Slices missing from a series between slice `after` and the next (0-based), found from their spacing."""

    after: int
    missing_mm: float
    missing_slices: int

    def text(self) -> str:
        """Return a short description, e.g. "gap of 7.2 mm (about 2 slices missing)"."""
        return f"gap of {self.missing_mm:.1f} mm (about {self.missing_slices} slice{'s' if self.missing_slices != 1 else ''} missing)"


def find_gaps(locations: Sequence[float], tolerance: float = 1.5) -> list[Gap]:
    """Return the gaps in ordered slice locations: steps over `tolerance` times the typical (median) step."""
    if len(locations) < 3:
        return []
    steps = np.abs(np.diff(np.asarray(locations, float)))
    typical = float(np.median(steps))
    if typical <= 1e-6:
        return []
    gaps = []
    for index, step in enumerate(steps):
        if step > tolerance * typical:
            missing = max(int(round(step / typical)) - 1, 1)
            gaps.append(Gap(index, float(step - typical), missing))
    return gaps


@dataclass
class StudyNode:
    """A study and its series, for a patient > study > series tree."""

    info: StudyInfo
    series: list[Series]


@dataclass
class PatientNode:
    """A patient and their studies, for a patient > study > series tree."""

    info: PatientInfo
    studies: list[StudyNode]


@dataclass
class LoadResult:
    """Everything a load found: usable series, the files it skipped with reasons, notes on odd files it read."""

    series: list[Series] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[FileNote] = field(default_factory=list)

    def tree(self) -> list[PatientNode]:
        """Group the series into patient > study > series, in load order."""
        patients: dict[str, PatientNode] = {}
        studies: dict[tuple[str, str], StudyNode] = {}
        for series in self.series:
            patient = patients.get(series.patient.key)
            if patient is None:
                patient = patients[series.patient.key] = PatientNode(series.patient, [])
            study_key = (series.patient.key, series.study.uid)
            study = studies.get(study_key)
            if study is None:
                study = studies[study_key] = StudyNode(series.study, [])
                patient.studies.append(study)
            study.series.append(series)
        return list(patients.values())

    def find(self, key: str) -> Series | None:
        """Return the series with this key, or None."""
        return next((s for s in self.series if s.key == key), None)
