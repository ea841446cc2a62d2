"""Make this Python lack what a lent GPU machine lacks (put this folder on PYTHONPATH for a dry run).

The machine's python3 holds torch, timm, numpy, opencv, safetensors and matplotlib, but not the viewer's DICOM,
NIfTI, Qt or explanation libraries: an import of one of those fails here as it would there.
"""

import sys

ABSENT_ON_THE_MACHINE = {"pydicom", "SimpleITK", "PySide6", "pyqtgraph", "captum", "platformdirs", "monai", "torchio",
                         "quantus", "pytorch_ood", "pylibjpeg", "openjpeg", "libjpeg"}


class AbsentModules:
    """A meta path finder that refuses the modules the machine lacks."""

    def find_spec(self, name, path=None, target=None):
        """Refuse an absent module; leave every other to the normal finders."""
        if name.split(".")[0] in ABSENT_ON_THE_MACHINE:
            raise ImportError(f"{name} is not on the GPU machine (blocked by {__file__})")
        return None


sys.meta_path.insert(0, AbsentModules())
