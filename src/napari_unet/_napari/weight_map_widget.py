"""Show the paper's border weight map for a Labels layer: what the loss emphasizes."""

from __future__ import annotations

import napari
import numpy as np
from qtpy.QtWidgets import QDoubleSpinBox, QLabel, QPushButton, QWidget

from ..errors import UNetError
from ..weights import border_weight_map, separated_labels
from ._common import DERIVED_KEY, LayerCombo, labeled, report_error, scrolling_layout


class WeightMapWidget(QWidget):
    def __init__(self, napari_viewer: napari.Viewer, parent=None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        layout = scrolling_layout(self)
        self.labels_combo = LayerCombo(napari_viewer, (napari.layers.Labels,))
        layout.addWidget(labeled("labels", self.labels_combo))
        self.w0_spin = QDoubleSpinBox()
        self.w0_spin.setRange(0, 100)
        self.w0_spin.setValue(10.0)
        layout.addWidget(labeled("w0", self.w0_spin))
        self.sigma_spin = QDoubleSpinBox()
        self.sigma_spin.setRange(0.5, 50)
        self.sigma_spin.setValue(5.0)
        layout.addWidget(labeled("sigma (px)", self.sigma_spin))
        self.show_button = QPushButton("Show weight map")
        layout.addWidget(self.show_button)
        note = QLabel(
            "w(x) = w_c(x) + w0 exp(-(d1 + d2)^2 / 2 sigma^2), computed on the labels with touching "
            "borders set to background, as in training."
        )
        note.setWordWrap(True)
        layout.addWidget(note)
        layout.addStretch(1)
        self.show_button.clicked.connect(self.show_weight_map)

    def show_weight_map(self):
        layer = self.labels_combo.layer()
        try:
            if layer is None:
                raise UNetError("choose a labels layer")
            data = np.asarray(layer.data)
            w0, sigma = float(self.w0_spin.value()), float(self.sigma_spin.value())
            if data.ndim == 2:
                weights = border_weight_map(separated_labels(data), w0, sigma)
            else:
                planes = data.reshape(-1, *data.shape[-2:])
                weights = np.stack(
                    [border_weight_map(separated_labels(p), w0, sigma) for p in planes]
                )
                weights = weights.reshape(data.shape)
        except UNetError as exc:
            report_error(exc)
            return None
        name = f"{layer.name} weight map"
        if name in self.viewer.layers:
            out = self.viewer.layers[name]
            out.data = weights
        else:
            out = self.viewer.add_image(
                weights,
                name=name,
                colormap="magma",
                scale=layer.scale,
                translate=layer.translate,
                metadata={DERIVED_KEY: True},
            )
        out.contrast_limits = (0.0, float(weights.max()) or 1.0)
        return out
