"""The one-call API: image in, instance labels out.

``segment(image)`` normalizes each plane over the whole plane, predicts class
probabilities tile by tile, and turns them into labels with the watershed
post-processing. Stacks (Z or T) are processed plane by plane; colour or
channel axes are mapped to what the model takes.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..devices import resolve_device, resolve_precision
from ..errors import UNetError
from ..heap import reusing_freed_memory
from ..images.normalize import (
    check_finite_array,
    check_image_type,
    normalize,
    to_channels_first,
)
from ..images.planes import (
    PlaneLayout,
    axes_with_channels,
    resolve_axes,
)
from ..labels.instances import (
    InstanceParams,
    instances_from_probabilities,
    narrowed,
    offset_ids,
)
from ..labels.stitching import DEFAULT_STITCH_THRESHOLD, check_threshold, link_planes
from ..models.modelfile import (
    SegmentationModel,
    convert_for_segmenting,
    get_model,
)
from ..models.size_model import predicted_factor, reads_first_pass
from ..models.sizes import (
    MIN_DOWNSCALE,
    RESCALE_WORTH,
    SizeRule,
    block_means,
    factor_for_area,
    median_diameter,
    median_object_area,
    resize_channels,
    resized_shape,
    segmenting_scale,
)
from ..models.tiling import EncoderMeans, iter_predict_tiled, prepare_model
from ..progress import Progress, Stage, run_to_end
from .notes import (
    InputWarning,
    input_notes,
    note_collector,
    object_notes,
    type_notes,
)
from .relabel import instances_at_scale


def available_memory() -> int | None:
    """Bytes of memory available now (None where the system does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed: int) -> None:
    """Refuse, before allocating, outputs that cannot fit in memory."""
    available = available_memory()
    if available is not None and needed > available:
        raise UNetError(
            f"the labels of this image need {needed / 1e9:.1f} GB of memory but "
            f"{available / 1e9:.1f} GB are available; segment fewer planes at a time "
            "(e.g. a Z range) or a 2D image block by block"
        )


COARSE_LOOK_STEP = 3  # the coarse look sees 3x3 pixel means: a ninth of the first pass's work
COARSE_LOOK_MIN_OBJECTS = 5  # fewer whole objects at a third: no size to trust


def _coarse_look_factor(
    net,
    chw,
    area: float | None,
    first_factor: float,
    params: InstanceParams,
    rule: SizeRule,
    scheme: str,
    info,
    tiling,
):
    """The shrink factor a look at a third of the size calls for, or None (see SizeRule).

    ``area`` is the first pass's median object area, ``first_factor`` what it
    calls for (:func:`factor_for_area`); ``params`` label the look.
    """
    if rule.coarse_look_from_area <= 0 or area is None:
        return None
    if first_factor <= 1 and area < rule.coarse_look_from_area:
        return None  # not tiny enough to enlarge, not large: nothing to doubt
    step = COARSE_LOOK_STEP
    small = block_means(chw, step)
    if small is None:
        return None
    probs = yield from _predict_with_progress(net, small, {**info, "coarse_look": True}, tiling)
    coarse = instances_from_probabilities(probs, params, scheme)
    if coarse.max() < COARSE_LOOK_MIN_OBJECTS:
        return None
    # Only shrinking is decided here: at a third, tiny dense nuclei merge into
    # clumps that look normal, so a normal size seen there proves nothing.
    estimate = median_object_area(coarse) * step**2
    if estimate <= rule.downscale_from_area or rule.object_area <= 0:
        return None
    return factor_for_area(estimate, rule)


def _size_model_shrink(
    model: SegmentationModel,
    nets: PreparedNets,
    chw: np.ndarray,
    first_factor: float,
    rule: SizeRule,
    first_pass: np.ndarray | None = None,
) -> float | None:
    """The shrink factor the model's size model calls for, or None (no size model, no shrinking).

    Only shrinking: the size model read nuclei at 2x and 3x far better than
    the first pass and its coarse look, while the first pass decides
    enlargements as well (scripts/train_size_model.py). ``first_pass``: the
    plane's encoder means, when the first pass gathered them.
    """
    size_model = model.size_model
    if size_model is None or rule.object_area <= 0 or first_factor < 1 / RESCALE_WORTH:
        return None
    # The run's own network (device, precision): a GPU run stays on the GPU, and
    # bfloat16 moves the predicted areas by under 3% (size_model.size_features).
    net = nets(model, grey=chw.shape[0] < model.in_channels)
    factor = predicted_factor(size_model, net, chw, rule.object_area, first_pass)
    return max(MIN_DOWNSCALE, factor) if factor < size_model.shrink_below else None


@dataclass
class PlaneResult:
    """What :func:`iter_segment_plane` returns for one plane."""

    labels: np.ndarray  # uint32, ids 1..n
    probabilities: np.ndarray  # classes first, on the plane's grid
    image_type: str  # "fluorescence", "brightfield", or "prepared" (input given normalized)
    scale: float  # the resize factor used for the final pass (1: none)
    notes: list[str] = field(default_factory=list)


class PreparedNets:
    """Networks prepared for one device and precision, once per model (a run may use two)."""

    def __init__(self, device, dtype) -> None:
        self.device, self.dtype = device, dtype
        # Keyed by (id(model), grey); the model is kept beside its net so the id stays its own.
        self._nets: dict[tuple[int, bool], tuple[SegmentationModel, object]] = {}

    def __call__(self, model: SegmentationModel, grey: bool = False):
        """The network of ``model`` on this device and precision, prepared once.

        ``grey``: its one-channel form for inputs whose channels are all the
        same plane (:meth:`~napari_unet.models.model.UNet.for_grey_input`).
        """
        key = (id(model), grey)
        if key not in self._nets:
            net = model.net.for_grey_input() if grey else model.net
            self._nets[key] = (model, prepare_model(net, self.device, self.dtype))
        return self._nets[key][1]


def one_plane_if_channels_equal(chw: np.ndarray) -> np.ndarray:
    """The first channel alone when every channel holds the same plane (a grey image), else ``chw``."""
    if chw.shape[0] > 1 and (
        chw.strides[0] == 0 or all(np.array_equal(chw[0], c) for c in chw[1:])
    ):
        return chw[:1]
    return chw


def iter_segment_plane(
    plane: np.ndarray,
    channel_axis: int | None,
    model: SegmentationModel,
    nets: PreparedNets,
    params: InstanceParams | None,
    tiling: dict,
    *,
    size_rule: SizeRule | None = None,
    image_type: str | None = None,
    value_range: tuple[float, float] | None = None,
    scale: float | None = None,
    normalize_input: bool = True,
    info: dict | None = None,
    region: tuple[slice, slice] | None = None,
) -> Generator[Progress, None, PlaneResult]:
    """The one per-plane pipeline: prepare, predict, post-process, rescale if sizes are off.

    Used for whole images, stacks and the blocks of images bigger than
    memory. ``scale`` fixes the resize factor (None: decide from a first
    pass); ``nets`` prepares networks for the run's device; ``params`` are
    the post-processing thresholds and ``size_rule`` decides that factor
    (None: the segmenting model's own);
    ``region`` limits the labels (and returned probabilities) to that part
    of the plane, the rest being context, as for a block of a larger image.
    A model with a companion for the plane's image type (the built-in
    default hands brightfield planes to the built-in brightfield model)
    segments the plane with that companion.
    """
    region = region or (slice(None), slice(None))
    info = dict(info or {})
    requested = image_type or model.normalization.image_type
    check_finite_array(plane)
    if normalize_input:
        chw, kind, chosen = convert_for_segmenting(plane, channel_axis, model, image_type)
        # A grey plane for a colour network: one channel through the folded
        # network gives the same result at a grey network's cost.
        chw = normalize(one_plane_if_channels_equal(chw), chosen.normalization, value_range)
    else:
        chw, kind = to_channels_first(plane, channel_axis, model.in_channels), "prepared"
        chosen = model
    fixed = image_type is None and model.normalization.image_type != "auto"
    notes = input_notes(chw, kind, requested, fixed) + type_notes(chosen, kind)
    if chosen is not model:
        notes.append(f"segmented with the built-in {chosen.name!r} model")
    model, net = chosen, nets(chosen, grey=chw.shape[0] < chosen.in_channels)
    params = params or model.postprocessing
    rule = size_rule or model.size_rule
    factor = scale
    probs = None
    if factor is None or factor == 1.0:
        # The size model may read the first pass's encoder means (free to gather).
        gathered = (
            EncoderMeans(net.depth)
            if factor is None and reads_first_pass(model.size_model)
            else None
        )
        first = yield from _predict_with_progress(net, chw, info, {**tiling, "encoder": gathered})
        probs = first[:, region[0], region[1]]
        labels = instances_from_probabilities(probs, params, model.scheme)
        area = median_object_area(labels)
        if factor is None:
            factor = 1.0 if area is None else factor_for_area(area, rule)
            first_pass = None if gathered is None else gathered.means()
            shrink = _size_model_shrink(model, nets, chw, factor, rule, first_pass)
            if shrink is None:
                shrink = yield from _coarse_look_factor(
                    net, chw, area, factor, params, rule, model.scheme, info, tiling
                )
            factor = shrink or factor
    if factor != 1.0:
        # Objects far from the training sizes: segment the plane again resized,
        # then bring the probabilities back to its grid so labels keep its shape.
        resized = resize_channels(chw, resized_shape(chw.shape, factor))
        info["rescaled"] = round(factor, 2)
        big = yield from _predict_with_progress(net, resized, info, tiling)
        probs = resize_channels(big, chw.shape[1:])[:, region[0], region[1]]
        labels = instances_at_scale(probs, factor, params, model.scheme)
        area = median_object_area(labels)
    notes += object_notes(model, chw[:, region[0], region[1]], labels)
    if area is not None and rule.object_area > 0:
        # Compared as the network saw them: in the resized plane when it was resized.
        ratio = area * factor**2 / rule.object_area
        if not 1 / 30 <= ratio <= 30:
            notes.append(
                f"warning: nuclei here ({area:.0f} px) are far from the model's training size "
                f"({rule.object_area:.0f} px) even after rescaling; give their diameter"
            )
    return PlaneResult(labels.astype(np.uint32), probs, kind, factor, notes)


def check_channels(
    channels: Sequence[int] | None, shape: tuple[int, ...], layout: PlaneLayout
) -> tuple[int, int | None] | None:
    """(cell channel, nuclear channel or None), checked against the image's channel axis."""
    if channels is None:
        return None
    channels = [channels] if isinstance(channels, int | np.integer) else list(channels)
    if not 1 <= len(channels) <= 2:
        raise UNetError(f"give one or two channels (cells[, nuclei]), got {channels}")
    if layout.channel_axis is None:
        raise UNetError(
            f"channels were named but the image (axes {layout.axes}) has no channel axis; "
            "give its axes, e.g. CYX"
        )
    count = shape[layout.channel_axis]
    for c in channels:
        if isinstance(c, bool) or not isinstance(c, int | np.integer) or not 0 <= c < count:
            raise UNetError(
                f"channel {c!r} does not exist: the image has channels 0 to {count - 1}"
            )
    if len(channels) == 2 and channels[0] == channels[1]:
        raise UNetError("the cell and nuclear channels must differ")
    return int(channels[0]), (int(channels[1]) if len(channels) == 2 else None)


def _segment_channels(run_plane, plane, channel_axis, channels, model: SegmentationModel):
    """One plane of a multi-channel image: the cell channel, or cells grown from the nuclear one.

    A model of whole cells segments the cell channel. A nuclei model with a
    nuclear channel segments the nuclei, and each becomes a whole cell grown
    on the cell channel (:func:`napari_unet.segmenting.cells.cells_from_nuclei`): whole
    cells with no cell training. A nuclei model without a nuclear channel
    segments the channel it is given.
    """
    from .cells import cells_from_nuclei

    chw = np.moveaxis(np.asarray(plane), channel_axis, 0)
    cell, nucleus = channels
    cells_model = model.objects is not None and model.objects.kind == "cells"
    if nucleus is None or cells_model:
        result = yield from run_plane(chw[cell], None)
        if nucleus is not None:
            result.notes.append("the nuclear channel is not used: the model segments whole cells")
        return result
    nuclei = yield from run_plane(chw[nucleus], None)
    area = median_object_area(nuclei.labels)
    diameter = 3 * median_diameter(area) if area else 40.0  # a cell: a few nuclei across
    cells = cells_from_nuclei(nuclei.labels, chw[cell], diameter=diameter)
    notes = nuclei.notes + ["whole cells grown from the nuclei on the cell channel"]
    return replace(nuclei, labels=cells.astype(np.uint32), notes=notes)


def _predict_with_progress(net, chw: np.ndarray, info: dict, tiling: dict):
    """Tiled prediction of one plane, re-yielding its progress with ``info`` added; returns probabilities."""
    gen = iter_predict_tiled(net, chw, **tiling)
    while True:
        try:
            ev = next(gen)
        except StopIteration as done:
            return done.value
        yield Progress(Stage.PREDICT, ev.step, ev.total, {**ev.info, **info})


# Planes narrower than this cannot hold a nucleus of the smallest size a
# model is told to expect: segmenting them gives "0 objects", which would be a
# silent wrong answer.
MIN_PLANE_SIDE = 8


def check_plane_size(shape_yx: Sequence[int]) -> None:
    """A UNetError for planes too small to segment (fewer than MIN_PLANE_SIDE pixels a side)."""
    if min(shape_yx) < MIN_PLANE_SIDE:
        raise UNetError(
            f"the image is {shape_yx[0]}x{shape_yx[1]} pixels: too small to segment "
            f"(at least {MIN_PLANE_SIDE} pixels a side)"
        )


@reusing_freed_memory
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
    size_rule: SizeRule | None = None,
    normalize_input: bool = True,
    return_probabilities: bool = False,
    value_range: tuple[float, float] | None = None,
    image_type: str | None = None,
    diameter: float | None = None,
    stitch: bool | None = None,
    track: bool = False,
    stitch_threshold: float = DEFAULT_STITCH_THRESHOLD,
    channels: Sequence[int] | None = None,
) -> Generator[Progress, None, np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """Generator form of :func:`segment`: yields progress per tile batch and plane.

    The last event of each plane (stage "segment") carries ``notes``: how the
    plane was read and warnings when it looks unlike that.
    """
    check_threshold(stitch_threshold)
    seg_model = get_model(model)
    arr = image if hasattr(image, "shape") else np.asarray(image)
    if len(arr.shape) < 2:
        raise UNetError(
            f"an image needs at least 2 dimensions (Y, X); got shape {tuple(arr.shape)}"
        )
    if 0 in arr.shape:
        raise UNetError(f"the image is empty (shape {tuple(arr.shape)})")
    if image_type is not None:
        check_image_type(image_type)
    if channels is not None and axes is None:
        axes = axes_with_channels(arr.shape, resolve_axes(arr.shape, None, rgb))
    layout = PlaneLayout(resolve_axes(arr.shape, axes, rgb))
    channels = check_channels(channels, arr.shape, layout)
    check_plane_size(layout.output_shape(arr.shape)[-2:])
    if diameter is not None and diameter > max(layout.output_shape(arr.shape)[-2:]):
        ny, nx = layout.output_shape(arr.shape)[-2:]
        raise UNetError(
            f"objects {diameter:g} px across do not fit in the image ({ny}x{nx} pixels): "
            "give the objects' diameter in pixels of this image"
        )
    scale = segmenting_scale(seg_model.objects, size_rule or seg_model.size_rule, diameter)
    dev = resolve_device(device)
    nets = PreparedNets(dev, resolve_precision(precision, dev))
    planes = layout.plane_indices(arr.shape)
    out_shape = layout.output_shape(arr.shape)
    n_out = int(np.prod(out_shape, dtype=np.float64))
    check_memory(4 * n_out * (1 + (seg_model.net.config.n_classes if return_probabilities else 0)))
    labels_out = np.zeros(out_shape, dtype=np.uint32)
    probs_out = (
        np.zeros((seg_model.net.config.n_classes, *out_shape), dtype=np.float32)
        if return_probabilities
        else None
    )
    tiling = dict(tile_size=tile_size, batch_size=batch_size, device=dev, prepared=True)
    offset = 0
    for p, index in enumerate(planes):
        plane, channel_axis = layout.take_plane(arr, index)
        run_plane = functools.partial(
            iter_segment_plane,
            model=seg_model,
            nets=nets,
            params=params,
            tiling=tiling,
            size_rule=size_rule,
            image_type=image_type,
            value_range=value_range,
            scale=scale,
            normalize_input=normalize_input,
            info={"plane": p, "planes": len(planes)},
        )
        if channels is None:
            result = yield from run_plane(plane, channel_axis)
        else:
            result = yield from _segment_channels(
                run_plane, plane, channel_axis, channels, seg_model
            )
        labels = result.labels
        # Ids stay unique across the whole stack so no two planes share an id by accident.
        offset = offset_ids(labels, offset)
        labels_out[index] = labels
        if probs_out is not None:
            probs_out[(slice(None), *index)] = result.probabilities
        yield Progress(
            Stage.SEGMENT,
            p + 1,
            len(planes),
            {
                "objects": offset,
                "image_type": result.image_type,
                "scale": result.scale,  # exact: re-labelling resizes by it again
                "notes": result.notes,
            },
        )
    labels_out = narrowed(
        link_planes(labels_out, layout.output_axes, stitch, track, stitch_threshold)
    )
    return (labels_out, probs_out) if return_probabilities else labels_out


def segment(image, model: str | Path | SegmentationModel = "default", **kwargs):
    """Segment cells or nuclei: normalize, predict tiled, post-process.

    Parameters
    ----------
    image
        2D grey, RGB(A), channels, or a Z/T stack of those (numpy or array-like).
    model
        "default" (alias "nuclei", shipped with the package), a model file path,
        or a loaded :class:`~napari_unet.models.modelfile.SegmentationModel`.
    axes
        Axes of ``image`` such as "YX", "YXC", "CYX", "ZYX", "TZYX"; guessed when omitted.
    tile_size, batch_size, device, precision
        Passed to :func:`~napari_unet.models.tiling.predict_tiled`.
    params
        Post-processing thresholds (default: the model's own).
    size_rule
        When planes are segmented resized, from a first pass's object sizes
        (:class:`~napari_unet.models.sizes.SizeRule`; default: the model's own).
    normalize_input
        False when ``image`` is already normalized.
    return_probabilities
        Also return the class probabilities (classes first).
    image_type
        "auto" (default: the model's setting, which detects brightfield and
        stained images by their bright background and inverts them),
        "fluorescence" or "brightfield".
    diameter
        Typical object diameter in pixels (nuclei, or the cells of a model
        trained on whole cells); the image is resized so they match the
        model's training size. Default: a cell model's training scale; for
        nuclei, estimated (the model's size model, when it has one, and a
        first pass).
    stitch
        Link the planes of a Z stack into 3-D objects by overlap (one id per
        nucleus through the stack). Default: on when ``axes`` has a Z.
    track
        Keep an object's id from one time point to the next by overlap
        (T axis). Default: off (each time point has its own ids).
    stitch_threshold
        Smallest intersection over union for two planes' objects to be
        linked, in (0, 1].

    Returns
    -------
    labels (uint16, or uint32 above 65535 objects) with the image's shape
    minus its channel axis; or ``(labels, probabilities)``.

    Warns
    -----
    InputWarning
        When a plane looks unlike what it was segmented as (e.g. a bright
        background segmented as fluorescence), its nuclei are far from
        the model's training size, or it is of an image type the model
        records it was never trained on.
    """
    notes: list[str] = []
    result = run_to_end(iter_segment(image, model, **kwargs), note_collector(notes))
    for note in notes:
        if note.startswith("warning:"):
            warnings.warn(note.removeprefix("warning: "), InputWarning, stacklevel=2)
    return result
