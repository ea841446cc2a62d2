"""Study loading: DICOM (files, folders, DICOMDIR), NIfTI and PNG/JPEG; no Qt, no torch."""

from convnest_viewer.io.loader import StudyPreview, find_files, load_study
from convnest_viewer.io.model import FileNote, LoadResult, PatientInfo, Series, SliceRef, Skipped, StudyInfo
from convnest_viewer.io.window import Window
from convnest_viewer.io.pixels import PIXEL_CACHE, PixelCache, PixelReadError, apply_window, percentile_window

__all__ = [
    "FileNote",
    "LoadResult",
    "PIXEL_CACHE",
    "PatientInfo",
    "PixelCache",
    "PixelReadError",
    "Series",
    "SliceRef",
    "Skipped",
    "StudyInfo",
    "StudyPreview",
    "Window",
    "apply_window",
    "find_files",
    "load_study",
    "percentile_window",
]
