"""Entry point of the frozen (PyInstaller) viewer: run `convnest_viewer.app.main()` and exit with its code."""

import multiprocessing
import os
import sys


def run() -> None:
    """Start the viewer (or its --self-test) and exit with its status."""
    multiprocessing.freeze_support()  # torch / pyqtgraph may start helper processes
    # A windowed Windows executable has no console: sys.stdout/stderr are None there, and code that writes or
    # flushes them (the self-test, warnings, progress bars) must not fail. convnest-viewer-console.exe has both.
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))
    from convnest_viewer.app import main

    sys.exit(main())


if __name__ == "__main__":
    run()
