"""PyInstaller runtime hook of the frozen viewer: read the bundle marker, pin the CPU variant to the CPU.

`convnest_bundle.json` (written by the spec next to the bundled resources) names the build variant. The
`cpu` variant ships torch's CUDA libraries only as tiny stand-ins (see packaging/cuda_stubs.py), so it must
never see a GPU: it hides every CUDA device before torch is imported, and torch.cuda.is_available() is False
even on a machine with an NVIDIA driver. Runs before any application code.
"""

import json
import os
import sys


def _bundle_info() -> dict:
    try:
        with open(os.path.join(sys._MEIPASS, "convnest_bundle.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError, AttributeError):
        return {}


_info = _bundle_info()
os.environ.setdefault("CONVNEST_BUNDLE_VARIANT", str(_info.get("variant", "unknown")))
if _info.get("cuda_stubbed"):
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CUDA math libraries are stubs: never run on a GPU
del _info, _bundle_info
