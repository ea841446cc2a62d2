"""Slice-level evaluation of the bundled v15 with and without left-right mirror averaging (convnest evaluate's metrics)."""

import json
import sys
from pathlib import Path

import torch

from convnest_viewer.inference.classifier import Classifier
from training.evaluate import evaluate
from training.report import without_arrays, markdown
from training.data import PackedDataset
from training.train import TrainSplit

PACK, SPLIT, OUT = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])  # multi-224.npz, a run's split.json, out folder

if __name__ == "__main__":
    data = PackedDataset.load(PACK)
    split = TrainSplit.from_json(json.loads(SPLIT.read_text()))
    classifier = Classifier(Path("resources/models/convnext-femto-224-multi-v15"), device="cpu", backend="torch")
    model = classifier.model.float()
    for flip in (False, True):
        report = evaluate(model, classifier.card.preprocessing, data, split.train, split.val, split.test,
                          torch.device("cpu"), test_time_flip=flip)
        clean = without_arrays(report)
        folder = OUT / ("flip" if flip else "plain")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.json").write_text(json.dumps(clean, indent=2))
        (folder / "report.md").write_text(markdown(clean))
        print(flip, report["temperature"], report["leakage_free_test"]["accuracy"], flush=True)
