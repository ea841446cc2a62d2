"""Slices of 3-D volumes (NIfTI files, DICOM series) in all three planes, oriented as a viewer shows them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from convnest_viewer.io.nifti import is_nifti
from convnest_viewer.io.window import Window, percentile_window

PLANES = ("axial", "coronal", "sagittal")
ISOTROPIC_RATIO = 1.5  # a series is resliced into the other planes when its slices are at most this much
                       # further apart than its pixels


def is_volume_path(path: Path) -> bool:
    """Return whether a record's path is a whole volume (NIfTI file, DICOM folder or file), not one raster slice."""
    path = Path(path)
    return is_nifti(path) or path.is_dir() or path.suffix.lower() in ("", ".dcm", ".ima")


@dataclass(frozen=True)
class SeriesVolume:
    """A DICOM series placed in patient space: its LPS array, the planes it samples well and its windows."""

    array: np.ndarray  # read-only float32 (z, y, x): z foot to head, y front to back, x right to left
    spacing: tuple[float, float, float]  # mm, (z, y, x)
    own_plane: str  # the plane the series was acquired in
    planes: tuple[str, ...]  # the planes worth taking slices in
    shown_index: np.ndarray  # per slice of own_plane, the index of the same slice in the app's series
    windows: tuple[Window, ...]  # the app's window of each of the series' slices
    default_window: Window  # the series' default window (used for reslices)

    def window(self, plane: str, index: int) -> Window:
        """Return the window the app would use for a slice: its own for the acquired plane, else the series'."""
        return self.windows[int(self.shown_index[index])] if plane == self.own_plane else self.default_window


@lru_cache(maxsize=6)
def volume_array(path: Path) -> np.ndarray:
    """Return a volume as a read-only float32 (z, y, x) array, read once by the app's loader.

    A NIfTI file's array is the file's own (its axial slices are the slices the app shows); a DICOM series is
    placed in patient space (see dicom_series_volume).
    """
    from convnest_viewer.io.pixels import read_nifti_volume

    path = Path(path)
    if not is_nifti(path):
        return dicom_series_volume(path).array
    array = np.asarray(read_nifti_volume(path), dtype=np.float32)
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D volume, got shape {array.shape}")
    array.setflags(write=False)
    return array


@lru_cache(maxsize=6)
def dicom_series_volume(path: Path) -> SeriesVolume:
    """Read a DICOM series' largest volume with the app's loader and place it in patient space (LPS).

    The slices go where their orientation and positions put them, then SimpleITK turns the volume so that
    each plane's slices look as take_slice promises. The series' own plane is always sampled well; the other
    two only when its slices are no further apart than ISOTROPIC_RATIO times its pixels.
    """
    import SimpleITK as sitk

    from convnest_viewer.io.loader import load_study

    study = load_study([str(path)])
    if not study.series:
        raise ValueError(f"{path}: no image series could be read")
    series = max(study.series, key=lambda s: s.n_slices)
    refs = series.volumes[0]
    if series.n_slices < 3 or series.orientation is None or series.pixel_spacing is None or refs[0].position is None:
        raise ValueError(f"{path}: series {series.description!r} lacks the orientation, spacing or positions of a volume")
    row, column = np.array(series.orientation[:3]), np.array(series.orientation[3:])
    first, last = np.array(refs[0].position), np.array(refs[-1].position)
    step = float(np.linalg.norm(last - first)) / (len(refs) - 1)
    if step <= 0:
        raise ValueError(f"{path}: series {series.description!r} has its slices at one position")

    def oriented(stack: np.ndarray) -> sitk.Image:
        image = sitk.GetImageFromArray(stack)
        image.SetSpacing((series.pixel_spacing[1], series.pixel_spacing[0], step))
        image.SetDirection(tuple(np.stack([row, column, (last - first) / (step * (len(refs) - 1))], axis=1).ravel()))
        image.SetOrigin(tuple(float(v) for v in first))
        return sitk.DICOMOrient(image, "LPS")

    volume = oriented(np.stack([series.pixels(i) for i in range(series.n_slices)]).astype(np.float32))
    array = sitk.GetArrayFromImage(volume).astype(np.float32)
    array.setflags(write=False)
    own_plane = ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(np.cross(row, column))))]  # normal along x, y, z
    # where each of the app's slices went: orient an array holding each slice's index the same way
    numbers = np.broadcast_to(np.arange(series.n_slices, dtype=np.float32)[:, None, None], (series.n_slices, 1, 1))
    shown = sitk.GetArrayFromImage(oriented(np.ascontiguousarray(numbers)))
    shown_index = np.rint([take_slice(shown, own_plane, i).mean() for i in range(plane_length(shown.shape, own_plane))])
    isotropic = step <= ISOTROPIC_RATIO * max(series.pixel_spacing)
    return SeriesVolume(array, tuple(float(v) for v in volume.GetSpacing()[::-1]), own_plane,
                        PLANES if isotropic else (own_plane,), shown_index.astype(int),
                        tuple(series.window(i) for i in range(series.n_slices)), series.default_window())


def volume_window(path: Path, plane: str, index: int, values: np.ndarray) -> Window:
    """Return the window the app would use for a volume slice (NIfTI: a percentile window of its values)."""
    return percentile_window(values) if is_nifti(Path(path)) else dicom_series_volume(Path(path)).window(plane, index)


def sampled_planes(path: Path) -> tuple[str, ...]:
    """Return the planes in which a volume's slices are worth taking (all three for NIfTI files)."""
    return PLANES if is_nifti(Path(path)) else dicom_series_volume(Path(path)).planes


def slice_stride(path: Path, plane: str, every_mm: float = 2.0) -> int:
    """Return the step between slices taken in a plane so that they lie about every_mm apart (NIfTI: 1 mm voxels)."""
    if is_nifti(Path(path)):
        return max(1, round(every_mm))
    return max(1, round(every_mm / dicom_series_volume(Path(path)).spacing[PLANES.index(plane)]))


def plane_length(shape: tuple[int, int, int], plane: str) -> int:
    """Return how many slices a (z, y, x) volume has in a plane."""
    return shape[PLANES.index(plane)]


def take_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """Return one slice of a (z, y, x) volume in a plane.

    Axial slices are the file's own slices, as the app's loader shows them; coronal and sagittal ones are
    resliced with the volume's first z slice at the bottom (inferior down when z runs foot to head) and x or
    y along the columns, matching the axial slices' left-right and front-back directions.
    """
    if plane == "axial":
        return volume[index]
    if plane == "coronal":
        return volume[::-1, index, :]
    if plane == "sagittal":
        return volume[::-1, :, index]
    raise ValueError(f"unknown plane {plane!r}; choose one of {', '.join(PLANES)}")


def volume_slice(path: Path, plane: str, index: int) -> np.ndarray:
    """Return one slice of a volume (NIfTI file or DICOM series) in a plane, as contiguous float32."""
    return np.ascontiguousarray(take_slice(volume_array(Path(path)), plane, index))
