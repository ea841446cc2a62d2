"""What every `convnest` command does alike: keep warnings off stderr, name the paths that do not exist."""

from __future__ import annotations

import sys
from typing import Sequence


def quiet_warnings() -> None:
    """Keep Python warnings off stderr: the loader reports odd files as notes, and a decoder's complaint about one
    slice is not the user's business."""
    import logging

    from convnest_viewer.logs import route_warnings

    route_warnings(logging.NullHandler())


def report_missing_paths(command: str, paths: Sequence[str]) -> list[str]:
    """Print one line on stderr for each path that does not exist; return those paths."""
    from pathlib import Path

    missing = [path for path in paths if not Path(path).expanduser().exists()]
    for path in missing:
        print(f"convnest {command}: {path}: no such file or folder", file=sys.stderr)
    return missing
