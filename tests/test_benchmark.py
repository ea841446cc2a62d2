"""Benchmark statistics against published worked examples, and a tiny benchmark run on real images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.stats import friedman, holm, kendall_w, mean_ranks, pairwise_wilcoxon

# Hollander & Wolfe (1973), p. 140: rounding-first-base times of 22 players with three methods
# (R's friedman.test example "RoundingTimes"; published result: chi-squared 11.143, df 2, p 0.003805).
ROUNDING_TIMES = np.array([
    [5.40, 5.50, 5.55], [5.85, 5.70, 5.75], [5.20, 5.60, 5.50], [5.55, 5.50, 5.40], [5.90, 5.85, 5.70],
    [5.45, 5.55, 5.60], [5.40, 5.40, 5.35], [5.45, 5.50, 5.35], [5.25, 5.15, 5.00], [5.85, 5.80, 5.70],
    [5.25, 5.20, 5.10], [5.65, 5.55, 5.45], [5.60, 5.35, 5.45], [5.05, 5.00, 4.95], [5.50, 5.50, 5.40],
    [5.45, 5.55, 5.50], [5.55, 5.55, 5.35], [5.45, 5.50, 5.55], [5.50, 5.45, 5.25], [5.65, 5.60, 5.40],
    [5.70, 5.65, 5.55], [6.30, 6.30, 6.25]])

# Hollander & Wolfe (1973), p. 29: Hamilton depression scale before (x) and after (y) a tranquilizer
# (R's wilcox.test example; published result: V = 40, one-sided p = 0.01953, two-sided p = 0.03906).
DEPRESSION_X = np.array([1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30])
DEPRESSION_Y = np.array([0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29])


def test_friedman_matches_the_published_rounding_times_example():
    result = friedman(ROUNDING_TIMES)
    assert result["statistic"] == pytest.approx(11.143, abs=5e-4)
    assert result["p_value"] == pytest.approx(0.003805, abs=5e-7)
    assert result["kendall_w"] == pytest.approx(11.142857 / (22 * 2), rel=1e-6)
    assert kendall_w(11.142857, 22, 3) == pytest.approx(0.25325, abs=1e-5)


def test_kendall_w_is_one_for_perfect_agreement_and_ranks_favour_high_scores():
    scores = np.array([[0.9, 0.8, 0.7], [0.95, 0.85, 0.6], [0.99, 0.7, 0.65]])
    assert friedman(scores)["kendall_w"] == pytest.approx(1.0)
    assert mean_ranks(scores).tolist() == [1.0, 2.0, 3.0]


def test_wilcoxon_matches_the_published_depression_example():
    scores = np.stack([DEPRESSION_X, DEPRESSION_Y], axis=1)
    (row,) = pairwise_wilcoxon(scores, ["before", "after"], reference="before")
    assert row["p_value"] == pytest.approx(0.0390625, abs=1e-7)
    assert row["mean_difference"] == pytest.approx(np.mean(DEPRESSION_X - DEPRESSION_Y))
    assert row["p_holm"] == pytest.approx(row["p_value"])  # a single comparison needs no correction


def test_holm_correction_by_hand():
    # sorted p: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_friedman_refuses_too_few_architectures():
    assert friedman(np.array([[0.9, 0.8], [0.7, 0.6]]))["statistic"] is None


def test_tiny_benchmark_run_on_real_images_writes_the_report(tmp_path):
    from convnest_viewer.inference.card import PreprocessSpec
    from tests.test_training import _few_records
    from training.benchmark import benchmark_folds, run_benchmark
    from training.data import pack_dataset
    from training.train import TrainConfig

    data = pack_dataset(_few_records(6), PreprocessSpec(size=32))
    folds = benchmark_folds(data, "brain-tumor-mri", 3, seed=0)
    all_test = np.concatenate([f.test for f in folds])
    assert sorted(all_test.tolist()) == list(range(len(data))), "every image is tested exactly once"
    for fold in folds:
        assert set(fold.train).isdisjoint(fold.test) and set(fold.val).isdisjoint(fold.test)
    config = TrainConfig(architecture="test_convnext", size=32, epochs=1, batch_size=8, device="cpu", ema_decay=0.0, warmup_epochs=0.0)
    architectures = ["test_convnext", "mobilenetv3_large_100", "efficientnetv2_b0"]
    results = run_benchmark(data, tmp_path, architectures, 3, config, progress=False)
    assert len(results["runs"]) == 9
    assert {r["architecture"] for r in results["runs"]} == set(architectures)
    for row in results["runs"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["n"] == len(folds[row["fold"]].test)
    accuracy = results["statistics"]["accuracy"]
    assert accuracy["folds"] == 3 and accuracy["friedman"]["kendall_w"] is not None
    assert [r["b"] for r in accuracy["wilcoxon_vs_reference"]] == ["mobilenetv3_large_100", "efficientnetv2_b0"]
    efficiency = {row["architecture"]: row for row in results["efficiency"]}
    assert efficiency["efficientnetv2_b0"]["parameters_m"] == pytest.approx(5.86, abs=0.05)
    assert efficiency["test_convnext"]["gflops"] < efficiency["efficientnetv2_b0"]["gflops"]
    report = (tmp_path / "benchmark.md").read_text()
    assert "Friedman chi2" in report and "| mobilenetv3_large_100 |" in report
    assert (tmp_path / "accuracy_vs_gflops.png").is_file() and (tmp_path / "accuracy_vs_cpu_latency.png").is_file()
    # a second call resumes: nothing is retrained
    again = run_benchmark(data, tmp_path, architectures, 3, config, profile=False, progress=False)
    assert [r["train_seconds"] for r in again["runs"]] == [r["train_seconds"] for r in results["runs"]]
    assert json.loads((tmp_path / "results.json").read_text())["protocol"]["folds"] == 3
