"""Test session set-up: Qt offscreen, no user settings touched."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("CONVNEST_SETTINGS_SCOPE", "tests")  # the viewer keeps test settings apart
