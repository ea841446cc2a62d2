"""The series browser: patient > study > series with thumbnails, and the files that were skipped."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import QLabel, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from convnest_viewer.annotations import format_dicom_date
from convnest_viewer.io import LoadResult, PixelReadError, Series, apply_window

THUMB = 64
FILE_COLUMN_MAX = 120  # pixels; the full path is in the file's tooltip
_KEY_ROLE = Qt.ItemDataRole.UserRole
_REASON_ROLE = Qt.ItemDataRole.UserRole + 1  # the reason unwrapped
_FINDING_ROLE = Qt.ItemDataRole.UserRole + 2  # the model's finding for a series, unwrapped


def series_label(series: Series) -> str:
    """Return the tree text of a series: number, description, slice count."""
    number = f"{series.number}: " if series.number is not None else ""
    count = f"{series.n_slices} slices" + (f" × {series.n_volumes} volumes" if series.n_volumes > 1 else "")
    gaps = series.gaps()
    if gaps:
        count += f" · {len(gaps)} gap{'s' if len(gaps) > 1 else ''}"
    return f"{number}{series.description or '(no description)'}\n{series.modality or '?'} · {count} · {series.rows}×{series.columns}"


def thumbnail_pixmap(series: Series, size: int = THUMB) -> QPixmap | None:
    """Return a small windowed picture of the series' middle slice, or None if unreadable."""
    index = series.n_slices // 2
    try:
        gray = apply_window(series.pixels(index), series.window(index))
    except PixelReadError:
        return None
    height, width = gray.shape
    image = QImage(gray.data, width, height, width, QImage.Format.Format_Grayscale8).copy()
    return QPixmap.fromImage(image).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                           Qt.TransformationMode.SmoothTransformation)


class SeriesBrowser(QWidget):
    """Lists what a load found; selecting a series emits its key."""

    seriesSelected = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.setIconSize(QSize(THUMB, THUMB))
        self.tree.itemSelectionChanged.connect(self._selection_changed)
        layout.addWidget(self.tree, stretch=3)
        self.skipped_label = QLabel("")
        layout.addWidget(self.skipped_label)
        self.skipped = QTreeWidget()
        self.skipped.setHeaderLabels(["File", "Reason"])
        self.skipped.setRootIsDecorated(False)
        self.skipped.setUniformRowHeights(False)  # a reason is a sentence: wrapped onto lines, never cut off
        self.skipped.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # long file names keep both ends
        self.skipped.header().setStretchLastSection(True)
        self.skipped.header().sectionResized.connect(lambda *_: self._wrap_reasons())
        layout.addWidget(self.skipped, stretch=1)
        self._items: dict[str, QTreeWidgetItem] = {}
        self._series: dict[str, Series] = {}
        self._thumb_queue: list[Series] = []
        self._thumb_timer = QTimer(self)
        self._thumb_timer.setInterval(0)
        self._thumb_timer.timeout.connect(self._next_thumbnail)

    def set_result(self, result: LoadResult) -> None:
        """Show a load result (replacing what was shown)."""
        self.tree.blockSignals(True)
        self.tree.clear()
        self._items.clear()
        self._series = {series.key: series for series in result.series}
        for patient in result.tree():
            name = patient.info.name.replace("^", " ").strip() or "(no patient name)"
            patient_item = QTreeWidgetItem([f"{name}  {patient.info.id}".strip()])
            self.tree.addTopLevelItem(patient_item)
            for study in patient.studies:
                date = format_dicom_date(study.info.date)
                study_item = QTreeWidgetItem([" · ".join(t for t in (study.info.description or "(study)", date) if t)])
                patient_item.addChild(study_item)
                for series in study.series:
                    item = QTreeWidgetItem([series_label(series)])
                    item.setData(0, _KEY_ROLE, series.key)
                    item.setToolTip(0, f"Series UID {series.uid}")
                    study_item.addChild(item)
                    self._items[series.key] = item
        self.tree.expandAll()
        self.tree.blockSignals(False)
        self.skipped.clear()
        rows = [(entry.path, entry.reason, entry.reason) for entry in result.skipped]
        rows += [(note.path, f"read, with a note: {note.text}", note.text) for note in result.notes]
        for path, reason, tooltip in rows:
            row = QTreeWidgetItem([path.name, reason])
            row.setData(1, _REASON_ROLE, reason)
            row.setToolTip(0, str(path))
            row.setToolTip(1, tooltip)
            self.skipped.addTopLevelItem(row)
        self.skipped.resizeColumnToContents(0)
        self.skipped.setColumnWidth(0, min(self.skipped.columnWidth(0), FILE_COLUMN_MAX))  # room for the reasons
        self._wrap_reasons()
        self.skipped_label.setText(_problems_text(len(result.skipped), len(result.notes)))
        self.skipped.setVisible(bool(result.skipped or result.notes))
        self._thumb_queue = list(result.series)
        self._thumb_timer.start()

    def set_finding(self, key: str, text: str) -> None:
        """Add the model's finding for a series below its label."""
        item = self._items.get(key)
        series = self._series.get(key)
        if item is not None and series is not None:
            item.setData(0, _FINDING_ROLE, text)
            self._wrap_finding(item, series)
            item.setToolTip(0, f"{series.description or '(no description)'}\n→ {text}\nSeries UID {series.uid}")

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._wrap_reasons()
        for key, item in self._items.items():
            if item.data(0, _FINDING_ROLE):
                self._wrap_finding(item, self._series[key])

    def _wrap_finding(self, item: QTreeWidgetItem, series: Series) -> None:
        """Show a series' label and its finding broken onto as many lines as the panel's width needs."""
        depth, parent = 0, item.parent()
        while parent is not None:
            depth, parent = depth + 1, parent.parent()
        # the text starts after the tree's indentation, the thumbnail and a few pixels of spacing
        width = max(self.tree.viewport().width() - self.tree.indentation() * (depth + 1) - THUMB - 16, 80)
        finding = wrap_text(f"→ {item.data(0, _FINDING_ROLE)}", width, self.tree.fontMetrics().horizontalAdvance)
        item.setText(0, f"{series_label(series)}\n{finding}")

    def _wrap_reasons(self) -> None:
        """Break each reason onto as many lines as the reason column needs (Qt would cut it off)."""
        metrics = self.skipped.fontMetrics()
        width = max(self.skipped.viewport().width() - self.skipped.columnWidth(0) - 12, 60)
        for i in range(self.skipped.topLevelItemCount()):
            item = self.skipped.topLevelItem(i)
            item.setText(1, wrap_text(item.data(1, _REASON_ROLE) or "", width, metrics.horizontalAdvance))

    def item_text(self, key: str) -> str:
        """Return the text of a series' entry in the tree (its label and the model's finding, as wrapped), "" if unknown."""
        item = self._items.get(key)
        return item.text(0) if item is not None else ""

    def item_finding(self, key: str) -> str:
        """Return the model's finding shown for a series (unwrapped), "" if none yet."""
        item = self._items.get(key)
        return (item.data(0, _FINDING_ROLE) or "") if item is not None else ""

    def item_tooltip(self, key: str) -> str:
        """Return the tooltip of a series' entry in the tree (its whole finding once classified), "" if unknown."""
        item = self._items.get(key)
        return item.toolTip(0) if item is not None else ""

    def select(self, key: str) -> None:
        """Select a series by key (emits seriesSelected)."""
        item = self._items.get(key)
        if item is not None:
            self.tree.setCurrentItem(item)

    def series_keys(self) -> list[str]:
        """Return the keys of the listed series, in tree order."""
        return list(self._items)

    def _selection_changed(self) -> None:
        items = self.tree.selectedItems()
        key = items[0].data(0, _KEY_ROLE) if items else None
        if key:
            self.seriesSelected.emit(key)

    def _next_thumbnail(self) -> None:
        if not self._thumb_queue:
            self._thumb_timer.stop()
            return
        series = self._thumb_queue.pop(0)
        item = self._items.get(series.key)
        pixmap = thumbnail_pixmap(series)
        if item is not None and pixmap is not None:
            item.setIcon(0, QIcon(pixmap))


def _problems_text(skipped: int, notes: int) -> str:
    """Return the label above the problem list: how many files were skipped and how many read with a note."""
    parts = [f"{skipped} file(s) skipped" if skipped else "No files skipped"]
    if notes:
        parts.append(f"{notes} read with a note")
    return ", ".join(parts)


def wrap_text(text: str, width: float, advance) -> str:
    """Break text into lines no wider than width (advance(text) gives a text's width), at spaces where possible."""
    lines, line = [], ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if line and advance(candidate) > width:
            lines.append(line)
            candidate = word
        while advance(candidate) > width and len(candidate) > 1:  # a word wider than the column: cut it
            cut = max(1, int(len(candidate) * width / max(advance(candidate), 1)))
            lines.append(candidate[:cut])
            candidate = candidate[cut:]
        line = candidate
    lines.append(line)
    return "\n".join(lines)
