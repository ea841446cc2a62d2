"""Write a candidate model folder: a run's EMA weights under a copy of v12's card (temperature, slice context 1.5;
gate dropped: refit it with `convnest gate-fit`), so candidates are read exactly as the app reads v12.

usage: python make_candidate.py RUN_DIR DEST_DIR NAME [SIZE]   (SIZE: the run's input size, default v12's 192)

v12 left resources/ when v15 became the default (2026-12-03): restore its folder first,
`git checkout a16b601 -- resources/models/convnext-femto-192-multi-v12`.
"""
import json, shutil, sys
from pathlib import Path
from safetensors.torch import load_file
from convnest_viewer.inference.card import load_card
from convnest_viewer.inference.factory import create_classifier
from convnest_viewer.inference.weights import write_model_folder
run, dest, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
card = load_card(Path("resources/models/convnext-femto-192-multi-v12"))
card.name = name
card.gate = None
if len(sys.argv) > 4:
    card.preprocessing.size = int(sys.argv[4])
model = create_classifier(card)
model.load_state_dict(load_file(str(run / "checkpoint" / "ema.safetensors")))
if dest.exists():
    shutil.rmtree(dest)
write_model_folder(model.eval(), card, dest)
print("wrote", dest)
