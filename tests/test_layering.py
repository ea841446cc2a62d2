"""Layers, like napari's: io at the bottom (no Qt, no torch), a Qt-free core above it, the UI on top; no cycles."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from tests.paths import DICOM, REPO

PACKAGE = REPO / "convnest_viewer"
QT = {"PySide6", "pyqtgraph"}
TORCH = {"torch", "timm", "captum", "torchvision"}
QT_FREE = ("io", "inference", "results", "report", "verdict", "session", "batch", "viewer_state", "annotations",
           "events", "classify_cli", "render", "privacy", "logs")
MAX_LINES = 400
LONG_MODULE_MARK = "Longer than 400 lines:"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Return every module a file imports, at its top or inside functions (TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and ast.unparse(block.test).endswith("TYPE_CHECKING") for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(path): _imports(path) for path in PACKAGE.rglob("*.py")}


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else module


def test_the_qt_free_layers_never_import_qt_even_inside_functions():
    offenders = {module: sorted(imported & QT | {i for i in imported if i.split(".")[0] in QT})
                 for module, imported in _graph().items()
                 if _layer(module) in QT_FREE and {i.split(".")[0] for i in imported} & QT}
    assert offenders == {}


def test_io_depends_only_on_itself_and_the_privacy_helper():
    for module, imported in _graph().items():
        if _layer(module) != "io":
            continue
        ours = {i for i in imported if i.startswith("convnest_viewer.")}
        outside = {i for i in ours if _layer(i) not in ("io", "privacy")}
        assert not outside, f"{module} imports {sorted(outside)}"
        assert not {i.split(".")[0] for i in imported} & TORCH, module


def test_no_import_cycles_between_modules():
    graph = {module: {i for i in imported if i.startswith("convnest_viewer.")} for module, imported in _graph().items()}
    known = set(graph)
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            target = target if target in known else target.rsplit(".", 1)[0]  # "from package import name"
            if target == module or target not in known or target.endswith(".__init__"):
                continue
            if _is_package(target):
                continue  # a package's __init__ re-exports; importing it is not a cycle through its members
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(target):] + [target]))
            if target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def _is_package(module: str) -> bool:
    return (REPO / Path(*module.split("."))).is_dir()


def _modules_after(code: str, env: dict | None = None) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         check=True, capture_output=True, text=True, env=env).stdout
    return {name.split(".")[0] for name in out.split()}


def test_io_imports_neither_qt_nor_torch():
    modules = _modules_after(f"from convnest_viewer.io import load_study\nload_study([{str(DICOM / 'ge-epi-4d')!r}]).series[0].pixels(0)")
    assert "convnest_viewer" in modules
    assert not modules & (QT | TORCH)


def test_inference_core_imports_no_qt():
    modules = _modules_after(
        "import convnest_viewer.inference.classifier, convnest_viewer.inference.explain, convnest_viewer.classify_cli, "
        "convnest_viewer.session"
    )
    assert "torch" in modules
    assert not modules & QT


def test_the_viewer_core_and_report_load_without_torch():
    modules = _modules_after("import convnest_viewer.viewer_state, convnest_viewer.results, convnest_viewer.report, "
                             "convnest_viewer.annotations, convnest_viewer.verdict, convnest_viewer.session, "
                             "convnest_viewer.batch\n"
                             "store = convnest_viewer.results.ResultStore()\n"  # the gate's series rule runs here
                             "for index, share in enumerate((0.5, 0.05, 0.6)):\n"
                             "    store.put_head_share('m', 's', 0, index, share, 0.3)\n"
                             "assert list(store.not_assessed('m', 's')) == [(0, 1)]")
    assert not modules & (QT | TORCH)


def test_the_window_shows_before_torch_is_imported(tmp_path):
    code = f"""
import sys
from PySide6.QtWidgets import QApplication
app = QApplication([])
from convnest_viewer.ui.main_window import MainWindow
window = MainWindow(device="cpu")
window.show()
print("torch before:", "torch" in sys.modules, window.isVisible())  # the worker starts on the next event-loop turn
print("CUDA runtime before:", "cuda.bindings.runtime" in sys.modules)
import time
deadline = time.monotonic() + 120
while window.state.model is None and window.state.model_error is None and time.monotonic() < deadline:
    app.processEvents()
    time.sleep(0.02)
print("torch after:", "torch" in sys.modules)
window.close()
"""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "CONVNEST_SETTINGS_FILE": str(tmp_path / "settings.ini")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300).stdout
    assert "torch before: False True" in out
    assert "CUDA runtime before: False" in out, "pyqtgraph's CUDA-OpenGL interop (never used) is not imported"
    assert "torch after: True" in out, "the worker loads torch once the window is up"


def test_no_module_is_longer_than_400_lines_without_saying_why():
    long = []
    for folder in (PACKAGE, REPO / "training"):
        for path in folder.rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            doc = ast.get_docstring(ast.parse(text)) or ""
            if len(text.splitlines()) > MAX_LINES and LONG_MODULE_MARK not in doc:
                long.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
    assert long == []


def test_hiding_the_cuda_runtime_from_pyqtgraph_is_undone():
    code = """
import importlib.util, sys
from convnest_viewer.ui.pyqtgraph_import import pyqtgraph
from pyqtgraph.widgets import RawImageWidget
print("pyqtgraph cudart:", RawImageWidget.cudart)
print("hidden after:", "cuda.bindings.runtime" in sys.modules and sys.modules["cuda.bindings.runtime"] is None)
if importlib.util.find_spec("cuda.bindings") is not None:
    import cuda.bindings.runtime
    print("importable after:", cuda.bindings.runtime.__name__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}).stdout
    assert "pyqtgraph cudart: None" in out
    assert "hidden after: False" in out
    assert "importable after: cuda.bindings.runtime" in out or "importable after" not in out
