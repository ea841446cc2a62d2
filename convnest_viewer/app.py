"""`convnest-viewer`: start the desktop viewer."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from convnest_viewer import __version__


def build_parser() -> argparse.ArgumentParser:
    """Build the viewer's argument parser."""
    parser = argparse.ArgumentParser(prog="convnest-viewer", description="ConvNeXt Brain MRI Viewer")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="study folders, files or DICOMDIRs to open")
    parser.add_argument("--version", action="version", version=f"convnest-viewer {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Start the viewer window and run the Qt event loop."""
    build_parser().parse_args(argv)
    from PySide6.QtWidgets import QApplication, QLabel, QMainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = QMainWindow()
    window.setWindowTitle(f"ConvNeXt Brain MRI Viewer {__version__}")
    window.setCentralWidget(QLabel("ConvNeXt Brain MRI Viewer"))
    window.resize(1200, 800)
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
