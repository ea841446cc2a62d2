"""Per-cell tumour log-odds of a model's own head on held-out slices of the pack (tcga-lgg CS, brats validation and
test): mean inside the mask, elsewhere on tumour slices, and on no-tumour slices; and the classifier-map mask loss.

usage: python cell_evidence.py MODEL_DIR [PACK]   (default pack: work-data/multi-192-masks.npz)
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convnest_viewer.inference.card import CLASS_IDS, load_card
from convnest_viewer.inference.factory import create_classifier
from convnest_viewer.inference.preprocess import normalize_uint8
from convnest_viewer.inference.weights import load_state_dict
from training.data import PackedDataset
from training.mask_guidance import classifier_cell_log_odds, mask_loss

folder = Path(sys.argv[1])
pack = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("work-data/multi-192-masks.npz")
card = load_card(folder)
model = create_classifier(card)
model.load_state_dict(load_state_dict(folder, card))
model.eval().float()
data = PackedDataset.load(pack)
rng = np.random.default_rng(0)
result = {}
for source in ("tcga-lgg", "brats2013-hgg"):
    held = (data.institution == "CS") if source == "tcga-lgg" else np.isin(data.split, ["validation", "test"])
    picked = np.flatnonzero((data.source == source) & (data.meta["synthetic"] == "") & held)
    picked = rng.choice(picked, min(128, len(picked)), replace=False)
    inputs = normalize_uint8(torch.from_numpy(data.images[picked]).unsqueeze(1), card.preprocessing)
    with torch.no_grad():
        cells = classifier_cell_log_odds(model, model.forward_features(inputs), CLASS_IDS.index("notumor"))
    masks = torch.from_numpy(data.masks[picked]).unsqueeze(1).float() / 255
    shares = F.adaptive_avg_pool2d(masks, cells.shape[-2:])
    tumour_slice = torch.from_numpy(data.labels[picked] == CLASS_IDS.index("glioma")).view(-1, 1, 1, 1).expand_as(cells)
    inside = shares > 0.5
    result[source] = {"slices": len(picked),
                      "mask_loss": round(float(mask_loss(cells, masks, torch.ones(len(picked), dtype=torch.bool))), 3),
                      "log_odds_inside_tumour": round(float(cells[inside].mean()), 2),
                      "log_odds_elsewhere_on_tumour_slices": round(float(cells[~inside & tumour_slice].mean()), 2),
                      "log_odds_on_no_tumour_slices": round(float(cells[~tumour_slice].mean()), 2)}
print(json.dumps({"model": card.name, **result}))
