"""The ONNX Runtime CPU backend: same answers and gate as torch on a real series, a verified cache, a safe fallback."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the ONNX Runtime backend is optional: pip install -e '.[onnx]'")
pytest.importorskip("onnxscript", reason="exporting needs onnxscript: pip install -e '.[onnx]'")

from convnest_viewer.inference import classifier as classifier_module  # noqa: E402
from convnest_viewer.inference.classifier import Classifier  # noqa: E402
from convnest_viewer.inference.onnx_runtime import MODEL_FILE, PROBE_FILE, cache_root  # noqa: E402
from convnest_viewer.io.loader import load_study  # noqa: E402
from tests.paths import DICOM  # noqa: E402


@pytest.fixture(scope="module")
def mprage_inputs():
    """Every 4th slice of the healthy sagittal MPRAGE through the app's preprocessing, with the blank rule's say."""
    reference = Classifier(None, device="cpu", backend="torch")
    series = load_study([DICOM / "sagittal-mprage"]).series[0]
    prepared, failed = reference.prepare_slices(series, [(0, i) for i in range(0, series.n_slices, 4)])
    assert not failed
    return reference, np.stack([p.model_input for p in prepared]), [p.blank for p in prepared]


def test_onnx_runtime_gives_torchs_probabilities_and_gate_on_a_real_series(mprage_inputs, monkeypatch, tmp_path):
    monkeypatch.setenv("CONVNEST_CACHE_DIR", str(tmp_path))
    reference, inputs, blanks = mprage_inputs
    fast = Classifier(None, device="cpu")  # auto: ONNX Runtime on the CPU when installed
    assert fast.backend == "onnxruntime" and "ONNX Runtime" in fast.device_name
    assert reference.backend == "torch" and "ONNX" not in reference.device_name
    expected, expected_gate = reference.assess_inputs(inputs, blanks, batch_size=16)
    got, gate = fast.assess_inputs(inputs, blanks, batch_size=5)  # another batch size: the batch axis is dynamic
    assert np.abs(got - expected).max() < 1e-4, "within the benchmark's 1e-3, with room"
    assert [d.assessed for d in gate] == [d.assessed for d in expected_gate]
    assert 0 < sum(d.assessed for d in gate) < len(gate), "the series has assessed and gated slices: both are compared"
    scores = [(a.score, b.score) for a, b in zip(gate, expected_gate) if a.score is not None]
    assert scores and max(abs(a - b) for a, b in scores) < 1e-3
    assert np.array_equal(fast.predict_inputs(inputs[:3]).argmax(1), expected[:3].argmax(1))


def test_the_export_is_cached_and_a_damaged_or_altered_cache_is_exported_again(monkeypatch, tmp_path):
    import onnx
    from onnx import numpy_helper

    monkeypatch.setenv("CONVNEST_CACHE_DIR", str(tmp_path))
    first = Classifier(None, device="cpu")
    (path,) = cache_root().glob(f"*/{MODEL_FILE}")
    assert (path.parent / PROBE_FILE).is_file(), "the torch model's probe outputs are stored with the export"
    exported = path.stat().st_mtime_ns
    cached = Classifier(None, device="cpu")
    assert path.stat().st_mtime_ns == exported, "a valid cached export is loaded, not exported again"
    assert cached._model is None, "verified by its stored probe outputs: the torch model is not built to classify"
    probe = np.random.default_rng(0).normal(size=(2, *first.onnx.session.get_inputs()[0].shape[1:])).astype(np.float32)
    assert np.allclose(cached.predict_inputs(probe), first.predict_inputs(probe), atol=1e-6)
    assert cached.model is not None and cached._model is not None, "heatmaps get the torch model when they ask"

    (path.parent / PROBE_FILE).unlink()  # an export from before outputs were stored: checked against torch, kept
    Classifier(None, device="cpu")
    assert path.stat().st_mtime_ns == exported and (path.parent / PROBE_FILE).is_file()
    (path.parent / PROBE_FILE).write_bytes(b"not safetensors")
    assert Classifier(None, device="cpu").backend == "onnxruntime" and path.stat().st_mtime_ns == exported

    path.write_bytes(path.read_bytes()[:5000])  # truncated
    again = Classifier(None, device="cpu")
    assert again.backend == "onnxruntime" and path.stat().st_size > 1_000_000

    graph = onnx.load(str(path))  # a well-formed file whose weights were altered
    initializer = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(initializer).copy()
    values *= 1.05
    initializer.CopyFrom(numpy_helper.from_array(values, initializer.name))
    onnx.save(graph, str(path))
    altered = path.stat().st_mtime_ns
    checked = Classifier(None, device="cpu")
    assert checked.backend == "onnxruntime" and path.stat().st_mtime_ns != altered, "the probe caught the change"
    assert np.allclose(checked.predict_inputs(probe), first.predict_inputs(probe), atol=1e-5)


def test_backend_choice_and_fallback(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVNEST_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CONVNEST_BACKEND", "torch")
    assert Classifier(None, device="cpu").backend == "torch"
    monkeypatch.setenv("CONVNEST_BACKEND", "tensorrt")
    with pytest.raises(ValueError, match="unknown inference backend 'tensorrt'"):
        Classifier(None, device="cpu")
    monkeypatch.delenv("CONVNEST_BACKEND")

    monkeypatch.setattr(classifier_module, "missing_packages", lambda: ["onnxscript"])
    fallback = Classifier(None, device="cpu")
    assert fallback.backend == "torch" and "onnxscript not installed" in fallback.backend_note
    assert not list(tmp_path.rglob(MODEL_FILE)), "nothing exported without the exporter"

    model = fallback.model
    with pytest.raises(RuntimeError, match="not loaded from checked weights"):
        Classifier(model=model, card=fallback.card, device="cpu", backend="onnxruntime")
    assert Classifier(model=model, card=fallback.card, device="cpu").backend == "torch", "in-memory models stay on torch"


def test_a_cached_export_classifies_without_importing_timm(monkeypatch, tmp_path):
    """The viewer's memory target rests on this: with a verified cache, classification never builds the torch model."""
    import subprocess
    import sys

    monkeypatch.setenv("CONVNEST_CACHE_DIR", str(tmp_path))
    Classifier(None, device="cpu")  # exports into the cache
    script = ("import sys, numpy as np; from convnest_viewer.inference.classifier import Classifier; "
              "c = Classifier(None, device='cpu'); s = c.spec; "
              "p = c.predict_inputs(np.zeros((1, s.channels, s.size, s.size), np.float32)); "
              "print(c.backend, 'timm' in sys.modules, round(float(p.sum()), 6))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["onnxruntime", "False", "1.0"]


def test_onnx_runtime_averages_a_slice_with_its_mirror_as_torch_does(mprage_inputs, monkeypatch, tmp_path):
    monkeypatch.setenv("CONVNEST_CACHE_DIR", str(tmp_path))
    _, inputs, blanks = mprage_inputs
    reference = Classifier(None, device="cpu", backend="torch")
    fast = Classifier(None, device="cpu")
    assert fast.backend == "onnxruntime"
    reference.card.test_time_flip = fast.card.test_time_flip = True
    expected, expected_gate = reference.assess_inputs(inputs, blanks)
    got, gate = fast.assess_inputs(inputs, blanks)
    assert np.abs(got - expected).max() < 1e-4
    assert [d.assessed for d in gate] == [d.assessed for d in expected_gate]
    mirrored, _ = fast.assess_inputs(np.ascontiguousarray(inputs[..., ::-1]), blanks)
    assert np.abs(mirrored - got).max() < 1e-4
