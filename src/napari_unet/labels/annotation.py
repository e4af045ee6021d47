"""Editing helpers for correcting labels, where the napari brush and eraser are not enough.

Plain numpy functions (no Qt): merge several labels into one, split one
label from seed points, fill holes of one label, find the next free id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from ..errors import UNetError


def next_free_label(labels: np.ndarray) -> int:
    """The smallest id above every id in ``labels`` (1 for an empty array)."""
    return int(np.max(labels)) + 1 if np.size(labels) else 1


def merge_labels(labels: np.ndarray, ids: Iterable[int]) -> np.ndarray:
    """Give every pixel of ``ids`` the first id of the list (in place on a copy)."""
    ids = [int(i) for i in ids if int(i) > 0]
    if len(ids) < 2:
        raise UNetError("give at least two label ids to merge")
    present = set(np.unique(labels).tolist())
    missing = [i for i in ids if i not in present]
    if missing:
        raise UNetError(f"label(s) {missing} are not in the layer")
    out = np.array(labels, copy=True)
    out[np.isin(out, ids[1:])] = ids[0]
    return out


SPLIT_SEED_REACH = 0.9  # how far towards the edge a split's seed disc reaches


def split_label(labels: np.ndarray, seeds: Sequence[Sequence[float]]) -> np.ndarray:
    """Split the label under the seed points into one object per seed.

    All seeds must lie on the same label. The object is divided by a
    watershed on its distance transform, started from a disc around each seed
    reaching 0.9 of the way to the object's edge; the first part keeps the
    old id, the others get new ones. Single-pixel seeds let the larger of two
    touching nuclei flood the smaller one's centre when that centre sits on
    the larger one's slope, leaving a one-pixel sliver (merged then split
    touching pairs of dsb2018-fluo/train at their centroids: 66 of 100 back
    with IoU >= 0.8 from pixels, 87 from discs of 0.9; 0.7: 84, 1.0: 85).
    """
    if len(seeds) < 2:
        raise UNetError("place at least two points on the object to split it")
    labels = np.asarray(labels)
    points = [tuple(int(round(c)) for c in p[-labels.ndim :]) for p in seeds]
    for p in points:
        if any(c < 0 or c >= s for c, s in zip(p, labels.shape)):
            raise UNetError(f"the point {p} lies outside the image")
    ids = {int(labels[p]) for p in points}
    if 0 in ids or len(ids) != 1:
        raise UNetError("all points must lie on the same (non-background) label")
    target = ids.pop()
    mask = labels == target
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    sub = mask[box]
    distance = ndi.distance_transform_edt(sub)
    grid = np.indices(sub.shape)
    markers = np.zeros(sub.shape, dtype=np.int32)
    for k, p in enumerate(points, start=1):
        local = tuple(c - s.start for c, s in zip(p, box))
        radius = SPLIT_SEED_REACH * distance[local]
        disc = sum((g - c) ** 2 for g, c in zip(grid, local)) <= radius**2
        markers[disc & sub & (markers == 0)] = k  # an earlier seed keeps any overlap
        markers[local] = k
    parts = watershed(-distance, markers=markers, mask=sub)
    out = np.array(labels, copy=True)
    new_id = next_free_label(labels)
    region = out[box]
    for k in range(2, len(points) + 1):
        region[parts == k] = new_id
        new_id += 1
    return out


def fill_label_holes(labels: np.ndarray, label_id: int) -> np.ndarray:
    """Fill the holes of one label (background pixels it encloses)."""
    out = np.array(labels, copy=True)
    mask = out == label_id
    if not mask.any():
        raise UNetError(f"label {label_id} is not in the layer")
    filled = ndi.binary_fill_holes(mask)
    out[filled & (out == 0)] = label_id
    return out
