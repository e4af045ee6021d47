"""The one-call API: image in, instance labels out.

``segment(image)`` normalizes each plane over the whole plane, predicts class
probabilities tile by tile, and turns them into labels with the watershed
post-processing. Stacks (Z or T) are processed plane by plane; colour or
channel axes are mapped to what the model takes.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UNetError
from .instances import InstanceParams, instances_from_probabilities
from .io import check_axes, infer_axes
from .modelfile import SegmentationModel, get_model
from .normalize import check_finite_array, normalize, to_channels_first
from .progress import Progress, run_to_end
from .tiling import iter_predict_tiled, prepare_model, resolve_device, resolve_precision

# Small objects are segmented again from an enlarged image, by at most this
# much; a smaller enlargement than MIN_UPSCALE gains less than the second pass costs.
MAX_UPSCALE = 2.0
MIN_UPSCALE = 1.25


def upscale_factor(labels: np.ndarray, target_area: float) -> float:
    """How much to enlarge a plane so its median object covers ``target_area`` pixels (1: not at all)."""
    if target_area <= 0:
        return 1.0
    areas = np.bincount(labels.reshape(-1))[1:]
    areas = areas[areas > 0]
    if len(areas) == 0:
        return 1.0
    factor = min(MAX_UPSCALE, float(np.sqrt(target_area / np.median(areas))))
    return factor if factor >= MIN_UPSCALE else 1.0


def _resize_channels(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
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


@dataclass
class PlaneLayout:
    """Where the planes, the channels and Y/X are in an array with given axes."""

    axes: str

    @property
    def channel_axis(self) -> int | None:
        return self.axes.index("C") if "C" in self.axes else None

    @property
    def plane_axes(self) -> list[int]:
        return [i for i, a in enumerate(self.axes) if a not in "CYX"]

    def plane_indices(self, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        sizes = [shape[i] for i in self.plane_axes]
        return [tuple(ix) for ix in np.ndindex(*sizes)] if sizes else [()]

    def take_plane(self, array, index: tuple[int, ...]) -> tuple[np.ndarray, int | None]:
        """The plane at ``index`` as (array with Y, X and maybe C, its channel axis)."""
        sl = [slice(None)] * len(self.axes)
        for axis, i in zip(self.plane_axes, index):
            sl[axis] = i
        plane = np.asarray(array[tuple(sl)])
        rest = [a for a in self.axes if a in "CYX"]
        # Y and X must be in that order; move them last with C first for the model.
        channel = rest.index("C") if "C" in rest else None
        if rest.index("Y") > rest.index("X"):
            plane = np.swapaxes(plane, rest.index("Y"), rest.index("X"))
        return plane, channel

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(shape[i] for i, a in enumerate(self.axes) if a != "C" and a not in "YX") + (
            shape[self.axes.index("Y")],
            shape[self.axes.index("X")],
        )


def resolve_axes(shape: tuple[int, ...], axes: str | None, rgb: bool | None = None) -> str:
    return check_axes(axes, len(shape)) if axes else infer_axes(tuple(shape), rgb)


def _predict_with_progress(net, chw: np.ndarray, info: dict, tiling: dict):
    """Tiled prediction of one plane, re-yielding its progress with ``info`` added; returns probabilities."""
    gen = iter_predict_tiled(net, chw, **tiling)
    while True:
        try:
            ev = next(gen)
        except StopIteration as done:
            return done.value
        yield Progress("predict", ev.step, ev.total, {**ev.info, **info})


def iter_segment(
    image,
    model: str | Path | SegmentationModel = "default",
    *,
    axes: str | None = None,
    rgb: bool | None = None,
    tile_size: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    precision: str = "auto",
    params: InstanceParams | None = None,
    normalize_input: bool = True,
    return_probabilities: bool = False,
    value_range: tuple[float, float] | None = None,
) -> Generator[Progress, None, np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """Generator form of :func:`segment`: yields progress per tile batch and plane."""
    seg_model = get_model(model)
    arr = image if hasattr(image, "shape") else np.asarray(image)
    if len(arr.shape) < 2:
        raise UNetError(
            f"an image needs at least 2 dimensions (Y, X); got shape {tuple(arr.shape)}"
        )
    if 0 in arr.shape:
        raise UNetError(f"the image is empty (shape {tuple(arr.shape)})")
    layout = PlaneLayout(resolve_axes(arr.shape, axes, rgb))
    params = params or seg_model.postprocessing
    dev = resolve_device(device)
    net = prepare_model(seg_model.net, dev, resolve_precision(precision, dev))
    planes = layout.plane_indices(arr.shape)
    out_shape = layout.output_shape(arr.shape)
    labels_out = np.zeros(out_shape, dtype=np.uint32)
    probs_out = (
        np.zeros((seg_model.net.config.n_classes, *out_shape), dtype=np.float32)
        if return_probabilities
        else None
    )
    offset = 0
    for p, index in enumerate(planes):
        plane, channel_axis = layout.take_plane(arr, index)
        check_finite_array(plane)
        chw = to_channels_first(plane, channel_axis, seg_model.in_channels)
        if normalize_input:
            chw = normalize(chw, seg_model.normalization, value_range)
        tiling = dict(tile_size=tile_size, batch_size=batch_size, device=dev, prepared=True)
        info = {"plane": p, "planes": len(planes)}
        probs = yield from _predict_with_progress(net, chw, info, tiling)
        labels = instances_from_probabilities(probs, params, seg_model.scheme)
        factor = upscale_factor(labels, params.upscale_to_area)
        if factor > 1.0:
            # Tiny objects: segment again from the plane enlarged, then bring the
            # probabilities back to the plane's grid so labels keep its shape.
            enlarged = _resize_channels(chw, tuple(round(n * factor) for n in chw.shape[1:]))
            info["upscaled"] = round(factor, 2)
            big = yield from _predict_with_progress(net, enlarged, info, tiling)
            probs = _resize_channels(big, chw.shape[1:])
            labels = instances_from_probabilities(probs, params, seg_model.scheme)
        labels = labels.astype(np.uint32)
        # Ids stay unique across the whole stack so no two planes share an id by accident.
        labels[labels > 0] += offset
        offset = max(offset, int(labels.max()))
        labels_out[index] = labels
        if probs_out is not None:
            probs_out[(slice(None), *index)] = probs
        yield Progress("segment", p + 1, len(planes), {"objects": offset})
    if offset <= np.iinfo(np.uint16).max:
        labels_out = labels_out.astype(np.uint16)
    return (labels_out, probs_out) if return_probabilities else labels_out


def segment(image, model: str | Path | SegmentationModel = "default", **kwargs):
    """Segment cells or nuclei: normalize, predict tiled, post-process.

    Parameters
    ----------
    image
        2D grey, RGB(A), channels, or a Z/T stack of those (numpy or array-like).
    model
        "default" (alias "nuclei", shipped with the package), a model file path,
        or a loaded :class:`~napari_unet.modelfile.SegmentationModel`.
    axes
        Axes of ``image`` such as "YX", "YXC", "CYX", "ZYX", "TZYX"; guessed when omitted.
    tile_size, batch_size, device, precision
        Passed to :func:`~napari_unet.tiling.predict_tiled`.
    params
        Post-processing thresholds (default: the model's own).
    normalize_input
        False when ``image`` is already normalized.
    return_probabilities
        Also return the class probabilities (classes first).

    Returns
    -------
    labels (uint16, or uint32 above 65535 objects) with the image's shape
    minus its channel axis; or ``(labels, probabilities)``.
    """
    return run_to_end(iter_segment(image, model, **kwargs))


def labels_from_probabilities(
    probs: np.ndarray, model: SegmentationModel, params: InstanceParams | None = None
):
    """Re-run only the post-processing on cached probabilities (classes first; any leading stack axes)."""
    params = params or model.postprocessing
    if probs.ndim == 3:
        return instances_from_probabilities(probs, params, model.scheme)
    out = np.zeros(probs.shape[1:], dtype=np.uint32)
    offset = 0
    for index in np.ndindex(*probs.shape[1:-2]):
        lab = instances_from_probabilities(
            probs[(slice(None), *index)], params, model.scheme
        ).astype(np.uint32)
        lab[lab > 0] += offset
        offset = max(offset, int(lab.max()))
        out[index] = lab
    return out.astype(np.uint16) if offset <= np.iinfo(np.uint16).max else out
