"""pyqtgraph, imported without the CUDA runtime bindings its RawImageGLWidget would use (this viewer never does).

pyqtgraph imports `cuda.bindings.runtime` at import time when it is installed (torch installs it), which costs
50-100 ms of the window's start-up; hiding it for that one import makes pyqtgraph skip its CUDA-OpenGL interop.
The hiding is undone at once, so torch can still import the bindings later.
"""

from __future__ import annotations

import sys

_CUDA_RUNTIME = "cuda.bindings.runtime"
_hide = _CUDA_RUNTIME not in sys.modules
if _hide:
    sys.modules[_CUDA_RUNTIME] = None  # an import of it raises ImportError, which pyqtgraph handles
try:
    import pyqtgraph
finally:
    if _hide and _CUDA_RUNTIME in sys.modules and sys.modules[_CUDA_RUNTIME] is None:
        del sys.modules[_CUDA_RUNTIME]

__all__ = ["pyqtgraph"]
