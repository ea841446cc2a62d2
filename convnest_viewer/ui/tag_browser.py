"""A searchable DICOM tag browser for the current slice's file."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QLabel, QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from convnest_viewer.io.tags import TagRow


class TagBrowser(QDialog):
    """Shows every header element of a file; the search box filters by tag, keyword or value."""

    def __init__(self, rows: list[TagRow], title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"DICOM tags — {title}")
        self.resize(820, 640)
        layout = QVBoxLayout(self)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search tag, keyword or value…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.filter)
        layout.addWidget(self.search)
        self.table = QTreeWidget()
        self.table.setHeaderLabels(["Tag", "Keyword", "VR", "Value"])
        self.table.setRootIsDecorated(False)
        self.table.setUniformRowHeights(True)
        layout.addWidget(self.table)
        self.count = QLabel("")
        layout.addWidget(self.count)
        for row in rows:
            item = QTreeWidgetItem([row.tag, "  " * row.depth + row.keyword, row.vr, row.value])
            item.setToolTip(3, row.value)
            self.table.addTopLevelItem(item)
        for column in range(3):
            self.table.resizeColumnToContents(column)
        self.filter("")

    def filter(self, text: str) -> None:
        """Show only rows whose tag, keyword, VR or value contains the text (case-insensitive)."""
        needle = text.strip().lower()
        shown = 0
        for i in range(self.table.topLevelItemCount()):
            item = self.table.topLevelItem(i)
            match = not needle or any(needle in item.text(c).lower() for c in range(4))
            item.setHidden(not match)
            shown += match
        self.count.setText(f"{shown} of {self.table.topLevelItemCount()} elements")

    def visible_rows(self) -> int:
        """Return how many rows the filter shows."""
        return sum(not self.table.topLevelItem(i).isHidden() for i in range(self.table.topLevelItemCount()))
