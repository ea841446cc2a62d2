"""Class meaning comes from the model card: which class is "no finding", names and colours; nothing hard-coded."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from convnest_viewer.inference.card import ClassInfo, ModelCard, ModelCardError, WeightFile, load_card
from convnest_viewer.results import summarize
from convnest_viewer.verdict import series_verdict
from tests.paths import REPO


def _write(folder, classes: list[dict]):
    card = ModelCard("m", "test_convnext", [ClassInfo(**c) for c in classes], weights=[WeightFile("w.safetensors", "0")])
    raw = json.loads(card.to_json())
    raw["classes"] = classes
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_card.json").write_text(json.dumps(raw))
    return folder


def test_a_card_names_its_no_finding_class_and_summaries_and_verdicts_follow_it(tmp_path):
    card = load_card(_write(tmp_path / "two", [{"id": "lesion", "display": "Lesion", "colour": "#aa0000"},
                                               {"id": "normal", "display": "Normal", "no_finding": True}]))
    assert card.no_finding_id == "normal" and card.colours == ["#aa0000", ""]
    table = np.array([[0.1, 0.9]] * 3 + [[0.8, 0.2]] * 4 + [[0.2, 0.8]] * 3)
    summary = summarize(table, card.class_ids, card.no_finding_id)
    assert summary.finding == "lesion" and summary.counts == {"lesion": 4, "normal": 6}
    assert summary.short({"normal": "Normal"}).startswith("lesion on 4/10")
    verdict = series_verdict(table, card.class_ids, card.no_finding_id)
    assert verdict.label == "tumour" and (verdict.finding.first, verdict.finding.last) == (3, 6)
    clear = summarize(table[:3], card.class_ids, card.no_finding_id)
    assert clear.finding is None and clear.short({"normal": "Normal"}) == "Normal on all 3 slices"


def test_a_card_without_the_flag_is_read_by_its_no_tumour_id(tmp_path):
    legacy = [{"id": c, "display": c.title()} for c in ("glioma", "meningioma", "notumor", "pituitary")]
    card = load_card(_write(tmp_path / "legacy", legacy))
    assert card.no_finding_id == "notumor" and card.colours[2] == "#2ecc71"


@pytest.mark.parametrize("flags", [(False, False), (True, True)])
def test_a_card_must_mark_exactly_one_no_finding_class(tmp_path, flags):
    classes = [{"id": "a", "display": "A", "no_finding": flags[0]}, {"id": "b", "display": "B", "no_finding": flags[1]}]
    with pytest.raises(ModelCardError, match="exactly one class must be marked no_finding"):
        load_card(_write(tmp_path / "bad", classes))


def test_no_app_module_hard_codes_a_class_id():
    offenders = []
    for path in (REPO / "convnest_viewer").rglob("*.py"):
        if path.name == "card.py":
            continue  # the card module defines the brain-tumour classes once
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"[\"'](notumor|glioma|meningioma|pituitary)[\"']", line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
