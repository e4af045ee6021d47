"""Whole cells grown from seeds: one click per cell, or one nucleus per cell.

A seeded watershed floods an elevation map from the seeds, inside a
foreground mask, so each seed becomes one cell whose border lies where the
elevation is high (between cells). The elevation and the mask come from a
model's class probabilities when there are some (1 - p(interior) floods
between cells; 1 - p(background) is the foreground), or from the image alone
when the model knows nothing of these cells: its smoothed gradient, and a
foreground read from intensity (fluorescence, stains) or, for images
without bright/dark polarity (DIC, phase contrast), from local texture.

Used by the Annotate widget (a Points layer: click once per cell, then
correct) and by segmenting two-channel images (cells grown from the
built-in nuclei model's nuclei on the cell channel).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.segmentation import expand_labels, watershed

from ..errors import UNetError
from ..images.normalize import looks_unpolarised
from ..labels.instances import sequential_labels


def grow_from_seeds(
    elevation: np.ndarray, seeds: np.ndarray, foreground: np.ndarray | None = None
) -> np.ndarray:
    """One object per seed id: a watershed of ``elevation`` from ``seeds``, inside ``foreground``.

    Seeds outside the foreground still keep their own pixels (a click is
    never lost); ids are those of ``seeds``.
    """
    elevation = np.asarray(elevation, dtype=np.float32)
    seeds = np.asarray(seeds)
    if elevation.shape != seeds.shape:
        raise UNetError(f"seeds {seeds.shape} and elevation {elevation.shape} differ in shape")
    mask = None if foreground is None else np.asarray(foreground, bool) | (seeds > 0)
    return watershed(elevation, markers=seeds.astype(np.int32), mask=mask).astype(np.int32)


def image_elevation(plane: np.ndarray, diameter: float = 40.0) -> np.ndarray:
    """High between cells, low inside them, from the image alone: its smoothed gradient.

    Smoothed at a 20th of the cell diameter: fine texture inside a cell
    (organelles, DIC relief) must not wall off parts of it.
    """
    plane = _grey(plane)
    smooth = ndi.gaussian_filter(plane, max(1.0, diameter / 20))
    return np.hypot(ndi.sobel(smooth, 0), ndi.sobel(smooth, 1))


def image_foreground(
    plane: np.ndarray,
    diameter: float = 40.0,
    texture: bool | None = None,
    seeds: np.ndarray | None = None,
) -> np.ndarray:
    """Where cells are, from the image alone.

    Fluorescence and stains: Otsu's threshold on the smoothed intensity
    (inverted for a bright background). DIC and phase contrast (no polarity;
    ``texture`` None: detected): Otsu's threshold on the local standard
    deviation, since cells are textured and the glass around them is flat.
    ``seeds``: where cells are known to be (nuclei, clicks): pixels near them
    against pixels far from any tell whether cells are brighter or darker
    than the background; without them, or with nothing far from them, cells
    are the brighter side unless the median (the background) is bright.
    """
    plane = _grey(plane)
    if texture is None:
        texture = looks_unpolarised(plane[None])
    if texture:
        size = max(3, int(diameter / 8))
        mean = ndi.uniform_filter(plane, size)
        local = np.sqrt(np.clip(ndi.uniform_filter(plane**2, size) - mean**2, 0, None))
        local = ndi.gaussian_filter(local, size / 2)
        return local > _otsu(local)
    # Smoothed at a tenth of a cell: bright membranes and dark cytoplasm
    # average into one level above the background.
    smooth = ndi.gaussian_filter(plane, max(1.0, diameter / 10))
    dark_cells = np.median(smooth) > 0.5 * (smooth.min() + smooth.max())
    if seeds is not None and np.any(seeds):
        distance = ndi.distance_transform_edt(np.asarray(seeds) == 0)
        near, far = distance < diameter / 4, distance > 0.75 * diameter
        if far.sum() > 0.05 * far.size:
            dark_cells = np.median(smooth[near]) < np.median(smooth[far])
        else:
            dark_cells = False  # cells fill the field: no background to compare with
    if dark_cells:
        smooth = -smooth
    return smooth > _otsu(smooth)


def probability_elevation(
    probs: np.ndarray, classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(elevation, foreground) from class probabilities (C, Y, X) of a model with ``classes``."""
    probs = np.asarray(probs, dtype=np.float32)
    if "interior" in classes:
        inside = probs[classes.index("interior")]
        if "centre" in classes:
            inside = inside + probs[classes.index("centre")]
    else:
        inside = 1 - probs[classes.index("background")]
    foreground = probs[classes.index("background")] < 0.5
    return 1 - inside, foreground


def points_to_seeds(points: np.ndarray, shape: tuple[int, int], radius: int = 2) -> np.ndarray:
    """A seed image: a small disc with id k + 1 at the k-th (y, x) point; outside points refused."""
    points = np.asarray(points, dtype=np.float64)
    if points.size == 0:
        raise UNetError("place at least one point (one per cell) to grow cells from")
    points = points.reshape(len(points), -1)
    yx = np.round(points[:, -2:]).astype(int)
    outside = ~((yx >= 0) & (yx < np.array(shape))).all(axis=1)
    if outside.any():
        raise UNetError(f"the point {tuple(yx[outside][0])} lies outside the image {shape}")
    seeds = np.zeros(shape, np.int32)
    yy, xx = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    disc = yy**2 + xx**2 <= radius**2
    for k, (y, x) in enumerate(yx, 1):
        y0, x0 = y - radius, x - radius
        sub = seeds[max(y0, 0) : y + radius + 1, max(x0, 0) : x + radius + 1]
        d = disc[max(-y0, 0) : max(-y0, 0) + sub.shape[0], max(-x0, 0) : max(-x0, 0) + sub.shape[1]]
        sub[d & (sub == 0)] = k
    return seeds


# A click's seed is a disc of this fraction of the cells' diameter, cut where
# it nears another click: a cell's middle is often where a model's interior
# map (or the image's gradient) has holes (in DIC the nucleus), and a seed of
# a few pixels there lost its cell to a neighbour's flood. Chosen on late
# ctc-dic-hela/train frames with a model trained on its first frames (clicks
# at every true cell; disc 2 px / 0.2 / 0.3 / 0.35 / 0.4 / 0.5 of the clicks'
# spacing: AP@0.5 0.68 / 0.83 / 0.89 / 0.93 / 0.95 / 0.94 on the model's
# probabilities, 0.22 -> 0.67 at 0.4 on the image alone; docs/results.md).
CLICK_SEED_FRACTION = 0.4
# On a model's probabilities a cell ends within this many diameters of its
# click, so one click among unclicked cells cannot flood them all.
CLICK_REACH = 1.0


def click_seeds(points: np.ndarray, shape: tuple[int, int], radius: float) -> np.ndarray:
    """Seeds of radius ``radius`` around the points (ids k + 1), each pixel to its nearest point.

    Where two discs overlap, the nearer click takes the pixel, so no seed
    crosses the midline between two clicks.
    """
    clicks = points_to_seeds(points, shape, radius=0)
    distance, (rows, cols) = ndi.distance_transform_edt(clicks == 0, return_indices=True)
    return np.where(distance <= max(radius, 2.0), clicks[rows, cols], 0).astype(np.int32)


def cells_from_points(
    points: np.ndarray,
    plane: np.ndarray,
    probabilities: np.ndarray | None = None,
    classes: Sequence[str] = (),
    diameter: float | None = None,
    seed_fraction: float = CLICK_SEED_FRACTION,
) -> np.ndarray:
    """Labels of one cell per clicked point: a seeded watershed to correct rather than paint.

    ``plane`` is the image (Y, X); with ``probabilities`` (C, Y, X) of a model
    with ``classes``, cells are grown on them instead of on the image's
    gradient. ``diameter``: the cells' rough size in pixels (None: the
    clicks' spacing; click every cell), for the seeds' size, for smoothing
    and to stop a cell far from its click. ``seed_fraction``: each click's
    seed is a disc of this fraction of the diameter (0: a 2-px dot). Object
    k is grown from the k-th point.
    """
    _check_seed_fraction(seed_fraction)
    shape = np.shape(plane)[-2:]
    clicks = points_to_seeds(points, shape)
    if diameter is None:
        diameter = click_spacing(points)
    if probabilities is not None:
        elevation, foreground = probability_elevation(probabilities, list(classes))
        if diameter is None:  # one click and no size: a small seed, no bound
            return grow_from_seeds(elevation, clicks, foreground)
        seeds = click_seeds(points, shape, seed_fraction * diameter)
        foreground &= ndi.distance_transform_edt(clicks == 0) < CLICK_REACH * diameter
        return grow_from_seeds(elevation, seeds, foreground)
    diameter = diameter or 40.0
    # From the image alone the foreground is a guess: a cell ends within about
    # its diameter of its click, so one on its own cannot flood the field.
    # Where the image's intensity tells cells from background (the clicks lie
    # on its foreground), that bounds them too; in DIC it does not (on
    # ctc-dic-hela/train the distance alone gives AP@0.5 0.22).
    foreground = ndi.distance_transform_edt(clicks == 0) < 0.75 * diameter
    bright = image_foreground(plane, diameter, texture=False, seeds=clicks)
    if bright[clicks > 0].mean() >= 0.9:
        foreground &= bright
    seeds = click_seeds(points, shape, seed_fraction * diameter)
    return grow_from_seeds(image_elevation(plane, diameter), seeds, foreground)


def clicks_in_foreground(
    points: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]
) -> int:
    """How many of the (y, x) points lie on the model's foreground (p(background) < 0.5).

    A model that does not see the clicked objects (whole cells given to a
    nuclei model) holds few of them: its probabilities are no map for them.
    """
    yx = np.round(np.asarray(points, dtype=np.float64).reshape(len(points), -1)[:, -2:])
    yx = np.clip(yx.astype(int), 0, np.array(np.shape(probabilities)[-2:]) - 1)
    background = np.asarray(probabilities)[list(classes).index("background")]
    return int(np.count_nonzero(background[yx[:, 0], yx[:, 1]] < 0.5))


def click_spacing(points: np.ndarray) -> float | None:
    """The median distance from each point to its nearest neighbour (None for one point).

    One click per touching cell: about the cells' diameter.
    """
    from scipy.spatial import cKDTree

    yx = np.asarray(points, dtype=np.float64).reshape(len(points), -1)[:, -2:]
    if len(yx) < 2:
        return None
    distance, _ = cKDTree(yx).query(yx, k=2)
    return float(np.median(distance[:, 1]))


# Grown on the cell channel's gradient, each nucleus seed is first enlarged by
# this fraction of the cells' diameter (never past the midline to another
# nucleus): a nucleus's own rim is a ring of high gradient, and the first seed
# to get over its rim flooded its neighbours' cells through their faint
# borders while they were still inside theirs. Chosen on two-channel images
# made from 25 dsb2018-fluo/train images (cells grown 6/12/24 px, cytoplasm and
# membrane stains; benchmarks/two_channel_cells.py): mean AP@0.5 0.43 with the
# nuclei as seeds, 0.75 / 0.79 / 0.77 / 0.74 at 0.1 / 0.15 / 0.2 / 0.25.
NUCLEUS_SEED_FRACTION = 0.15


def cells_from_nuclei(
    nuclei: np.ndarray,
    cell_plane: np.ndarray,
    probabilities: np.ndarray | None = None,
    classes: Sequence[str] = (),
    diameter: float = 40.0,
    seed_fraction: float | None = None,
) -> np.ndarray:
    """Whole cells grown from nuclei labels on the cell channel (one cell per nucleus).

    The nuclei are the seeds; a cell model's probabilities (if given) or the
    cell channel's gradient and foreground decide where each cell ends. The
    cell channel is taken as a fluorescent cytoplasm or membrane stain
    (cells brighter than the background); a cell ends within ``diameter``
    of its nucleus. On the gradient each seed is the nucleus enlarged by
    ``seed_fraction`` of ``diameter`` (default ``NUCLEUS_SEED_FRACTION``).
    """
    nuclei = np.asarray(nuclei)
    if nuclei.shape != np.shape(cell_plane)[-2:]:
        raise UNetError(f"nuclei {nuclei.shape} and cell channel {np.shape(cell_plane)} differ")
    if probabilities is not None:
        elevation, foreground = probability_elevation(probabilities, list(classes))
        return sequential_labels(grow_from_seeds(elevation, nuclei, foreground))
    elevation = image_elevation(cell_plane, diameter)
    near = ndi.distance_transform_edt(nuclei == 0) < diameter
    foreground = image_foreground(cell_plane, diameter, texture=False, seeds=nuclei)
    foreground &= near
    fraction = NUCLEUS_SEED_FRACTION if seed_fraction is None else seed_fraction
    _check_seed_fraction(fraction)
    seeds = expand_labels(nuclei, int(round(fraction * diameter)))
    return sequential_labels(grow_from_seeds(elevation, seeds, foreground))


def _check_seed_fraction(fraction: float) -> None:
    if not (np.isfinite(fraction) and fraction >= 0):
        raise UNetError(f"seed_fraction must be a number >= 0, got {fraction}")


def _grey(plane: np.ndarray) -> np.ndarray:
    plane = np.asarray(plane, dtype=np.float32)
    if plane.ndim == 3:
        plane = plane.mean(axis=-1 if plane.shape[-1] in (3, 4) else 0)
    if plane.ndim != 2:
        raise UNetError(f"a cell image must be one 2D plane, got shape {plane.shape}")
    lo, hi = np.percentile(plane, [1, 99.8])
    return np.clip((plane - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(plane)


def _otsu(values: np.ndarray) -> float:
    return float(threshold_otsu(values)) if values.max() > values.min() else float(values.max())
