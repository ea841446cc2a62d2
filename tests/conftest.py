"""Test session set-up: Qt offscreen, settings and the ONNX export cache in throw-away folders, shared-data fixture."""

import os
import tempfile

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("CONVNEST_SETTINGS_FILE", os.path.join(tempfile.mkdtemp(prefix="convnest-tests-"), "settings.ini"))
os.environ.setdefault("CONVNEST_CACHE_DIR", tempfile.mkdtemp(prefix="convnest-cache-"))  # ONNX exports of this run


@pytest.fixture(scope="session")
def shared():
    """Return the root of ../shared (datasets and scanner DICOM)."""
    from tests.paths import SHARED

    return SHARED
