"""Where the bundled resources live, in a source checkout and in a frozen (PyInstaller) app."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def resources_dir() -> Path:
    """Return the folder holding the bundled models, demo study and icons."""
    override = os.environ.get("CONVNEST_RESOURCES")
    if override:
        return Path(override)
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def models_dir() -> Path:
    """Return the folder of bundled models, one sub-folder per model."""
    return resources_dir() / "models"


def demo_study_dir() -> Path:
    """Return the folder of the bundled demo DICOM study."""
    return resources_dir() / "demo"
