"""Python's cyclic garbage collection only in the GUI thread.

Automatic collection runs in whichever thread happens to allocate: a study loader or inference thread could then
free a cycle that holds Qt widgets (a closed window, a dialog) and destroy them off the GUI thread, where Qt
deadlocks against the GUI thread (seen: ~QObject in the loader thread waiting for the GIL while the GUI thread,
holding it, waited for Qt's connection lock) or crashes. pyqtgraph's GarbageCollector turns automatic collection
off and collects on a GUI-thread timer instead.
"""

from __future__ import annotations

_collector = None


def collect_garbage_in_gui_thread() -> None:
    """Collect cycles on a timer in the calling (GUI) thread from now on, instead of automatically (once per process)."""
    global _collector
    if _collector is None:
        from convnest_viewer.ui.pyqtgraph_import import pyqtgraph  # noqa: F401 - pyqtgraph's own import path first
        from pyqtgraph.util.garbage_collector import GarbageCollector

        _collector = GarbageCollector(interval=0.5)
