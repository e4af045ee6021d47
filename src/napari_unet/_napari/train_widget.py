"""Train / fine-tune widget: the human-in-the-loop cycle inside napari.

Pairs of image + labels layers (optionally restricted to an annotated
region) and/or folders become training and validation data. Training runs
in a thread worker driving :func:`napari_unet.training.train`; Stop finishes
after the current step and keeps the best model, which is registered at once
for the Segment widget and can be saved to a file.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..augment import NO_AUGMENTATION, AugmentConfig
from ..data import load_training_folder, make_training_image
from ..errors import UNetError
from ..modelfile import SegmentationModel, save_model
from ..normalize import Normalization
from ..progress import Progress
from ..settings import load_settings, update_settings
from ..training import TrainConfig, iter_train
from ._common import LayerCombo, TaskBar, labeled, report_error
from .annotate_widget import region_mask
from .models import registry
from .plot import LivePlot
from .segment_widget import image_axes

ROLES = ("train", "validation")


class TrainWidget(QWidget):
    def __init__(self, napari_viewer: napari.Viewer, parent=None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.trained: SegmentationModel | None = None
        self._stop = threading.Event()
        settings = load_settings()
        layout = QVBoxLayout(self)

        layout.addWidget(QLabel("<b>Training pairs from layers</b>"))
        self.image_combo = LayerCombo(napari_viewer, (napari.layers.Image,))
        self.labels_combo = LayerCombo(napari_viewer, (napari.layers.Labels,))
        self.region_combo = LayerCombo(napari_viewer, (napari.layers.Shapes,), allow_none=True)
        self.role_combo = QComboBox()
        self.role_combo.addItems(ROLES)
        layout.addWidget(labeled("image", self.image_combo))
        layout.addWidget(labeled("labels", self.labels_combo))
        layout.addWidget(labeled("region", self.region_combo))
        layout.addWidget(labeled("use for", self.role_combo))
        buttons = QWidget()
        bl = QHBoxLayout(buttons)
        bl.setContentsMargins(0, 0, 0, 0)
        self.add_pair_button = QPushButton("Add pair")
        self.remove_pair_button = QPushButton("Remove selected")
        bl.addWidget(self.add_pair_button)
        bl.addWidget(self.remove_pair_button)
        layout.addWidget(buttons)
        self.pairs = QTableWidget(0, 4)
        self.pairs.setHorizontalHeaderLabels(["image", "labels", "region", "use"])
        self.pairs.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.pairs.setMaximumHeight(120)
        layout.addWidget(self.pairs)

        layout.addWidget(QLabel("<b>… and/or folders</b> (images and masks paired by file name)"))
        self.train_images = self._folder_row(layout, "train images")
        self.train_masks = self._folder_row(layout, "train masks")
        self.val_images = self._folder_row(layout, "val images")
        self.val_masks = self._folder_row(layout, "val masks")

        layout.addWidget(QLabel("<b>Model and schedule</b>"))
        self.start_combo = QComboBox()
        layout.addWidget(labeled("start from", self.start_combo))
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 100000)
        self.epochs_spin.setValue(int(settings.get("train_epochs", 20)))
        layout.addWidget(labeled("epochs", self.epochs_spin))
        self.minutes_spin = QDoubleSpinBox()
        self.minutes_spin.setRange(0, 100000)
        self.minutes_spin.setDecimals(1)
        self.minutes_spin.setSpecialValueText("no limit")
        self.minutes_spin.setValue(float(settings.get("train_minutes", 5.0)))
        layout.addWidget(labeled("minutes", self.minutes_spin))
        self.patches_spin = QSpinBox()
        self.patches_spin.setRange(1, 100000)
        self.patches_spin.setValue(int(settings.get("train_patches", 64)))
        layout.addWidget(labeled("patches/epoch", self.patches_spin))
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 256)
        self.batch_spin.setValue(int(settings.get("train_batch", 8)))
        layout.addWidget(labeled("batch size", self.batch_spin))
        self.augment_check = QCheckBox("augment (elastic, rotations, grey values)")
        self.augment_check.setChecked(True)
        layout.addWidget(self.augment_check)

        self.start_button = QPushButton("Start training")
        layout.addWidget(self.start_button)
        # Training shows its progress here (bar, ETA, live plot), not in napari's
        # activity panel, whose animation would slow training (see TaskBar).
        self.task = TaskBar("Stop", napari_activity=False)
        self.task.stop_button.setToolTip("finish after the current step and keep the best model")
        layout.addWidget(self.task)
        self.plot = LivePlot()
        layout.addWidget(self.plot)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.save_button = QPushButton("Save model…")
        self.save_button.setEnabled(False)
        layout.addWidget(self.save_button)
        layout.addStretch(1)

        registry().changed.connect(self.refresh_models)
        self.refresh_models()
        if settings.get("train_start_from") in [
            self.start_combo.itemText(i) for i in range(self.start_combo.count())
        ]:
            self.start_combo.setCurrentText(settings["train_start_from"])
        self.add_pair_button.clicked.connect(self.add_pair)
        self.remove_pair_button.clicked.connect(self.remove_selected_pairs)
        self.start_button.clicked.connect(self.start)
        self.save_button.clicked.connect(self.save_dialog)

    # form helpers -------------------------------------------------------------
    def _folder_row(self, layout, text: str) -> QLineEdit:
        edit = QLineEdit()
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        row = QWidget()
        rl = QHBoxLayout(row)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(edit, 1)
        rl.addWidget(browse)
        browse.clicked.connect(
            lambda: edit.setText(QFileDialog.getExistingDirectory(self, text) or edit.text())
        )
        layout.addWidget(labeled(text, row))
        return edit

    def refresh_models(self) -> None:
        current = self.start_combo.currentText()
        self.start_combo.clear()
        self.start_combo.addItems(registry().names() + ["scratch"])
        index = self.start_combo.findText(current)
        self.start_combo.setCurrentIndex(max(index, 0))

    def add_pair(self, image=None, labels=None, region=None, role: str | None = None) -> None:
        image = image or self.image_combo.layer()
        labels = labels or self.labels_combo.layer()
        region = region if region is not None else self.region_combo.layer()
        role = role or self.role_combo.currentText()
        if image is None or labels is None:
            report_error(UNetError("choose an image layer and a labels layer"))
            return
        row = self.pairs.rowCount()
        self.pairs.insertRow(row)
        for col, text in enumerate((image.name, labels.name, region.name if region else "", role)):
            self.pairs.setItem(row, col, QTableWidgetItem(text))

    def remove_selected_pairs(self) -> None:
        for row in sorted({i.row() for i in self.pairs.selectedIndexes()}, reverse=True):
            self.pairs.removeRow(row)

    # data ------------------------------------------------------------------
    def _layer(self, name: str):
        if name not in self.viewer.layers:
            raise UNetError(f"the layer {name!r} is no longer in the viewer; remove its pair")
        return self.viewer.layers[name]

    def collect_layer_pairs(self, in_channels: int, norm: Normalization) -> tuple[list, list]:
        """Training and validation images from the pairs table (annotated planes of stacks)."""
        train_set, val_set = [], []
        for row in range(self.pairs.rowCount()):
            image = self._layer(self.pairs.item(row, 0).text())
            labels = self._layer(self.pairs.item(row, 1).text())
            region_name = self.pairs.item(row, 2).text()
            region = self._layer(region_name) if region_name else None
            role = self.pairs.item(row, 3).text()
            data = np.asarray(image.data[0] if image.multiscale else image.data)
            axes = image_axes(image)
            n_lead = sum(a not in "YXC" for a in axes)
            lab = np.asarray(labels.data)
            if lab.shape != tuple(s for s, a in zip(data.shape, axes) if a != "C"):
                raise UNetError(
                    f"labels {labels.name!r} {lab.shape} do not match image {image.name!r}"
                )
            shape_yx = lab.shape[-2:]
            valid = region_mask(region, shape_yx)
            planes = list(np.ndindex(*lab.shape[:n_lead])) if n_lead else [()]
            added = 0
            for index in planes:
                plane_labels = lab[index] if index else lab
                if not np.any(plane_labels[valid]):
                    continue  # unannotated plane
                plane = data[index] if index else data
                item = make_training_image(
                    plane,
                    plane_labels.astype(np.int64),
                    in_channels,
                    norm,
                    valid,
                    channel_axis=-1 if image.rgb else None,
                    name=f"{image.name}{list(index) if index else ''}",
                )
                (val_set if role == "validation" else train_set).append(item)
                added += 1
            if not added:
                raise UNetError(f"{labels.name!r} has no labelled cell inside the annotated region")
        return train_set, val_set

    def _in_channels_for_scratch(self) -> int:
        for row in range(self.pairs.rowCount()):
            if self._layer(self.pairs.item(row, 0).text()).rgb:
                return 3
        return 1

    def collect_data(self, init) -> tuple[list, list]:
        in_channels = init.in_channels if init is not None else self._in_channels_for_scratch()
        norm = init.normalization if init is not None else Normalization()
        train_set, val_set = self.collect_layer_pairs(in_channels, norm)
        ti, tm = self.train_images.text().strip(), self.train_masks.text().strip()
        vi, vm = self.val_images.text().strip(), self.val_masks.text().strip()
        if bool(ti) != bool(tm) or bool(vi) != bool(vm):
            raise UNetError("give both an images and a masks folder (or neither)")
        if ti:
            train_set += load_training_folder(ti, tm, in_channels, norm)
        if vi:
            val_set += load_training_folder(vi, vm, in_channels, norm)
        if not train_set:
            raise UNetError(
                "add at least one training pair (image + labels layer) or a training folder"
            )
        return train_set, val_set

    def config(self) -> TrainConfig:
        minutes = float(self.minutes_spin.value()) or None
        return TrainConfig(
            epochs=int(self.epochs_spin.value()),
            minutes=minutes,
            patches_per_epoch=int(self.patches_spin.value()),
            batch_size=int(self.batch_spin.value()),
            augment=AugmentConfig() if self.augment_check.isChecked() else NO_AUGMENTATION,
            validate_every=1,
        )

    # running ----------------------------------------------------------------
    def start(self) -> None:
        if self.task.busy:
            report_error(UNetError("training is already running"))
            return
        start_from = self.start_combo.currentText()
        try:
            init = None if start_from == "scratch" else registry().get(start_from)
            train_set, val_set = self.collect_data(init)
        except UNetError as exc:
            report_error(exc)
            return
        config = self.config()
        update_settings(
            train_epochs=config.epochs,
            train_minutes=config.minutes or 0.0,
            train_patches=config.patches_per_epoch,
            train_batch=config.batch_size,
            train_start_from=start_from,
        )
        self._stop.clear()
        self.plot.clear()
        self.start_button.setEnabled(False)
        self.status.setText(f"training on {len(train_set)} image(s), validating on {len(val_set)}")
        stop = self._stop
        architecture = {"in_channels": self._in_channels_for_scratch()} if init is None else None

        def make():
            return iter_train(
                train_set, val_set, init=init, config=config, stop=stop, architecture=architecture
            )

        def on_event(event: Progress) -> None:
            if event.stage == "train":
                self.plot.add_loss(event.step, event.info["loss"])
                eta = event.info.get("eta_s")
                self.status.setText(
                    f"epoch {event.info['epoch'] + 1}, loss {event.info['loss']:.4f}"
                    + (f", about {eta / 60:.1f} min left" if eta else "")
                )
            elif event.stage == "validate":
                self.plot.add_score(self._last_step(), event.info["ap50"])
                self.status.setText(
                    f"validation: AP@0.5 {event.info['ap50']:.3f}, AP@0.7 {event.info['ap70']:.3f}"
                    + (" (best so far)" if event.info.get("best") else "")
                )
            elif event.stage == "tune":
                self.status.setText("tuning post-processing thresholds on the validation images…")

        def done(model: SegmentationModel) -> None:
            model.name = f"trained {time.strftime('%H:%M:%S')}"
            self.trained = model
            name = registry().add(model.name, model)
            self.save_button.setEnabled(True)
            summary = model.training
            score = summary.get("validation")
            self.status.setText(
                f"{name!r} is ready in the Segment widget ({summary['steps']} steps, "
                f"{summary['time_s']:.0f}s, stopped by {summary['stopped_by']})"
                + (f"; best AP@0.5 {score['ap50']:.3f}" if score else "")
            )

        worker = self.task.run(make, on_event, done, on_stop=stop.set, description="train")
        worker.finished.connect(lambda: self.start_button.setEnabled(True))

    def _last_step(self) -> float:
        return self.plot.loss[-1][0] if self.plot.loss else 0.0

    def stop(self) -> None:
        self.task.request_stop()

    def save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save model", "model.safetensors", "Model files (*.safetensors)"
        )
        if path:
            self.save(path)

    def save(self, path: str | Path) -> Path | None:
        if self.trained is None:
            report_error(UNetError("train a model first"))
            return None
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        try:
            save_model(self.trained, path)
        except (UNetError, OSError) as exc:
            report_error(
                exc if isinstance(exc, UNetError) else UNetError(f"cannot write {path}: {exc}")
            )
            return None
        self.status.setText(f"saved {path}")
        return path
