"""Labels at the size a plane was segmented at: the pipeline's last step, and re-labelling.

The post-processing runs where the network saw the objects (their training
size), so segmenting a resized plane and re-labelling its cached
probabilities when a slider moves both come through :func:`instances_at_scale`:
a slider moved and moved back gives the labels ``segment`` gave.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import UNetError
from ..labels.instances import (
    InstanceParams,
    instances_from_probabilities,
    narrowed,
    offset_ids,
    sequential_labels,
)
from ..labels.stitching import DEFAULT_STITCH_THRESHOLD, link_planes
from ..models.modelfile import SegmentationModel
from ..models.sizes import enlarge_channels, resize_channels, resize_labels, resized_shape

# At most this many bytes of resized probabilities are kept between re-labellings.
MEMO_BYTES = 512 << 20


def resized_probabilities(probs: np.ndarray, factor: float) -> np.ndarray:
    """A plane's probabilities (C, Y, X) resized by ``factor``: where its objects are labelled."""
    if factor == 1.0:
        return probs
    shape = resized_shape(probs.shape, factor)
    return enlarge_channels(probs, shape) if factor > 1 else resize_channels(probs, shape)


def instances_at_scale(
    probs: np.ndarray,
    factor: float,
    params: InstanceParams,
    scheme: str | None = None,
    seen: np.ndarray | None = None,
) -> np.ndarray:
    """Instance labels of a plane whose probabilities came from a pass at ``factor`` times its size.

    The post-processing runs where the network saw the nuclei, at their
    training size (its thresholds, seeds and smallest object are for that
    size): the probabilities, on the plane's grid, are resized by ``factor``
    again, labelled there, and the labels brought back by nearest neighbour.
    On a 0.5x plane's own grid nuclei are 2-5 px wide and the boundaries
    between touching ones vanish (held-out train AP@0.5 at 0.5x 0.63 -> 0.81,
    docs/history.md, "Other magnifications"). Segmenting and re-labelling cached
    probabilities (:func:`labels_from_probabilities`) both come here, so a
    slider moved and moved back gives the labels ``segment`` gave. ``seen``:
    :func:`resized_probabilities` of ``probs``, when the caller kept them.
    """
    if factor == 1.0:
        return instances_from_probabilities(probs, params, scheme)
    seen = resized_probabilities(probs, factor) if seen is None else seen
    labels = instances_from_probabilities(seen, params, scheme)
    # An object narrower than a plane pixel may vanish here: ids are made 1..n again.
    return sequential_labels(resize_labels(labels, probs.shape[1:]))


def labels_from_probabilities(
    probs: np.ndarray,
    model: SegmentationModel,
    params: InstanceParams | None = None,
    axes: str | None = None,
    stitch: bool | None = None,
    track: bool = False,
    stitch_threshold: float = DEFAULT_STITCH_THRESHOLD,
    scales: Sequence[float] | None = None,
    memo: dict | None = None,
):
    """Re-run only the post-processing on cached probabilities (classes first; any leading stack axes).

    ``axes`` names the labels' axes (e.g. "ZYX"): planes are then linked as
    :func:`segment` links them (``stitch``, ``track``). ``scales`` are the
    planes' resize factors, in order (the "scale" of :func:`iter_segment`'s
    per-plane events; None: all 1): each plane is labelled at the size it was
    segmented at, as :func:`segment` labels it. ``memo``: a dict the caller
    keeps with ``probs`` (the Segment widget's cache) and passes again with
    them: the planes' resized probabilities are kept there (up to
    ``MEMO_BYTES``), so the next re-labelling does not resize them again.
    """
    params = params or model.postprocessing
    n_planes = int(np.prod(probs.shape[1:-2], dtype=np.int64))
    scales = [1.0] * n_planes if scales is None else list(scales)
    if len(scales) != n_planes:
        raise UNetError(f"{len(scales)} resize factors for {n_planes} planes")
    bad = [f for f in scales if not (np.isfinite(f) and f > 0)]
    if bad:
        raise UNetError(f"a resize factor must be a positive number, got {bad[0]}")

    def seen(index: tuple, plane: np.ndarray, factor: float) -> np.ndarray | None:
        if memo is None or factor == 1.0:
            return None
        key = (index, factor)
        if key not in memo:
            resized = resized_probabilities(plane, factor)
            kept = sum(v.nbytes for v in memo.values())
            if kept + resized.nbytes > MEMO_BYTES:
                return resized
            memo[key] = resized
        return memo[key]

    if probs.ndim == 3:
        return instances_at_scale(
            probs, scales[0], params, model.scheme, seen((), probs, scales[0])
        )
    out = np.zeros(probs.shape[1:], dtype=np.uint32)
    offset = 0
    for index, factor in zip(np.ndindex(*probs.shape[1:-2]), scales):
        plane = probs[(slice(None), *index)]
        lab = instances_at_scale(
            plane, factor, params, model.scheme, seen(index, plane, factor)
        ).astype(np.uint32)
        offset = offset_ids(lab, offset)
        out[index] = lab
    if axes is not None:
        out = link_planes(out, axes, stitch, track, stitch_threshold)
    return narrowed(out)
