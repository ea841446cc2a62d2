"""Training module: packing, leakage audit and splits, metrics, resume, and an end-to-end export."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from convnest_viewer.inference.card import CLASS_IDS, PreprocessSpec, load_card
from convnest_viewer.inference.classifier import Classifier
from convnest_viewer.io import load_study
from training.cli import main as training_main
from training.data import PackedDataset, list_dataset, pack_dataset
from training.dedup import duplicate_groups, identical_files, leak_table, near_duplicate_pairs
from training.metrics import classification_metrics, expected_calibration_error, fit_temperature, softmax
from training.splits import group_kfold, group_split, groups_straddle
from training.train import Trainer, TrainConfig, load_initial_weights, predict_logits
from tests.paths import BRAIN_TUMOR_MRI

SIZE = 64


def _few_records(per_class_split: int = 8):
    """Return the first images of each class in each official split."""
    records = list_dataset(BRAIN_TUMOR_MRI)
    picked, counts = [], {}
    for record in records:
        key = (record.split, record.label)
        if counts.get(key, 0) < per_class_split:
            picked.append(record)
            counts[key] = counts.get(key, 0) + 1
    return picked


@pytest.fixture(scope="module")
def small_pack(tmp_path_factory):
    """A few dozen real images packed at 64 px and saved/loaded through the compact format."""
    data = pack_dataset(_few_records(), PreprocessSpec(size=SIZE))
    path = data.save(tmp_path_factory.mktemp("pack") / "small.npz")
    return PackedDataset.load(path), path


def test_listing_maps_the_folder_dataset_to_our_class_ids_and_recognises_every_source(shared):
    btm = list_dataset(BRAIN_TUMOR_MRI)
    assert len(btm) == 5708 + 1311
    assert sum(r.split == "test" for r in btm) == 1311
    assert {r.path.parent.name: CLASS_IDS[r.label] for r in btm} == {c: c for c in CLASS_IDS}
    from training.sources import detect_source

    assert detect_source(BRAIN_TUMOR_MRI) == "folder-per-class"
    assert detect_source(shared / "data" / "tcga-lgg") == "tcga-lgg"
    assert detect_source(shared / "data" / "brats2013-hgg") == "label-volumes"
    assert detect_source(shared / "nifti" / "healthy-volunteer" / "chris_t1.nii.gz") == "healthy-volume"
    with pytest.raises(ValueError, match="not a known dataset"):
        detect_source(shared / "dicom")


def test_packed_file_round_trips_raw_and_jpeg(small_pack, tmp_path):
    data, path = small_pack
    assert data.images.shape == (64, SIZE, SIZE) and data.images.dtype == np.uint8
    assert np.bincount(data.labels).tolist() == [16, 16, 16, 16]
    compact = PackedDataset.load(data.save(tmp_path / "small-jpeg.npz", jpeg_quality=75))
    assert (tmp_path / "small-jpeg.npz").stat().st_size < path.stat().st_size / 2
    error = np.abs(compact.images.astype(int) - data.images.astype(int)).mean()
    # JPEG quality 75 on 64 px images; head-cropped images fill the frame, so little black background
    assert error < 5.0
    assert np.array_equal(compact.labels, data.labels) and list(compact.paths) == list(data.paths)


def test_audit_finds_the_byte_identical_duplicates_across_official_splits():
    records = list_dataset(BRAIN_TUMOR_MRI)
    train = [str(r.path) for r in records if r.split == "train"]
    test = [str(r.path) for r in records if r.split == "test"]
    identical = identical_files(test, train)
    assert len(identical) > 100, "the official split is known to leak byte-identical images"
    for test_path, train_path in identical[:20]:
        assert open(test_path, "rb").read() == open(train_path, "rb").read()
        assert "/Testing/" in test_path and "/Training/" in train_path
    # and the correlation audit flags each of them as a near-duplicate
    from training.data import thumbnail

    test_thumbs = np.stack([thumbnail(p) for p, _ in identical[:20]])
    train_thumbs = np.stack([thumbnail(p) for _, p in identical[:20]])
    rows = leak_table(test_thumbs, np.zeros(20, int), train_thumbs, CLASS_IDS)
    assert rows[-1]["near_duplicates_0.99"] == 20


def test_duplicate_groups_never_straddle_splits():
    rng = np.random.default_rng(0)
    base = rng.random((40, 32, 32)).astype(np.float32) * 255
    copies = base[:10] + rng.normal(0, 1, (10, 32, 32)).astype(np.float32)  # near-duplicates of the first 10
    thumbs = np.concatenate([base, copies])
    pairs = near_duplicate_pairs(thumbs)
    assert {(int(i), int(j)) for i, j in pairs} == {(i, 40 + i) for i in range(10)}
    groups = duplicate_groups(len(thumbs), pairs)
    assert len(np.unique(groups)) == 40
    labels = np.arange(50) % 4
    labels[40:] = labels[:10]
    rest, held = group_split(labels, groups, 0.2, seed=1)
    assert not groups_straddle(groups, rest, held)
    for train, test in group_kfold(labels, groups, k=3, seed=0):
        assert not groups_straddle(groups, train, test)
    assert groups_straddle(groups, np.array([0]), np.array([40])), "the check itself detects a straddling group"


def test_metrics_agree_with_a_known_confusion_matrix():
    confusion = np.array([[50, 2, 3, 0], [4, 40, 5, 1], [0, 1, 60, 4], [2, 0, 3, 45]])
    y_true = np.repeat(np.arange(4), confusion.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(4), row) for row in confusion])
    probabilities = np.eye(4)[y_pred] * 0.7 + 0.075  # confident in the predicted class, rows sum to 1
    metrics = classification_metrics(y_true, probabilities, CLASS_IDS)
    assert metrics["confusion_matrix"] == confusion.tolist()
    n = confusion.sum()
    assert metrics["accuracy"] == pytest.approx(np.trace(confusion) / n)
    precision = np.diag(confusion) / confusion.sum(axis=0)
    recall = np.diag(confusion) / confusion.sum(axis=1)
    f1 = 2 * precision * recall / (precision + recall)
    for i, class_id in enumerate(CLASS_IDS):
        assert metrics["per_class"][class_id]["precision"] == pytest.approx(precision[i])
        assert metrics["per_class"][class_id]["recall"] == pytest.approx(recall[i])
    assert metrics["macro_f1"] == pytest.approx(f1.mean())
    observed = np.trace(confusion) / n
    expected = (confusion.sum(axis=0) * confusion.sum(axis=1)).sum() / n**2
    assert metrics["cohen_kappa"] == pytest.approx((observed - expected) / (1 - expected))
    # every prediction has confidence 0.775, so the ECE is |accuracy - 0.775|
    assert metrics["ece"] == pytest.approx(abs(observed - 0.775))


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(3)
    true_logits = rng.normal(0, 3, (4000, 4))
    labels = np.array([rng.choice(4, p=p) for p in softmax(true_logits)])
    overconfident = true_logits * 2.5  # a model whose logits are 2.5x too large
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(2.5, rel=0.1)
    assert expected_calibration_error(labels, softmax(overconfident, temperature)) < expected_calibration_error(labels, softmax(overconfident))


def _config(**overrides) -> TrainConfig:
    values = dict(architecture="test_convnext", size=SIZE, epochs=2, batch_size=8, lr=2e-3, warmup_epochs=0.5,
                  ema_decay=0.9, val_fraction=0.2, seed=7, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


def test_resume_gives_the_same_result_as_an_uninterrupted_run(small_pack, tmp_path):
    data, _ = small_pack
    straight = Trainer(_config(), data, tmp_path / "straight")
    straight.fit(progress=False)
    interrupted = Trainer(_config(), data, tmp_path / "resumed")
    interrupted.fit(stop_after_epochs=1, progress=False)
    resumed = Trainer(_config(), data, tmp_path / "resumed")
    assert resumed.load_checkpoint() and resumed.epoch == 1
    resumed.fit(progress=False)
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    for name, tensor in straight.final_model.state_dict().items():
        assert torch.equal(tensor, resumed.final_model.state_dict()[name]), f"EMA {name}"
    assert [row["train_loss"] for row in straight.history] == [row["train_loss"] for row in resumed.history]
    log = (tmp_path / "straight" / "log.csv").read_text().splitlines()
    assert len(log) == 3 and log[0].startswith("epoch")
    assert (tmp_path / "straight" / "curves.png").stat().st_size > 1000


def test_validation_split_is_leakage_aware(small_pack, tmp_path):
    data, _ = small_pack
    trainer = Trainer(_config(), data, tmp_path / "run")
    split = trainer.split
    assert set(split.train).isdisjoint(split.val) and len(split.val) > 0
    assert all(data.split[i] == "test" for i in split.test)
    from training.dedup import max_correlation

    best, _ = max_correlation(data.thumbs[split.val], data.thumbs[split.train])
    assert best.max() < 0.99, "no validation image has a near-duplicate in training"


def test_tiny_end_to_end_run_exports_a_model_the_app_loads(small_pack, tmp_path, capsys):
    data, pack_path = small_pack
    run = tmp_path / "run"
    assert training_main(["train", str(pack_path), "--run", str(run), "--architecture", "test_convnext", "--size", str(SIZE),
                          "--epochs", "2", "--batch-size", "8", "--val-fraction", "0.2", "--device", "cpu"]) == 0
    assert training_main(["evaluate", str(pack_path), "--run", str(run), "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    for key in ("official_test", "leakage_free_test", "validation"):
        assert {"accuracy", "macro_f1", "cohen_kappa", "macro_auc_ovr", "ece", "per_class", "confusion_matrix"} <= set(report[key])
    assert report["official_test"]["n"] == 32
    assert (tmp_path / "report" / "confusion_official_test.png").is_file()
    assert "| Official test split | 32 |" in (tmp_path / "report" / "report.md").read_text()
    assert json.loads((tmp_path / "report" / "run_config.json").read_text()) == json.loads((run / "config.json").read_text())
    models = tmp_path / "models"
    assert training_main(["export", str(pack_path), "--run", str(run), "--report", str(tmp_path / "report" / "report.json"),
                          "--name", "tiny", "--dest", str(models), "--default"]) == 0
    assert (models / "DEFAULT").read_text().strip() == "tiny"
    classifier = Classifier(models / "tiny", device="cpu")
    assert classifier.card.temperature == pytest.approx(report["temperature"])
    assert classifier.card.metrics["official_test"]["accuracy"] == pytest.approx(report["official_test"]["accuracy"])
    image = BRAIN_TUMOR_MRI / "Testing" / "glioma" / "Te-gl_0010.jpg"
    series = load_study([image]).series[0]
    (prediction,) = classifier.predict([(series.pixels(0), series.window(0))])
    assert prediction.probabilities.sum() == pytest.approx(1.0)
    # the exported weights reproduce the trained model's outputs (fp16 rounding aside)
    trainer = Trainer.from_run(run, data)
    inputs = torch.from_numpy(classifier.prepare(series.pixels(0), series.window(0))[0][None])
    with torch.no_grad():
        expected = torch.softmax(trainer.final_model.eval()(inputs).double() / classifier.card.temperature, 1)[0].numpy()
    assert np.allclose(prediction.probabilities, expected, atol=2e-2)


def test_a_run_can_start_from_a_model_folders_checked_weights(small_pack, tmp_path):
    from convnest_viewer.inference.card import ModelCardError
    from convnest_viewer.inference.weights import write_model_folder

    data, _ = small_pack
    first = Trainer(_config(epochs=1), data, tmp_path / "first")
    first.fit(progress=False)
    folder = tmp_path / "models" / "first"
    write_model_folder(first.final_model, _config().card("first"), folder, dtype="float32")
    started = Trainer(_config(init_from=str(folder)), data, tmp_path / "second")
    for name, tensor in first.final_model.state_dict().items():
        assert torch.equal(tensor, started.model.state_dict()[name]), name
        assert torch.equal(tensor, started.final_model.state_dict()[name]), f"EMA {name}"  # the EMA starts there too
    with pytest.raises(ValueError, match="but the run asks for"):
        Trainer(_config(init_from=str(folder), architecture="convnext_atto"), data, tmp_path / "other-architecture")
    # a run at another input size fine-tunes from the same weights (no position embedding to resize)
    resized = copy.deepcopy(first.model)
    with torch.no_grad():
        for tensor in resized.parameters():
            tensor.zero_()
    load_initial_weights(resized, folder, _config(size=SIZE * 2))
    for name, tensor in first.final_model.state_dict().items():
        assert torch.equal(tensor, resized.state_dict()[name]), name
    shard = next(folder.glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-8] + b"tampered")
    with pytest.raises(ModelCardError, match="sha256"):
        Trainer(_config(init_from=str(folder)), data, tmp_path / "tampered")


def test_the_cards_limitations_give_the_held_out_figures_and_leave_out_trained_volumes():
    from training.export import limitations

    report = {"tcga_lgg_held_out": {"per_sequence": {"flair": {"tumour_type_shares": {"glioma": 0.9, "meningioma": 0.1}}}},
              "healthy": {"per_scan": {"sagittal-mprage (t1)": {"no_tumour_share": 0.25, "held_out": True},
                                       "chris_t1 (t1)": {"no_tumour_share": 0.99, "held_out": False}}}}
    text = limitations(report)
    assert "held-out tcga-lgg gliomas (flair)" in text and "glioma 90%, meningioma 10%" in text
    assert "sagittal-mprage (t1) 75%" in text and "chris_t1" not in text


def test_the_training_throughput_benchmark_measures_each_variant_on_a_recipe(small_pack, tmp_path, capsys):
    import importlib.util
    from dataclasses import asdict

    from training.train import cpu_supports_bf16

    spec = importlib.util.spec_from_file_location("training_throughput",
                                                  Path(__file__).parent.parent / "benchmarks" / "training_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, pack = small_pack
    recipe = tmp_path / "run_config.json"
    recipe.write_text(json.dumps(asdict(_config(balance=False)), default=str))
    out = tmp_path / "throughput.json"
    assert module.main(["--run-config", str(recipe), "--data", str(pack), "--epochs", "2", "--epoch-images", "16",
                        "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert set(results) == ({"fp32", "bf16 autocast"} if cpu_supports_bf16() else {"fp32"})
    assert all(row["median"] > 0 and row["n"] == 1 for row in results.values())
    assert "| fp32 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a pack at another size than the recipe's is refused
        recipe.write_text(json.dumps(asdict(_config(balance=False, size=SIZE * 2)), default=str))
        module.main(["--run-config", str(recipe), "--data", str(pack), "--out", str(out)])


def test_evaluate_with_test_time_flip_fits_and_exports_a_card_that_classifies_so(small_pack, tmp_path):
    data, pack_path = small_pack
    run = tmp_path / "run"
    assert training_main(["train", str(pack_path), "--run", str(run), "--architecture", "test_convnext", "--size", str(SIZE),
                          "--epochs", "1", "--batch-size", "8", "--val-fraction", "0.2", "--device", "cpu"]) == 0
    assert training_main(["evaluate", str(pack_path), "--run", str(run), "--out", str(tmp_path / "report"),
                          "--test-time-flip"]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["test_time_flip"] is True and "left-right mirror" in (tmp_path / "report" / "report.md").read_text()
    trainer = Trainer.from_run(run, data)
    images = torch.from_numpy(data.images).unsqueeze(1)
    plain = predict_logits(trainer.final_model, images, trainer.split.val, trainer.spec, torch.device("cpu"))
    mirrored = predict_logits(trainer.final_model, images.flip(-1), trainer.split.val, trainer.spec, torch.device("cpu"))
    averaged = predict_logits(trainer.final_model, images, trainer.split.val, trainer.spec, torch.device("cpu"),
                              flip_average=True)
    assert torch.allclose(averaged, (plain + mirrored) / 2, atol=1e-5) and not torch.allclose(averaged, plain, atol=1e-3)
    assert report["temperature"] == pytest.approx(fit_temperature(averaged.numpy(), data.labels[trainer.split.val]))
    assert training_main(["export", str(pack_path), "--run", str(run), "--report", str(tmp_path / "report" / "report.json"),
                          "--name", "tiny", "--dest", str(tmp_path / "models")]) == 0
    assert load_card(tmp_path / "models" / "tiny").test_time_flip is True


def test_distillation_keeps_the_student_near_its_teacher_on_the_distilled_sources_only(small_pack, tmp_path):
    from convnest_viewer.inference.weights import write_model_folder
    from convnest_viewer.inference.preprocess import normalize_uint8
    from training.distil import distil_loss, distilled_slices

    data, _ = small_pack
    teacher_run = Trainer(_config(seed=11, epochs=3), data, tmp_path / "teacher")
    teacher_run.fit(progress=False)
    folder = tmp_path / "models" / "teacher"
    write_model_folder(teacher_run.final_model, _config().card("teacher"), folder, dtype="float32")
    plain = Trainer(_config(), data, tmp_path / "plain")
    plain.fit(progress=False)
    distilled = Trainer(_config(distil_from=str(folder), distil_weight=20.0), data, tmp_path / "distilled")
    distilled.fit(progress=False)
    assert all(row["train_distil_loss"] > 0 for row in distilled.history)
    inputs = torch.from_numpy(normalize_uint8(data.images[plain.split.train], plain.spec)[:, None])
    with torch.no_grad():
        teacher = teacher_run.final_model.eval()(inputs)
        kept = torch.ones(len(inputs), dtype=torch.bool)
        away = [float(distil_loss(run.final_model.eval()(inputs), teacher, kept, 1.0)) for run in (plain, distilled)]
    assert away[1] < 0.5 * away[0], f"KL to the teacher: plain {away[0]:.3f}, distilled {away[1]:.3f}"
    # the loss is zero where the student agrees, and only the kept slices count
    logits = torch.randn(4, 4)
    assert float(distil_loss(logits, logits, torch.ones(4, dtype=torch.bool), 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distil_loss(logits, -logits, torch.tensor([True, False, False, False]), 2.0)) > 0
    assert float(distil_loss(logits, -logits, torch.zeros(4, dtype=torch.bool), 2.0)) == 0.0
    assert distilled_slices(np.array(["a", "b", "a"]), "a").tolist() == [True, False, True]
    with pytest.raises(ValueError, match="not in the pack: c"):
        distilled_slices(np.array(["a", "b"]), "a,c")
    with pytest.raises(ValueError, match="needs distil_from"):
        Trainer(_config(distil_weight=1.0), data, tmp_path / "no-teacher")
