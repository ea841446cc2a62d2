"""Persistent viewer settings (recent studies, overlay choices, device, model) through QSettings."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSettings

MAX_RECENT = 10


def app_settings() -> QSettings:
    """Return the settings store ($CONVNEST_SETTINGS_FILE as an INI file when set, e.g. in tests)."""
    path = os.environ.get("CONVNEST_SETTINGS_FILE")
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings("ConvNeXtViewer", "convnest-viewer")


def recent_studies(settings: QSettings) -> list[list[str]]:
    """Return recently opened studies, newest first (each a list of paths)."""
    value = settings.value("recent", [])
    entries = value if isinstance(value, list) else [value] if value else []
    return [entry.split("\n") for entry in entries if entry]


def add_recent_study(settings: QSettings, paths: list[str]) -> None:
    """Put a study at the front of the recent list."""
    entry = "\n".join(paths)
    entries = ["\n".join(p) for p in recent_studies(settings) if "\n".join(p) != entry]
    settings.setValue("recent", [entry, *entries][:MAX_RECENT])


def get_str(settings: QSettings, key: str, default: str) -> str:
    """Return a string setting."""
    value = settings.value(key, default)
    return str(value) if value is not None else default


def get_float(settings: QSettings, key: str, default: float) -> float:
    """Return a float setting (falling back on bad values)."""
    try:
        return float(settings.value(key, default))
    except (TypeError, ValueError):
        return default


def remembered_model(settings: QSettings, installed) -> Path | None:
    """Return the installed model folder (of `installed`) chosen last time in Model > Model, or None (the default)."""
    name = get_str(settings, "model", "")
    return next((m.folder for m in installed if m.folder.name == name), None) if name else None
