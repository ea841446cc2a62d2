"""The main window's menus and keyboard shortcuts; every action calls the state or a window method."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence

DEVICE_CHOICES = (("auto", "Automatic (GPU when present)"), ("cpu", "CPU"), ("cuda", "CUDA GPU"), ("mps", "Apple GPU (MPS)"))


def build_menus(window) -> None:
    """Add the File, View, Model and Help menus and the slice shortcuts to a MainWindow."""
    state = window.state
    bar = window.menuBar()
    file_menu = bar.addMenu("&File")
    _action(file_menu, "Open DICOM &Study…", window.open_study_dialog, QKeySequence.StandardKey.Open)
    _action(file_menu, "Open &Files…", window.open_files_dialog, "Ctrl+Shift+O")
    window.recent_menu = file_menu.addMenu("Open &Recent")
    window.fill_recent_menu()
    file_menu.addSeparator()
    _action(file_menu, "Export &Screenshot…", window.export_screenshot_dialog, "Ctrl+Shift+S")
    _action(file_menu, "Export &Report…", window.export_report_dialog, "Ctrl+Shift+R")
    file_menu.addSeparator()
    _action(file_menu, "&Quit", window.close, QKeySequence.StandardKey.Quit)

    view_menu = bar.addMenu("&View")
    _action(view_menu, "&Reset View", window.view.reset_view, "R")
    _action(view_menu, "Zoom &In", lambda: window.view.zoom(1.25), "Ctrl++")
    _action(view_menu, "Zoom &Out", lambda: window.view.zoom(0.8), "Ctrl+-")
    presets = view_menu.addMenu("&Window Preset")
    _action(presets, "File VOI", lambda: window.apply_window_preset("voi"), "F1")
    _action(presets, "Auto (0.5–99.5 percentile)", lambda: window.apply_window_preset("auto"), "F2")
    _action(presets, "Full Range", lambda: window.apply_window_preset("full"), "F3")
    view_menu.addSeparator()
    _action(view_menu, "Cycle &Heatmap (none, the best measured, the others)", state.cycle_overlay, "H")
    _action(view_menu, "DICOM &Tags…", window.show_tags, "Ctrl+T")
    identifiers = _action(view_menu, "Show &Patient Identifiers", lambda: state.set_show_identifiers(not state.show_identifiers))
    identifiers.setCheckable(True)
    identifiers.setChecked(state.show_identifiers)
    view_menu.addSeparator()
    view_menu.addAction(window.series_dock.toggleViewAction())
    view_menu.addAction(window.model_dock.dock.toggleViewAction())
    for key, step in ((Qt.Key.Key_Up, -1), (Qt.Key.Key_Down, 1), (Qt.Key.Key_Left, -1), (Qt.Key.Key_Right, 1),
                      (Qt.Key.Key_PageUp, -10), (Qt.Key.Key_PageDown, 10)):
        _shortcut(window, key, lambda s=step: state.step_slice(s))
    _shortcut(window, Qt.Key.Key_Home, lambda: state.set_slice(0))
    _shortcut(window, Qt.Key.Key_End, lambda: state.set_slice(state.last_slice()))

    model_menu = bar.addMenu("&Model")
    device_menu = model_menu.addMenu("&Device")
    group = QActionGroup(window)
    window.device_actions = {}
    for choice, label in DEVICE_CHOICES:
        action = device_menu.addAction(label)
        action.setCheckable(True)
        action.setChecked(choice == window.device_choice)
        action.setEnabled(choice in ("auto", "cpu"))  # the others once the session has probed them
        action.triggered.connect(lambda _=False, c=choice: window.set_device(c))
        group.addAction(action)
        window.device_actions[choice] = action
    _model_choices(window, model_menu.addMenu("&Model"))
    _action(model_menu, "Model &Card…", window.show_model_card)

    help_menu = bar.addMenu("&Help")
    _action(help_menu, "&About", window.show_about)


def _action(menu, text, slot, shortcut=None) -> QAction:
    action = menu.addAction(text)
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    action.triggered.connect(lambda _=False: slot())
    return action


def _shortcut(window, key, slot) -> None:
    action = QAction(window)
    action.setShortcut(QKeySequence(key))
    action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
    action.triggered.connect(lambda _=False: slot())
    window.addAction(action)


def _model_choices(window, menu) -> None:
    """Fill Model > Model with the installed models (and a --model folder from elsewhere), the one in use checked."""
    from pathlib import Path

    group = QActionGroup(window)
    window.model_actions = {}
    models = window.installed_models
    current = Path(window.model_dir).resolve() if window.model_dir else next((m.folder for m in models if m.default), None)
    entries = [(m.folder.resolve(), m.label) for m in models]
    if current is not None and current not in {folder for folder, _ in entries}:
        entries.append((current, f"{current.name} (from --model)"))
    for folder, label in entries:
        action = menu.addAction(label)
        action.setCheckable(True)
        action.setChecked(folder == current)
        action.triggered.connect(lambda _=False, f=folder: window.set_model_folder(f))
        group.addAction(action)
        window.model_actions[folder] = action
    menu.setEnabled(bool(entries))
