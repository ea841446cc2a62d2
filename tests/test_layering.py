"""The data model stays free of Qt (and io free of torch), like napari's layers."""

import subprocess
import sys

from tests.paths import DICOM


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         check=True, capture_output=True, text=True).stdout
    return {name.split(".")[0] for name in out.split()}


def test_io_imports_neither_qt_nor_torch():
    modules = _modules_after(f"from convnest_viewer.io import load_study\nload_study([{str(DICOM / 'ge-epi-4d')!r}]).series[0].pixels(0)")
    assert "convnest_viewer" in modules
    assert not modules & {"PySide6", "pyqtgraph", "torch", "timm", "captum"}


def test_inference_core_imports_no_qt():
    modules = _modules_after(
        "import convnest_viewer.inference.classifier, convnest_viewer.inference.explain, convnest_viewer.classify_cli"
    )
    assert "torch" in modules
    assert not modules & {"PySide6", "pyqtgraph"}
