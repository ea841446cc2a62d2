"""Slice-level tumour-vs-no-tumour ROC AUC of a model read three ways on held-out pack slices (tcga-lgg CS, brats
validation + test; each slice alone, no gate): the pooled head (the app's reading), the largest per-cell tumour
log-odds of the classifier's own head, and the mean of the 4 largest cells.

usage: python cell_read.py MODEL_DIR [MODEL_DIR ...]   (reads work-data/multi-192-masks.npz)
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from convnest_viewer.inference.card import CLASS_IDS, load_card
from convnest_viewer.inference.factory import create_classifier
from convnest_viewer.inference.preprocess import normalize_uint8
from convnest_viewer.inference.weights import load_state_dict
from training.data import PackedDataset
from training.mask_guidance import classifier_cell_log_odds

torch.set_num_threads(2)
data = PackedDataset.load(Path("work-data/multi-192-masks.npz"))
NT = CLASS_IDS.index("notumor")
for folder in sys.argv[1:]:
    card = load_card(Path(folder)); model = create_classifier(card)
    model.load_state_dict(load_state_dict(Path(folder), card)); model.eval().float()
    for source in ("tcga-lgg", "brats2013-hgg"):
        held = (data.institution == "CS") if source == "tcga-lgg" else np.isin(data.split, ["validation", "test"])
        picked = np.flatnonzero((data.source == source) & (data.meta["synthetic"] == "") & held)
        pooled, cmax, ctop = [], [], []
        with torch.no_grad():
            for i in range(0, len(picked), 64):
                idx = picked[i:i + 64]
                x = normalize_uint8(torch.from_numpy(data.images[idx]).unsqueeze(1), card.preprocessing)
                f = model.forward_features(x)
                logits = model.forward_head(f)
                p = torch.softmax(logits, 1); pt = (1 - p[:, NT]).clamp(1e-5, 1 - 1e-5)
                pooled.append(torch.log(pt / (1 - pt)))
                c = classifier_cell_log_odds(model, f, NT).flatten(1)
                cmax.append(c.max(1).values); ctop.append(c.topk(4, 1).values.mean(1))
        y = data.labels[picked] != NT
        seqs = data.meta["sequence"][picked] if "sequence" in data.meta else data.sequence[picked]
        res = {}
        for name, s in (("pooled", pooled), ("cellmax", cmax), ("top4", ctop)):
            s = torch.cat(s).numpy()
            res[name] = {q: round(roc_auc_score(y[seqs == q], s[seqs == q]), 3) for q in sorted(set(seqs)) if len(set(y[seqs == q])) == 2}
        print(folder, source, len(picked), json.dumps(res), flush=True)
