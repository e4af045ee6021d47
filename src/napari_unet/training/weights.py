"""Training targets from instance labels and the paper's border weight map.

The weight map of Ronneberger et al. (2015), eq. 2::

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

with d1, d2 the distances from background pixel x to the nearest and the
second-nearest cell. It makes the thin background gaps between touching cells
expensive to get wrong, so the network learns to separate them.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from ..errors import UNetError
from ..labels.instances import CLASS_SCHEMES

# The border term is evaluated only where it exceeds w0 * BORDER_TERM_CUTOFF;
# beyond that (d1 + d2 large) it is treated as zero. 1e-7 relative is far below
# anything float32 training can notice.
BORDER_TERM_CUTOFF = 1e-7


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise UNetError(f"labels must be a 2D image, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise UNetError(f"labels must be integers (instance ids), got {labels.dtype}")
    return labels


def border_term(labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """``w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` on background pixels, 0 inside cells.

    Computed cell by cell in a window around each cell that is large enough to
    hold every pixel where the term is above ``w0 * 1e-7``, so the cost grows
    with the number of cells, not cells x image size. With fewer than two
    cells the term is zero everywhere.
    """
    labels = _check_labels(labels)
    if sigma <= 0:
        raise UNetError(f"sigma must be positive, got {sigma}")
    out = np.zeros(labels.shape, dtype=np.float32)
    if w0 == 0 or not labels.any():
        return out
    if labels.max() > 4 * labels.size:  # sparse huge ids: find_objects would allocate per id
        labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
    # (d1 + d2) above this reach makes the term negligible; so does d2 above it.
    reach = int(math.ceil(sigma * math.sqrt(2.0 * math.log(1.0 / BORDER_TERM_CUTOFF)))) + 1
    d1 = np.full(labels.shape, np.inf, dtype=np.float32)
    d2 = np.full(labels.shape, np.inf, dtype=np.float32)
    h, w = labels.shape
    for cell_id, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        y0, y1 = max(sl[0].start - reach, 0), min(sl[0].stop + reach, h)
        x0, x1 = max(sl[1].start - reach, 0), min(sl[1].stop + reach, w)
        window = labels[y0:y1, x0:x1]
        dist = ndi.distance_transform_edt(window != cell_id).astype(np.float32)
        a, b = d1[y0:y1, x0:x1], d2[y0:y1, x0:x1]
        nearer = dist < a
        b[:] = np.where(nearer, a, np.minimum(b, dist))
        a[:] = np.where(nearer, dist, a)
    background = labels == 0
    finite = background & np.isfinite(d2)
    s = d1[finite] + d2[finite]
    out[finite] = w0 * np.exp(-(s * s) / (2.0 * sigma * sigma))
    return out


def class_weights_from_counts(
    counts: np.ndarray, balance: float = 1.0, max_ratio: float = 10.0
) -> np.ndarray:
    """Per-class weights ``(N / (K * N_k)) ** balance``, scaled so the smallest is 1.

    Absent classes get weight 1; the largest weight is capped at ``max_ratio``
    so a very rare class cannot dominate the loss.
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.ones(len(counts))
    if present.any():
        weights[present] = (counts[present].sum() / (present.sum() * counts[present])) ** balance
    weights = weights / weights[present].min() if present.any() else weights
    return np.minimum(weights, max_ratio).astype(np.float32)


def balanced_class_weights(
    classes: np.ndarray, n_classes: int, mask: np.ndarray | None = None
) -> np.ndarray:
    """Weights inversely proportional to each class's pixel frequency in ``classes``."""
    values = classes if mask is None else classes[mask]
    return class_weights_from_counts(
        np.bincount(values.reshape(-1), minlength=n_classes), 1.0, np.inf
    )


def border_weight_map(
    labels: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: tuple[float, float] | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """The paper's weight map w(x) = w_c(x) + w0 * exp(-(d1 + d2)^2 / (2 sigma^2)).

    Parameters
    ----------
    labels
        Instance labels (0 = background).
    w0, sigma
        Amplitude and width (pixels) of the border term.
    class_weights
        (background, cell) weights w_c; by default balanced from this image's
        class frequencies.
    mask
        Optional annotated region: pixels outside it get weight 0 (partial
        annotation).
    """
    labels = _check_labels(labels)
    foreground = (labels > 0).astype(np.intp)
    valid = None if mask is None else np.asarray(mask, dtype=bool)
    if valid is not None and valid.shape != labels.shape:
        raise UNetError(
            f"the annotated-region mask {valid.shape} differs from the labels {labels.shape}"
        )
    wc = np.asarray(
        class_weights if class_weights is not None else balanced_class_weights(foreground, 2, valid)
    )
    weights = wc.astype(np.float32)[foreground] + border_term(labels, w0, sigma)
    if valid is not None:
        weights[~valid] = 0
    return weights


def weight_maps_per_plane(labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """The weight map training would use, for every 2-D plane of a labels array.

    Each plane gets its touching borders set to background first
    (:func:`separated_labels`), exactly as training does, then
    :func:`border_weight_map`.

    Parameters
    ----------
    labels
        Instance labels with two or more dimensions; the last two are Y and X.
    w0, sigma
        Amplitude and width (pixels) of the border term.

    Returns
    -------
    numpy.ndarray
        float32 weights with the shape of ``labels``.
    """
    labels = np.asarray(labels)
    if labels.ndim < 2:
        raise UNetError(f"labels need at least two dimensions (Y, X), got shape {labels.shape}")
    planes = labels.reshape(-1, *labels.shape[-2:])
    maps = [border_weight_map(separated_labels(plane), w0, sigma) for plane in planes]
    return np.stack(maps).reshape(labels.shape).astype(np.float32, copy=False)


# --------------------------------------------------------------------------
# Class targets
# --------------------------------------------------------------------------


def touching_border(labels: np.ndarray) -> np.ndarray:
    """Cell pixels with a differently labelled cell among their 8 neighbours."""
    labels = _check_labels(labels)
    lab = labels.astype(np.int64)
    big = int(lab.max()) + 1  # stands in for background when looking for the smallest neighbour
    highest = ndi.maximum_filter(lab, size=3, mode="nearest")
    lowest = ndi.minimum_filter(np.where(lab == 0, big, lab), size=3, mode="nearest")
    return (lab > 0) & ((highest != lab) | (lowest != lab))


def cell_boundary(labels: np.ndarray) -> np.ndarray:
    """Cell pixels with background or another cell among their 4 neighbours (inner contour)."""
    labels = _check_labels(labels)
    lab = np.pad(labels, 1, mode="edge")
    centre = lab[1:-1, 1:-1]
    differs = (
        (lab[:-2, 1:-1] != centre)
        | (lab[2:, 1:-1] != centre)
        | (lab[1:-1, :-2] != centre)
        | (lab[1:-1, 2:] != centre)
    )
    return (centre > 0) & differs


def separated_labels(labels: np.ndarray) -> np.ndarray:
    """Labels with the touching border set to background, as in the paper's ground truth."""
    out = np.array(labels, copy=True)
    out[touching_border(labels)] = 0
    return out


# 4-class targets: a pixel is a cell's centre when its distance to the cell's
# boundary is at least this fraction of the largest such distance in the cell.
CENTRE_FRACTION = 0.4


def cell_centres(
    labels: np.ndarray, fraction: float = CENTRE_FRACTION, boundary: np.ndarray | None = None
) -> np.ndarray:
    """Cell pixels at least ``fraction`` of their cell's largest inner distance from its contour.

    The distance is measured to the nearest pixel of the inner contour or
    outside the cell, so a cell touching another is measured on its own; the
    image edge is no contour (a cell cut by it continues beyond, as in the
    mirrored borders the network sees).
    Every cell keeps at least its deepest pixels; centres of touching cells
    never touch (they lie inside the contours). ``boundary``: the labels'
    :func:`cell_boundary`, when the caller has it already.
    """
    labels = _check_labels(labels)
    if boundary is None:
        boundary = cell_boundary(labels)
    core = (labels > 0) & ~boundary
    if not core.any():
        return core
    depth = ndi.distance_transform_edt(core)
    lab = labels.astype(np.int64)
    deepest = np.zeros(int(lab.max()) + 1)
    np.maximum.at(deepest, lab[core], depth[core])
    return core & (depth >= fraction * deepest[lab])


def class_targets(labels: np.ndarray, scheme: str = "3class") -> np.ndarray:
    """Per-pixel class indices for training.

    ``"2class"``: 0 background (including the 1-pixel line where cells touch),
    1 cell. ``"3class"``: 0 background, 1 interior, 2 boundary (inner contour
    of every cell, so touching cells are always split by boundary pixels).
    ``"4class"``: as 3-class, with the interior's deeper half (see
    :func:`cell_centres`) as class 3, a coarse distance map whose seeds stay
    apart where touching cells meet.
    """
    labels = _check_labels(labels)
    if scheme == "2class":
        return (separated_labels(labels) > 0).astype(np.int64)
    if scheme in ("3class", "4class"):
        target = (labels > 0).astype(np.int64)
        boundary = cell_boundary(labels)
        target[boundary] = 2
        if scheme == "4class":
            target[cell_centres(labels, boundary=boundary)] = 3
        return target
    raise UNetError(f"unknown class scheme {scheme!r}; choose one of {sorted(CLASS_SCHEMES)}")


def training_weights(
    labels: np.ndarray,
    target: np.ndarray,
    class_weights: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Per-pixel loss weights: class balance + border term (on the separated labels)."""
    weights = np.asarray(class_weights, dtype=np.float32)[target]
    if w0 > 0:
        weights += border_term(separated_labels(labels), w0, sigma)
    if valid is not None:
        weights *= valid
    return weights
