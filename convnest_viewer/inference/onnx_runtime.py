"""ONNX Runtime as an optional CPU backend: the checked torch model exported once, cached, and proved equal.

The safetensors weights stay the only source of the model: the ONNX file is exported from the torch model the app
built from them (their sha256 checked against the card), cached under a key of that sha256, the architecture and the
library versions, together with the torch model's outputs on a fixed probe batch. Every time it is loaded, its
outputs on the probe are compared with those stored outputs, so the app need not build the torch model (nor import
timm) to classify; a cache that disagrees, or has no stored outputs, is checked against the torch model and exported
again if it is stale, damaged or altered. Needs `onnxruntime`, and `onnxscript` and `onnx` to export (the `onnx`
extra); without them the classifier stays on torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

CACHE_DIR_VARIABLE = "CONVNEST_CACHE_DIR"
BACKEND_VARIABLE = "CONVNEST_BACKEND"
BACKENDS = ("auto", "torch", "onnxruntime")
EXPORT_FORMAT = "convnest-onnx/1"  # part of the cache key: bump when the exported graph changes
PROBE_TOLERANCE = 1e-4  # largest |torch - onnx| (absolute and relative) on the probe batch
MODEL_FILE = "model.onnx"
PROBE_FILE = "probe_outputs.safetensors"  # the torch model's outputs on the probe batch, written with the export
log = logging.getLogger(__name__)


class _ForwardWithStageStatistics(torch.nn.Module):
    """The classifier's logits and, per gate feature stage, its per-channel mean and deviation, in one graph."""

    def __init__(self, model: torch.nn.Module, stages: Sequence[int]) -> None:
        super().__init__()
        self.model, self.stages = model, list(stages)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.stages:
            return (self.model(x),)
        final, intermediates = self.model.forward_intermediates(x, indices=self.stages)
        outputs = [self.model.forward_head(final)]
        for stage in intermediates:
            deviation, mean = torch.std_mean(stage.flatten(2), dim=2)  # as gate.stage_statistics computes them
            outputs.append(torch.cat([mean, deviation], dim=1))
        return tuple(outputs)


def missing_packages() -> list[str]:
    """Return the packages the ONNX Runtime backend needs that are not installed."""
    from importlib.util import find_spec

    return [name for name in ("onnxruntime", "onnxscript", "onnx") if find_spec(name) is None]


def requested_backend(backend: str | None = None) -> str:
    """Return the backend asked for (argument, else $CONVNEST_BACKEND, else auto); refuse unknown names."""
    chosen = (backend or os.environ.get(BACKEND_VARIABLE) or "auto").strip().lower()
    if chosen not in BACKENDS:
        raise ValueError(f"unknown inference backend {chosen!r}; choose one of {', '.join(BACKENDS)}")
    return chosen


def cache_root() -> Path:
    """Return the folder of exported models ($CONVNEST_CACHE_DIR, else the platform's user cache folder)."""
    configured = os.environ.get(CACHE_DIR_VARIABLE)
    if configured:
        return Path(configured) / "onnx"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("convnest-viewer", "ConvNeXtViewer")) / "onnx"


class OnnxForward:
    """An ONNX Runtime session of one model: logits and gate stage statistics for a batch of model inputs."""

    def __init__(self, path: Path, threads: int, spin: bool = False) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.log_severity_level = 3  # errors only
        if not spin:  # idle pool threads sleep instead of spinning: on two cores, spinning took the UI thread's turns
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, list[np.ndarray]]:
        """Return the logits (float32 tensor) and each gate stage's statistics (float64) of a float input batch."""
        inputs = np.ascontiguousarray(batch.detach().cpu().float().numpy())
        logits, *stages = self.session.run(None, {self.input_name: inputs})
        return torch.from_numpy(logits), [s.astype(np.float64) for s in stages]


def cache_key(weights_sha256: str, input_shape: Sequence[int], stages: Sequence[int], model_name: str = "") -> str:
    """Return the cache folder name of a model export: its weights, architecture, input, stages and the libraries."""
    import onnxruntime

    parts = [EXPORT_FORMAT, weights_sha256, model_name, "x".join(map(str, input_shape)), ",".join(map(str, stages)),
             torch.__version__, onnxruntime.__version__]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def load_onnx_forward(build_model: Callable[[], torch.nn.Module], weights_sha256: str, input_shape: Sequence[int],
                      stages: Sequence[int], model_name: str = "") -> OnnxForward:
    """Return a verified ONNX Runtime session of the model (from the cache, else exported now); raise on failure.

    build_model is called only when the cache cannot be verified by its stored probe outputs."""
    missing = missing_packages()
    if missing:
        raise RuntimeError(f"ONNX Runtime backend needs {', '.join(missing)} (pip install '.[onnx]')")
    folder = cache_root() / cache_key(weights_sha256, input_shape, stages, model_name)
    probe = _probe_batch(input_shape)
    threads = torch.get_num_threads()
    path = folder / MODEL_FILE
    stored = _stored_outputs(folder / PROBE_FILE)
    if path.is_file() and stored:
        forward, problem = _checked_cache(path, threads, probe, stored)
        if forward is not None:
            return forward
        log.warning("cached ONNX export %s: %s against its stored probe outputs; checking it against torch", path, problem)
    wrapper = _ForwardWithStageStatistics(build_model(), stages).eval()
    with torch.inference_mode():
        expected = [t.float().numpy() for t in wrapper(probe)]
    if path.is_file():  # also after a stored-output disagreement: the damaged file may be the outputs, not the export
        forward, problem = _checked_cache(path, threads, probe, expected)
        if forward is not None:
            _store_outputs(folder, expected)
            return forward
        log.warning("cached ONNX export %s: %s; exporting again", path, problem)
    _export(wrapper, probe, folder, expected)
    forward = OnnxForward(path, threads)
    problem = _disagreement(forward, probe, expected)
    if problem:
        raise RuntimeError(f"{path}: the ONNX export disagrees with the torch model ({problem})")
    return forward


def _checked_cache(path: Path, threads: int, probe: torch.Tensor, expected: list[np.ndarray]
                   ) -> tuple[OnnxForward | None, str]:
    """Return a cached export's session if its probe outputs agree with expected, else None and how they differ."""
    try:
        forward = OnnxForward(path, threads)
        problem = _disagreement(forward, probe, expected)
    except Exception as exc:  # noqa: BLE001 - a damaged cache file is re-exported, whatever the reader says
        return None, f"unreadable ({type(exc).__name__})"
    return (None, problem) if problem else (forward, "")


def _stored_outputs(path: Path) -> list[np.ndarray]:
    """Return the probe outputs stored with an export, or [] when there are none or they cannot be read."""
    if not path.is_file():
        return []
    from safetensors.numpy import load_file

    try:
        stored = load_file(str(path))
        return [stored[f"output_{number}"] for number in range(len(stored))]
    except Exception as exc:  # noqa: BLE001 - unreadable stored outputs mean: check against torch
        log.warning("%s: stored probe outputs unreadable (%s); checking the export against torch", path, type(exc).__name__)
        return []


def _store_outputs(folder: Path, outputs: list[np.ndarray]) -> None:
    """Write the torch model's probe outputs beside its export (written beside, then moved into place)."""
    from safetensors.numpy import save_file

    staging = folder / f".{PROBE_FILE}.{os.getpid()}"
    save_file({f"output_{number}": np.ascontiguousarray(v) for number, v in enumerate(outputs)}, str(staging))
    os.replace(staging, folder / PROBE_FILE)


def _probe_batch(input_shape: Sequence[int]) -> torch.Tensor:
    """Return a fixed batch of two inputs: a smooth bright disc on black and seeded noise."""
    channels, height, width = input_shape
    y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    disc = torch.where(x ** 2 + y ** 2 < 0.6, 1.5 - (x ** 2 + y ** 2), torch.tensor(-1.0))
    noise = torch.randn((channels, height, width), generator=torch.Generator().manual_seed(0))
    return torch.stack([disc.expand(channels, height, width), noise]).float().contiguous()


def _disagreement(forward: OnnxForward, probe: torch.Tensor, expected: list[np.ndarray]) -> str:
    """Return how the session's outputs on the probe differ from the torch model's, or "" when they agree."""
    logits, stages = forward(probe)
    outputs = [logits.numpy(), *stages]
    if len(outputs) != len(expected):
        return f"{len(outputs)} outputs, expected {len(expected)}"
    for number, (got, want) in enumerate(zip(outputs, expected)):
        if got.shape != want.shape:
            return f"output {number} has shape {got.shape}, expected {want.shape}"
        if not np.allclose(got, want, rtol=PROBE_TOLERANCE, atol=PROBE_TOLERANCE):
            return f"output {number} differs by up to {float(np.abs(got - want).max()):.2g}"
    return ""


def _export(wrapper: torch.nn.Module, probe: torch.Tensor, folder: Path, expected: list[np.ndarray]) -> None:
    """Export the wrapper with a dynamic batch into folder/model.onnx, with its probe outputs (written beside, then
    moved into place)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        exporter_log = logging.getLogger("torch.onnx")
        level = exporter_log.level
        exporter_log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapper, (probe,), str(staging / MODEL_FILE), input_names=["input"],
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, dynamo=True,
                                  external_data=False, verbose=False)
        finally:
            exporter_log.setLevel(level)
        _store_outputs(staging, expected)
        shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(staging, folder)
        except OSError:
            if not (folder / MODEL_FILE).is_file():  # else another process put its export there first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


__all__ = [
    "BACKENDS", "MODEL_FILE", "OnnxForward", "PROBE_FILE", "cache_root", "load_onnx_forward", "missing_packages",
    "requested_backend",
]
