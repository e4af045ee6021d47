"""Annotate widget: make or correct a Labels layer for training.

* New annotation: an empty Labels layer matched to an image (shape, scale).
* From prediction: copy the segmentation into a new annotation layer to correct.
* Merge / split / fill: edits napari's brush and eraser do not offer.
* Annotated region: a Shapes layer; only pixels inside it count in training
  (partial annotation of a crop of a big image).
* Cells from points: click once per cell in a Points layer; a seeded
  watershed grows one object per click (on the probabilities of the Segment
  widget's last run on this image when its model sees the clicked objects,
  else on the image's gradient), as an annotation layer to correct rather
  than paint.
"""

from __future__ import annotations

import napari
import numpy as np
from qtpy.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton, QWidget

from ..errors import UNetError
from ..labels.annotation import fill_label_holes, merge_labels, split_label
from ..segmenting.cells import cells_from_points, clicks_in_foreground
from . import probability_store
from ._common import (
    LayerCombo,
    join_plugin_docks,
    labeled,
    pinned_layout,
    report_error,
    scrolling_layout,
)
from .layer_shapes import labels_shape

ANNOTATION_SUFFIX = " annotation"
REGION_SUFFIX = " annotated region"
CELL_POINTS = "cell points"
MERGE_POINTS = "merge points"
SPLIT_POINTS = "split points"


class AnnotateWidget(QWidget):
    def __init__(self, napari_viewer: napari.Viewer, parent=None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        layout = scrolling_layout(self)

        self.image_combo = LayerCombo(napari_viewer, (napari.layers.Image,))
        layout.addWidget(labeled("image", self.image_combo))
        self.new_button = QPushButton("New empty annotation layer")
        layout.addWidget(self.new_button)
        self.prediction_combo = LayerCombo(napari_viewer, (napari.layers.Labels,))
        layout.addWidget(labeled("prediction", self.prediction_combo))
        self.from_prediction_button = QPushButton("Start annotation from prediction")
        layout.addWidget(self.from_prediction_button)
        self.cells_button = QPushButton("Cells from points (click once per cell)")
        self.cells_button.setToolTip(
            "Click the middle of each cell in the 'cell points' layer, then click here: one "
            "object per point, grown on the probabilities of the image's last segmentation "
            "(when the model's foreground holds most clicks) or on the image, in a new "
            "annotation layer to correct"
        )
        layout.addWidget(self.cells_button)
        self.region_button = QPushButton("Mark annotated region (draw shapes)")
        self.region_button.setToolTip(
            "Only pixels inside the shapes count in training; leave it out when the whole image is annotated"
        )
        layout.addWidget(self.region_button)

        layout.addWidget(QLabel("<b>Edit labels</b>"))
        self.labels_combo = LayerCombo(napari_viewer, (napari.layers.Labels,))
        layout.addWidget(labeled("labels", self.labels_combo))
        self.merge_edit = QLineEdit()
        self.merge_edit.setPlaceholderText(
            "ids, e.g. 3, 7 (empty: the objects under the 'merge points')"
        )
        layout.addWidget(labeled("merge ids", self.merge_edit))
        layout.addStretch(1)

        # The edits, always in view (a biologist goes back and forth between them and the canvas).
        actions = pinned_layout(self)
        row = QWidget()
        row_layout = QHBoxLayout(row)
        row_layout.setContentsMargins(0, 0, 0, 0)
        self.merge_button = QPushButton("Merge")
        self.merge_button.setObjectName("merge_button")
        self.merge_button.setToolTip(
            "Merge the ids typed above or, with none typed, the objects under the points of the "
            "'merge points' layer (the first click adds it: put one point on each object)"
        )
        self.split_button = QPushButton("Split at points")
        self.split_button.setObjectName("split_button")
        self.split_button.setToolTip(
            "Place points on one object in the 'split points' layer, then click"
        )
        self.fill_button = QPushButton("Fill holes")
        self.fill_button.setObjectName("fill_button")
        self.fill_button.setToolTip("Fill the holes of the selected label")
        for button in (self.merge_button, self.split_button, self.fill_button):
            row_layout.addWidget(button)
        actions.addWidget(row)
        self.info = QLabel("")
        self.info.setObjectName("annotate_status")
        self.info.setWordWrap(True)
        actions.addWidget(self.info)
        join_plugin_docks(self)

        self.new_button.clicked.connect(self.new_annotation)
        self.from_prediction_button.clicked.connect(self.annotation_from_prediction)
        self.region_button.clicked.connect(self.add_region_layer)
        self.cells_button.clicked.connect(self.cells_from_points)
        self.merge_button.clicked.connect(self.merge)
        self.split_button.clicked.connect(self.split)
        self.fill_button.clicked.connect(self.fill_holes)

    def _image(self):
        layer = self.image_combo.layer()
        if layer is None:
            raise UNetError("add or open an image layer first")
        return layer

    def _add_annotation(self, data: np.ndarray, image) -> napari.layers.Labels:
        name = image.name + ANNOTATION_SUFFIX
        n = 2
        while name in self.viewer.layers:
            name = f"{image.name}{ANNOTATION_SUFFIX} {n}"
            n += 1
        ndim = data.ndim
        layer = self.viewer.add_labels(
            data, name=name, scale=image.scale[:ndim], translate=image.translate[:ndim]
        )
        layer.mode = "paint"
        layer.brush_size = 6
        layer.selected_label = int(data.max()) + 1
        self.labels_combo.set_layer(layer)
        return layer

    def new_annotation(self):
        try:
            image = self._image()
            layer = self._add_annotation(np.zeros(labels_shape(image), dtype=np.uint32), image)
        except UNetError as exc:
            report_error(exc)
            return None
        self.info.setText("paint one label per cell; press M for a new label id")
        return layer

    def annotation_from_prediction(self):
        try:
            image = self._image()
            prediction = self.prediction_combo.layer()
            if prediction is None:
                raise UNetError("segment the image first (Segment widget) or choose a labels layer")
            if prediction.data.shape != labels_shape(image):
                raise UNetError(
                    f"the prediction {prediction.data.shape} does not match the image {labels_shape(image)}"
                )
            layer = self._add_annotation(
                np.array(prediction.data, dtype=np.uint32, copy=True), image
            )
        except UNetError as exc:
            report_error(exc)
            return None
        self.info.setText("correct the prediction: paint, erase, merge or split; then train")
        return layer

    def cells_from_points(self):
        """Grow one cell per point of the 'cell points' layer into a new annotation layer."""
        name = CELL_POINTS
        try:
            image = self._image()
            if image.rgb or image.ndim != 2:
                raise UNetError("cells from points works on one 2D grey image plane")
            if name not in self.viewer.layers or len(self.viewer.layers[name].data) == 0:
                if name not in self.viewer.layers:
                    points = self.viewer.add_points(name=name, size=10, face_color="cyan", ndim=2)
                    points.mode = "add"
                raise UNetError(
                    "click the middle of each cell in the 'cell points' layer, then click again"
                )
            points = self.viewer.layers[name]
            coords = np.array([image.world_to_data(points.data_to_world(p)) for p in points.data])
            probs, classes = self._probabilities_for(image)
            note = ""
            if probs is not None:
                held = clicks_in_foreground(coords, probs, classes)
                if held < 0.5 * len(coords):
                    # The model does not see these objects (whole cells given to a
                    # nuclei model): its probabilities would shrink every cell to a dot.
                    note = (
                        f" (the model's foreground holds only {held} of the {len(coords)} clicks)"
                    )
                    probs, classes = None, ()
            labels = cells_from_points(coords, np.asarray(image.data), probs, classes)
            layer = self._add_annotation(labels.astype(np.uint32), image)
        except UNetError as exc:
            report_error(exc)
            return None
        grown_on = "the model's probabilities" if probs is not None else "the image"
        self.info.setText(
            f"{len(coords)} cells grown on {grown_on}{note}: correct them, then train"
        )
        return layer

    def _probabilities_for(self, image):
        """The model's probabilities for ``image`` as (C, Y, X), and their classes.

        The probability layers Segment showed ("also show probability maps"),
        else those of Segment's last run on this image; (None, ()) when it
        was not segmented.
        """
        from ..labels.instances import CLASS_SCHEMES

        shape = tuple(np.shape(image.data))
        for classes in CLASS_SCHEMES.values():
            names = [f"{image.name} {cls} probability" for cls in classes[1:]]
            if all(n in self.viewer.layers for n in names):
                maps = [np.asarray(self.viewer.layers[n].data, dtype=np.float32) for n in names]
                if all(m.shape == shape for m in maps):
                    background = np.clip(1 - np.sum(maps, axis=0), 0, 1)
                    return np.stack([background, *maps]), classes
        return probability_store.borrow(image.unique_id, shape)

    def add_region_layer(self):
        try:
            image = self._image()
        except UNetError as exc:
            report_error(exc)
            return None
        name = image.name + REGION_SUFFIX
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
        else:
            layer = self.viewer.add_shapes(
                name=name,
                face_color="transparent",
                edge_color="yellow",
                edge_width=3,
                scale=image.scale[-2:] if not image.rgb else image.scale[-3:-1],
            )
        layer.mode = "add_rectangle"
        self.info.setText("draw rectangles or polygons around the part you annotated")
        return layer

    # editing ----------------------------------------------------------------
    def _labels(self):
        layer = self.labels_combo.layer()
        if layer is None:
            raise UNetError("choose a labels layer to edit")
        return layer

    def _edit(self, layer, new_data: np.ndarray) -> None:
        """Apply an edit as one step of napari's undo history (undo and redo work on it).

        Only the changed pixels are written, through ``data_setitem`` inside
        ``block_history``, which records them as a single history atom;
        replacing ``layer.data`` would drop the history instead.
        """
        changed = np.nonzero(new_data != layer.data)
        if not changed[0].size:
            return
        with layer.block_history():
            layer.data_setitem(changed, new_data[changed])

    def merge(self) -> None:
        try:
            layer = self._labels()
            text = self.merge_edit.text().replace(";", ",").strip()
            if text:
                ids = [int(t) for t in text.replace(" ", ",").split(",") if t.strip()]
            else:
                ids = self._ids_under_points(layer, MERGE_POINTS, "merge", "on each object")
            self._edit(layer, merge_labels(layer.data, ids))
            self.info.setText(f"merged {ids[1:]} into {ids[0]}")
        except ValueError:
            report_error(UNetError("label ids must be whole numbers separated by commas"))
        except UNetError as exc:
            report_error(exc)

    def _points_layer(self, name: str, ndim: int, action: str, where: str):
        """The points layer ``name`` when it holds two or more points, else a UNetError.

        A missing layer is added, in "add" mode, so the next clicks place points.
        """
        if name in self.viewer.layers and len(self.viewer.layers[name].data) >= 2:
            return self.viewer.layers[name]
        if name not in self.viewer.layers:
            points = self.viewer.add_points(name=name, size=8, face_color="red", ndim=ndim)
            points.mode = "add"
        raise UNetError(
            f"place two or more points {where} in the {name!r} layer, then click {action} again"
        )

    def _ids_under_points(self, layer, name: str, action: str, where: str) -> list[int]:
        """The label ids under the points of ``name`` (in click order; the points are used up).

        Merging by what the user pointed at, never by napari's selected label
        and the cursor: after "from prediction" the selected label may not
        exist, and the cursor was on the button, not on a nucleus.
        """
        points = self._points_layer(name, layer.ndim, action, where)
        ids: list[int] = []
        for p in points.data:
            coord = np.round(layer.world_to_data(points.data_to_world(p))).astype(int)
            inside = all(0 <= c < n for c, n in zip(coord, layer.data.shape))
            value = int(layer.data[tuple(coord)]) if inside else 0
            if value == 0:
                raise UNetError(f"a point of {name!r} is on the background: put each on an object")
            if value not in ids:
                ids.append(value)
        if len(ids) < 2:
            raise UNetError(f"the points of {name!r} are all on object {ids[0]}: one per object")
        points.data = np.zeros((0, layer.ndim))
        return ids

    def split(self) -> None:
        try:
            layer = self._labels()
            points = self._points_layer(SPLIT_POINTS, layer.ndim, "Split", "on the object")
            coords = [layer.world_to_data(points.data_to_world(p)) for p in points.data]
            self._edit(layer, split_label(layer.data, coords))
            points.data = np.zeros((0, layer.ndim))
            self.info.setText(f"split into {len(coords)} objects")
        except UNetError as exc:
            report_error(exc)

    def fill_holes(self) -> None:
        try:
            layer = self._labels()
            label = int(layer.selected_label)
            before = int(np.count_nonzero(layer.data == label))
            self._edit(layer, fill_label_holes(layer.data, label))
            added = int(np.count_nonzero(layer.data == label)) - before
            self.info.setText(f"filled {added} pixel(s) of holes in label {label}")
        except UNetError as exc:
            report_error(exc)
