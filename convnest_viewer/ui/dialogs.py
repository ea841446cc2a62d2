"""The main window's dialogs and exports: open, recent studies, screenshot, report, tags, model card, about."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox

from convnest_viewer import __version__
from convnest_viewer.io import LoadResult
from convnest_viewer.ui import settings as prefs
from convnest_viewer.ui.model_dock import DISCLAIMER


class DialogsMixin:
    """Dialog-driven actions of MainWindow (uses its state, settings, session, view and status bar)."""

    def open_study_dialog(self) -> None:
        """Ask for a study folder (DICOM, DICOMDIR, NIfTI or images inside) and open it."""
        folder = QFileDialog.getExistingDirectory(self, "Open DICOM Study", prefs.get_str(self.settings, "last_folder", ""))
        if folder:
            self.settings.setValue("last_folder", folder)
            self.open_paths([folder])

    def open_files_dialog(self) -> None:
        """Ask for files (DICOM, DICOMDIR, NIfTI, PNG/JPEG) and open them as one study."""
        files, _ = QFileDialog.getOpenFileNames(self, "Open Files", prefs.get_str(self.settings, "last_folder", ""),
                                                "Images (*.dcm *.DCM DICOMDIR *.nii *.nii.gz *.png *.jpg *.jpeg *.IMA);;All files (*)")
        if files:
            self.settings.setValue("last_folder", str(Path(files[0]).parent))
            self.open_paths(files)

    def fill_recent_menu(self) -> None:
        """List the recently opened studies in File > Open Recent."""
        self.recent_menu.clear()
        entries = prefs.recent_studies(self.settings)
        for paths in entries:
            action = self.recent_menu.addAction(", ".join(Path(p).name or p for p in paths))
            action.setToolTip("\n".join(paths))
            action.triggered.connect(lambda _=False, p=paths: self.open_paths(p))
        self.recent_menu.setEnabled(bool(entries))

    def report_nothing_found(self, result: LoadResult) -> None:
        """Say that nothing opened could be shown, with each file's reason; the open study stays."""
        reasons = "\n".join(f"• {s.path.name}: {s.reason}" for s in result.skipped[:12])
        more = f"\n… and {len(result.skipped) - 12} more" if len(result.skipped) > 12 else ""
        message = f"Nothing in what you opened could be shown as an image.\n\n{reasons}{more}"
        if self.state.result.series:
            message += "\n\nThe study that was open stays open."
        else:
            self.browser.set_result(result)  # an empty tree and the skipped files with their reasons
            self.view.show_message("No images found")
        self.statusBar().showMessage("No images found in what was opened", 15000)
        if self.interactive:
            QMessageBox.warning(self, "No images found", message)

    def export_screenshot(self, path: str | Path) -> Path:
        """Save the slice view (with its overlay and annotations) as a PNG."""
        path = Path(path)
        if not self.view.grab().save(str(path), "PNG"):
            raise OSError(f"{path}: could not write the screenshot")
        return path

    def export_screenshot_dialog(self) -> None:
        """Ask where to save a screenshot of the view."""
        path, _ = QFileDialog.getSaveFileName(self, "Export Screenshot", "slice.png", "PNG image (*.png)")
        if path:
            try:
                self.statusBar().showMessage(f"Saved {self.export_screenshot(path)}", 8000)
            except OSError as exc:
                QMessageBox.warning(self, "Export Screenshot", str(exc))

    def export_report_dialog(self) -> None:
        """Ask where to write the study report (HTML + CSV) and whether to include identifiers."""
        if not self.state.result.series or not self.state.model_id or self.worker is None:
            QMessageBox.information(self, "Export Report", "Open a study and wait for the model first.")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export Report", "report.html", "HTML report (*.html)")
        if not path:
            return
        answer = QMessageBox.question(self, "Export Report", "Include patient identifiers (name, ID, dates, UIDs) in the report?",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        self.request_report(Path(path), answer == QMessageBox.StandardButton.Yes)

    def request_report(self, path: Path, include_identifiers: bool) -> None:
        """Write the study report (classifying any slices not done yet) in the session; reportWritten follows."""
        self.statusBar().showMessage("Writing report (classifying any slices not done yet)…")
        self.worker.reportWritten.connect(self._report_written, Qt.ConnectionType.SingleShotConnection)
        mode = self.state.overlay_mode
        self.session.request_report(list(self.state.result.series), path, include_identifiers,
                                    mode if mode != "none" else self.state.default_heatmap)

    def _report_written(self, html_path: str, csv_path: str, error: str) -> None:
        if error:
            if self.interactive:
                QMessageBox.warning(self, "Export Report", error)
            self.statusBar().showMessage(error, 15000)
        else:
            self.statusBar().showMessage(f"Report written: {html_path} and {csv_path}", 12000)

    def show_tags(self) -> None:
        """Open the searchable tag browser for the current slice's file."""
        state = self.state
        if state.series is None:
            return
        from convnest_viewer.ui.tag_browser import TagBrowser

        ref = state.series.slice_ref(state.index, state.volume)
        self.tag_browser = TagBrowser(state.series.tags(state.index, state.volume), ref.path.name, self)
        self.tag_browser.show()

    def show_model_card(self) -> None:
        """Show the model card: what the model is, how it was trained, how well it does."""
        model = self.state.model
        if model is None:
            QMessageBox.information(self, "Model Card", self.state.model_error or "The model is still loading.")
            return
        from convnest_viewer.ui.model_card_dialog import model_card_html

        box = QMessageBox(self)
        box.setWindowTitle("Model Card")
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setText(model_card_html(model.card, model.model_id, model.device_name))
        box.exec()

    def show_about(self) -> None:
        """Show the version, the model and the intended use."""
        model = self.state.model
        QMessageBox.about(self, "About", f"<h3>ConvNeXt Brain MRI Viewer {__version__}</h3>"
                          f"<p>Model: {model.name if model else 'none loaded'} ({model.model_id[:12] if model else '-'})</p>"
                          f"<p><b>{DISCLAIMER}</b> The classifier was trained on public 2-D slice datasets and "
                          "has not been validated clinically.</p>")
