"""Show the paper's border weight map for a Labels layer: what the loss emphasizes.

A plain parameter form, so it is a magicgui function: magicgui builds the
controls, keeps the labels choice in step with the viewer, and napari adds the
returned layer (or updates the one of the same name).
"""

from __future__ import annotations

import napari
import numpy as np
from magicgui import magic_factory
from qtpy.QtWidgets import QSizePolicy

from ..errors import UNetError
from ..training.weights import weight_maps_per_plane
from ._common import DERIVED_KEY, join_plugin_docks, report_error

FORMULA = (
    "w = w_c + w0 exp(-(d1 + d2)² / 2 sigma²), on the labels with touching borders set to "
    "background, as in training"
)


def _laptop_layout(widget) -> None:
    """The formula wraps (unwrapped it forced the dock column to 966 px); the dock joins the others."""
    label = widget.formula.native
    label.setWordWrap(True)
    # Its text's width is not a reason to widen the dock: it takes what the column has.
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    join_plugin_docks(widget.native)


@magic_factory(
    widget_init=_laptop_layout,
    call_button="Show weight map",
    labels_layer={"label": "labels", "tooltip": "instance labels to show the weights of"},
    w0={"label": "w0", "min": 0.0, "max": 100.0, "tooltip": "amplitude of the border term"},
    sigma={"label": "sigma (px)", "min": 0.5, "max": 50.0, "tooltip": "width of the border term"},
    formula={"widget_type": "Label", "label": "", "value": FORMULA},
)
def weight_map_widget(
    labels_layer: napari.layers.Labels,
    w0: float = 10.0,
    sigma: float = 5.0,
    formula: str = FORMULA,
) -> napari.types.LayerDataTuple:
    """Compute the training weight map of ``labels_layer``, plane by plane.

    Parameters
    ----------
    labels_layer
        The labels layer.
    w0, sigma
        Amplitude and width (pixels) of the paper's border term.
    formula
        The formula, shown as a label (not an input).

    Returns
    -------
    napari.types.LayerDataTuple or None
        A "<labels layer> weight map" image layer, or None after reporting a mistake.
    """
    try:
        if labels_layer is None:
            raise UNetError("choose a labels layer")
        weights = weight_maps_per_plane(np.asarray(labels_layer.data), w0, sigma)
    except UNetError as exc:
        report_error(exc)
        return None
    meta = {
        "name": f"{labels_layer.name} weight map",
        "colormap": "magma",
        "scale": labels_layer.scale,
        "translate": labels_layer.translate,
        "metadata": {DERIVED_KEY: True},
        "contrast_limits": (0.0, float(weights.max()) or 1.0),
    }
    return weights, meta, "image"
