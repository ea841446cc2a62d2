"""Per-slice model results kept for a session, keyed by (model, series, volume, slice); no Qt."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from convnest_viewer.inference.context import context_reach, in_context
from convnest_viewer.inference.head_edge import at_head_edge, head_edge_reason, largest_assessed_section
from convnest_viewer.inference.heatmap import Heatmap
from convnest_viewer.inference.reasons import KINDS, LABEL_MAP, LABEL_MAP_SERIES, reason_kind

if TYPE_CHECKING:
    from convnest_viewer.inference.card import ModelCard
    from convnest_viewer.io.model import Series


@dataclass(frozen=True)
class HeatmapKey:
    """What a cached heatmap explains."""

    model_id: str
    series_key: str
    volume: int
    index: int
    method: str
    target_index: int


class ResultStore:
    """Thread-safe cache of slice probabilities and (memory-bounded) heatmaps."""

    def __init__(self, max_heatmaps: int = 256) -> None:
        self._probabilities: dict[tuple[str, str, int, int], np.ndarray] = {}
        self._failures: dict[tuple[str, str, int, int], str] = {}
        self._not_assessed: dict[tuple[str, str, int, int], str] = {}
        self._heatmaps: OrderedDict[HeatmapKey, Heatmap] = OrderedDict()
        self._max_heatmaps = max_heatmaps
        self._changes: dict[tuple[str, str], int] = {}  # (model, series) -> results stored so far
        self._verdicts: dict[tuple[str, str, int], tuple[int, object]] = {}  # -> (changes then, verdict)
        self._head_shares: dict[tuple[str, str], dict[tuple[int, int], float]] = {}  # (model, series) -> shares
        self._min_head_fraction: dict[str, float] = {}  # model -> its gate's series rule (0: off)
        self._head_edge: dict[tuple[str, str], tuple[int, dict]] = {}  # -> (changes then, {(v, i): reason})
        self._context_sigma: dict[str, float] = {}  # model -> its card's slice context width in slices (0: off)
        self._step_positions: dict[tuple[str, int, int], float] = {}  # slices after a gap -> place in slice steps
        self._lock = threading.Lock()

    def _changed(self, model_id: str, series_key: str) -> None:
        self._changes[(model_id, series_key)] = self._changes.get((model_id, series_key), 0) + 1

    def put_probabilities(self, model_id: str, series_key: str, volume: int, index: int, probabilities: np.ndarray) -> None:
        """Store one slice's calibrated probabilities."""
        with self._lock:
            self._probabilities[(model_id, series_key, volume, index)] = np.asarray(probabilities, np.float64)
            self._changed(model_id, series_key)

    def set_slice_context(self, model_id: str, sigma: float) -> None:
        """Record the model card's slice context width (slices): its answers are read with their neighbours'."""
        with self._lock:
            self._context_sigma[model_id] = float(sigma)

    def put_step_position(self, series_key: str, volume: int, index: int, position: float) -> None:
        """Record a slice's place in slice steps where slices are missing before it (else its index)."""
        with self._lock:
            self._step_positions[(series_key, volume, index)] = float(position)

    def _step_positions_locked(self, series_key: str, volume: int, indices: Sequence[int]) -> np.ndarray:
        return np.array([self._step_positions.get((series_key, volume, i), i) for i in indices], float)

    def slice_context(self, model_id: str) -> float:
        """Return the slice context width a model's answers are read with (0: each slice alone)."""
        with self._lock:
            return self._context_sigma.get(model_id, 0.0)

    def probabilities(self, model_id: str, series_key: str, volume: int, index: int,
                      alone: bool = False) -> np.ndarray | None:
        """Return one slice's probabilities read with its classified, assessed neighbours as the model card says
        (alone: the slice's own), or None if not classified yet."""
        with self._lock:
            value = self._probabilities.get((model_id, series_key, volume, index))
        sigma = self.slice_context(model_id)
        if value is None or alone or sigma <= 0:
            return value
        withheld = self.not_assessed(model_id, series_key, volume)
        if (volume, index) in withheld:
            return value
        radius = context_reach(sigma)
        window = range(max(index - radius, 0), index + radius + 1)
        table = np.full((len(window), len(value)), np.nan)
        with self._lock:
            for row, neighbour in enumerate(window):
                found = self._probabilities.get((model_id, series_key, volume, neighbour))
                if found is not None and (volume, neighbour) not in withheld:
                    table[row] = found
            positions = self._step_positions_locked(series_key, volume, window)
        return in_context(table, None, sigma, positions)[index - window.start]

    def series_probabilities(self, model_id: str, series_key: str, volume: int, n_slices: int, n_classes: int,
                             alone: bool = False) -> np.ndarray:
        """Return (n_slices, n_classes) probabilities of a volume read with their neighbours as the model card says
        (alone: each slice's own), NaN where not classified yet."""
        table = np.full((n_slices, n_classes), np.nan)
        with self._lock:
            for index in range(n_slices):
                value = self._probabilities.get((model_id, series_key, volume, index))
                if value is not None:
                    table[index] = value
            positions = self._step_positions_locked(series_key, volume, range(n_slices))
        sigma = self.slice_context(model_id)
        if alone or sigma <= 0:
            return table
        return in_context(table, ~self.not_assessed_mask(model_id, series_key, volume, n_slices), sigma, positions)

    def classified(self, model_id: str, series_key: str) -> set[tuple[int, int]]:
        """Return the (volume, index) pairs of a series already classified by a model."""
        with self._lock:
            return {(v, i) for (m, s, v, i) in self._probabilities if m == model_id and s == series_key}

    def put_failure(self, model_id: str, series_key: str, volume: int, index: int, reason: str) -> None:
        """Record that a slice could not be classified (unreadable pixels, model error), and why."""
        with self._lock:
            self._failures[(model_id, series_key, volume, index)] = reason
            self._changed(model_id, series_key)

    def failures(self, model_id: str, series_key: str) -> dict[tuple[int, int], str]:
        """Return {(volume, index): reason} of a series' slices that could not be classified."""
        with self._lock:
            return {(v, i): r for (m, s, v, i), r in self._failures.items() if m == model_id and s == series_key}

    def put_not_assessed(self, model_id: str, series_key: str, volume: int, index: int, reason: str) -> None:
        """Record that the model's gate withholds its answer for a slice (blank, unlike its training data)."""
        with self._lock:
            self._not_assessed[(model_id, series_key, volume, index)] = reason
            self._changed(model_id, series_key)

    def put_head_share(self, model_id: str, series_key: str, volume: int, index: int, share: float,
                       min_fraction: float) -> None:
        """Record the share of a slice its head covers, and the model gate's series rule that compares it."""
        with self._lock:
            self._head_shares.setdefault((model_id, series_key), {})[(volume, index)] = float(share)
            self._min_head_fraction[model_id] = float(min_fraction)
            self._changed(model_id, series_key)

    def _head_edge_locked(self, model_id: str, series_key: str) -> dict[tuple[int, int], str]:
        """Return {(volume, index): reason} of slices the gate's series rule withholds (call with the lock held)."""
        fraction = self._min_head_fraction.get(model_id, 0.0)
        shares = self._head_shares.get((model_id, series_key))
        if fraction <= 0 or not shares:
            return {}
        changes = self._changes.get((model_id, series_key), 0)
        cached = self._head_edge.get((model_id, series_key))
        if cached is not None and cached[0] == changes:
            return cached[1]
        by_volume: dict[int, list[tuple[int, int]]] = {}
        for key in shares:
            by_volume.setdefault(key[0], []).append(key)
        withheld = {}
        for keys in by_volume.values():
            values = np.array([shares[key] for key in keys])
            assessed = np.array([(model_id, series_key, *key) not in self._not_assessed for key in keys])
            largest = largest_assessed_section(values, assessed)
            for key, share, edge in zip(keys, values, at_head_edge(values, assessed, fraction) & assessed):
                if edge:
                    withheld[key] = head_edge_reason(share, largest, fraction)
        self._head_edge[(model_id, series_key)] = (changes, withheld)
        return withheld

    def not_assessed(self, model_id: str, series_key: str, volume: int | None = None) -> dict[tuple[int, int], str]:
        """Return {(volume, index): reason} of a series' slices the gate withheld (one volume, or all): by the
        per-slice rules, or at the edge of the head by its series rule."""
        with self._lock:
            found = {(v, i): r for (m, s, v, i), r in self._not_assessed.items()
                     if m == model_id and s == series_key and (volume is None or v == volume)}
            found.update({key: r for key, r in self._head_edge_locked(model_id, series_key).items()
                          if volume is None or key[0] == volume})
            return found

    def not_assessed_reason(self, model_id: str, series_key: str, volume: int, index: int) -> str | None:
        """Return why the gate withheld one slice's answer, or None if it did not (or the slice is not done)."""
        with self._lock:
            reason = self._not_assessed.get((model_id, series_key, volume, index))
            return reason or self._head_edge_locked(model_id, series_key).get((volume, index))

    def failed_count(self, model_id: str, series_key: str, volume: int) -> int:
        """Return how many slices of one volume could not be classified."""
        with self._lock:
            return sum(m == model_id and s == series_key and v == volume for (m, s, v, _) in self._failures)

    def series_summary(self, model_id: str, series_key: str, volume: int, n_slices: int,
                       class_ids: Sequence[str], no_finding: str) -> "SeriesSummary":
        """Return a volume's summary from the stored results, counting only the slices the gate assessed."""
        table = self.series_probabilities(model_id, series_key, volume, n_slices, len(class_ids))
        withheld = {i: reason for (_, i), reason in self.not_assessed(model_id, series_key, volume).items() if i < n_slices}
        mask = np.zeros(n_slices, bool)
        mask[list(withheld)] = True
        return summarize(table, class_ids, no_finding, self.failed_count(model_id, series_key, volume), mask,
                         list(withheld.values()))

    def not_assessed_mask(self, model_id: str, series_key: str, volume: int, n_slices: int) -> np.ndarray:
        """Return a boolean (n_slices,) mask of a volume's slices the gate withheld."""
        mask = np.zeros(n_slices, bool)
        for _, index in self.not_assessed(model_id, series_key, volume):
            if index < n_slices:
                mask[index] = True
        return mask

    def left_out_mask(self, model_id: str, series_key: str, volume: int, n_slices: int) -> np.ndarray:
        """Return a boolean (n_slices,) mask of a volume's slices with no answer: withheld by the gate or unreadable."""
        left_out = self.not_assessed_mask(model_id, series_key, volume, n_slices)
        for failed_volume, index in self.failures(model_id, series_key):
            if failed_volume == volume and index < n_slices:
                left_out[index] = True  # unreadable: neither pending nor assessed
        return left_out

    def series_verdict(self, model_id: str, series: "Series", card: "ModelCard", volume: int = 0):
        """Return a volume's verdict from the stored results by the model card's classes (withheld and unreadable
        slices left out; a type the card says was never trained on the series' contrast reported as uncertain)."""
        from convnest_viewer.verdict import series_verdict

        with self._lock:
            changes = self._changes.get((model_id, series.key), 0)
            cached = self._verdicts.get((model_id, series.key, volume))
        if cached is not None and cached[0] == changes:
            return cached[1]  # nothing stored for this series since: the same verdict (the card is the model's)
        n_slices = series.n_slices
        table = self.series_probabilities(model_id, series.key, volume, n_slices, card.num_classes)
        left_out = self.left_out_mask(model_id, series.key, volume, n_slices)
        verdict = series_verdict(table, card.class_ids, card.no_finding_id, left_out, series.contrast,
                                 card.trained_contrasts)
        if verdict.label == "not assessed" and self.series_summary(
                model_id, series.key, volume, n_slices, card.class_ids, card.no_finding_id).looks_like_label_map:
            verdict = replace(verdict, note=LABEL_MAP_SERIES)
        with self._lock:
            self._verdicts[(model_id, series.key, volume)] = (changes, verdict)
        return verdict

    def finished(self, model_id: str, series_key: str) -> set[tuple[int, int]]:
        """Return the (volume, index) pairs classified or failed: nothing more to try there."""
        return self.classified(model_id, series_key) | set(self.failures(model_id, series_key))

    def series_finished(self, model_id: str, series) -> bool:
        """Return whether every slice of every volume of a series has a result or failed for a model."""
        return bool(model_id) and len(self.finished(model_id, series.key)) >= series.n_slices * series.n_volumes

    def put_heatmap(self, key: HeatmapKey, heatmap: Heatmap) -> None:
        """Store a heatmap, dropping the oldest beyond the bound."""
        with self._lock:
            self._heatmaps[key] = heatmap
            self._heatmaps.move_to_end(key)
            while len(self._heatmaps) > self._max_heatmaps:
                self._heatmaps.popitem(last=False)

    def heatmap(self, key: HeatmapKey) -> Heatmap | None:
        """Return a cached heatmap, or None."""
        with self._lock:
            found = self._heatmaps.get(key)
            if found is not None:
                self._heatmaps.move_to_end(key)
            return found


@dataclass
class SeriesSummary:
    """What the model says about a whole volume, in a sentence and in numbers."""

    classified: int
    total: int
    counts: dict[str, int]  # slices per predicted class
    peak: dict[str, tuple[int, float]]  # class -> (slice index, highest probability)
    finding: str | None  # the tumour class with the strongest evidence, if any slice predicts one
    key_slices: list[int]  # most confident slice per predicted tumour class (or the most normal slice)
    failed: int = 0  # slices that could not be classified (unreadable pixels, model error)
    not_assessed: int = 0  # slices the model's gate withheld (blank, unlike its training data)
    no_finding: str = ""  # the id of the model's "nothing found" class
    withheld_kinds: dict[str, int] = field(default_factory=dict)  # not-assessed slices per kind of reason (if known)

    @property
    def looks_like_label_map(self) -> bool:
        """Return whether more of the volume's slices were withheld as label maps or masks than were assessed."""
        return self.withheld_kinds.get(LABEL_MAP, 0) > self.classified

    def _withheld_words(self) -> str:
        """Return the sentence's part on withheld slices: how many, and why (by kind when known)."""
        if not self.not_assessed:
            return ""
        kinds = ", ".join(f"{self.withheld_kinds[kind]} {kind}" for kind in KINDS if self.withheld_kinds.get(kind))
        why = f": {kinds}" if kinds else " (blank, a label map, at the edge of the head, or unlike the training slices)"
        return f" {self.not_assessed} slice(s) not assessed{why}."

    @property
    def pending(self) -> bool:
        """Return whether slices are still waiting to be classified."""
        return self.classified + self.failed + self.not_assessed < self.total

    def sentence(self, display_names: dict[str, str]) -> str:
        """Return a one-line summary for people."""
        unreadable = (f" {self.failed} slice(s) could not be read." if self.failed else "") + self._withheld_words()
        if self.looks_like_label_map:
            unreadable = f" This series looks like {LABEL_MAP_SERIES}." + unreadable
        if self.classified == 0:
            if self.pending:
                return ("No slice assessed so far." if self.not_assessed else "Not classified yet.") + unreadable
            return ("No slice assessed." if self.not_assessed else "No slice could be classified.") + unreadable
        prefix = f"{self.classified}/{self.total} slices so far: " if self.pending else ""
        if self.finding is None:
            return prefix + f"no tumour class predicted on any of {self.classified} slices." + unreadable
        index, probability = self.peak[self.finding]
        return prefix + (f"{display_names.get(self.finding, self.finding)} predicted on {self.counts[self.finding]} "
                         f"slice(s), strongest on slice {index + 1} ({probability:.0%}).") + unreadable

    def short(self, display_names: dict[str, str]) -> str:
        """Return a few words for a series list: the finding, its slice count and peak probability."""
        unreadable = f", {self.failed} unreadable" if self.failed else ""
        unreadable += f", {self.not_assessed} not assessed" if self.not_assessed else ""
        if self.classified == 0:
            if self.pending:
                return "not classified yet" + unreadable
            if self.looks_like_label_map:
                return "a label map or mask: not assessed" + unreadable
            return ("no slice assessed" if self.not_assessed else "no slice readable") + unreadable
        done = f" ({self.classified}/{self.total} so far)" if self.pending else ""
        if self.finding is None:
            return f"{display_names.get(self.no_finding, self.no_finding)} on all {self.classified} slices{unreadable}{done}"
        _, probability = self.peak[self.finding]
        return (f"{display_names.get(self.finding, self.finding)} on {self.counts[self.finding]}/{self.classified} "
                f"slices, up to {probability:.0%}{unreadable}{done}")


def summarize(probabilities: np.ndarray, class_ids: Sequence[str], no_finding: str, failed: int = 0,
              not_assessed: np.ndarray | None = None, reasons: Sequence[str] = ()) -> SeriesSummary:
    """Summarise a volume's (n_slices, n_classes) probabilities (NaN rows: not classified yet or failed),
    counting only the slices the gate assessed (`not_assessed`: a boolean mask of those it withheld, `reasons`:
    the gate's reasons for them, when known); no_finding is the id of the model's "nothing found" class."""
    withheld = np.zeros(len(probabilities), bool) if not_assessed is None else np.asarray(not_assessed, bool)
    done = ~np.isnan(probabilities).any(axis=1) & ~withheld
    rows = np.flatnonzero(done)
    predicted = probabilities[rows].argmax(axis=1) if len(rows) else np.zeros(0, int)
    counts = {c: int((predicted == i).sum()) for i, c in enumerate(class_ids)}
    peak = {}
    for i, class_id in enumerate(class_ids):
        if len(rows):
            best = rows[int(np.argmax(probabilities[rows, i]))]
            peak[class_id] = (int(best), float(probabilities[best, i]))
    tumour_classes = [c for c in class_ids if c != no_finding and counts.get(c)]
    finding = max(tumour_classes, key=lambda c: (peak[c][1], counts[c])) if tumour_classes else None
    key_slices = sorted({peak[c][0] for c in tumour_classes})
    if not key_slices and no_finding in peak:
        key_slices = [peak[no_finding][0]]
    return SeriesSummary(int(done.sum()), len(probabilities), counts, peak, finding, key_slices, failed,
                         int(withheld.sum()), no_finding, dict(Counter(reason_kind(reason) for reason in reasons)))
