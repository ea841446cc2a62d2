"""Heatmaps measured against tumour masks: the metrics, `convnest explain-eval` on real held-out slices, the card."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from convnest_viewer.cli import main as cli_main
from convnest_viewer.inference.card import ModelCardError, load_card
from convnest_viewer.inference.classifier import Classifier, default_model_dir
from convnest_viewer.inference.heatmap import METHODS
from tests.paths import DATA
from training.explain_eval import (BASELINE, best_method, localisation, summarise, tcga_tumour_slices,
                                   volume_tumour_slices)


def test_localisation_scores_a_map_on_the_mask_and_one_beside_it():
    mask = np.zeros((40, 40), bool)
    mask[10:20, 10:20] = True
    head = np.zeros_like(mask)
    head[5:35, 5:35] = True
    on = localisation(mask.astype(np.float32), mask, head)
    assert on["hit"] and on["mass_in_mask"] == pytest.approx(1.0)
    assert on["mask_share_of_head"] == pytest.approx(100 / 900)
    beside = np.zeros((40, 40), np.float32)
    beside[25:30, 25:30] = 1.0
    off = localisation(beside, mask, head)
    assert not off["hit"] and off["mass_in_mask"] == 0.0
    assert not localisation(np.zeros((40, 40), np.float32), mask, head)["hit"], "an empty map points nowhere"


def _row(method_figures: dict) -> dict:
    return {"source": "tcga-lgg", "sequence": "flair", "methods": method_figures}


def test_the_default_heatmap_is_the_best_pointer_that_depends_on_the_model():
    def figures(hit: bool, spearman: float) -> dict:
        return {"hit": hit, "mass_in_mask": 0.1, "mask_share_of_head": 0.05, "deletion_auc": 0.3, "insertion_auc": 0.5,
                "randomised_spearman": spearman}

    rows = [_row({"gradcam": figures(False, 0.1), "layercam": figures(i < 2, 0.2), "shap": figures(True, 0.9),
                  BASELINE: figures(i < 1, 1.0)}) for i in range(4)]
    summary = summarise(rows)
    assert summary["tcga-lgg flair"]["shap"]["pointing_game"] == 1.0
    assert summary["tcga-lgg flair"]["layercam"]["pointing_game"] == 0.5
    assert best_method(summary, "tcga-lgg flair") == ("layercam", True), "a map that ignores the weights comes second"
    for row in rows:
        row["methods"]["shap"]["randomised_spearman"] = 0.3
    assert best_method(summarise(rows), "tcga-lgg flair") == ("shap", True)
    for row in rows:  # now nothing passes both checks: the best pointer, flagged
        row["methods"]["shap"]["randomised_spearman"] = 0.9
        row["methods"]["layercam"]["hit"] = False
    assert best_method(summarise(rows), "tcga-lgg flair") == ("shap", False), "LayerCAM no longer beats the random map"


@pytest.fixture(scope="module")
def explain_run(tmp_path_factory):
    """explain-eval of the bundled model on two held-out tcga-lgg tumour slices per sequence, card written."""
    folder = tmp_path_factory.mktemp("model") / "model"
    shutil.copytree(default_model_dir(), folder)
    out = tmp_path_factory.mktemp("explain")
    code = cli_main(["explain-eval", "--model", str(folder), "--tcga", str(DATA / "tcga-lgg"), "--institutions", "CS",
                     "--max-slices", "2", "--randomisation-slices", "2", "--shap-samples", "4", "--out", str(out),
                     "--write-card", "--device", "cpu"])
    assert code == 0
    return folder, out


def test_explain_eval_measures_every_method_per_sequence_on_held_out_slices(explain_run):
    _, out = explain_run
    result = json.loads((out / "explain.json").read_text())
    assert result["methods"] == [*METHODS, BASELINE]
    assert {row["case"][:7] for row in result["rows"]} == {"TCGA_CS"}, "only the held-out institution"
    assert set(result["summary"]) == {"tcga-lgg flair", "tcga-lgg t1", "tcga-lgg t1c"}
    for group in result["summary"].values():
        for method, f in group.items():
            assert f["n"] == 2 and 0 <= f["pointing_game"] <= 1 and 0 <= f["deletion_auc"] <= 1 and 0 <= f["insertion_auc"] <= 1
        assert group[BASELINE]["randomised_spearman"] == pytest.approx(1.0), "the random map ignores the model"
        assert group["gradcam"]["randomised_spearman"] < 0.5, "Grad-CAM changes with the last stage's weights"
        assert group["occlusion"]["randomised_spearman"] < 0.5, "occlusion asks the model itself"
    assert (out / "explain_examples.png").stat().st_size > 10_000
    assert "pointing game" in (out / "explain.md").read_text()


def test_explain_eval_writes_the_best_method_into_the_card(explain_run):
    folder, out = explain_run
    card = load_card(folder)
    summary = json.loads((out / "explain.json").read_text())["summary"]
    best, qualified = best_method(summary, "tcga-lgg flair")
    assert card.explanation.default_method == best
    assert card.explanation.note.startswith("No method both") != qualified
    assert set(card.explanation.evaluation) == {*METHODS, BASELINE}
    assert "held-out tcga-lgg FLAIR tumour slices (institution CS)" in card.explanation.measured_on
    Classifier(folder, device="cpu")  # the weights still match the card


def test_a_card_naming_an_unknown_heatmap_is_refused(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(default_model_dir(), folder)
    raw = json.loads((folder / "model_card.json").read_text())
    raw["explanation"] = {"default_method": "lime"}
    (folder / "model_card.json").write_text(json.dumps(raw))
    with pytest.raises(ModelCardError, match="unknown default heatmap 'lime'"):
        load_card(folder)


def test_held_out_tumour_slices_come_with_masks_on_their_own_grid():
    slices = tcga_tumour_slices(DATA / "tcga-lgg", {"CS"}, max_per_sequence=1)
    assert {s.sequence for s in slices} == {"t1", "flair", "t1c"}
    for item in slices:
        assert item.mask.shape == item.values.shape and item.mask.sum() * 0.81 >= 100, "a tumour slice's mask"


def test_max_slices_caps_label_volume_slices_per_sequence_over_all_cases():
    cases = sorted((DATA / "brats2013-hgg" / "test").iterdir())[:2]
    slices = volume_tumour_slices(cases, max_per_sequence=4)
    counts = {sequence: sum(s.sequence == sequence for s in slices) for sequence in {s.sequence for s in slices}}
    assert counts == {"flair": 4, "t1c": 4}, "at most four per sequence in all, not four per case"
    assert {s.case for s in slices} == {c.name for c in cases}, "spread over both cases"
    for item in slices:
        assert item.mask.shape == item.values.shape and item.mask.any(), "a labelled tumour slice on its own grid"


def test_the_model_card_dialog_shows_each_methods_measured_pointing_game(explain_run):
    from convnest_viewer.ui.model_card_dialog import model_card_html

    folder, _ = explain_run
    card = load_card(folder)
    html = model_card_html(card, "0" * 64, "CPU")
    for method, figures in card.explanation.evaluation.items():
        assert f"{figures['pointing_game']:.0%}" in html and f"{figures['mass_ratio']:.2f}x" in html
    assert "Random map (baseline)" in html and card.explanation.measured_on in html


def test_explain_eval_can_measure_one_sequence_and_one_method_only(tmp_path):
    out = tmp_path / "explain"
    code = cli_main(["explain-eval", "--tcga", str(DATA / "tcga-lgg"), "--institutions", "CS", "--sequences", "FLAIR",
                     "--methods", "tumour_occlusion", "--max-slices", "2", "--randomisation-slices", "1",
                     "--out", str(out), "--device", "cpu"])
    assert code == 0
    result = json.loads((out / "explain.json").read_text())
    assert result["methods"] == ["tumour_occlusion", BASELINE] and len(result["rows"]) == 2
    assert set(result["summary"]) == {"tcga-lgg flair"}
    assert "**Tumour occlusion**" in (out / "explain.md").read_text()
    refused = ["explain-eval", "--tcga", str(DATA / "tcga-lgg"), "--methods", "tumour_occlusion", "--write-card",
               "--out", str(tmp_path / "refused")]
    assert cli_main(refused) == 2, "the card's default is chosen among every method, so all must be measured"
    assert cli_main(["explain-eval", "--tcga", str(DATA / "tcga-lgg"), "--methods", "lime",
                     "--out", str(tmp_path / "refused")]) == 2
