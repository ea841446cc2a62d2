"""soup_run.py DEST_RUN BASE_RUN WEIGHTS:ALPHA...: a run folder like BASE_RUN whose final (EMA) weights are the
weighted average of the given safetensors files, so `convnest evaluate/export` read it as any run."""
import shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
dest, base = Path(sys.argv[1]), Path(sys.argv[2])
parts = [(Path(a.rsplit(":", 1)[0]), float(a.rsplit(":", 1)[1])) for a in sys.argv[3:]]
total = sum(w for _, w in parts)
states = [(load_file(str(p)), w / total) for p, w in parts]
first = states[0][0]
soup = {k: sum(s[k].float() * w for s, w in states).to(first[k].dtype) if first[k].is_floating_point() else first[k]
        for k in first}
if dest.exists():
    shutil.rmtree(dest)
shutil.copytree(base, dest)
save_file(soup, str(dest / "checkpoint" / "ema.safetensors"))
print("wrote", dest, [(str(p), round(w / total, 3)) for p, w in parts])
