"""What the viewer writes in the corners of the slice and under the strip plot, as text; no Qt."""

from __future__ import annotations

from html import escape as html_escape

from convnest_viewer.io import LoadResult, Series, Window
from convnest_viewer.io.contrast import contrast_name
from convnest_viewer.results import ResultStore

CORNER_WIDTH = 30  # characters per corner line before it is cut with an ellipsis


def format_dicom_date(value: str) -> str:
    """Return a DICOM date (YYYYMMDD) as YYYY-MM-DD; other text unchanged."""
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def corner_texts(series: Series, index: int, volume: int, window: Window, show_identifiers: bool) -> dict[str, str]:
    """Return the four corners' text for a slice: patient and study, series, position and geometry, window."""
    patient, study = series.patient, series.study
    if show_identifiers:
        top_left = [patient.name.replace("^", " ").strip() or "(no name)", f"ID {patient.id}" if patient.id else ""]
    else:
        top_left = ["(patient identifiers hidden)"]
    top_left += [format_dicom_date(study.date), study.description]
    number = f"Se {series.number}" if series.number is not None else ""
    contrast = contrast_name(series.contrast)
    top_right = [series.description, " · ".join(t for t in (series.modality, number, contrast, series.sequence) if t)]
    volumes = f"  Vol {volume + 1}/{series.n_volumes}" if series.n_volumes > 1 else ""
    bottom_left = [f"Slice {index + 1}/{series.n_slices}{volumes}"]
    location = series.slice_location(index, volume)
    if location is not None:
        bottom_left.append(f"Pos {location:.1f} mm")
    beside = series.gap_beside(index, volume)
    if beside:
        where, gap = beside
        bottom_left += [f"⚠ Gap {where} this slice:", f"{gap.missing_mm:.1f} mm, ~{gap.missing_slices} missing"]
    if series.slice_thickness:
        bottom_left.append(f"Thk {series.slice_thickness:.2g} mm")
    if series.pixel_spacing:
        bottom_left.append(f"{series.pixel_spacing[0]:.3g}×{series.pixel_spacing[1]:.3g} mm")
    bottom_right = [f"W {window.width:.0f}  L {window.center:.0f}"]
    corners = {"top_left": top_left, "top_right": top_right, "bottom_left": bottom_left, "bottom_right": bottom_right}
    return {corner: "\n".join(_elide(line) for line in lines if line) for corner, lines in corners.items()}


def study_summary_html(result: LoadResult, store: ResultStore, model_id: str, card, max_lines: int = 12) -> str:
    """Return each study's verdict and each classified series' verdict as HTML, with a link to each key slice.

    A link reads "slice:<series key>:<index>". Series not yet fully classified are counted, not judged. Series of
    different studies (or patients) get a verdict per study, never one across them.
    """
    from convnest_viewer.verdict import studies_of, study_title, study_verdict

    names = {c.id: c.display for c in card.classes}
    studies = studies_of(result.series) or [[]]  # nothing opened: one empty study ("0 of 0 series classified")
    blocks, shown = [], 0
    for ordinal, study in enumerate(studies):
        verdicts, lines = {}, []
        for series in study:
            if not store.series_finished(model_id, series):
                continue
            verdict = verdicts[series.key] = store.series_verdict(model_id, series, card)
            label = f"{series.number}: " if series.number is not None else ""
            line = html_escape(f"{label}{series.description or '(no description)'}: {verdict.text(names)}")
            if verdict.finding is not None:
                key_slice = verdict.finding.key_slice
                line += f' <a href="slice:{html_escape(series.key)}:{key_slice}">key slice {key_slice + 1}</a>'
            lines.append(line)
        title = html_escape(study_title(study, ordinal, len(studies)))
        block = (f"<b>{title} verdict:</b> {html_escape(study_verdict(verdicts).text(names))}"
                 f"<br><small>{len(verdicts)} of {len(study)} series classified</small>")
        room = max(max_lines - shown, 0)
        if lines and room:
            block += "<br><small>" + "<br>".join(lines[:room]) + "</small>"
            shown += min(len(lines), room)
        blocks.append(block)
    return "<br>".join(blocks)


def _elide(text: str, limit: int = CORNER_WIDTH) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
