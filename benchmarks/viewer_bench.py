"""Speed and memory of the viewer on this machine: prints a table (median and 90th percentile) and writes JSON.

    .venv/bin/python benchmarks/viewer_bench.py [--series ../shared/dicom/sagittal-mprage] [--repeats 5] [--out FILE]

Each figure is measured in a fresh process (start-up, opening, peak memory) or over many repeats in one
(slice changes, inference), with the bundled default model on the CPU unless --device says otherwise. Peak memory
is measured with the ONNX export already cached (every start but a machine's first) and once with an empty cache.
Targets (issue 15) are printed beside the figures; nothing here is a test. The p90 column is the worse tail: the 90th
percentile, or the 10th where higher is better (the pipeline ratio: five passes over the series, each batch timed
bare and through the pipeline back to back).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().parent / "viewer_probe.py"
TARGETS = {  # measure -> (goal, unit, lower is better)
    "window visible after launch": (1.5, "s"),
    "model ready after launch": (None, "s"),
    "series indexed": (1.0, "s"),
    "first slice shown": (0.5, "s"),  # a preview slice while the folder indexes, else the opened series
    "series shown (indexed and opened)": (None, "s"),
    "slice change, idle": (0.016, "s"),
    "slice change, while classifying": (0.016, "s"),
    "slice change, with the default heatmap overlay": (0.016, "s"),
    "whole series classified": (None, "s"),
    "classification throughput / bare batched forward": (0.8, "ratio, higher is better"),  # both at batch 32
    "Grad-CAM / one forward pass": (3.0, "ratio"),
    "LayerCAM / one forward pass": (None, "ratio"),
    "Gradient SHAP (default samples) / one forward pass": (None, "ratio"),
    "Occlusion / one forward pass": (None, "ratio"),
    "peak RSS, series open and classified": (1.2, "GB"),
    "peak RSS, with the default heatmap of one slice": (None, "GB"),
    "peak RSS, series open and classified, first start (ONNX export)": (None, "GB"),
}


def run_probe(mode: str, series: str, device: str, cache_dir: str | None = None) -> dict:
    """Run the probe in a fresh process with fresh settings and return its JSON (launch time measured from here;
    cache_dir: the ONNX export cache it uses, else the user's)."""
    with tempfile.TemporaryDirectory(prefix="convnest-bench-settings-") as settings:
        env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen"),
               **({"CONVNEST_CACHE_DIR": cache_dir} if cache_dir else {}),
               "CONVNEST_SETTINGS_FILE": str(Path(settings) / "settings.ini"), "CONVNEST_BENCH_LAUNCH": repr(time.time())}
        return _run(mode, series, device, env)


def _run(mode: str, series: str, device: str, env: dict) -> dict:
    """Run one probe process with env and return its JSON."""
    done = subprocess.run([sys.executable, str(PROBE), mode, series, device], capture_output=True, text=True, env=env,
                          timeout=900, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"probe {mode} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(values: list[float], higher_better: bool = False) -> dict:
    """Return the median, the worse-tail 90th percentile (the 10th where higher is better) and the count."""
    ordered = sorted(values, reverse=higher_better)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"median": statistics.median(ordered), "p90": p90, "n": len(ordered)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", default=str(REPO.parent / "shared" / "dicom" / "sagittal-mprage"))
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per start-up measurement")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "viewer_bench.json")
    args = parser.parse_args(argv)

    samples: dict[str, list[float]] = {name: [] for name in TARGETS}
    for _ in range(args.repeats):
        startup = run_probe("startup", args.series, args.device)
        for key in ("window visible after launch", "model ready after launch", "series indexed", "first slice shown",
                    "series shown (indexed and opened)"):
            samples[key].append(startup[key])
    for _ in range(args.repeats):
        for key, value in run_probe("memory", args.series, args.device).items():
            samples[key].append(value)
    with tempfile.TemporaryDirectory(prefix="convnest-bench-cache-") as empty_cache:
        cold = run_probe("memory", args.series, args.device, cache_dir=empty_cache)
    samples["peak RSS, series open and classified, first start (ONNX export)"].append(
        cold["peak RSS, series open and classified"])
    session = run_probe("session", args.series, args.device)
    for key, values in session["samples"].items():
        samples[key].extend(values)
    machine = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "device": args.device, "series": args.series,
               **session["machine"]}
    results = {name: summary(values, "higher" in TARGETS[name][1]) for name, values in samples.items() if values}
    rows = []
    for name, (goal, unit) in TARGETS.items():
        if name not in results:
            continue
        figure = results[name]
        scale = 1000 if unit == "s" and (goal or 1) < 0.1 else 1
        shown_unit = "ms" if scale == 1000 else unit
        higher_better = "higher" in unit
        met = "" if goal is None else ("yes" if (figure["p90"] >= goal if higher_better else figure["p90"] <= goal) else "no")
        rows.append([name, f"{figure['median'] * scale:.3g}", f"{figure['p90'] * scale:.3g}", str(figure["n"]),
                     "" if goal is None else f"{'>=' if higher_better else '<='} {goal * scale:g} {shown_unit.split(',')[0]}",
                     met])
    from convnest_viewer.text_table import format_table

    print(f"machine: {machine}")
    print(format_table(["measure", "median", "p90 (worse tail)", "n", "target (p90)", "met"], rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "results": results,
                                    "targets": {k: list(v) for k, v in TARGETS.items()}}, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
