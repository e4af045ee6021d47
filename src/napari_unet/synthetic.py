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
