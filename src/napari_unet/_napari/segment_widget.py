"""Segment widget: image layer in, Labels layer out, with live threshold tuning.

The class probabilities of the last run are cached, so moving a
post-processing slider only re-runs the watershed (in a thread), never the
network.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import napari
import numpy as np
from napari.utils.notifications import show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible, QLabeledDoubleSlider, QLabeledSlider

from ..devices import available_devices
from ..errors import UNetError
from ..images.normalize import IMAGE_TYPES
from ..images.planes import PlaneLayout
from ..labels.instances import THRESHOLD_OPTIONS, InstanceParams
from ..models.sizes import SizeRule
from ..progress import Progress, Stage
from ..segmenting.batch import BatchOptions
from ..segmenting.notes import note_collector, what_model_knows
from ..segmenting.options import ENLARGE_BELOW
from ..segmenting.relabel import labels_from_probabilities
from ..segmenting.segmentation import iter_segment
from . import probability_store
from ._common import (
    LayerCombo,
    TaskBar,
    compact,
    connect_while_alive,
    folded,
    join_plugin_docks,
    labeled,
    pinned_layout,
    report_error,
    scrolling_layout,
)
from .labels_output import LabelsOutput, Target, fingerprint
from .layer_shapes import image_axes, visible_window
from .model_registry import registry
from .segment_extras import SegmentExtras
from .settings import load_settings, update_settings

SCOPES = ("whole image", "current plane", "field of view")
# How the planes of a stack are linked: (stitch, track) for segment().
LINKS = {
    "3-D objects (Z)": (None, False),
    "tracks over time (T)": (None, True),
    "none": (False, False),
}


def _slider(field: str):
    """A labelled slider for one of instances.THRESHOLD_OPTIONS: its range and help."""
    slider = QLabeledSlider() if field == "min_size" else QLabeledDoubleSlider()
    _fit_slider(slider, field)
    return slider


def _fit_slider(slider, field: str) -> None:
    option = THRESHOLDS[field]
    slider.setRange(option.low, option.high)
    slider.setToolTip(option.help)


THRESHOLDS = {option.field: option for option in THRESHOLD_OPTIONS}


class SegmentWidget(LabelsOutput, SegmentExtras, QWidget):
    def __init__(self, napari_viewer: napari.Viewer, parent=None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.settings = load_settings()
        self._cache: dict | None = None
        # A fingerprint of what this widget last wrote into each labels layer, to
        # tell hand edits apart (a fingerprint, not a copy: a copy doubled the
        # memory of every stack). Keyed by napari's unique_id: napari hands plugins
        # a proxy of the viewer whose every lookup returns a new proxy object.
        self._written: dict = {}
        self._kept_edits: str | None = None
        # Counts the results written into labels layers (segment or re-label).
        self.results_written = 0
        layout = scrolling_layout(self)

        self.image_combo = LayerCombo(napari_viewer, (napari.layers.Image,))
        layout.addWidget(labeled("image", self.image_combo))
        self.nuclei_combo = LayerCombo(
            napari_viewer, (napari.layers.Image,), allow_none=True, follow_new=False
        )
        self.nuclei_combo.setToolTip(
            "optional: a nuclear channel of the same image (another layer). With a nuclei "
            "model, each nucleus found there grows into a whole cell on the image; a model of "
            "whole cells segments the image and leaves it unused"
        )
        layout.addWidget(labeled("nuclei channel", self.nuclei_combo))

        self.model_combo = compact(QComboBox())
        self.open_model_button = QPushButton("…")
        self.open_model_button.setMaximumWidth(30)  # the dock stays narrow
        self.open_model_button.setToolTip(
            "Open a .safetensors model file or a bioimage.io .zip exported by napari-unet"
        )
        row = QWidget()
        row_layout = QHBoxLayout(row)
        row_layout.setContentsMargins(0, 0, 0, 0)
        row_layout.addWidget(self.model_combo, 1)
        row_layout.addWidget(self.open_model_button)
        layout.addWidget(labeled("model", row))

        self.device_combo = QComboBox()
        self.device_combo.addItems(available_devices())  # only what this machine has

        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 8192)
        self.tile_spin.setSingleStep(64)
        self.tile_spin.setSpecialValueText("auto")
        self.tile_spin.setToolTip(
            "output pixels per tile and axis; 'auto' picks from a memory budget"
        )

        self.scope_combo = QComboBox()
        self.scope_combo.addItems(SCOPES)
        layout.addWidget(labeled("segment", self.scope_combo))

        self.image_type_combo = QComboBox()
        self.image_type_combo.addItems(IMAGE_TYPES)
        self.image_type_combo.setToolTip(
            "auto: as the model reads images: the built-in models recognise brightfield and "
            "stained images (dark nuclei on a bright background) and invert them; a model "
            "trained on DIC or phase contrast reads every image as its frames were. Or force "
            "fluorescence / brightfield"
        )
        layout.addWidget(labeled("image type", self.image_type_combo))

        self.diameter_spin = QSpinBox()
        self.diameter_spin.setRange(0, 1000)
        self.diameter_spin.setSpecialValueText("auto")
        self.diameter_spin.setSuffix(" px")
        self.diameter_spin.setToolTip(
            "typical diameter of the objects (nuclei, or the cells of a cell model); the image "
            "is resized so they match the model's training size. 'auto': a cell model's "
            "training scale; for nuclei, estimated (the model's size model and a first pass)"
        )
        layout.addWidget(labeled("object diameter", self.diameter_spin))

        self.link_combo = QComboBox()
        self.link_combo.addItems(LINKS)
        self.link_combo.setToolTip(
            "stacks: link the planes by overlap into 3-D objects (one id per nucleus through Z), "
            "or keep a cell's id over time (a 3-D stack is then read as T, Y, X), or neither"
        )

        self.probabilities_check = QCheckBox("also show probability maps")
        self.outline_check = QCheckBox("show labels as outlines")
        self.outline_check.setObjectName("outline_check")
        self.outline_check.setToolTip("draw each object's outline only, so the image shows through")
        # The size rule's one setting: it acts when segmenting, not when re-labelling,
        # so it is not among the post-processing sliders.
        self.enlarge_slider = QLabeledSlider()
        self.enlarge_slider.setRange(int(ENLARGE_BELOW.low), int(ENLARGE_BELOW.high))
        self.enlarge_slider.setToolTip(ENLARGE_BELOW.help)
        # Settings most runs leave alone, folded so the form stays short.
        layout.addWidget(
            folded(
                "More options",
                labeled("link planes", self.link_combo),
                self.probabilities_check,
                self.outline_check,
                labeled("device", self.device_combo),
                labeled("tile size", self.tile_spin),
                labeled(ENLARGE_BELOW.label, self.enlarge_slider),
            )
        )
        self.advanced = self._postprocessing_section()
        layout.addWidget(self.advanced)
        layout.addWidget(self._measure_section())
        layout.addWidget(self._folder_section())

        layout.addStretch(1)

        actions = pinned_layout(self)
        self.run_button = QPushButton("Segment")
        self.run_button.setObjectName("segment_button")
        actions.addWidget(self.run_button)
        self.task = TaskBar("Cancel")
        actions.addWidget(self.task)
        self.status = QLabel("")
        self.status.setObjectName("segment_status")
        self.status.setWordWrap(True)
        actions.addWidget(self.status)
        join_plugin_docks(self)

        self._relabel_timer = QTimer(self)
        self._relabel_timer.setSingleShot(True)
        self._relabel_timer.setInterval(150)
        self._relabel_timer.timeout.connect(self.relabel)
        self._pending_relabel = False

        self._connect()

    def _postprocessing_section(self) -> QCollapsible:
        """The collapsible post-processing sliders (each model's stored thresholds)."""
        section = QCollapsible("Post-processing")
        self._distance_seeds = False  # set per model by reset_params
        adv = QWidget()
        adv_layout = QVBoxLayout(adv)
        # Ranges and tooltips from the one declaration the CLI's flags come from.
        self.foreground_slider = _slider("foreground_threshold")
        self.foreground_slider.setObjectName("foreground_threshold")
        self.seed_slider = _slider("seed_threshold")
        self.seed_dynamic_slider = _slider("seed_dynamic")
        self.seed_h_slider = _slider("seed_h")
        self.min_size_slider = _slider("min_size")
        self._param_sliders = (
            self.foreground_slider,
            self.seed_slider,
            self.seed_dynamic_slider,
            self.seed_h_slider,
            self.min_size_slider,
        )
        adv_layout.addWidget(labeled("foreground", self.foreground_slider))
        adv_layout.addWidget(labeled("seed", self.seed_slider))
        adv_layout.addWidget(labeled("split", self.seed_dynamic_slider))
        adv_layout.addWidget(labeled("seed h", self.seed_h_slider))
        adv_layout.addWidget(labeled("min size", self.min_size_slider))
        self.reset_params_button = QPushButton("Model defaults")
        adv_layout.addWidget(self.reset_params_button)
        section.addWidget(adv)
        return section

    def _connect(self) -> None:
        connect_while_alive(self, registry().changed, self.refresh_models)
        connect_while_alive(self, registry().added, self._select_model)
        self.refresh_models()
        self._restore_settings()
        self.model_combo.currentTextChanged.connect(self._model_changed)
        self.open_model_button.clicked.connect(self.open_model_dialog)
        self.run_button.clicked.connect(self.run)
        self.image_combo.currentTextChanged.connect(self._image_changed)
        self.reset_params_button.clicked.connect(self.reset_params)
        for slider in self._param_sliders:
            slider.valueChanged.connect(self._params_changed)
        self.device_combo.currentTextChanged.connect(lambda text: update_settings(device=text))
        self.tile_spin.valueChanged.connect(lambda v: update_settings(tile_size=int(v)))

    def _image_changed(self, name: str) -> None:
        """Another image chosen: the status stops showing the last image's object count."""
        if not self.task.busy:
            self.status.setText(f"{name!r}: not segmented yet" if name else "")

    # models ---------------------------------------------------------------
    def refresh_models(self) -> None:
        current = self.model_combo.currentText()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItems(registry().names())
        index = self.model_combo.findText(current)
        self.model_combo.setCurrentIndex(max(index, 0))
        self.model_combo.blockSignals(False)

    def _select_model(self, name: str) -> None:
        self.refresh_models()
        self.model_combo.setCurrentText(name)

    def open_model_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open model", "", "Model files (*.safetensors *.zip)"
        )
        if path:
            self.add_model_file(path)

    def add_model_file(self, path: str) -> None:
        try:
            name = registry().add_file(path)
        except UNetError as exc:
            report_error(exc)
            return
        self.model_combo.setCurrentText(name)

    def current_model(self):
        name = self.model_combo.currentText()
        if not name:
            raise UNetError("no model available: open a model file or train one")
        return registry().get(name)

    def _model_changed(self, name: str) -> None:
        update_settings(model=name)
        self._cache = None
        self.reset_params()

    def _restore_settings(self) -> None:
        s = self.settings
        if s.get("model") in registry().names():
            self.model_combo.setCurrentText(s["model"])
        if s.get("device") in [
            self.device_combo.itemText(i) for i in range(self.device_combo.count())
        ]:
            self.device_combo.setCurrentText(s["device"])
        # The scope is a per-image choice: a "field of view" saved yesterday would
        # silently segment only part of today's image, so it is not restored.
        self.tile_spin.setValue(int(s.get("tile_size", 0) or 0))
        self.reset_params()

    # post-processing parameters -----------------------------------------------
    def reset_params(self) -> None:
        try:
            model = self.current_model()
            params, scheme, rule = model.postprocessing, model.scheme, model.size_rule
        except (UNetError, KeyError):
            params, scheme, rule = InstanceParams(), "3class", SizeRule()
        self.enlarge_slider.setValue(int(round(rule.enlarge_below)))
        # Each model shows only the sliders its post-processing uses; "seed h" is
        # the distance maxima's height, of the foreground (2-class) or of the
        # interior (models of whole cells).
        seeded = scheme != "2class"
        self._distance_seeds = seeded and params.seed_distance_h > 0
        _fit_slider(self.seed_h_slider, "seed_distance_h" if self._distance_seeds else "seed_h")
        for slider, shown in (
            (self.seed_slider, seeded),
            (self.seed_dynamic_slider, seeded and not self._distance_seeds),
            (self.seed_h_slider, not seeded or self._distance_seeds),
        ):
            slider.parentWidget().setVisible(shown)
        self.set_params(params)

    def set_params(self, params: InstanceParams) -> None:
        sliders = self._param_sliders
        for s in sliders:
            s.blockSignals(True)
        self.foreground_slider.setValue(params.foreground_threshold)
        self.seed_slider.setValue(params.seed_threshold)
        self.seed_dynamic_slider.setValue(params.seed_dynamic)
        self.seed_h_slider.setValue(
            params.seed_distance_h if self._distance_seeds else params.seed_h
        )
        self.min_size_slider.setValue(int(params.min_size))
        for s in sliders:
            s.blockSignals(False)
        self._params_changed()

    def params(self) -> InstanceParams:
        try:
            base = self.current_model().postprocessing
        except (UNetError, KeyError):
            base = InstanceParams()
        seed_h = round(float(self.seed_h_slider.value()), 3)
        return replace(
            base,
            foreground_threshold=round(float(self.foreground_slider.value()), 3),
            seed_threshold=round(float(self.seed_slider.value()), 3),
            seed_dynamic=round(float(self.seed_dynamic_slider.value()), 3),
            **({"seed_distance_h": seed_h} if self._distance_seeds else {"seed_h": seed_h}),
            min_size=int(self.min_size_slider.value()),
        )

    def enlarge_below(self) -> float | None:
        """The "enlarge below" slider's area, or None while it shows the model's own rule."""
        try:
            rule = self.current_model().size_rule
        except (UNetError, KeyError):
            rule = SizeRule()
        below = float(self.enlarge_slider.value())
        return None if below == round(rule.enlarge_below) else below

    def _params_changed(self, *_) -> None:
        if self._cache is not None:
            self._relabel_timer.start()

    # running ----------------------------------------------------------------
    def _plan(self, layer) -> tuple[object, str, Target]:
        """The array to segment, its axes, and where the result goes."""
        data = layer.data[0] if layer.multiscale else layer.data
        axes = image_axes(layer)
        n_lead = sum(a not in "YXC" for a in axes)
        shape_yx = (data.shape[axes.index("Y")], data.shape[axes.index("X")])
        scope = self.scope_combo.currentText()
        whole = (slice(None), slice(None))
        if scope == "whole image" or (scope == "current plane" and n_lead == 0):
            return data, axes, Target((), whole)
        # The layer's dims are the last ones of the viewer's.
        first = self.viewer.dims.ndim - len(axes)
        plane = tuple(int(self.viewer.dims.current_step[first + i]) for i in range(n_lead))
        window = visible_window(layer, shape_yx) if scope == "field of view" else whole
        sub_axes = axes[n_lead:]
        index = [slice(None)] * len(sub_axes)
        index[sub_axes.index("Y")], index[sub_axes.index("X")] = window
        return np.asarray(data[plane][tuple(index)]), sub_axes, Target(plane, window)

    def run(self) -> None:
        layer = self.image_combo.layer()
        if layer is None:
            report_error(UNetError("add or open an image layer first"))
            return
        if self.task.busy:
            report_error(UNetError("segmentation is already running"))
            return
        try:
            model = self.current_model()
            data, axes, target = self._plan(layer)
            channels = None
            nuclei_layer = self.nuclei_combo.layer()
            if nuclei_layer is not None and nuclei_layer is not layer:
                nuclei, nuclei_axes, _ = self._plan(nuclei_layer)
                if nuclei_axes != axes or np.shape(nuclei) != np.shape(data):
                    raise UNetError(
                        f"the nuclei channel {nuclei_layer.name!r} {np.shape(nuclei)} does not "
                        f"match the image {np.shape(data)}"
                    )
                if "C" in axes:
                    raise UNetError("a nuclei channel goes with a grey image, not a colour one")
                data, axes = np.stack([np.asarray(data), np.asarray(nuclei)]), "C" + axes
                channels = (0, 1)
        except UNetError as exc:
            report_error(exc)
            return
        device = self.device_combo.currentText()
        tile = self.tile_spin.value() or None
        # Sliders at the model's own values: let each plane's model use its own
        # thresholds (the default hands brightfield planes to another model).
        params = None if self.params() == model.postprocessing else self.params()
        below = self.enlarge_below()
        size_rule = None if below is None else model.size_rule.enlarging_below(below)
        image_type = self.image_type_combo.currentText()
        image_type = None if image_type == "auto" else image_type  # the model's own reading
        diameter = float(self.diameter_spin.value()) or None
        stitch, track = LINKS[self.link_combo.currentText()]
        if track and axes.startswith("Z") and "T" not in axes:
            axes = "T" + axes[1:]  # a 3-D stack to track is a time-lapse
        notes: list[str] = []
        if channels is None and len(axes) == 3 and axes[0] in "ZT" and 1 < np.shape(data)[0] <= 4:
            # napari opens a CYX file as one layer: 2-4 "planes" are most likely channels.
            notes.append(
                f"warning: its {np.shape(data)[0]} planes were segmented as a stack; if they are "
                "channels, split them (right-click the layer > Split Stack) and choose the "
                "nuclear one as 'nuclei channel'"
            )
        scales: list[float] = []  # each plane's resize factor: re-labelling labels it there too
        self.status.setText("segmenting…")
        self.run_button.setEnabled(False)
        removed: list[str] = []  # the image's name once it left the viewer mid-run

        def image_removed(event) -> None:
            gone = getattr(event, "value", None)
            if gone is not None and gone.unique_id == layer.unique_id and self.task.busy:
                removed.append(layer.name)
                self.task.request_stop()  # its labels would have nowhere to go

        self.viewer.layers.events.removed.connect(image_removed)

        def make():
            labels, probs = yield from iter_segment(
                data,
                model,
                axes=axes,
                device=device,
                tile_size=tile,
                params=params,
                size_rule=size_rule,
                return_probabilities=True,
                image_type=image_type,
                diameter=diameter,
                stitch=stitch,
                track=track,
                channels=channels,
            )
            # Hashed here, off the GUI thread: the fingerprint of what is written.
            return labels, probs, fingerprint(labels)

        def done(result) -> None:
            if removed or layer.unique_id not in {x.unique_id for x in self.viewer.layers}:
                removed[:] = [layer.name]
                return
            labels, probs, digest = result
            self._cache = {
                "layer": layer,
                "model": model,
                "probs": probs,
                "target": target,
                "links": {"axes": PlaneLayout(axes).output_axes, "stitch": stitch, "track": track},
                "scales": scales,
                "resized": {},  # the probabilities at each plane's labelling size, once made
            }
            if channels is not None:
                # Cells grown from nuclei are not the probabilities' labels: the
                # sliders cannot re-label them (segment again instead).
                self._cache = None
                probability_store.forget()
            else:
                probability_store.lend(layer.unique_id, probs, model.classes)
            self._kept_edits = None
            self._write_labels(layer, labels, target, digest)
            if self.probabilities_check.isChecked():
                self._show_probabilities(layer, model, probs, target)
            knows = what_model_knows(model)
            self.status.setText(
                f"{int(labels.max())} objects (the model finds {knows})"
                + "".join(f"; {n}" for n in notes)
            )
            for note in notes:
                if note.startswith("warning:"):
                    show_warning(f"{layer.name}: {note.removeprefix('warning: ')}")

        collect_notes = note_collector(notes)

        def on_event(event: Progress) -> None:
            collect_notes(event)
            if event.stage == Stage.SEGMENT:
                scales.append(event.info["scale"])
                if event.total and event.total > 1:
                    self.status.setText(f"plane {event.step}/{event.total}")

        def failed(exc: BaseException) -> None:
            self.status.setText("segmentation failed: see the message")

        def finished() -> None:
            with contextlib.suppress(Exception):  # the viewer may be closing
                self.viewer.layers.events.removed.disconnect(image_removed)
            if removed:
                self.status.setText(
                    f"cancelled: the image {removed[0]!r} was removed from the viewer; "
                    "no labels were made"
                )
            elif self.task.bar.format() == "stopped":
                self.status.setText("cancelled")
            self.run_button.setEnabled(True)

        self.task.run(
            make, on_event, done, description="segment", on_error=failed, on_finished=finished
        )

    # a folder -----------------------------------------------------------------
    def folder_options(self) -> BatchOptions:
        """This widget's model and options as the batch engine's (one declaration, the CLI's)."""
        model = self.current_model()
        params = None if self.params() == model.postprocessing else self.params()
        if params is not None:
            model = replace(model, postprocessing=params)
        image_type = self.image_type_combo.currentText()
        stitch, track = LINKS[self.link_combo.currentText()]
        return BatchOptions(
            model=model,
            tile_size=self.tile_spin.value() or None,
            device=self.device_combo.currentText(),
            image_type=None if image_type == "auto" else image_type,
            diameter=float(self.diameter_spin.value()) or None,
            stitch=stitch,
            track=track,
            enlarge_below=self.enlarge_below(),
        )

    @property
    def idle(self) -> bool:
        """True when no segmentation or re-labelling runs or waits to run."""
        return not self.task.busy and not self._relabel_timer.isActive()

    @property
    def cached_probabilities(self) -> np.ndarray | None:
        """The probabilities of the last segmentation, which the sliders re-label."""
        return None if self._cache is None else self._cache["probs"]

    def relabel(self) -> None:
        """Re-run only the post-processing on the cached probabilities."""
        if self._cache is None:
            return
        if self.task.busy:
            self._relabel_timer.start()  # try again once the current run is done
            return
        cache = self._cache
        params = self.params()

        def make():
            yield Progress(Stage.RELABEL, 0, 1)
            labels = labels_from_probabilities(
                cache["probs"],
                cache["model"],
                params,
                **cache["links"],
                scales=cache["scales"],
                memo=cache["resized"],
            )
            return labels, fingerprint(labels)  # hashed off the GUI thread

        def done(result) -> None:
            labels, digest = result
            self._kept_edits = None
            self._write_labels(cache["layer"], labels, cache["target"], digest)
            self.status.setText(f"{int(labels.max())} objects" + self._kept_note())

        self.task.run(make, None, done, description="relabel")
