"""Test session set-up: Qt offscreen, settings in a throw-away file, shared-data fixture."""

import os
import tempfile

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("CONVNEST_SETTINGS_FILE", os.path.join(tempfile.mkdtemp(prefix="convnest-tests-"), "settings.ini"))


@pytest.fixture(scope="session")
def shared():
    """Return the root of ../shared (datasets and scanner DICOM)."""
    from tests.paths import SHARED

    return SHARED
