"""The probability panel: bars for the current slice, a strip plot over slices, and a series summary."""

from __future__ import annotations

from html import escape as html_escape

import numpy as np
from convnest_viewer.ui.pyqtgraph_import import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QProgressBar, QScrollArea, QVBoxLayout, QWidget

from convnest_viewer.inference.card import ClassInfo
from convnest_viewer.results import summarize

_FALLBACK_COLOURS = ["#9b59b6", "#e67e22", "#1abc9c", "#95a5a6", "#34495e", "#d35400"]


def class_colour(info: ClassInfo, index: int) -> tuple[int, int, int]:
    """Return a class's display colour as RGB: the card's, else one of a fixed palette by output position."""
    text = info.colour or _FALLBACK_COLOURS[index % len(_FALLBACK_COLOURS)]
    return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)


class FittingScrollArea(QScrollArea):
    """A scroll area as tall as its word-wrapped text when there is room, scrolling when there is not."""

    def __init__(self, content: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidget(content)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def sizeHint(self) -> QSize:
        """Return the content's height at the current width (all of the text, unscrolled)."""
        content = self.widget()
        width = max(self.viewport().width(), 50)
        height = content.heightForWidth(width) if content.hasHeightForWidth() else content.sizeHint().height()
        return QSize(content.sizeHint().width(), max(height, 0) + 2 * self.frameWidth())


class ProbabilityPanel(QWidget):
    """Shows the model's per-class probabilities for the current slice and across the series."""

    sliceClicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.class_ids: list[str] = []
        self.display_names: dict[str, str] = {}
        self.no_finding = ""
        self._bars: list[tuple[QLabel, QProgressBar]] = []
        layout = QVBoxLayout(self)
        self.title = QLabel("Model: not loaded")
        self.title.setWordWrap(True)
        layout.addWidget(self.title)
        self._bar_grid = QGridLayout()
        layout.addLayout(self._bar_grid)
        self.not_assessed = QLabel("")
        self.not_assessed.setWordWrap(True)
        self.not_assessed.setStyleSheet("color: #666; font-style: italic;")
        self.not_assessed.hide()
        layout.addWidget(self.not_assessed)
        self.context_note = QLabel("")  # the slice's own answer, when the bars read it with its neighbours
        self.context_note.setWordWrap(True)
        self.context_note.setStyleSheet("color: #666;")
        self.context_note.hide()
        self.context_note.setToolTip("The model card reads each slice's answer with its neighbours' (weights falling off "
                                     "over a few slices): a tumour spans several slices, noise does not.")
        layout.addWidget(self.context_note)
        self.plot = pg.PlotWidget(background="w")
        self.plot.setMinimumHeight(170)
        self.plot.setYRange(0, 1, padding=0.02)
        self.plot.setXRange(0.5, 1.5, padding=0)  # until a series is shown (no "-400..400" empty axis)
        for axis in ("bottom", "left"):
            self.plot.getAxis(axis).enableAutoSIPrefix(False)  # slice numbers, not "slice (x0.001)"
        self.plot.setLabel("bottom", "slice")
        self.plot.setLabel("left", "probability")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.withheld = pg.BarGraphItem(x=[], height=[], width=1.0, y0=0, brush=pg.mkBrush(200, 200, 200, 150), pen=None)
        self.plot.addItem(self.withheld)
        self.cursor = pg.InfiniteLine(angle=90, pen=pg.mkPen((40, 40, 40), width=1, style=Qt.PenStyle.DashLine))
        self.plot.addItem(self.cursor)
        self.plot.scene().sigMouseClicked.connect(self._plot_clicked)
        self.legend = QLabel("")  # above the plot, never over its curves
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.legend)
        layout.addWidget(self.plot, stretch=1)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.summary)
        self.study_summary = QLabel("")
        self.study_summary.setWordWrap(True)
        self.study_summary.setTextFormat(Qt.TextFormat.RichText)
        self.study_summary.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.study_scroll = FittingScrollArea(self.study_summary)  # many studies: it scrolls instead of being cut
        layout.addWidget(self.study_scroll)
        self._curves: list[pg.PlotDataItem] = []
        self._n_slices = 0
        self.current: np.ndarray | None = None

    def set_classes(self, classes: list[ClassInfo]) -> None:
        """Build one bar, one curve and one legend entry per class of the model's card."""
        self.class_ids = [c.id for c in classes]
        self.display_names = {c.id: c.display for c in classes}
        self.no_finding = next((c.id for c in classes if c.no_finding), "")
        for label, bar in self._bars:
            label.deleteLater()
            bar.deleteLater()
        self._bars = []
        for curve in self._curves:
            self.plot.removeItem(curve)
        self._curves = []
        legend = []
        for row, info in enumerate(classes):
            name = info.display
            label = QLabel(name)
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setFormat("–")
            bar.setTextVisible(True)
            r, g, b = class_colour(info, row)
            legend.append(f'<span style="color: rgb({r},{g},{b});">&#9632;</span>&nbsp;{html_escape(name)}')
            bar.setStyleSheet(f"QProgressBar::chunk {{ background-color: rgb({r},{g},{b}); }}")
            self._bar_grid.addWidget(label, row, 0)
            self._bar_grid.addWidget(bar, row, 1)
            self._bars.append((label, bar))
            self._curves.append(self.plot.plot([], [], pen=pg.mkPen((r, g, b), width=2), name=name,
                                               symbol="o", symbolSize=4, symbolBrush=(r, g, b), symbolPen=None))
        self.legend.setText("<small>" + " &nbsp; ".join(legend) + "</small>")

    def bar_values(self) -> list[int]:
        """Return each class bar's value in thousandths (0 while pending or not assessed)."""
        return [bar.value() for _, bar in self._bars]

    def bar_texts(self) -> list[str]:
        """Return each class bar's text: its probability, "pending…" or "not assessed"."""
        return [bar.format() for _, bar in self._bars]

    def highlighted_class(self) -> int | None:
        """Return the output index of the class marked as predicted (bold, ▶), or None."""
        marked = [i for i, (label, _) in enumerate(self._bars) if label.font().bold() and label.text().startswith("▶")]
        return marked[0] if marked else None

    def curve(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the strip plot's (slice numbers, probabilities) of one class (empty before any result)."""
        xs, ys = self._curves[index].getData()
        return (np.zeros(0), np.zeros(0)) if xs is None else (xs, ys)

    def set_model_text(self, text: str) -> None:
        """Set the line naming the model and device."""
        self.title.setText(text)

    def show_slice(self, probabilities: np.ndarray | None, not_assessed: str | None = None,
                   alone: np.ndarray | None = None) -> None:
        """Show the current slice's probabilities (None: not classified yet), or why the model does not answer;
        alone, the slice's own answer when the probabilities are read with its neighbours'."""
        self.current = None if probabilities is None or not_assessed else np.asarray(probabilities)
        self.not_assessed.setText(f"Not assessed: {not_assessed}." if not_assessed else "")
        self.not_assessed.setVisible(bool(not_assessed))
        with_neighbours = self.current is not None and alone is not None and not np.allclose(alone, self.current)
        self.context_note.setVisible(with_neighbours)
        if with_neighbours:
            own = int(np.argmax(alone))
            name = self.display_names.get(self.class_ids[own], self.class_ids[own])
            self.context_note.setText(f"Read with its neighbouring slices. This slice alone: {name} {alone[own]:.0%}.")
        predicted = int(np.argmax(probabilities)) if self.current is not None else -1
        for index, (label, bar) in enumerate(self._bars):
            if not_assessed:
                bar.setValue(0)
                bar.setFormat("not assessed")
            elif probabilities is None:
                bar.setValue(0)
                bar.setFormat("pending…")
            else:
                value = float(probabilities[index])
                bar.setValue(round(value * 1000))
                bar.setFormat(f"{value * 100:.1f}%")
            font = label.font()
            font.setBold(index == predicted)
            label.setFont(font)
            label.setText(("▶ " if index == predicted else "") + self.display_names.get(self.class_ids[index], self.class_ids[index]))

    def show_series(self, table: np.ndarray, current_index: int, failed: int = 0,
                    not_assessed: dict[int, str] | None = None, verdict=None) -> None:
        """Plot each class's probability over the slices the model assessed (grey bands where its gate withheld
        the answer, not_assessed: {slice index: the gate's reason}; NaN rows: pending or failed) and summarise: the
        series' verdict (a SeriesVerdict) once it has one, then what the single slices were called and why some
        were not assessed."""
        self._n_slices = len(table)
        x = np.arange(1, len(table) + 1)
        withheld = np.zeros(len(table), bool)
        withheld[[i for i in (not_assessed or {}) if i < len(table)]] = True
        for index, curve in enumerate(self._curves):
            column = table[:, index] if len(table) else np.zeros(0)
            done = ~np.isnan(column) & ~withheld  # no class where the gate withheld the answer
            xs = x[done]
            neighbours = np.append(np.diff(xs) == 1, False)  # the curve breaks across withheld or pending slices
            curve.setData(xs, column[done], connect=neighbours)
        self.withheld.setOpts(x=x[withheld], height=np.ones(int(withheld.sum())), width=1.0)
        self.set_slice_count(len(table))
        self.set_current(current_index)
        self.summary.setText(self._summary_html(table, failed, withheld, verdict, list((not_assessed or {}).values())))

    def set_study_summary(self, html: str) -> None:
        """Show the findings of every classified series of the study."""
        self.study_summary.setText(html)
        self.study_scroll.updateGeometry()  # its height follows the text

    def set_slice_count(self, n_slices: int) -> None:
        """Span the strip plot's slice axis over a series of n_slices (before or with its results)."""
        self.plot.setXRange(0.5, max(n_slices, 1) + 0.5, padding=0)

    def set_current(self, index: int) -> None:
        """Move the strip plot's marker to a slice."""
        self.cursor.setValue(index + 1)

    def _summary_html(self, table: np.ndarray, failed: int, withheld: np.ndarray, verdict=None, reasons=()) -> str:
        if not len(table) or not self.class_ids:
            return ""
        summary = summarize(table, self.class_ids, self.no_finding, failed, withheld, reasons)
        counts = ", ".join(f"{self.display_names[c]}: {n}" for c, n in summary.counts.items() if n)
        if verdict is None or verdict.label == "pending":
            text = f"<b>Series:</b> {summary.sentence(self.display_names)}"
        else:  # the verdict first: single slices called a tumour do not make a finding on their own
            line = verdict.text(self.display_names)
            text = (f"<b>Series verdict:</b> {line[:1].upper() + line[1:]}"
                    f"<br><small>Per slice: {summary.sentence(self.display_names)}</small>")
        if counts:
            text += f"<br><small>Slices per predicted class — {counts}</small>"
        return text

    def _plot_clicked(self, event) -> None:
        if not self._n_slices:
            return
        point = self.plot.getPlotItem().vb.mapSceneToView(event.scenePos())
        index = int(round(point.x())) - 1
        if 0 <= index < self._n_slices:
            self.sliceClicked.emit(index)
