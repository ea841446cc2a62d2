"""The probability panel: bars for the current slice, a strip plot over slices, and a series summary."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QGridLayout, QLabel, QProgressBar, QVBoxLayout, QWidget

from convnest_viewer.results import summarize

CLASS_COLORS = {"glioma": (231, 76, 60), "meningioma": (241, 196, 15), "notumor": (46, 204, 113), "pituitary": (52, 152, 219)}
_FALLBACK_COLORS = [(155, 89, 182), (230, 126, 34), (26, 188, 156), (149, 165, 166)]


def class_color(class_id: str, index: int) -> tuple[int, int, int]:
    """Return the display colour of a class."""
    return CLASS_COLORS.get(class_id, _FALLBACK_COLORS[index % len(_FALLBACK_COLORS)])


class ProbabilityPanel(QWidget):
    """Shows the model's per-class probabilities for the current slice and across the series."""

    sliceClicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.class_ids: list[str] = []
        self.display_names: dict[str, str] = {}
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
        self.plot = pg.PlotWidget(background="w")
        self.plot.setMinimumHeight(170)
        self.plot.setYRange(0, 1, padding=0.02)
        self.plot.setLabel("bottom", "slice")
        self.plot.setLabel("left", "probability")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.addLegend(offset=(5, 5), labelTextSize="8pt")
        self.withheld = pg.BarGraphItem(x=[], height=[], width=1.0, y0=0, brush=pg.mkBrush(200, 200, 200, 150), pen=None)
        self.plot.addItem(self.withheld)
        self.cursor = pg.InfiniteLine(angle=90, pen=pg.mkPen((40, 40, 40), width=1, style=Qt.PenStyle.DashLine))
        self.plot.addItem(self.cursor)
        self.plot.scene().sigMouseClicked.connect(self._plot_clicked)
        layout.addWidget(self.plot, stretch=1)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.summary)
        self.study_summary = QLabel("")
        self.study_summary.setWordWrap(True)
        self.study_summary.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.study_summary)
        self._curves: list[pg.PlotDataItem] = []
        self._n_slices = 0
        self.current: np.ndarray | None = None

    def set_classes(self, class_ids: list[str], display_names: list[str]) -> None:
        """Build one bar and one curve per class."""
        self.class_ids = list(class_ids)
        self.display_names = dict(zip(class_ids, display_names))
        for label, bar in self._bars:
            label.deleteLater()
            bar.deleteLater()
        self._bars = []
        for curve in self._curves:
            self.plot.removeItem(curve)
        self._curves = []
        for row, (class_id, name) in enumerate(zip(class_ids, display_names)):
            label = QLabel(name)
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setFormat("–")
            bar.setTextVisible(True)
            r, g, b = class_color(class_id, row)
            bar.setStyleSheet(f"QProgressBar::chunk {{ background-color: rgb({r},{g},{b}); }}")
            self._bar_grid.addWidget(label, row, 0)
            self._bar_grid.addWidget(bar, row, 1)
            self._bars.append((label, bar))
            self._curves.append(self.plot.plot([], [], pen=pg.mkPen((r, g, b), width=2), name=name,
                                               symbol="o", symbolSize=4, symbolBrush=(r, g, b), symbolPen=None))

    def set_model_text(self, text: str) -> None:
        """Set the line naming the model and device."""
        self.title.setText(text)

    def show_slice(self, probabilities: np.ndarray | None, not_assessed: str | None = None) -> None:
        """Show the current slice's probabilities (None: not classified yet), or why the model does not answer."""
        self.current = None if probabilities is None or not_assessed else np.asarray(probabilities)
        self.not_assessed.setText(f"Not assessed: {not_assessed}." if not_assessed else "")
        self.not_assessed.setVisible(bool(not_assessed))
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
                    not_assessed: np.ndarray | None = None) -> None:
        """Plot each class's probability over the slices the model assessed (grey bands where its gate withheld
        the answer; NaN rows: pending or failed) and summarise."""
        self._n_slices = len(table)
        x = np.arange(1, len(table) + 1)
        withheld = np.zeros(len(table), bool) if not_assessed is None else np.asarray(not_assessed, bool)
        for index, curve in enumerate(self._curves):
            column = table[:, index] if len(table) else np.zeros(0)
            done = ~np.isnan(column) & ~withheld  # no class where the gate withheld the answer
            xs = x[done]
            neighbours = np.append(np.diff(xs) == 1, False)  # the curve breaks across withheld or pending slices
            curve.setData(xs, column[done], connect=neighbours)
        self.withheld.setOpts(x=x[withheld], height=np.ones(int(withheld.sum())), width=1.0)
        self.plot.setXRange(0.5, max(len(table), 1) + 0.5, padding=0)
        self.set_current(current_index)
        self.summary.setText(self._summary_html(table, failed, withheld))

    def set_study_summary(self, html: str) -> None:
        """Show the findings of every classified series of the study."""
        self.study_summary.setText(html)

    def set_current(self, index: int) -> None:
        """Move the strip plot's marker to a slice."""
        self.cursor.setValue(index + 1)

    def _summary_html(self, table: np.ndarray, failed: int, withheld: np.ndarray) -> str:
        if not len(table) or not self.class_ids:
            return ""
        summary = summarize(table, self.class_ids, failed, withheld)
        counts = ", ".join(f"{self.display_names[c]}: {n}" for c, n in summary.counts.items() if n)
        text = f"<b>Series:</b> {summary.sentence(self.display_names)}"
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
