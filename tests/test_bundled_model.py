"""The bundled default model: it loads (checked), and the app reproduces the accuracy its card claims."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convnest_viewer.inference.card import load_card
from convnest_viewer.inference.classifier import Classifier, default_model_dir
from convnest_viewer.io import load_study
from convnest_viewer.paths import demo_study_dir
from tests.paths import BRAIN_TUMOR_MRI, REPO
from training.data import list_dataset


@pytest.fixture(scope="module")
def classifier():
    return Classifier(default_model_dir(), device="cpu")


def test_the_default_model_is_a_checked_convnext_with_its_report(classifier):
    card = classifier.card
    assert card.architecture.startswith("convnext") and card.class_ids == ["glioma", "meningioma", "notumor", "pituitary"]
    report = json.loads((REPO / "training" / "reports" / card.name / "report.json").read_text())
    assert card.temperature == pytest.approx(report["temperature"])
    for key in ("official_test", "leakage_free_test", "cross_dataset"):
        assert card.metrics[key]["accuracy"] == pytest.approx(report[key]["accuracy"])
    assert load_card(default_model_dir()).weights[0].sha256 == classifier.weights_sha256


def test_the_app_reproduces_the_cards_official_test_accuracy(classifier):
    records = [r for r in list_dataset(BRAIN_TUMOR_MRI) if r.split == "test"]
    result = load_study([r.path for r in records])
    assert len(result.series) == len(records) == 1311 and not result.skipped
    predicted = []
    for start in range(0, len(result.series), 64):
        chunk = result.series[start:start + 64]
        predictions = classifier.predict([(s.pixels(0), s.window(0)) for s in chunk], batch_size=64)
        predicted += [classifier.class_ids.index(p.predicted) for p in predictions]
    accuracy = float(np.mean(np.array(predicted) == np.array([r.label for r in records])))
    assert accuracy == pytest.approx(classifier.card.metrics["official_test"]["accuracy"], abs=0.002)


def test_the_demo_study_is_classified_as_its_series_say(classifier):
    result = load_study([demo_study_dir()])
    correct = total = 0
    for series, expected in zip(result.series, classifier.class_ids):
        predictions = classifier.predict([(series.pixels(i), series.window(i)) for i in range(series.n_slices)])
        correct += sum(p.predicted == expected for p in predictions)
        total += len(predictions)
    assert total == 24 and correct >= 21
