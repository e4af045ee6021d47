"""Synthetic fluorescent nuclei with exact ground truth, generated offline.

Used by the napari sample data, the demo command, tests and benchmarks: a
deterministic image of blurred, noisy ellipses (some touching) and their
instance labels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def synthetic_nuclei(
    shape: tuple[int, int] = (512, 512),
    n_nuclei: int | None = None,
    radius: tuple[float, float] = (6.0, 14.0),
    touching: float = 0.3,
    noise: float = 0.04,
    seed: int = 0,
    dtype=np.uint16,
) -> tuple[np.ndarray, np.ndarray]:
    """A fluorescence-like image and its instance labels.

    Parameters
    ----------
    shape
        (Y, X) size.
    n_nuclei
        Number of nuclei placed (default: about one per 40x40 pixels).
    radius
        Range of ellipse semi-axes in pixels.
    touching
        Fraction of nuclei placed right next to an earlier one.
    noise
        Gaussian noise level relative to the brightest nucleus.
    seed
        Random seed; the same seed gives the same image.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    if n_nuclei is None:
        n_nuclei = max(1, int(h * w / 1600))
    labels = np.zeros(shape, dtype=np.int32)
    brightness = np.zeros(shape, dtype=np.float32)
    centers: list[tuple[float, float, float]] = []
    placed = 0
    for _ in range(n_nuclei * 4):
        if placed == n_nuclei:
            break
        ry, rx = rng.uniform(*radius, size=2)
        if centers and rng.random() < touching:
            cy0, cx0, r0 = centers[rng.integers(len(centers))]
            angle = rng.uniform(0, 2 * np.pi)
            dist = r0 + 0.9 * min(ry, rx)
            cy, cx = cy0 + dist * np.sin(angle), cx0 + dist * np.cos(angle)
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        theta = rng.uniform(0, np.pi)
        r = int(np.ceil(max(ry, rx))) + 1
        y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, h)
        x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, w)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - cy, xx - cx
        u = dy * np.cos(theta) + dx * np.sin(theta)
        v = -dy * np.sin(theta) + dx * np.cos(theta)
        inside = (u / ry) ** 2 + (v / rx) ** 2 <= 1.0
        window = labels[y0:y1, x0:x1]
        # A new nucleus may touch others but never cover them.
        if not inside.any() or (window[inside] > 0).mean() > 0.05:
            continue
        new = inside & (window == 0)
        placed += 1
        window[new] = placed
        brightness[y0:y1, x0:x1][new] = rng.uniform(0.5, 1.0)
        centers.append((cy, cx, min(ry, rx)))
    # Texture inside nuclei, optical blur, background and camera noise.
    texture = 1.0 + 0.15 * ndi.gaussian_filter(rng.standard_normal(shape), 2.0) * 3
    image = ndi.gaussian_filter(brightness * texture.astype(np.float32), 1.2)
    image += 0.05 + noise * rng.standard_normal(shape).astype(np.float32)
    image = np.clip(image, 0, None)
    if np.issubdtype(dtype, np.integer):
        image = image / max(float(image.max()), 1e-6) * (0.8 * np.iinfo(dtype).max)
    return image.astype(dtype), labels


def synthetic_cells(
    shape: tuple[int, int] = (256, 256),
    n_cells: int | None = None,
    diameter: float = 60.0,
    coverage: float = 0.8,
    noise: float = 0.05,
    seed: int = 0,
    with_nuclei: bool = False,
    dtype=np.uint16,
) -> tuple[np.ndarray, np.ndarray]:
    """Touching whole cells (a cytoplasm/membrane-like image) and their instance labels.

    Cells are the Voronoi regions of random centres, cut to a blob around
    each centre so that most touch their neighbours along thin borders and
    some face background; the image shows bright membranes on a mid-grey
    textured cytoplasm, as a membrane stain or a cell-mask channel does.

    Parameters
    ----------
    shape
        (Y, X) size.
    n_cells
        Number of cells (default: the field covered at ``diameter``).
    diameter
        Typical cell diameter in pixels.
    coverage
        Share of the field that cells may cover (the rest is background).
    noise
        Gaussian noise level relative to the membrane brightness.
    seed
        Random seed; the same seed gives the same image.
    with_nuclei
        Also return a nuclear channel: the image is then (2, Y, X), channel 0
        the cells, channel 1 a bright nucleus near each cell's centre.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    if n_cells is None:
        n_cells = max(2, int(coverage * h * w / (np.pi * diameter**2 / 4)))
    # Centres from a jittered grid keep cells of similar size, as in a monolayer.
    step = np.sqrt(h * w / n_cells)
    ys, xs = np.meshgrid(np.arange(step / 2, h, step), np.arange(step / 2, w, step), indexing="ij")
    centres = np.stack([ys.ravel(), xs.ravel()], 1)
    centres = centres + rng.uniform(-0.3, 0.3, centres.shape) * step
    seeds = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate(centres, 1):
        seeds[int(np.clip(cy, 0, h - 1)), int(np.clip(cx, 0, w - 1))] = k
    distance, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[iy, ix]
    # Cells end where they are far from their centre: some face background.
    radius = 0.5 * diameter * rng.uniform(0.9, 1.3, len(centres) + 1)
    labels[distance > radius[labels]] = 0
    # Thin borders between touching cells belong to no cell (as in the paper's data).
    eroded = ndi.grey_erosion(labels, size=3)
    dilated = ndi.grey_dilation(labels, size=3)
    border = (eroded != dilated) & (labels > 0)
    labels[border & (eroded != labels)] = 0
    from skimage.segmentation import relabel_sequential

    labels = relabel_sequential(labels)[0].astype(np.int32)
    # Keep only each cell's largest piece (a cut Voronoi region can split).
    out = np.zeros_like(labels)
    for k, region in enumerate(ndi.find_objects(labels), 1):
        if region is None:
            continue
        part, n = ndi.label(labels[region] == k)
        if n == 0:
            continue
        largest = 1 + int(np.argmax(ndi.sum(np.ones_like(part), part, range(1, n + 1))))
        out[region][part == largest] = k
    labels = relabel_sequential(out)[0].astype(np.int32)
    edges = ndi.grey_dilation(labels, size=3) != ndi.grey_erosion(labels, size=3)
    texture = ndi.gaussian_filter(rng.standard_normal(shape), 3.0) * 3
    image = 0.15 + 0.25 * (labels > 0) * (1 + 0.3 * texture) + 0.6 * edges
    image = ndi.gaussian_filter(image.astype(np.float32), 1.0)
    image += noise * rng.standard_normal(shape).astype(np.float32)
    image = np.clip(image, 0, None)
    if with_nuclei:
        nuclei = np.zeros(shape, np.float32)
        for k, centre in enumerate(
            ndi.center_of_mass(labels > 0, labels, range(1, labels.max() + 1))
        ):
            cy, cx = centre
            yy, xx = np.ogrid[:h, :w]
            inside = ((yy - cy) ** 2 + (xx - cx) ** 2 <= (0.22 * diameter) ** 2) & (labels == k + 1)
            nuclei[inside] = rng.uniform(0.6, 1.0)
        nuclei = ndi.gaussian_filter(nuclei, 1.0) + noise * rng.standard_normal(shape)
        image = np.stack([image, np.clip(nuclei, 0, None).astype(np.float32)])
    if np.issubdtype(dtype, np.integer):
        image = image / max(float(image.max()), 1e-6) * (0.8 * np.iinfo(dtype).max)
    return image.astype(dtype), labels
