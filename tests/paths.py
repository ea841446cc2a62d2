"""Where the real test data lives: ../shared (datasets, scanner DICOM) and pydicom's bundled files."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _find_shared() -> Path:
    candidates = [os.environ.get("CONVNEST_SHARED"), REPO.parent / "shared", "/work/shared"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "dicom").is_dir():
            return Path(candidate)
    raise RuntimeError("the shared test data (../shared) was not found; set CONVNEST_SHARED")


SHARED = _find_shared()
DICOM = SHARED / "dicom"
DATA = SHARED / "data"
NIFTI = SHARED / "nifti"
BRAIN_TUMOR_MRI = DATA / "brain-tumor-mri"


def pydicom_file(name: str) -> Path:
    """Return the path of one of pydicom's bundled test files."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    assert path is not None, f"pydicom test file {name} missing"
    return Path(path)
