"""Data augmentation: the paper's elastic deformation plus rigid and grey-value changes.

Geometric changes are combined into one coordinate map and applied once:
the image is resampled with cubic splines, labels and masks by nearest
neighbour, so labels never gain new ids. Flips and 90-degree rotations are
exact array operations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from ..images.planes import reflect_index


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths; stored in the training summary."""

    elastic_sigma: float = 10.0  # std (pixels) of displacements on the coarse grid
    elastic_grid: int = 3  # the paper's 3x3 grid
    max_rotation: float = 15.0  # degrees, on top of rot90
    max_shift: float = 0.0  # pixels (patch sampling already shifts)
    flips: bool = True
    intensity_scale: float = 0.2  # multiply by U(1 - s, 1 + s)
    intensity_offset: float = 0.1  # add U(-o, o)
    gamma: float = 0.2  # ** U(1 - g, 1 + g) on the [0, 1] range
    noise: float = 0.03  # Gaussian noise std, up to this
    blur: float = 0.0  # Gaussian blur sigma up to this (pixels)
    # Objects shown at a size drawn log-uniformly in [1/z, z] of their own (0 or 1: off),
    # so a model sees nuclei smaller and larger than its training set's.
    max_zoom: float = 0.0
    # Each channel of a colour image multiplied by its own U(1 - c, 1 + c) on top
    # of the common scale: stain colours vary from lab to lab (0: off).
    channel_scale: float = 0.0

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict."""
        return asdict(self)


NO_AUGMENTATION = AugmentConfig(0.0, 3, 0.0, 0.0, False, 0.0, 0.0, 0.0, 0.0, 0.0)


def _cubic_interpolation_matrix(n_out: int, n_nodes: int) -> np.ndarray:
    """(n_out, n_nodes) weights of cubic-spline interpolation from nodes spanning 0..n_out-1."""
    positions = np.linspace(0, n_nodes - 1, n_out)
    eye = np.eye(n_nodes)
    return np.stack(
        [ndi.map_coordinates(eye[j], [positions], order=3, mode="nearest") for j in range(n_nodes)],
        axis=1,
    )


def elastic_displacement(
    shape: tuple[int, int], sigma: float, grid: int, rng: np.random.Generator
) -> np.ndarray:
    """Smooth per-pixel displacements (2, Y, X) from random vectors on a coarse grid.

    Each grid node gets a displacement drawn from N(0, sigma^2) per axis; the
    per-pixel field is the bicubic (tensor-product cubic spline) interpolation
    between the nodes, which span the patch corner to corner. Being separable,
    it is two small matrix products rather than a resampling per pixel.
    """
    coarse = rng.normal(0.0, sigma, size=(2, grid, grid))
    wy = _cubic_interpolation_matrix(shape[0], grid)
    wx = _cubic_interpolation_matrix(shape[1], grid)
    return np.einsum("yi,cij,xj->cyx", wy, coarse, wx)


def warp_coordinates(
    out_shape: tuple[int, int],
    center: tuple[float, float],
    rng: np.random.Generator,
    config: AugmentConfig,
) -> np.ndarray:
    """Source coordinates (2, Y, X) for an output patch centred on ``center``.

    Rotation by a random small angle, zoom and shift about the centre, plus
    the elastic field. Returns coordinates into the source array.
    """
    h, w = out_shape
    yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    angle = (
        np.deg2rad(rng.uniform(-config.max_rotation, config.max_rotation))
        if config.max_rotation
        else 0.0
    )
    # A source step of ``scale`` pixels per output pixel shows objects 1/scale times their size.
    scale = (
        float(np.exp(rng.uniform(-np.log(config.max_zoom), np.log(config.max_zoom))))
        if config.max_zoom > 1
        else 1.0
    )
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    sy = center[0] + (rng.uniform(-config.max_shift, config.max_shift) if config.max_shift else 0.0)
    sx = center[1] + (rng.uniform(-config.max_shift, config.max_shift) if config.max_shift else 0.0)
    coords = np.stack([c * yy - s * xx + sy, s * yy + c * xx + sx])
    if config.elastic_sigma > 0:
        coords += elastic_displacement(out_shape, config.elastic_sigma, config.elastic_grid, rng)
    return coords


def crop_padded(array: np.ndarray, y0: int, x0: int, h: int, w: int, mode: str) -> np.ndarray:
    """``array[..., y0:y0+h, x0:x0+w]``; outside the array mirrored ("reflect") or zero."""
    H, W = array.shape[-2:]
    ys, xs = np.arange(y0, y0 + h), np.arange(x0, x0 + w)
    if mode == "reflect":
        return array[..., reflect_index(ys, H)[:, None], reflect_index(xs, W)[None, :]]
    out = np.zeros(array.shape[:-2] + (h, w), dtype=array.dtype)
    iy = (ys >= 0) & (ys < H)
    ix = (xs >= 0) & (xs < W)
    if iy.any() and ix.any():
        out[..., np.flatnonzero(iy)[:, None], np.flatnonzero(ix)[None, :]] = array[
            ..., ys[iy][:, None], xs[ix][None, :]
        ]
    return out


def warp(image: np.ndarray, coords: np.ndarray, order: int, cval: float = 0.0) -> np.ndarray:
    """Sample a (C, Y, X) or (Y, X) array at ``coords``; order 3 for images, 0 for labels."""
    mode = "reflect" if order > 0 else "constant"
    if image.ndim == 2:
        return ndi.map_coordinates(
            image, coords, order=order, mode=mode, cval=cval, prefilter=order > 1
        )
    return np.stack(
        [
            ndi.map_coordinates(ch, coords, order=order, mode=mode, cval=cval, prefilter=order > 1)
            for ch in image
        ]
    )


def flip_rotate(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flip and 90-degree rotation applied to every array's last two axes."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(-2, -1))
        if flip:
            a = a[..., ::-1]
        out.append(np.ascontiguousarray(a))
    return out


def augment_intensity(
    image: np.ndarray, rng: np.random.Generator, config: AugmentConfig
) -> np.ndarray:
    """Random grey-value changes on a normalized (C, Y, X) float image."""
    out = image.astype(np.float32, copy=True)
    if config.gamma:
        g = rng.uniform(1 - config.gamma, 1 + config.gamma)
        out = np.sign(out) * np.abs(out) ** np.float32(g)
    if config.intensity_scale:
        out *= np.float32(rng.uniform(1 - config.intensity_scale, 1 + config.intensity_scale))
    if config.channel_scale and out.shape[0] > 1:
        c = config.channel_scale
        out *= rng.uniform(1 - c, 1 + c, size=(out.shape[0], 1, 1)).astype(np.float32)
    if config.intensity_offset:
        out += np.float32(rng.uniform(-config.intensity_offset, config.intensity_offset))
    if config.blur:
        sigma = rng.uniform(0, config.blur)
        if sigma > 0.3:
            out = ndi.gaussian_filter(out, (0, sigma, sigma))
    if config.noise:
        out += rng.normal(0, rng.uniform(0, config.noise), size=out.shape).astype(np.float32)
    return out


def augment_pair(
    image: np.ndarray,
    labels: np.ndarray,
    valid: np.ndarray,
    out_shape: tuple[int, int],
    center: tuple[float, float],
    rng: np.random.Generator,
    config: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut a deformed ``out_shape`` patch around ``center`` from image (C, Y, X), labels and mask.

    One coordinate map (rotation + elastic field) resamples all three: the
    image with cubic splines (mirrored beyond the border), labels and mask by
    nearest neighbour (zero beyond the border). Only the window the map
    touches is read. Then a random flip/rot90 and grey-value changes.
    """
    coords = warp_coordinates(out_shape, center, rng, config)
    # Read just the window the coordinates need (+2 px of cubic support).
    y0 = int(np.floor(coords[0].min())) - 2
    x0 = int(np.floor(coords[1].min())) - 2
    h = int(np.ceil(coords[0].max())) + 3 - y0
    w = int(np.ceil(coords[1].max())) + 3 - x0
    local = coords - np.array([y0, x0], dtype=coords.dtype)[:, None, None]
    img = warp(crop_padded(image, y0, x0, h, w, "reflect"), local, order=3)
    lab = warp(crop_padded(labels, y0, x0, h, w, "constant"), local, order=0)
    val = warp(
        crop_padded(valid.astype(np.uint8), y0, x0, h, w, "constant"), local, order=0
    ).astype(bool)
    if config.flips:
        img, lab, val = flip_rotate([img, lab, val], rng)
    return augment_intensity(img, rng, config), lab, val
