"""How a napari layer's data maps to the axes the core expects: one home for the widgets."""

from __future__ import annotations

import numpy as np

from ..errors import UNetError


def image_axes(layer) -> str:
    """Axes of an image layer's data: leading stack axes (Z, or T and Z), then Y, X (and C if RGB)."""
    nd = layer.data[0].ndim if layer.multiscale else layer.data.ndim
    lead = nd - (3 if layer.rgb else 2)
    if lead not in (0, 1, 2):
        raise UNetError(
            f"images with {nd} dimensions are not supported; use at most T, Z, Y, X (and RGB)"
        )
    return ("", "Z", "TZ")[lead] + ("YXC" if layer.rgb else "YX")


def visible_window(layer, shape_yx: tuple[int, int]) -> tuple[slice, slice]:
    """The Y/X part of the image currently on screen (whole image when unknown)."""
    corners = np.asarray(layer.corner_pixels)
    if corners.size == 0:
        return slice(0, shape_yx[0]), slice(0, shape_yx[1])
    (y0, x0), (y1, x1) = corners[0, -2:], corners[1, -2:]
    if layer.rgb:
        (y0, x0), (y1, x1) = corners[0, -3:-1], corners[1, -3:-1]
    y0, x0 = max(int(y0), 0), max(int(x0), 0)
    y1, x1 = min(int(y1) + 1, shape_yx[0]), min(int(x1) + 1, shape_yx[1])
    if y1 - y0 < 2 or x1 - x0 < 2:
        return slice(0, shape_yx[0]), slice(0, shape_yx[1])
    return slice(y0, y1), slice(x0, x1)


def labels_shape(image_layer) -> tuple[int, ...]:
    """Shape of a labels layer matching an image layer: the image's shape without colour."""
    data = image_layer.data[0] if image_layer.multiscale else image_layer.data
    return tuple(s for s, a in zip(data.shape, image_axes(image_layer)) if a != "C")


def region_mask(shapes_layer, shape_yx: tuple[int, int]) -> np.ndarray:
    """Union of a Shapes layer's shapes as a boolean (Y, X) mask."""
    if shapes_layer is None or len(shapes_layer.data) == 0:
        return np.ones(shape_yx, dtype=bool)
    masks = shapes_layer.to_masks(mask_shape=shape_yx)
    return np.asarray(masks).reshape(-1, *shape_yx).any(axis=0)
