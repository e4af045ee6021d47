"""The Segment widget's folded extras: measurements and a whole folder.

Measurements of the labels go to a CSV and to napari's features under the
pointer; a folder is segmented by the CLI's batch engine, with this widget's
model and options.
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import (
    QFileDialog,
    QLineEdit,
    QPushButton,
    QWidget,
)

from ..errors import UNetError
from ..labels.measure import measure_objects, write_csv
from ..progress import Progress, Stage
from ..segmenting.batch import expand_inputs, iter_segment_files
from ._common import folded, folder_row, labeled, report_error


class SegmentExtras:
    """Measure and Segment-a-folder sections of the Segment widget (a mixin)."""

    def _measure_section(self) -> QWidget:
        """Measurements of the image's labels: a table (CSV) and napari's per-object features."""
        self.measure_button = QPushButton("Save measurements (CSV)…")
        self.measure_button.setObjectName("measure_button")
        self.measure_button.setToolTip(
            "area, centroid, diameter, eccentricity and mean/max intensity of each object of "
            "'<image> labels', in the image's units (its layer scale); also shown when the "
            "pointer is over an object"
        )
        self.measure_button.clicked.connect(self.save_measurements_dialog)
        return folded("Measure", self.measure_button)

    def _folder_section(self) -> QWidget:
        """Segment a folder of files with this widget's settings: the CLI's batch engine."""
        self.folder_in = QLineEdit()
        self.folder_in.setPlaceholderText("folder of images")
        self.folder_out = QLineEdit()
        self.folder_out.setPlaceholderText("folder for <stem>_labels.tif")
        rows = [
            labeled("images", folder_row(self, self.folder_in, "Folder of images")),
            labeled("labels to", folder_row(self, self.folder_out, "Folder for the labels")),
        ]
        self.folder_button = QPushButton("Segment folder")
        self.folder_button.setObjectName("segment_folder_button")
        self.folder_button.setToolTip(
            "every image of the folder, one after another, with the model and options above; "
            "files done by an earlier run are skipped; Cancel stops after the current file"
        )
        self.folder_button.clicked.connect(self.segment_folder)
        return folded("A folder of images", *rows, self.folder_button)

    # measurements -------------------------------------------------------------
    def _labels_of_image(self):
        """The chosen image and its '<image> labels' layer (a UNetError when there is none)."""
        layer = self.image_combo.layer()
        if layer is None:
            raise UNetError("add or open an image layer first")
        name = f"{layer.name} labels"
        if name not in self.viewer.layers or not isinstance(
            self.viewer.layers[name], napari.layers.Labels
        ):
            raise UNetError(f"segment {layer.name!r} first: there is no {name!r} layer")
        return layer, self.viewer.layers[name]

    def measurements(self) -> dict:
        """The chosen image's objects measured, also set as its labels layer's features."""
        image, labels_layer = self._labels_of_image()
        labels = np.asarray(labels_layer.data)
        data = image.data[0] if image.multiscale else image.data
        intensity = np.asarray(data) if not image.rgb and np.shape(data) == labels.shape else None
        spacing = tuple(labels_layer.scale[-labels.ndim :]) if labels.ndim in (2, 3) else None
        table = measure_objects(labels, intensity, spacing)
        # napari shows a layer's features for the object under the pointer.
        labels_layer.features = {"index": table["label"], **table}
        return table

    def save_measurements(self, path: str | Path) -> Path | None:
        """Measure and write the CSV; a clear message instead of a traceback."""
        try:
            table = self.measurements()
            out = write_csv(table, path)
        except UNetError as exc:
            report_error(exc)
            return None
        except OSError as exc:
            report_error(UNetError(f"cannot write {path}: {exc}"))
            return None
        self.status.setText(f"{len(table['label'])} objects measured: {out}")
        return out

    def save_measurements_dialog(self) -> None:
        layer = self.image_combo.layer()
        suggested = f"{layer.name if layer else 'labels'}_measurements.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Save measurements", suggested, "CSV (*.csv)")
        if path:
            self.save_measurements(path)

    def segment_folder(self) -> None:
        """Segment every image of the input folder into the output folder, with progress."""
        if self.task.busy:
            report_error(UNetError("segmentation is already running"))
            return
        source, target = self.folder_in.text().strip(), self.folder_out.text().strip()
        try:
            if not source or not Path(source).is_dir():
                raise UNetError(f"choose a folder of images (got {source or 'nothing'!r})")
            if not target:
                raise UNetError("choose a folder for the labels")
            options = self.folder_options()
            files = expand_inputs([source])
            if not files:
                raise UNetError(f"{source} holds no image this tool reads")
        except UNetError as exc:
            report_error(exc)
            return
        self.run_button.setEnabled(False)
        self.folder_button.setEnabled(False)
        self.status.setText(f"segmenting {len(files)} files…")

        def make():
            return iter_segment_files([source], target, options)

        def on_event(event: Progress) -> None:
            if event.stage == Stage.BATCH and event.total:
                name = Path(event.info.get("file", "")).name
                self.status.setText(
                    f"{event.step}/{event.total} files" + (f": {name}" if name else "")
                )

        def done(report) -> None:
            self.status.setText(report.summary().replace("\n", "; "))

        def finished() -> None:
            if self.task.bar.format() == "stopped":
                self.status.setText("cancelled; files done so far are kept, a rerun skips them")
            self.run_button.setEnabled(True)
            self.folder_button.setEnabled(True)

        self.task.run(make, on_event, done, description="segment folder", on_finished=finished)
