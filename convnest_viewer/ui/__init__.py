"""The desktop viewer (PySide6 + pyqtgraph); it observes io and inference, which know nothing of Qt."""
