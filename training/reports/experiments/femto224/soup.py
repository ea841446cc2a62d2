"""soup.py DEST RUN...: a uniform weight average ("soup") of runs' EMA weights under v15's card, its gate dropped
(refit with `convnest gate-fit`); read it with `convnest scan-eval` as eval224.sh does. From the repository root."""
import shutil, sys
from pathlib import Path
import torch
from safetensors.torch import load_file
from convnest_viewer.inference.card import load_card
from convnest_viewer.inference.factory import create_classifier
from convnest_viewer.inference.weights import write_model_folder
dest, runs = Path(sys.argv[1]), [Path(r) for r in sys.argv[2:]]
card = load_card(Path("resources/models/convnext-femto-224-multi-v15"))
card.name = "convnext-femto-224-multi-soup"
card.gate = None
states = [load_file(str(r / "checkpoint" / "ema.safetensors")) for r in runs]
soup = {k: (sum(s[k].float() for s in states) / len(states)).to(states[0][k].dtype)
        if states[0][k].is_floating_point() else states[-1][k] for k in states[0]}
model = create_classifier(card)
model.load_state_dict(soup)
if dest.exists():
    shutil.rmtree(dest)
write_model_folder(model.eval(), card, dest)
print("wrote", dest)
