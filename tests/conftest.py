"""Test session set-up: Qt offscreen, no user settings touched, shared-data fixture."""

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("CONVNEST_SETTINGS_SCOPE", "tests")  # the viewer keeps test settings apart


@pytest.fixture(scope="session")
def shared():
    """Return the root of ../shared (datasets and scanner DICOM)."""
    from tests.paths import SHARED

    return SHARED
