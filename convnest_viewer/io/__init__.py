"""Study loading: DICOM (files, folders, DICOMDIR), NIfTI and PNG/JPEG; no Qt, no torch.

The names below load their module on first use, so that importing one light module (window, pixels) does not
import the DICOM reader: the training code runs on machines without pydicom.
"""

from importlib import import_module

_WHERE = {
    "StudyPreview": "loader", "find_files": "loader", "load_study": "loader",
    "FileNote": "model", "LoadResult": "model", "PatientInfo": "model", "Series": "model", "SliceRef": "model",
    "Skipped": "model", "StudyInfo": "model",
    "Window": "window",
    "PIXEL_CACHE": "pixels", "PixelCache": "pixels", "PixelReadError": "pixels", "apply_window": "pixels",
    "percentile_window": "pixels",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    """Return one of the package's names, importing its module the first time."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
