"""Paired bootstrap over the held-out tcga-lgg CS patients: model A minus model B tumour-slice ROC AUC per sequence,
each scan read as the app reads it (gate, slice context); prints a table (paired_bootstrap.md). From the repository
root, with v12 back from git history (`git checkout a16b601 -- resources/models/convnext-femto-192-multi-v12`):

    .venv/bin/python training/reports/convnext-femto-224-multi-v15/paired_bootstrap.py \
        resources/models/convnext-femto-224-multi-v15 resources/models/convnext-femto-192-multi-v12
"""
import sys
from pathlib import Path
import numpy as np
from sklearn.metrics import roc_auc_score
from convnest_viewer.inference.classifier import Classifier
from training.volume_eval import evaluate_tcga_case

DATA = Path("../shared/data/tcga-lgg")
cases = sorted(p for p in DATA.iterdir() if p.name.startswith("TCGA_CS_"))
models = {"A": Path(sys.argv[1]), "B": Path(sys.argv[2])}
scans = {}
for name, folder in models.items():
    clf = Classifier(folder, device="cpu")
    for seq in ("flair", "t1", "t1c"):
        for case in cases:
            s = evaluate_tcga_case(clf, case, seq)
            scans[name, seq, case.name] = (s.tumour_probability, s.labelled)
rng = np.random.default_rng(0)
names = [c.name for c in cases]
def auc(model, seq, chosen):
    p = np.concatenate([scans[model, seq, c][0] for c in chosen]); y = np.concatenate([scans[model, seq, c][1] for c in chosen])
    k = y >= 0
    return roc_auc_score(y[k], p[k])
print(f"A: {models['A'].name}, B: {models['B'].name}\n")
print("| sequence | A | B | A - B | 95% interval (2,000 patient resamples) | share of resamples A better |")
print("|---|---|---|---|---|---|")
for seq in ("flair", "t1", "t1c"):
    a, b = auc("A", seq, names), auc("B", seq, names)
    diffs = []
    while len(diffs) < 2000:
        chosen = list(rng.choice(names, len(names)))
        try:
            diffs.append(auc("A", seq, chosen) - auc("B", seq, chosen))
        except ValueError:
            continue
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    print(f"| {seq} | {a:.3f} | {b:.3f} | {a-b:+.3f} | {lo:+.3f} to {hi:+.3f} | {np.mean(np.array(diffs) > 0):.0%} |")
