"""Train / fine-tune widget: the human-in-the-loop cycle inside napari.

Pairs of image + labels layers (optionally restricted to an annotated
region) and/or folders become training and validation data. Training runs
in a thread worker driving :func:`napari_unet.training.loop.train`; Stop finishes
after the current step and keeps the best model, which is registered at once
for the Segment widget and can be saved to a file.
"""

from __future__ import annotations

import threading
from dataclasses import replace
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

from ..errors import UNetError
from ..models.modelfile import SegmentationModel, save_model
from ..progress import Progress, Stage
from ..training.augment import NO_AUGMENTATION, AugmentConfig
from ..training.data import AnnotatedStack, training_sets
from ..training.loop import TrainingStopped, iter_train
from ..training.recipes import FINE_TUNE, TrainConfig
from ._common import (
    LayerCombo,
    TaskBar,
    connect_while_alive,
    folded,
    folder_row,
    is_integer_image,
    is_mask_image,
    join_plugin_docks,
    labeled,
    pinned_layout,
    report_error,
    scrolling_layout,
)
from .layer_shapes import image_axes, labels_shape, region_mask
from .model_registry import registry
from .plot import LivePlot
from .settings import load_settings, update_settings

ROLES = ("train", "validation")


class TrainWidget(QWidget):
    def __init__(self, napari_viewer: napari.Viewer, parent=None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.trained: SegmentationModel | None = None
        self._stop = threading.Event()
        settings = load_settings()
        layout = scrolling_layout(self)

        layout.addWidget(QLabel("<b>Training pairs from layers</b>"))
        self.image_combo = LayerCombo(napari_viewer, (napari.layers.Image,))
        # Masks opened with File > Open are image layers: integer images are offered
        # too (after the labels layers), and one named like a mask is chosen when opened.
        self.labels_combo = LayerCombo(
            napari_viewer,
            (napari.layers.Labels,),
            also=is_integer_image,
            follow_also=is_mask_image,
        )
        self.labels_combo.setToolTip(
            "a labels layer, or an integer image layer holding labels (a mask file opened "
            "with File > Open)"
        )
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
        self.pairs.setMinimumHeight(130)  # four rows visible; the dock scrolls instead
        layout.addWidget(self.pairs)

        # Folders: for sets too big to open as layers (folded: most fine-tunes use layers).
        folder_rows = QWidget()
        folder_layout = QVBoxLayout(folder_rows)
        folder_layout.setContentsMargins(0, 0, 0, 0)
        folder_layout.addWidget(QLabel("images and masks paired by file name"))
        self.train_images = self._folder_row(folder_layout, "train images")
        self.train_masks = self._folder_row(folder_layout, "train masks")
        self.val_images = self._folder_row(folder_layout, "val images")
        self.val_masks = self._folder_row(folder_layout, "val masks")
        layout.addWidget(folded("… and/or folders", folder_rows))

        layout.addWidget(QLabel("<b>Model and schedule</b>"))
        self.start_combo = QComboBox()
        layout.addWidget(labeled("start from", self.start_combo))
        self.minutes_spin = QDoubleSpinBox()
        self.minutes_spin.setRange(0, 100000)
        self.minutes_spin.setDecimals(1)
        self.minutes_spin.setSpecialValueText("no limit")
        self.minutes_spin.setSuffix(" min")
        self.minutes_spin.setValue(float(settings.get("train_minutes", FINE_TUNE.minutes)))
        self.minutes_spin.setToolTip("whichever of epochs and minutes ends first wins")
        layout.addWidget(labeled("minutes", self.minutes_spin))
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 100000)
        self.epochs_spin.setValue(int(settings.get("train_epochs", FINE_TUNE.epochs)))
        self.epochs_spin.setToolTip("whichever of epochs and minutes ends first wins")
        self.patches_spin = QSpinBox()
        self.patches_spin.setRange(1, 100000)
        self.patches_spin.setValue(int(settings.get("train_patches", FINE_TUNE.patches_per_epoch)))
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 256)
        self.batch_spin.setValue(int(settings.get("train_batch", FINE_TUNE.batch_size)))
        self.augment_check = QCheckBox("augment")
        self.augment_check.setToolTip(
            "random elastic deformations, rotations, flips and grey-value changes of each patch"
        )
        self.augment_check.setChecked(True)
        layout.addWidget(
            folded(
                "Schedule details",
                labeled("epochs", self.epochs_spin),
                labeled("patches/epoch", self.patches_spin),
                labeled("batch size", self.batch_spin),
                self.augment_check,
            )
        )
        self.plot = LivePlot()
        layout.addWidget(self.plot)
        layout.addStretch(1)

        actions = pinned_layout(self)
        self.start_button = QPushButton("Start training")
        self.start_button.setObjectName("train_start_button")
        actions.addWidget(self.start_button)
        # Training shows its progress here (bar, ETA, live plot), not in napari's
        # activity panel, whose animation would slow training (see TaskBar).
        self.task = TaskBar("Stop", napari_activity=False)
        self.task.stop_button.setObjectName("train_stop_button")
        self.task.stop_button.setToolTip("finish after the current step and keep the best model")
        actions.addWidget(self.task)
        self.status = QLabel("")
        self.status.setObjectName("train_status")
        self.status.setWordWrap(True)
        actions.addWidget(self.status)
        self.train_longer_button = QPushButton("Train again, longer")
        self.train_longer_button.setObjectName("train_longer_button")
        self.train_longer_button.setVisible(False)  # offered after a run that changed nothing
        actions.addWidget(self.train_longer_button)
        self.save_button = QPushButton("Save model…")
        self.save_button.setEnabled(False)
        actions.addWidget(self.save_button)
        join_plugin_docks(self)

        connect_while_alive(self, registry().changed, self.refresh_models)
        self.refresh_models()
        if settings.get("train_start_from") in [
            self.start_combo.itemText(i) for i in range(self.start_combo.count())
        ]:
            self.start_combo.setCurrentText(settings["train_start_from"])
        self.add_pair_button.clicked.connect(self.add_pair)
        self.remove_pair_button.clicked.connect(self.remove_selected_pairs)
        self.start_button.clicked.connect(self.start)
        self.train_longer_button.clicked.connect(self.train_longer)
        self.save_button.clicked.connect(self.save_dialog)

    # form helpers -------------------------------------------------------------
    def _folder_row(self, layout, text: str) -> QLineEdit:
        edit = QLineEdit()
        layout.addWidget(labeled(text, folder_row(self, edit, text)))
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
        expected = labels_shape(image)
        if tuple(labels.data.shape) != expected:
            # Said here, naming the labels layer, not at Start among the other pairs.
            report_error(
                UNetError(
                    f"the labels layer {labels.name!r} is {tuple(labels.data.shape)} but the image "
                    f"{image.name!r} needs {expected}: choose the labels made for this image"
                )
            )
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

    def layer_pairs(self) -> list[dict]:
        """The pairs table as plain data (read in the GUI thread; the labels copied)."""
        pairs = []
        for row in range(self.pairs.rowCount()):
            image = self._layer(self.pairs.item(row, 0).text())
            labels = self._layer(self.pairs.item(row, 1).text())
            region_name = self.pairs.item(row, 2).text()
            region = self._layer(region_name) if region_name else None
            lab = np.array(labels.data, copy=True)  # later edits do not change this run
            pairs.append(
                {
                    "image": image.data[0] if image.multiscale else image.data,
                    "labels": lab,
                    "axes": image_axes(image),
                    "valid": region_mask(region, lab.shape[-2:]),
                    "role": self.pairs.item(row, 3).text(),
                    "name": image.name,
                }
            )
        return pairs

    def _in_channels_for_scratch(self) -> int:
        for row in range(self.pairs.rowCount()):
            if self._layer(self.pairs.item(row, 0).text()).rgb:
                return 3
        return 1

    def data_sources(self) -> dict:
        """Everything training reads, gathered in the GUI thread (cheap: no normalization)."""
        folders = {
            "train": (self.train_images.text().strip(), self.train_masks.text().strip()),
            "validation": (self.val_images.text().strip(), self.val_masks.text().strip()),
        }
        if any(bool(a) != bool(b) for a, b in folders.values()):
            raise UNetError("give both an images and a masks folder (or neither)")
        pairs = self.layer_pairs()
        if not any(p["role"] == "train" for p in pairs) and not folders["train"][0]:
            raise UNetError(
                "add at least one training pair (image + labels layer) or a training folder"
            )
        return {"pairs": pairs, "folders": folders}

    def config(self, from_model: bool = True) -> TrainConfig:
        """The run's schedule: the library's recipe with this form's values."""
        minutes = float(self.minutes_spin.value()) or None
        return replace(
            FINE_TUNE if from_model else TrainConfig(),
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
            sources = self.data_sources()
        except UNetError as exc:
            report_error(exc)
            return
        config = self.config(init is not None)
        self.train_longer_button.setVisible(False)
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
        self.status.setText("preparing the training images…")
        stop = self._stop
        architecture = (
            None if init is not None else {"in_channels": self._in_channels_for_scratch()}
        )
        names = [p["name"] for p in sources["pairs"] if p["role"] == "train"]
        model_label = names[0] if len(names) == 1 else f"{len(names) or 'folder'} images"

        def make():
            # Normalizing the images takes time: it runs here, in the worker.
            yield Progress(Stage.PREPARE, 0, None, {"what": "training images"})
            train_set, val_set = prepare_training_data(sources, init, architecture)
            if stop.is_set():
                raise TrainingStopped(
                    "training was stopped before its first step; no model was made"
                )
            yield Progress(
                Stage.PREPARE,
                0,
                None,
                {"what": f"{len(train_set)} training, {len(val_set)} validation"},
            )
            return (
                yield from iter_train(
                    train_set,
                    val_set,
                    init=init,
                    config=config,
                    stop=stop,
                    architecture=architecture,
                )
            )

        def done(model: SegmentationModel) -> None:
            if model.training.get("kept_start_model"):
                self._kept_start_model(model, start_from, config)
                return
            # Named after what it learned from; the registry makes the name unique.
            self._trained(model, f"{model_label}, fine-tuned" if init else f"{model_label} model")

        def failed(exc: BaseException) -> bool:
            if isinstance(exc, TrainingStopped):  # the user's own choice, not an error
                self.status.setText("stopped before training began; no model was made")
                return True
            self.status.setText(str(exc) if isinstance(exc, UNetError) else "training failed")
            return False

        self.task.run(
            make,
            self._show_progress,
            done,
            on_stop=stop.set,
            description="train",
            on_error=failed,
            on_finished=lambda: self.start_button.setEnabled(True),
        )

    def _show_progress(self, event: Progress) -> None:
        """A training event on the plot and the status line."""
        info = event.info
        if event.stage == Stage.TRAIN:
            self.plot.add_loss(event.step, info["loss"])
            eta = info.get("eta_s")
            self.status.setText(
                f"epoch {info['epoch'] + 1}, loss {info['loss']:.4f}"
                + (f", about {eta / 60:.1f} min left" if eta else "")
            )
        elif event.stage == Stage.VALIDATE:
            self.plot.add_score(self._last_step(), info["ap50"])
            which = "start model" if info["epoch"] < 0 else "validation"
            self.status.setText(
                f"{which}: AP@0.5 {info['ap50']:.3f}, AP@0.7 {info['ap70']:.3f}"
                + (" (best so far)" if info.get("best") else "")
            )
        elif event.stage == Stage.PREPARE:
            self.status.setText(f"preparing: {info.get('what', '')}…")
        elif event.stage == Stage.TUNE:
            self.status.setText("tuning post-processing thresholds on the validation images…")

    def _kept_start_model(self, model: SegmentationModel, start_from: str, config) -> None:
        """Training did not beat its start model: nothing new to register, say so once."""
        summary = model.training
        self.trained = None
        self.save_button.setEnabled(False)
        longer = max(2 * (config.minutes or 0.0), 2.0)
        self.train_longer_button.setText(f"Train again for {longer:g} minutes")
        self.train_longer_button.setProperty("minutes", longer)
        self.train_longer_button.setVisible(True)
        self.status.setText(
            f"{summary['steps']} steps in {summary['time_s']:.0f}s did not beat {start_from!r} "
            f"on the {summary['validated_on']} by more than chance "
            f"({summary.get('validation_nuclei', '?')} objects): no new model, {start_from!r} "
            "stays selected in Segment. Train longer, or annotate more images."
        )

    def train_longer(self) -> None:
        """Start again with the longer time the last run offered."""
        self.minutes_spin.setValue(float(self.train_longer_button.property("minutes")))
        self.start()

    def _trained(self, model: SegmentationModel, name: str) -> None:
        """A finished model: registered (so Segment selects it), saveable, summarized."""
        model.name = name
        self.trained = model
        model.name = registry().add(model.name, model)
        self.save_button.setEnabled(True)
        summary = model.training
        score = summary.get("validation")
        self.status.setText(
            f"{model.name!r} is ready in the Segment widget ({summary['steps']} steps, "
            f"{summary['time_s']:.0f}s, stopped by {summary['stopped_by']})"
            + (f"; best AP@0.5 {score['ap50']:.3f}" if score else "")
            + (
                f"; training did not beat the start model on the {summary['validated_on']} "
                f"by more than chance ({summary.get('validation_nuclei', '?')} nuclei, "
                f"{summary.get('checkpoints_compared', '?')} checkpoints compared), "
                "so it is the start model"
                if summary.get("kept_start_model")
                else ""
            )
            + (
                f"; {len(summary['resized_images'])} image(s) trained resized, as they will "
                "be segmented (nuclei far from the model's training size)"
                if summary.get("resized_images") and model.objects is None
                else ""
            )
            + (
                f"; it finds {model.objects.describe()}"
                + (
                    f", trained and segmented resized x{model.objects.scale:.2f}"
                    if model.objects.scale > 0
                    else ""
                )
                + (
                    " (a new network: the start model knew only nuclei)"
                    if summary.get("new_network_for_cells")
                    else ""
                )
                if model.objects is not None
                else ""
            )
        )

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


def prepare_training_data(sources: dict, init, architecture: dict | None):
    """Training and validation images from :meth:`TrainWidget.data_sources` (run in the worker).

    The core's one preparation of training data (:func:`napari_unet.training.data.training_sets`),
    which the CLI uses too.
    """
    stacks = [
        AnnotatedStack(
            pair["image"], pair["labels"], pair["axes"], pair["role"], pair["valid"], pair["name"]
        )
        for pair in sources["pairs"]
    ]
    in_channels = None if init is not None else architecture["in_channels"]
    return training_sets(stacks, sources["folders"], init, in_channels)
