"""Link labels of consecutive planes or frames by overlap: 3-D objects from Z planes, tracks over T.

The network segments a stack plane by plane, so one nucleus first gets a new
id in every plane. :func:`link_along` gives an object the id it had in the
previous plane (or frame) when the two overlap with an intersection over
union of at least ``threshold``, one to one, best overlaps first, as
cellpose's ``stitch_threshold`` does. Objects without such a partner get
new ids, so ids stay unique over the whole array.
"""

from __future__ import annotations

import numpy as np

from ..errors import UNetError
from .instances import offset_ids

DEFAULT_STITCH_THRESHOLD = 0.25


def check_threshold(threshold: float) -> float:
    """``threshold`` when it is a valid IoU in (0, 1]; else a one-line error."""
    if not 0 < threshold <= 1:
        raise UNetError(f"the stitching threshold must be in (0, 1], got {threshold}")
    return threshold


def overlap_iou(
    previous: np.ndarray, current: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of overlapping objects of two label arrays of one shape, with its IoU.

    Returns
    -------
    previous_ids, current_ids, iou
        Three arrays of equal length, one entry per overlapping pair.
    """
    prev = previous.ravel().astype(np.int64, copy=False)
    cur = current.ravel().astype(np.int64, copy=False)
    both = (prev > 0) & (cur > 0)
    if not both.any():
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    width = int(cur.max()) + 1
    pairs, inter = np.unique(prev[both] * width + cur[both], return_counts=True)
    prev_ids, cur_ids = pairs // width, pairs % width
    prev_area = np.bincount(prev, minlength=int(prev.max()) + 1)
    cur_area = np.bincount(cur, minlength=width)
    iou = inter / (prev_area[prev_ids] + cur_area[cur_ids] - inter)
    return prev_ids, cur_ids, iou


def _best_one_to_one(
    prev_ids: np.ndarray, cur_ids: np.ndarray, iou: np.ndarray, threshold: float
) -> dict[int, int]:
    """Current id -> previous id, greedily by decreasing IoU, each id used once."""
    order = np.argsort(-iou, kind="stable")
    taken_prev: set[int] = set()
    matches: dict[int, int] = {}
    for k in order:
        if iou[k] < threshold:
            break
        p, c = int(prev_ids[k]), int(cur_ids[k])
        if p in taken_prev or c in matches:
            continue
        matches[c] = p
        taken_prev.add(p)
    return matches


def link_along(
    labels: np.ndarray, axis: int = 0, threshold: float = DEFAULT_STITCH_THRESHOLD
) -> np.ndarray:
    """Relabel so that objects keep their id from one slice of ``axis`` to the next.

    Parameters
    ----------
    labels
        Instance labels; each slice along ``axis`` is one plane (or one frame,
        which may itself be 3-D).
    axis
        The axis to link along (Z for 3-D objects, T for tracks).
    threshold
        Smallest IoU with the previous slice's object for an object to take
        its id; in (0, 1].

    Returns
    -------
    numpy.ndarray
        uint32 labels, ids unique over the whole array, numbered from 1 in
        order of first appearance.
    """
    check_threshold(threshold)
    labels = np.asarray(labels)
    if labels.ndim < 2:
        raise UNetError(f"linking needs at least two axes, got shape {labels.shape}")
    slices = np.moveaxis(labels, axis, 0)
    out = np.zeros(slices.shape, dtype=np.uint32)
    next_id = 1
    for k in range(slices.shape[0]):
        current = slices[k]
        ids = np.unique(current)
        ids = ids[ids > 0]
        lookup = np.zeros(int(ids.max()) + 1 if ids.size else 1, dtype=np.uint32)
        matches = _best_one_to_one(*overlap_iou(out[k - 1], current), threshold) if k > 0 else {}
        for c in ids.tolist():
            if c in matches:
                lookup[c] = matches[c]
            else:
                lookup[c] = next_id
                next_id += 1
        out[k] = lookup[current]
    return np.moveaxis(out, 0, axis)


def stitch_stack(
    labels: np.ndarray,
    axes: str,
    stitch: bool = True,
    track: bool = False,
    threshold: float = DEFAULT_STITCH_THRESHOLD,
) -> np.ndarray:
    """Stitch Z planes into 3-D objects and/or keep ids over T, for labels with ``axes``.

    Parameters
    ----------
    labels
        Labels whose axes are ``axes`` (no C), e.g. "ZYX", "TYX", "TZYX".
    stitch
        Link along Z (within each time point).
    track
        Link along T (3-D overlap when there is a Z axis).
    threshold
        Smallest IoU to link, in (0, 1].
    """
    out = np.asarray(labels)
    if stitch and "Z" in axes:
        z = axes.index("Z")
        if "T" in axes:
            t = axes.index("T")
            frames = np.moveaxis(out, t, 0)
            z_in_frame = z - (1 if t < z else 0)
            linked = [link_along(frame, z_in_frame, threshold) for frame in frames]
            # Ids of different time points stay apart (tracking, if asked, links them next).
            offset = 0
            for frame in linked:
                offset = offset_ids(frame, offset)
            out = np.moveaxis(np.stack(linked), 0, t)
        else:
            out = link_along(out, z, threshold)
    if track and "T" in axes:
        out = link_along(out, axes.index("T"), threshold)
    return out


def link_planes(
    labels: np.ndarray,
    axes: str,
    stitch: bool | None = None,
    track: bool = False,
    threshold: float = DEFAULT_STITCH_THRESHOLD,
) -> np.ndarray:
    """Labels of a stack with its planes linked: Z into 3-D objects (by default), T if ``track``.

    ``stitch`` None means yes when there is a Z axis; without Z or T there is
    nothing to link and ``labels`` is returned as it is.
    """
    do_stitch = stitch is not False and "Z" in axes
    do_track = track and "T" in axes
    if not (do_stitch or do_track):
        return labels
    return stitch_stack(labels, axes, stitch=do_stitch, track=do_track, threshold=threshold)
