"""The size rule: how much a plane is resized so its nuclei reach the sizes a model was trained on.

One home for the rule that ``segment`` (whole images, stacks, blocks) and
fine-tuning share: a plane whose nuclei are far from the model's training
sizes is segmented resized, and an annotated image is trained on resized
the same way, so a fine-tuned network learns nuclei at the scale it will
see them.
"""

from __future__ import annotations

import numpy as np

from .errors import UNetError
from .instances import InstanceParams

# A plane is segmented again, rescaled, when its objects are far from the
# training sizes: enlarged by at most MAX_UPSCALE (3: nuclei of a 0.5x image
# gained up to 3 on held-out train images, scripts/tune_rescaling.py), by
# MAX_DIAMETER_UPSCALE when the user gives their diameter, shrunk by at most
# 1 / MIN_DOWNSCALE; a change smaller than RESCALE_WORTH gains less than the
# second pass costs.
MAX_UPSCALE = 3.0
MAX_DIAMETER_UPSCALE = 4.0
MIN_DOWNSCALE = 0.25
RESCALE_WORTH = 1.25


def median_object_area(labels: np.ndarray) -> float | None:
    """Median area of the objects in ``labels`` (None when there are none)."""
    areas = np.bincount(labels.reshape(-1))[1:]
    areas = areas[areas > 0]
    return float(np.median(areas)) if len(areas) else None


def rescale_factor(labels: np.ndarray, params: InstanceParams) -> float:
    """How much to resize a plane whose first-pass objects are ``labels`` (1: not at all)."""
    area = median_object_area(labels)
    return 1.0 if area is None else factor_for_area(area, params)


def factor_for_area(area: float, params: InstanceParams) -> float:
    """How much to resize a plane whose median object measures ``area`` pixels (1: not at all).

    Tiny objects (median under ``upscale_from_area``, or ``upscale_to_area``
    when that is 0) are enlarged to reach ``upscale_to_area``; huge ones
    (over ``downscale_from_area``) shrunk to reach ``object_area``.
    """
    factor = 1.0
    enlarge_below = params.upscale_from_area or params.upscale_to_area
    if params.upscale_to_area > 0 and area < enlarge_below:
        factor = float(np.clip(np.sqrt(params.upscale_to_area / area), 1.0, MAX_UPSCALE))
    elif params.downscale_from_area > 0 and area > params.downscale_from_area:
        target = params.object_area or params.downscale_from_area / 4
        factor = max(MIN_DOWNSCALE, float(np.sqrt(target / area)))
    worth = factor >= RESCALE_WORTH or factor <= 1 / RESCALE_WORTH
    return factor if worth else 1.0


def diameter_factor(diameter: float, params: InstanceParams) -> float:
    """Resize factor that brings nuclei of ``diameter`` pixels to the model's training size."""
    if not diameter > 0:
        raise UNetError(f"the nucleus diameter must be a positive number of pixels, got {diameter}")
    if params.object_area <= 0:
        raise UNetError(
            "this model does not record the nucleus size it was trained on; "
            "segment without a diameter (sizes are then estimated)"
        )
    area = np.pi * diameter**2 / 4
    return float(np.clip(np.sqrt(params.object_area / area), MIN_DOWNSCALE, MAX_DIAMETER_UPSCALE))


def block_means(chw: np.ndarray, step: int) -> np.ndarray | None:
    """(C, Y, X) seen through the means of ``step`` x ``step`` pixel blocks (None: too small).

    An eighth of the time of a smoothed resize; a look that only measures
    sizes can leave out the few edge pixels that do not fill a block.
    """
    rows, cols = chw.shape[1] // step, chw.shape[2] // step
    if min(rows, cols) == 0:
        return None
    blocks = chw[:, : rows * step, : cols * step].reshape(len(chw), rows, step, cols, step)
    return blocks.mean(axis=(2, 4), dtype=np.float32)


def resize_channels(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C, Y, X) resampled to ``shape``, linearly, pixel centres on pixel centres.

    The same geometry both ways (smoothed when shrinking), so enlarging, then
    shrinking the result, puts every object back where it was.
    """
    from skimage.transform import resize

    shrinking = shape[0] < image.shape[1]
    out = resize(
        image, (image.shape[0], *shape), order=1, anti_aliasing=shrinking, preserve_range=True
    )
    return out.astype(np.float32)


def enlarge_channels(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C, Y, X) enlarged to ``shape`` linearly: :func:`resize_channels`' geometry, about 25x faster.

    torch's bilinear interpolation maps pixel centres as skimage does (equal
    to 1e-4 inside); only the outermost pixels differ, edges being held
    rather than mirrored. For re-labelling probabilities at the size the
    network saw them, where skimage took 0.9 s for a 1000² plane enlarged 2.5x.
    """
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    out = torch.nn.functional.interpolate(
        tensor, size=tuple(shape), mode="bilinear", align_corners=False
    )
    return out[0].numpy()


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Labels or a mask (Y, X) resized to ``shape``: nearest neighbour, the images' geometry."""
    from skimage.transform import resize

    out = resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True)
    return out.astype(labels.dtype)


def resized_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    """(Y, X) of a plane of ``shape`` (its last two axes) resized by ``factor``."""
    return tuple(max(1, round(n * factor)) for n in shape[-2:])
