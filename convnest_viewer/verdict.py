"""The study verdict: per series and per study, which finding, on which contiguous slices, how confident; no Qt.

Only slices the model's gate assessed count. A series reads "tumour" when at least `MIN_RUN` neighbouring
assessed slices are called a tumour class, "equivocal" when there is no such run but most of its assessed slices
are called a tumour class (scattered calls, or a short series), else "no tumour"; its finding is the run with the
highest mean tumour probability
(1 - p(no finding), the class the model card marks as such). The type is the run's majority class, or "type uncertain" when fewer than `MIN_TYPE_SHARE`
of its slices agree, or when the series' contrast (guessed from its names) is one the model never saw that type on
(the card lists each class's trained contrasts). A study whose series disagree (one reads tumour, another no
tumour, or one equivocal and none tumour) is "indeterminate"; a study of equivocal series alone is "equivocal".
Series of different studies (or patients) opened together get one verdict per study.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from convnest_viewer.io.contrast import contrast_name

MIN_RUN = 3  # neighbouring assessed slices called a tumour before a series reads "tumour"
MIN_TYPE_SHARE = 0.7  # of the run's slices that must agree on the tumour type
MIN_ASSESSED = 3  # assessed slices below which a series gives no verdict


@dataclass(frozen=True)
class Finding:
    """A run of neighbouring slices called a tumour: its type (None: uncertain), extent and confidence."""

    class_id: str | None
    first: int  # 0-based slice indices, inclusive
    last: int
    slices: int  # assessed slices in the run
    confidence: float  # mean tumour probability over the run
    key_slice: int  # the run's most confident slice
    called: str | None = None  # the run's majority type when class_id is None because of the contrast
    type_note: str = ""  # why the type is uncertain when it is the contrast (unseen_contrast_note)


@dataclass(frozen=True)
class SeriesVerdict:
    """What one series (one volume) says: tumour, no tumour, not assessed, or pending."""

    label: str  # "tumour" | "equivocal" | "no tumour" | "not assessed" | "pending"
    finding: Finding | None = None
    assessed: int = 0
    total: int = 0
    confidence: float | None = None  # tumour: the finding's; no tumour and equivocal: mean no-finding probability
    called_tumour: int = 0  # assessed slices called a tumour class
    note: str = ""  # not assessed: what the series is, when the gate's reasons say (a label map or mask)

    def text(self, display_names: dict[str, str]) -> str:
        """Return the verdict in a few words, e.g. "Glioma on slices 12-20 (87%)"."""
        if self.label == "pending":
            return "not classified yet"
        if self.label == "not assessed":
            if self.note:
                return f"not assessed: {self.note}"
            if self.assessed == self.total:  # a single image or a very short series: nothing was withheld
                return f"no series verdict: {self.total} slice(s), a verdict needs {MIN_ASSESSED} (see the slice's result)"
            return f"not assessed: {self.assessed} of {self.total} slices assessed, a verdict needs {MIN_ASSESSED}"
        if self.label == "no tumour":
            return f"no tumour ({self.assessed} slices assessed, {self.confidence:.0%})"
        if self.label == "equivocal":
            return (f"equivocal: tumour on {self.called_tumour} of {self.assessed} assessed slices, "
                    f"never {MIN_RUN} neighbouring")
        finding = self.finding
        if finding.class_id:
            kind = display_names.get(finding.class_id, finding.class_id)
        else:
            kind = f"Tumour, type uncertain ({finding.type_note})," if finding.type_note else "Tumour, type uncertain,"
        return f"{kind} on slices {finding.first + 1}-{finding.last + 1} ({finding.confidence:.0%})"


@dataclass(frozen=True)
class StudyVerdict:
    """The study's verdict from its series' verdicts: tumour, no tumour, indeterminate or not assessed."""

    label: str  # "tumour" | "no tumour" | "equivocal" | "indeterminate" | "not assessed" | "pending"
    class_id: str | None = None  # tumour type when every tumour series agrees on it
    series: dict[str, SeriesVerdict] = field(default_factory=dict)

    def text(self, display_names: dict[str, str]) -> str:
        """Return the verdict as one line for people."""
        if self.label == "tumour":
            kind = display_names.get(self.class_id, self.class_id) if self.class_id else "tumour, type uncertain"
            count = sum(v.label == "tumour" for v in self.series.values())
            return f"{kind} ({count} series)" if self.class_id else f"Tumour, type uncertain ({count} series)"
        count = {label: sum(v.label == label for v in self.series.values()) for label in ("tumour", "equivocal", "no tumour")}
        if self.label == "indeterminate":
            parts = [f"{count['tumour']} series read tumour" if count["tumour"] else "",
                     f"{count['equivocal']} series equivocal" if count["equivocal"] else "",
                     f"{count['no tumour']} read no tumour"]
            return "Indeterminate: " + ", ".join(part for part in parts if part)
        if self.label == "equivocal":
            return f"Equivocal ({count['equivocal']} series)"
        notes = {v.note for v in self.series.values()}
        if self.label == "not assessed" and len(notes) == 1 and "" not in notes:
            return f"No verdict: {notes.pop()}"  # e.g. every series is a label map or mask
        return {"no tumour": "No tumour", "not assessed": "No verdict (too few slices assessed)", "pending": "Not classified yet"}[self.label]


def series_verdict(probabilities: np.ndarray, class_ids: Sequence[str], no_finding: str,
                   not_assessed: np.ndarray | None = None, contrast: str = "",
                   trained_contrasts: Mapping[str, Sequence[str]] | None = None) -> SeriesVerdict:
    """Return one volume's verdict from its (n_slices, n_classes) probabilities (NaN rows: not classified);
    no_finding is the id of the model's "nothing found" class (its card says which); a type whose trained
    contrasts (the card's) do not include the series' known contrast is reported as uncertain."""
    total = len(probabilities)
    withheld = np.zeros(total, bool) if not_assessed is None else np.asarray(not_assessed, bool)
    classified = ~np.isnan(probabilities).any(axis=1) if total else np.zeros(0, bool)
    if (classified | withheld).sum() < total:
        return SeriesVerdict("pending", total=total)
    rows = np.flatnonzero(classified & ~withheld)
    if len(rows) < MIN_ASSESSED:
        return SeriesVerdict("not assessed", assessed=len(rows), total=total)
    normal = list(class_ids).index(no_finding)
    predicted = probabilities[rows].argmax(axis=1)
    tumour_probability = 1.0 - probabilities[rows, normal]
    runs, start = [], None
    for position, is_tumour in enumerate(np.append(predicted != normal, False)):
        if is_tumour and start is None:
            start = position
        elif not is_tumour and start is not None:
            if position - start >= MIN_RUN:
                runs.append((start, position))
            start = None
    called = int((predicted != normal).sum())
    if not runs:
        return SeriesVerdict("equivocal" if called > len(rows) / 2 else "no tumour", assessed=len(rows), total=total,
                             confidence=float(probabilities[rows, normal].mean()), called_tumour=called)
    start, stop = max(runs, key=lambda run: tumour_probability[run[0]:run[1]].mean())
    classes, counts = np.unique(predicted[start:stop], return_counts=True)
    majority = class_ids[int(classes[int(np.argmax(counts))])]
    confident_type = counts.max() / (stop - start) >= MIN_TYPE_SHARE
    note = unseen_contrast_note(majority, contrast, trained_contrasts or {}) if confident_type else ""
    finding = Finding(
        class_id=majority if confident_type and not note else None,
        first=int(rows[start]), last=int(rows[stop - 1]), slices=stop - start,
        confidence=float(tumour_probability[start:stop].mean()),
        key_slice=int(rows[start + int(np.argmax(tumour_probability[start:stop]))]),
        called=majority if note else None, type_note=note,
    )
    return SeriesVerdict("tumour", finding, len(rows), total, finding.confidence, called)


def unseen_contrast_note(class_id: str, contrast: str, trained_contrasts: Mapping[str, Sequence[str]]) -> str:
    """Return why a type cannot be trusted on this contrast ("meningioma? known only on T1c, this series is FLAIR";
    "glioma? no tumour of any type on PD in training" where no class was trained on it), or "" when the contrast is
    unknown, unrecorded for the type, or one the model was trained on with it."""
    trained = trained_contrasts.get(class_id)
    if not contrast or not trained or contrast in trained:
        return ""
    shown = contrast_name(contrast) or contrast
    if not any(contrast in contrasts for contrasts in trained_contrasts.values()):
        return f"{class_id}? no tumour of any type on {shown} in training"
    names = "/".join(contrast_name(c) or c for c in trained)
    return f"{class_id}? known only on {names}, this series is {shown}"


def study_verdict(verdicts: dict[str, SeriesVerdict]) -> StudyVerdict:
    """Return the study's verdict: tumour or no tumour when its judged series agree (an equivocal series does not
    contradict a tumour), equivocal when all of them are, else indeterminate."""
    labels = {v.label for v in verdicts.values()}
    if not verdicts or labels <= {"pending"}:
        return StudyVerdict("pending", series=verdicts)
    judged = {v.label for v in verdicts.values() if v.label in ("tumour", "equivocal", "no tumour")}
    if not judged:
        return StudyVerdict("pending" if "pending" in labels else "not assessed", series=verdicts)
    if judged >= {"tumour", "no tumour"} or judged == {"equivocal", "no tumour"}:
        return StudyVerdict("indeterminate", series=verdicts)
    if judged in ({"no tumour"}, {"equivocal"}):
        return StudyVerdict(judged.pop(), series=verdicts)
    types = {v.finding.class_id for v in verdicts.values() if v.label == "tumour"}
    return StudyVerdict("tumour", types.pop() if len(types) == 1 else None, verdicts)


def studies_of(series_list: Sequence) -> list[list]:
    """Group series by patient, then study, as the Series panel's tree does: a study verdict never mixes two studies."""
    from convnest_viewer.io.model import LoadResult

    return [study.series for patient in LoadResult(series=list(series_list)).tree() for study in patient.studies]


def study_title(series_in_study: Sequence, ordinal: int, count: int) -> str:
    """Return how a study is named beside its verdict: "Study 2 of 3 (MR BRAIN)", or "Study" when it is the only one."""
    description = series_in_study[0].study.description if series_in_study else ""
    title = "Study" if count == 1 else f"Study {ordinal + 1} of {count}"
    return f"{title} ({description})" if description and count > 1 else title
