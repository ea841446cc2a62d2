"""The heatmap type and the explanation methods' names: no torch, so the viewer can use them before the model loads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("gradcam", "layercam", "shap", "occlusion", "tumour_occlusion")
RANDOMISED_SPEARMAN_LIMIT = 0.5  # maps correlating more with those of a model whose last stage is randomised fail
METHOD_NAMES = {"gradcam": "Grad-CAM", "layercam": "LayerCAM", "shap": "Gradient SHAP", "occlusion": "Occlusion",
                "tumour_occlusion": "Tumour occlusion"}
BASELINE = "random"  # measured beside the methods (a smooth random map: what a map that knows nothing scores)
BASELINE_NAME = "Random map (baseline)"


@dataclass
class Heatmap:
    """A map in [0, 1] over the original slice (same rows x columns), and what it explains."""

    values: np.ndarray
    method: str
    target_index: int
    target_id: str
