"""CPU (or GPU) inference variants of the bundled model: speed and agreement with eager fp32; prints a table, writes JSON.

    .venv/bin/python benchmarks/inference_variants.py [--device cpu] [--repeats 20] [--out FILE]

Variants: eager fp32, channels_last, bf16 autocast (where the device supports it), torch.compile and, where the
`onnx` extra is installed, ONNX Runtime on the model exported and verified as the app's CPU backend does it (the
logits alone here; the app's graph adds the gate's stage statistics). Inputs are
real slices (the sagittal MPRAGE through the app's preprocessing). A variant may replace eager only if its
calibrated probabilities stay within 1e-3 of eager's on every slice; the table says which do.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--series", default=str(REPO.parent / "shared" / "dicom" / "sagittal-mprage"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "inference_variants.json")
    args = parser.parse_args(argv)

    from convnest_viewer.inference.classifier import Classifier
    from convnest_viewer.io import load_study
    from training.benchmark import call_times
    from training.train import cpu_supports_bf16

    classifier = Classifier(None, device=args.device, backend="torch")  # the variants are built from its model
    series = load_study([args.series]).series[0]
    prepared, _ = classifier.prepare_slices(series, [(0, i) for i in range(series.n_slices)])
    inputs = torch.from_numpy(np.stack([p.model_input for p in prepared])).to(classifier.device)
    eager = classifier.model.float().eval().to(memory_format=torch.contiguous_format)
    temperature = classifier.card.temperature

    def probabilities(function) -> np.ndarray:
        with torch.inference_mode():
            logits = torch.cat([function(inputs[i:i + 32]).float() for i in range(0, len(inputs), 32)])
        return torch.softmax(logits / temperature, 1).cpu().numpy()

    channels_last = eager.to(memory_format=torch.channels_last)
    variants = {"eager fp32": lambda x: eager(x.contiguous()),
                "channels_last": lambda x: channels_last(x.contiguous(memory_format=torch.channels_last))}
    bf16_ok = classifier.device.type == "cuda" or cpu_supports_bf16()
    if bf16_ok:
        def bf16(x):
            with torch.autocast(classifier.device.type, dtype=torch.bfloat16):
                return eager(x)
        variants["bf16 autocast"] = bf16
    try:
        compiled = torch.compile(eager)
        begin = time.perf_counter()
        with torch.inference_mode():
            compiled(inputs[:1])
            compiled(inputs[:32])  # each new batch shape compiles again
        compile_seconds = time.perf_counter() - begin
        variants["torch.compile"] = compiled
        compile_note = ""
    except Exception as exc:  # noqa: BLE001 - a missing compiler is a result, not a crash
        compile_note = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        compile_seconds = None

    onnx_seconds, onnx_note = add_onnx_runtime(variants, eager, inputs, classifier.device, classifier.weights_sha256)

    reference = probabilities(variants["eager fp32"])
    rows, results = [], {}
    for name, function in variants.items():
        difference = float(np.abs(probabilities(function) - reference).max())
        single = call_times(function, inputs[:1], args.repeats)
        batched = call_times(function, inputs[:32], max(3, args.repeats // 4))
        results[name] = {"batch1_ms_median": statistics.median(single) * 1000,
                         "batch1_ms_p90": sorted(single)[int(0.9 * (len(single) - 1))] * 1000,
                         "batch32_slices_per_s": 32 / statistics.median(batched),
                         "max_probability_difference": difference, "within_tolerance": difference <= TOLERANCE}
        r = results[name]
        rows.append([name, f"{r['batch1_ms_median']:.1f}", f"{r['batch1_ms_p90']:.1f}", f"{r['batch32_slices_per_s']:.0f}",
                     f"{difference:.1e}", "yes" if r["within_tolerance"] else "no"])
    if compile_note:
        rows.append(["torch.compile", "-", "-", "-", "-", f"failed: {compile_note}"])
    if onnx_note:
        rows.append(["ONNX Runtime", "-", "-", "-", "-", onnx_note])
    if not bf16_ok:
        rows.append(["bf16 autocast", "-", "-", "-", "-", "this CPU has no bf16 support"])
    from convnest_viewer.text_table import format_table

    machine = {"device": str(classifier.device), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "model": classifier.card.name, "slices": len(inputs),
               "torch.compile seconds before the first answers (batch 1 and 32)": compile_seconds,
               "ONNX export and session seconds before the first answer": onnx_seconds}
    print(f"machine: {machine}")
    print(format_table(["variant", "batch 1 median ms", "batch 1 p90 ms", "batch 32 slices/s",
                        "max |p - p_eager|", f"within {TOLERANCE:g}"], rows))
    usable = [n for n, r in results.items() if r["within_tolerance"]]
    fastest = max(usable, key=lambda n: results[n]["batch32_slices_per_s"])
    print(f"fastest within tolerance at batch 32: {fastest}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "results": results, "fastest_within_tolerance": fastest,
                                    "compile_failure": compile_note, "onnx_runtime": onnx_note or "measured"},
                                   indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


def add_onnx_runtime(variants: dict, model: torch.nn.Module, inputs: torch.Tensor, device: torch.device,
                     weights_sha256: str) -> tuple[float | None, str]:
    """Add an "ONNX Runtime" variant, exported and verified as the app does it (into a fresh cache, so the export is
    timed); return its set-up seconds, or None and why it is not measured."""
    if device.type != "cpu":
        return None, "measured on the CPU only"
    from convnest_viewer.inference.onnx_runtime import CACHE_DIR_VARIABLE, load_onnx_forward, missing_packages

    if missing_packages():
        return None, f"not installed ({', '.join(missing_packages())}: pip install -e '.[onnx]')"
    import os
    import tempfile

    previous = os.environ.get(CACHE_DIR_VARIABLE)
    with tempfile.TemporaryDirectory() as folder:
        os.environ[CACHE_DIR_VARIABLE] = folder
        begin = time.perf_counter()
        try:
            forward = load_onnx_forward(lambda: model, weights_sha256, tuple(inputs.shape[1:]), stages=[])
        except Exception as exc:  # noqa: BLE001 - an exporter that cannot take the model is a result
            return None, f"export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
        finally:
            if previous is None:
                del os.environ[CACHE_DIR_VARIABLE]
            else:
                os.environ[CACHE_DIR_VARIABLE] = previous
        seconds = time.perf_counter() - begin
    variants["ONNX Runtime"] = lambda x: forward(x)[0]
    return seconds, ""


if __name__ == "__main__":
    sys.exit(main())
