"""`convnest-viewer`: start the desktop viewer (with no path it opens the bundled demo study)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from convnest_viewer import __version__


def build_parser() -> argparse.ArgumentParser:
    """Build the viewer's argument parser."""
    parser = argparse.ArgumentParser(prog="convnest-viewer", description="ConvNeXt Brain MRI Viewer")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="study folders, files or DICOMDIRs (default: the demo study)")
    parser.add_argument("--model", type=Path, help="model folder (default: the bundled default model)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="inference device (default: saved choice, else auto)")
    parser.add_argument("--self-test", action="store_true",
                        help="open PATH (default: the demo study) in the real window, classify every slice, make one "
                             "Grad-CAM and one Gradient SHAP overlay, print a JSON summary, exit 0 (1 on failure)")
    parser.add_argument("--screenshot", type=Path, help="with --self-test: save a PNG of the window")
    parser.add_argument("--timeout", type=float, default=900.0, help="with --self-test: give up after this many seconds")
    parser.add_argument("--version", action="version", version=f"convnest-viewer {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Start the viewer window (or run its self-test) and return the exit status."""
    args = build_parser().parse_args(argv)
    if args.self_test and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and sys.platform.startswith("linux"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from convnest_viewer.paths import demo_study_dir
    from convnest_viewer.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("ConvNeXt Brain MRI Viewer")
    app.setOrganizationName("ConvNeXtViewer")
    from PySide6.QtGui import QIcon

    from convnest_viewer.paths import resources_dir

    icon = resources_dir() / "icons" / "convnest.png"
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))
    paths = [str(p) for p in args.paths] or [str(demo_study_dir())]
    from convnest_viewer.logs import configure_logging, install_crash_handlers

    configure_logging()
    window = MainWindow(model_dir=args.model, device=args.device)
    window.crashReported.connect(lambda path, text: _show_crash(window, path, text))
    install_crash_handlers(show=lambda path, text: window.crashReported.emit(str(path), text))
    window.show()
    if args.self_test:
        from convnest_viewer.ui.self_test import run_self_test

        return run_self_test(window, paths, args.screenshot, args.timeout)
    window.open_paths(paths)
    return app.exec()


def _show_crash(window, path: str, text: str) -> None:
    """Tell the user an unexpected error was recorded, and where; the window stays open."""
    window.statusBar().showMessage(f"Unexpected error ({text.splitlines()[0][:120]}); report saved to {path}", 30000)


if __name__ == "__main__":
    sys.exit(main())
