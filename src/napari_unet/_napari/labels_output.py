"""Where the Segment widget writes its results: each image's labels layer.

A fingerprint of what was last written into each labels layer (not a copy:
a copy doubled the memory of stacks) tells the widget's own writes from a
user's edits; a layer edited by hand is kept and the result goes to a new one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import napari
import numpy as np

from ..labels.instances import offset_ids
from ._common import DERIVED_KEY
from .layer_shapes import labels_shape


def fingerprint(data: np.ndarray) -> tuple:
    """Shape, type and a SHA-256 digest of an array: equal only for equal contents.

    SHA-256 (hardware-accelerated on current CPUs) hashes a 2048² uint16
    plane in ~5 ms, half of BLAKE2b's time here: the check runs in the GUI
    thread before each write.
    """
    digest = hashlib.sha256(np.ascontiguousarray(data).view(np.uint8).reshape(-1))
    return data.shape, data.dtype.str, digest.hexdigest()


@dataclass
class Target:
    """Where a run's result goes in the output layer: a plane index and a Y/X window."""

    plane: tuple[int, ...]  # index into the leading (stack) axes; () for the whole stack
    window: tuple[slice, slice]


class LabelsOutput:
    """The Segment widget's writing of labels and probability layers (a mixin)."""

    def _kept_note(self) -> str:
        if self._kept_edits is None:
            return ""
        return f"; {self._kept_edits!r} was edited by hand and is kept: result in a new layer"

    # output layers -----------------------------------------------------------
    def _edited_by_hand(self, layer) -> bool:
        """True when ``layer`` holds something other than what this widget last wrote into it."""
        written = self._written.get(layer.unique_id)
        return written is None or fingerprint(np.asarray(layer.data)) != written

    def labels_layer(self, image_layer, initial: np.ndarray | None = None):
        """The layer this widget writes ``image_layer``'s labels into.

        Its own layer when it holds what this widget last wrote; otherwise
        (none yet, or edited by hand) a new layer holding ``initial`` (zeros
        when None): hand edits are never overwritten.
        """
        name = f"{image_layer.name} labels"
        shape = labels_shape(image_layer)
        if name in self.viewer.layers:
            existing = self.viewer.layers[name]
            if isinstance(existing, napari.layers.Labels) and existing.data.shape == shape:
                if not self._edited_by_hand(existing):
                    return existing
                n = 2
                while f"{name} ({n})" in self.viewer.layers:
                    n += 1
                name = f"{name} ({n})"
                self._kept_edits = existing.name
        # Made with its data at once: a layer filled after it is added is drawn twice.
        return self.viewer.add_labels(
            np.zeros(shape, dtype=np.uint32) if initial is None else initial,
            name=name,
            scale=image_layer.scale[: len(shape)] if not image_layer.rgb else image_layer.scale,
            translate=image_layer.translate[: len(shape)]
            if not image_layer.rgb
            else image_layer.translate,
        )

    def _write_labels(
        self, image_layer, labels: np.ndarray, target: Target, digest: tuple | None = None
    ) -> None:
        """Write ``labels`` for ``target`` of ``image_layer``'s labels layer (never over hand edits).

        ``digest`` is ``fingerprint(labels)`` when the caller made it already.
        """
        if not target.plane and target.window == (slice(None), slice(None)):
            # The core's dtype is kept (uint16 while the ids fit): napari draws
            # it faster than uint32.
            out = self.labels_layer(image_layer, initial=labels)
            if out.data is not labels:
                out.data = labels
        else:
            out = self.labels_layer(image_layer)
            data = out.data
            region = (
                data[target.plane + (Ellipsis,)][target.window]
                if target.plane
                else data[target.window]
            )
            region[...] = 0
            # New ids continue after those already in the layer, so nothing merges by accident.
            offset = int(data.max())
            if offset + int(labels.max()) > np.iinfo(data.dtype).max:
                out.data = data = data.astype(np.uint32)
                region = (
                    data[target.plane + (Ellipsis,)][target.window]
                    if target.plane
                    else data[target.window]
                )
            shifted = labels.astype(data.dtype)
            offset_ids(shifted, offset)
            region[...] = shifted
            out.refresh()
        contour = 2 if self.outline_check.isChecked() else 0
        if out.contour != contour:  # setting it redraws the layer, even to the same value
            out.contour = contour
        if not out.visible:
            # napari redraws a layer on every visible = True, shown or not:
            # a second 2048² upload after the one the new data made.
            out.visible = True
        whole = out.data is labels and digest is not None
        self._written[out.unique_id] = digest if whole else fingerprint(np.asarray(out.data))
        self.results_written += 1

    def _show_probabilities(self, image_layer, model, probs: np.ndarray, target: Target) -> None:
        for k, cls in enumerate(model.classes):
            if cls == "background":
                continue
            name = f"{image_layer.name} {cls} probability"
            shape = labels_shape(image_layer)
            if name in self.viewer.layers and self.viewer.layers[name].data.shape == shape:
                layer = self.viewer.layers[name]
            else:
                layer = self.viewer.add_image(
                    np.zeros(shape, dtype=np.float32),
                    name=name,
                    colormap="magma",
                    blending="additive",
                    contrast_limits=(0, 1),
                    visible=True,
                    metadata={DERIVED_KEY: True},
                    opacity=0.6,
                )
                # Under the labels, just above their image: the labels stay visible.
                layers = self.viewer.layers
                layers.move(layers.index(layer), layers.index(image_layer) + 1)
            data = layer.data
            if target.plane:
                data[target.plane + (Ellipsis,)][target.window] = probs[k]
            else:
                data[(Ellipsis,) + target.window] = probs[k]
            layer.refresh()
