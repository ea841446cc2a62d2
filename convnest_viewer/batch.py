"""The batch loop shared by the inference session, `convnest classify` and the training module; no Qt.

Slices are read and preprocessed, classified in batches with the gate's decision, and stored; a report
classifies what is missing, then writes the HTML and CSV with heatmaps of one method.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from convnest_viewer.io import Series
from convnest_viewer.results import HeatmapKey, ResultStore


@dataclass
class SliceOutcome:
    """One slice's classification: its probabilities and the gate's decision, or why it could not be read."""

    volume: int
    index: int
    probabilities: np.ndarray | None = None
    error: str | None = None
    prepared: object = None  # the SliceInput (pixels, window, model input) when read
    decision: object = None  # the gate's GateDecision: whether the model's answer counts for this slice
    head_share: float | None = None  # share of the slice the head covers (for the gate's series rule)
    min_head_fraction: float = 0.0  # the gate's series rule: least head section, as a share of the largest
    context_sigma: float = 0.0  # the card's slice context: answers are read with their neighbours' (slices)
    step_position: float | None = None  # place in the stack in slice steps (index + slices missing before it)


def classify_positions(classifier, series: Series, positions: Sequence[tuple[int, int]],
                       batch_size: int = 16) -> Iterator[SliceOutcome]:
    """Classify (volume, index) slices of a series in batches, yielding each slice's outcome."""
    for start in range(0, len(positions), batch_size):
        chunk = list(positions[start:start + batch_size])
        prepared, failed = classifier.prepare_slices(series, chunk)
        for volume, index, reason in failed:
            yield SliceOutcome(volume, index, error=reason)
        if not prepared:
            continue
        try:
            probabilities, decisions = classifier.assess_inputs(
                np.stack([p.model_input for p in prepared]), [p.blank for p in prepared], batch_size)
        except Exception as exc:  # noqa: BLE001 - a model error fails these slices, not the session
            for item in prepared:
                yield SliceOutcome(item.volume, item.index, error=f"model error: {exc}")
            continue
        for item, probs, decision in zip(prepared, probabilities, decisions):
            yield SliceOutcome(item.volume, item.index, probs, prepared=item, decision=decision,
                               head_share=item.head_share, min_head_fraction=classifier.min_head_fraction,
                               context_sigma=classifier.card.slice_context.sigma_slices,
                               step_position=series.slice_step_position(item.index, item.volume))


def classify_series(classifier, series: Series, batch_size: int = 16, on_batch=None) -> Iterator[SliceOutcome]:
    """Classify every slice of every volume of a series; on_batch(count) reports progress after each batch."""
    positions = [(v, i) for v in range(series.n_volumes) for i in range(series.n_slices)]
    for start in range(0, len(positions), batch_size):
        yield from classify_positions(classifier, series, positions[start:start + batch_size], batch_size)
        if on_batch is not None:
            on_batch(len(positions[start:start + batch_size]))


def store_outcome(store: ResultStore, model_id: str, series_key: str, outcome: SliceOutcome) -> None:
    """Put one slice's outcome in the store: its failure, or its probabilities (with the gate's withholding and the
    head share its series rule needs)."""
    if outcome.error is not None:
        store.put_failure(model_id, series_key, outcome.volume, outcome.index, outcome.error)
        return
    if not outcome.decision.assessed:  # stored before the probabilities: a reader never sees them without it
        store.put_not_assessed(model_id, series_key, outcome.volume, outcome.index, outcome.decision.reason)
    if outcome.head_share is not None:  # after the gate's reason (a withheld slice never sets the largest section)
        store.put_head_share(model_id, series_key, outcome.volume, outcome.index, outcome.head_share,
                             outcome.min_head_fraction)
    if outcome.context_sigma > 0:
        store.set_slice_context(model_id, outcome.context_sigma)
    if outcome.step_position is not None and outcome.step_position != outcome.index:  # slices missing before it
        store.put_step_position(series_key, outcome.volume, outcome.index, outcome.step_position)
    store.put_probabilities(model_id, series_key, outcome.volume, outcome.index, outcome.probabilities)


def write_report(classifier, store: ResultStore, series_list: Sequence[Series], path: Path,
                 include_identifiers: bool, method: str, batch_size: int = 16) -> tuple[Path, Path]:
    """Classify what is missing of these series (first volumes), then write the HTML and CSV report."""
    from convnest_viewer.inference.explain import explain
    from convnest_viewer.report import write_csv, write_html

    model_id = classifier.weights_sha256
    for series in series_list:
        done = store.finished(model_id, series.key)
        missing = [(0, i) for i in range(series.n_slices) if (0, i) not in done]
        for outcome in classify_positions(classifier, series, missing, batch_size):
            store_outcome(store, model_id, series.key, outcome)

    def heatmap_for(series: Series, volume: int, index: int):
        probabilities = store.probabilities(model_id, series.key, volume, index)
        if probabilities is None:
            return None  # the slice could not be read
        key = HeatmapKey(model_id, series.key, volume, index, method, int(np.argmax(probabilities)))
        cached = store.heatmap(key)
        if cached is None:
            cached = explain(classifier, series.pixels(index, volume), series.window(index, volume), method,
                             target=key.target_index)
            store.put_heatmap(key, cached)
        return cached

    html = write_html(path, series_list, store, model_id, classifier.card, heatmap_for, include_identifiers,
                      classifier.device_name, method)
    csv_path = write_csv(Path(path).with_suffix(".csv"), series_list, store, model_id, classifier.card.class_ids,
                         include_identifiers)
    return html, csv_path
