"""Run a bundled model on slices: device choice, batched calibrated probabilities, a fast path."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from convnest_viewer.inference.card import GateSpec, ModelCard, ModelCardError, load_card
from convnest_viewer.inference.factory import create_classifier
from convnest_viewer.inference.foreground import head_mask, head_share
from convnest_viewer.inference.preprocess import Letterbox, preprocess, preprocess_image, to_uint8
from convnest_viewer.inference.gate import Gate, GateDecision, image_statistics, stage_statistics
from convnest_viewer.inference.installed import DEFAULT_MODEL_FILE, default_model_name
from convnest_viewer.inference.onnx_runtime import OnnxForward, load_onnx_forward, missing_packages, requested_backend
from convnest_viewer.inference.weights import check_model_folder, load_state_dict
from convnest_viewer.io.model import Series
from convnest_viewer.io.window import Window
from convnest_viewer.io.pixels import PixelReadError
from convnest_viewer.paths import models_dir

log = logging.getLogger(__name__)


class NoModelInstalled(ModelCardError):
    """No trained model is installed where the app looks for one."""


def pick_device(preferred: str | None = None) -> torch.device:
    """Return the requested device, else CUDA, then MPS, then CPU."""
    preferred = preferred or os.environ.get("CONVNEST_DEVICE") or None
    if preferred and preferred != "auto":
        device = torch.device(preferred)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("CUDA was requested but no CUDA GPU is available")
        if device.type == "mps" and not _mps_available():
            raise RuntimeError("MPS was requested but is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def device_description(device: torch.device) -> str:
    """Return a human name for a device, e.g. the GPU model or 'CPU (2 threads)'."""
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "GPU: Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


def default_model_dir() -> Path:
    """Return the folder of the default bundled model, or raise NoModelInstalled."""
    root = models_dir()
    name = default_model_name(root)
    if name and (root / name / "model_card.json").is_file():
        return root / name
    raise NoModelInstalled(
        f"no trained model is installed (looked for {root / DEFAULT_MODEL_FILE} naming a folder with model_card.json); "
        "train one with `convnest train` and `convnest export`, or pass --model DIR"
    )


def weights_mismatch(expected: dict, loaded: dict, card: ModelCard) -> str | None:
    """Return in one sentence why loaded weights do not fit the model the card describes, or None if they fit."""
    head = [key for key, value in expected.items() if value.ndim >= 1 and value.shape[0] == card.num_classes]
    if head and head[-1] in loaded and loaded[head[-1]].shape[0] != card.num_classes:
        return (f"the weights have {loaded[head[-1]].shape[0]} output classes, the card lists {card.num_classes} "
                f"({', '.join(card.class_ids)})")
    missing = [key for key in expected if key not in loaded]
    unexpected = [key for key in loaded if key not in expected]
    wrong = [key for key in expected if key in loaded and tuple(loaded[key].shape) != tuple(expected[key].shape)]
    if not (missing or unexpected or wrong):
        return None
    first = (f"; first: {wrong[0]} is {tuple(loaded[wrong[0]].shape)} in the file, {tuple(expected[wrong[0]].shape)} in the model"
             if wrong else f"; first missing: {missing[0]}" if missing else f"; first unexpected: {unexpected[0]}")
    return (f"the weights do not fit architecture {card.architecture} named in the card: {len(missing)} tensors missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} of another shape{first}")


@dataclass
class Prediction:
    """Calibrated class probabilities of one slice."""

    probabilities: np.ndarray  # (num_classes,), sums to 1
    class_ids: Sequence[str]

    @property
    def predicted_index(self) -> int:
        """Return the index of the most probable class."""
        return int(np.argmax(self.probabilities))

    @property
    def predicted(self) -> str:
        """Return the id of the most probable class."""
        return self.class_ids[self.predicted_index]


@dataclass
class SliceInput:
    """One slice of a series, read and preprocessed for the model."""

    volume: int
    index: int
    values: np.ndarray
    window: Window
    model_input: np.ndarray
    blank: str | None = None  # the gate's image rule: why the slice is blank, if it is
    head_share: float = 0.0  # share of the slice the head covers (the gate's series rule compares it)


class Classifier:
    """A loaded, checked model with its card, ready to classify slices on one device."""

    def __init__(self, model_dir: Path | None = None, device: str | None = None, model: torch.nn.Module | None = None,
                 card: ModelCard | None = None, backend: str | None = None) -> None:
        self._model: torch.nn.Module | None = None
        self._model_lock = threading.Lock()
        self.device = pick_device(device)
        if model is not None:
            if card is None:
                raise ValueError("a model passed directly needs its card")
            self.model_dir, self.card, self.weights_sha256 = None, card, "in-memory"
            self._model = self._on_device(model)
        else:
            self.model_dir = Path(model_dir) if model_dir else default_model_dir()
            self.card = load_card(self.model_dir)
            check_model_folder(self.model_dir, self.card)
            self.weights_sha256 = self.card.weights[0].sha256 if len(self.card.weights) == 1 else _combined_sha(self.card)
        self.spec = self.card.preprocessing
        self.gate = Gate.from_model_folder(self.model_dir, self.card.gate) if self.card.gate and self.model_dir else None
        self.onnx, self.backend_note = self._pick_backend(requested_backend(backend))
        if self.onnx is None:
            self.model  # noqa: B018 - torch classifies: build it now, so a model that does not fit fails here

    @property
    def model(self) -> torch.nn.Module:
        """Return the torch model, built from the checked weights the first time it is needed (ONNX Runtime
        classifies without it; heatmaps need it)."""
        with self._model_lock, torch.inference_mode(False):  # first asked for inside inference mode (an occlusion
            if self._model is None:                            # map): its weights must still serve autograd later
                self._model = self._on_device(self._build_model())
            return self._model

    def _build_model(self) -> torch.nn.Module:
        """Build the card's architecture and load its sha256-checked safetensors weights into it."""
        state = load_state_dict(self.model_dir, self.card)
        model = create_classifier(self.card)
        mismatch = weights_mismatch(model.state_dict(), state, self.card)
        if mismatch:
            raise ModelCardError(f"{self.model_dir}: {mismatch}")
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelCardError(f"{self.model_dir}: weights do not fit {self.card.architecture}: {exc}") from exc
        return model

    def _on_device(self, model: torch.nn.Module) -> torch.nn.Module:
        """Return the model in eval mode on the classifier's device (channels_last off the CPU)."""
        model = model.eval().to(self.device)
        return model.to(memory_format=torch.channels_last) if self.device.type != "cpu" else model

    def _pick_backend(self, requested: str) -> tuple[OnnxForward | None, str]:
        """Return the ONNX Runtime session when it is asked for, or chosen by auto (CPU, installed, weights from a
        folder), and a note on why it is not used otherwise; an explicit request that cannot be met raises."""
        if requested == "torch":
            return None, "torch (asked for)"
        reason = ("it runs on the CPU only" if self.device.type != "cpu" else
                  "the model was not loaded from checked weights" if self.model_dir is None else "")
        if not reason and requested == "auto" and missing_packages():
            reason = f"{', '.join(missing_packages())} not installed"
        if reason:
            if requested == "onnxruntime":
                raise RuntimeError(f"ONNX Runtime backend unavailable: {reason}")
            return None, f"torch (ONNX Runtime: {reason})"
        stages = list(self.gate.spec.stages) if self.gate else []
        shape = (self.spec.channels, self.spec.size, self.spec.size)
        try:
            identity = f"{self.card.architecture}/{self.card.num_classes}"
            return load_onnx_forward(lambda: self.model, self.weights_sha256, shape, stages, identity), "ONNX Runtime"
        except Exception as exc:  # noqa: BLE001 - auto falls back to torch and says why
            if requested == "onnxruntime":
                raise
            log.warning("ONNX Runtime backend not used for %s: %s", self.card.name, exc)
            return None, f"torch (ONNX Runtime failed: {type(exc).__name__})"

    @property
    def backend(self) -> str:
        """Return the name of what runs classification: "onnxruntime" or "torch"."""
        return "onnxruntime" if self.onnx is not None else "torch"

    @property
    def min_head_fraction(self) -> float:
        """Return the gate's series rule: the least head section, as a share of the largest, a slice needs (0: off)."""
        return self.gate.spec.min_head_fraction if self.gate else 0.0

    @property
    def class_ids(self) -> list[str]:
        """Return the class ids in output order."""
        return self.card.class_ids

    @property
    def device_name(self) -> str:
        """Return a human name of the device the model runs on (and ONNX Runtime when it classifies)."""
        return device_description(self.device) + (" · ONNX Runtime" if self.onnx is not None else "")

    def prepare(self, values: np.ndarray, window: Window) -> tuple[np.ndarray, Letterbox]:
        """Return the model input of one slice and its letterbox geometry."""
        return preprocess(values, window, self.spec)

    def prepare_slices(self, series: Series, positions: Sequence[tuple[int, int]]
                       ) -> tuple[list[SliceInput], list[tuple[int, int, str]]]:
        """Read and preprocess (volume, index) slices; return those read and (volume, index, reason) for the rest."""
        prepared, failed = [], []
        for volume, index in positions:
            try:
                values = series.pixels(index, volume)
                window = series.window(index, volume)
            except PixelReadError as exc:
                failed.append((volume, index, str(exc)))
                continue
            image = to_uint8(values, window)
            mask = head_mask(image)  # one mask for the gate's blank rule and the head crop
            blank = self.gate.image_reason(image, mask) if self.gate else None
            prepared.append(SliceInput(volume, index, values, window, preprocess_image(image, self.spec, mask)[0], blank,
                                       head_share(image, mask)))
        return prepared, failed

    def assess_inputs(self, inputs: np.ndarray, blanks: Sequence[str | None] | None = None, batch_size: int = 16
                      ) -> tuple[np.ndarray, list[GateDecision]]:
        """Return calibrated probabilities (N, classes) and the gate's decision for each preprocessed input."""
        if self.gate is None:
            return self.predict_inputs(inputs, batch_size), [GateDecision(True) for _ in range(len(inputs))]
        blanks = list(blanks) if blanks is not None else [None] * len(inputs)
        probabilities, scores = [], []
        for start in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(inputs[start:start + batch_size]))
            logits, statistics = self.logits_and_gate_statistics(batch, self.gate.spec)
            probabilities.append(self.probabilities_from_logits(logits))
            scores.extend(float(v) for v in self.gate.scorer.scores(statistics))
        probabilities = np.concatenate(probabilities) if probabilities else np.zeros((0, self.card.num_classes))
        return probabilities, [self.gate.decide(blank, score) for blank, score in zip(blanks, scores)]

    def predict_inputs(self, inputs: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """Return calibrated probabilities (N, classes) for preprocessed inputs (N, C, H, W)."""
        outputs = []
        for start in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(inputs[start:start + batch_size]))
            outputs.append(self.probabilities_from_logits(self.logits(batch)))
        return np.concatenate(outputs) if outputs else np.zeros((0, self.card.num_classes), np.float32)

    def predict(self, slices: Sequence[tuple[np.ndarray, Window]], batch_size: int = 16) -> list[Prediction]:
        """Classify slices given as (values, window) pairs; return one Prediction each."""
        if not slices:
            return []
        inputs = np.stack([self.prepare(values, window)[0] for values, window in slices])
        return [Prediction(p, self.class_ids) for p in self.predict_inputs(inputs, batch_size)]

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Return raw logits for a float input batch: the mean over the batch and its mirror where the card asks."""
        return self._with_mirror(self._plain_logits(batch), batch)

    def _with_mirror(self, logits: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Return the batch's logits averaged with its left-right mirror's where the card asks, else as they are."""
        if not self.card.test_time_flip:
            return logits
        if self.onnx is None:  # mirror on the model's device: the batch is copied there once, not twice
            batch = batch.to(self.device, non_blocking=True)
        return (logits + self._plain_logits(batch.flip(-1))) / 2

    def _plain_logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Return raw logits of one forward pass (fast path: channels_last, autocast on GPU)."""
        if self.onnx is not None:
            return self.onnx(batch)[0]
        batch = batch.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self.model(batch).float()
        return self.model(batch).float()

    @torch.inference_mode()
    def logits_and_gate_statistics(self, batch: torch.Tensor, spec: GateSpec) -> tuple[torch.Tensor, list[np.ndarray]]:
        """Return raw logits (as logits() gives them) and the statistics a gate scores (its feature stages' channel
        statistics of the slice as it is, then the input's own statistics if the spec asks for them)."""
        if self.onnx is not None and list(spec.stages) == (list(self.gate.spec.stages) if self.gate else []):
            logits, statistics = self.onnx(batch)
        else:
            device_batch = batch.to(self.device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                final, intermediates = self.model.forward_intermediates(device_batch, indices=list(spec.stages))
                logits = self.model.forward_head(final).float()
            statistics = stage_statistics(intermediates)
        if spec.input_statistics:
            statistics.append(image_statistics(batch))
        return self._with_mirror(logits, batch), statistics

    def probabilities_from_logits(self, logits: torch.Tensor) -> np.ndarray:
        """Return temperature-scaled softmax probabilities as float64 numpy."""
        scaled = logits.double() / self.card.temperature
        return torch.softmax(scaled, dim=1).cpu().numpy()


def _combined_sha(card: ModelCard) -> str:
    import hashlib

    return hashlib.sha256("".join(w.sha256 for w in card.weights).encode()).hexdigest()


__all__ = ["Classifier", "NoModelInstalled", "Prediction", "default_model_dir", "device_description", "pick_device"]
