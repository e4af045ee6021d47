"""Intensity normalization and channel handling, once per image, never per tile.

Per-tile statistics would give every tile a different intensity scale and
therefore visible seams; the percentiles are computed over the whole plane
(on a regular subsample for very large ones) and applied everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import UNetError

# Above this many pixels the percentiles come from a regular subsample: the
# estimate is stable to well under one grey level and avoids a full sort.
MAX_PERCENTILE_SAMPLES = 4_000_000


@dataclass(frozen=True)
class Normalization:
    """Percentile normalization: ``low`` maps to 0 and ``high`` to 1 (no clipping)."""

    low: float = 1.0
    high: float = 99.8
    method: str = "percentile"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def check_finite_array(image: np.ndarray, what: str = "image") -> None:
    """Raise a clear error for empty, non-numeric or non-finite input."""
    if image.size == 0:
        raise UNetError(f"the {what} is empty (shape {image.shape}); give an image with pixels")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise UNetError(f"the {what} has dtype {image.dtype}; expected numbers")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
        raise UNetError(
            f"the {what} contains {bad} NaN or infinite pixel(s); "
            "replace them (e.g. with numpy.nan_to_num) before segmenting"
        )


def subsample_step(n_pixels: int) -> int:
    """Stride along Y and X that leaves at most MAX_PERCENTILE_SAMPLES pixels."""
    return max(1, int(np.ceil(np.sqrt(n_pixels / MAX_PERCENTILE_SAMPLES))))


def percentile_range(image: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The ``low`` and ``high`` percentiles of ``image`` (on a regular Y/X grid when very large).

    The same grid is used for lazy images processed block by block, so both
    paths normalize identically.
    """
    image = np.asarray(image)
    step = subsample_step(image.size)
    sample = image[..., ::step, ::step] if step > 1 else image
    lo, hi = np.percentile(sample.astype(np.float32), [low, high])
    return float(lo), float(hi)


def normalize(
    image: np.ndarray, norm: Normalization = Normalization(), value_range=None
) -> np.ndarray:
    """Scale to float32 so the chosen percentiles map to 0 and 1.

    ``value_range`` (lo, hi) may be passed when it was computed elsewhere, e.g.
    once for a whole image that is then processed in blocks.
    """
    check_finite_array(image)
    if norm.method != "percentile":
        raise UNetError(f"unknown normalization method {norm.method!r}")
    lo, hi = (
        value_range if value_range is not None else percentile_range(image, norm.low, norm.high)
    )
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    out = np.asarray(image, dtype=np.float32) - np.float32(lo)
    out *= np.float32(scale)
    return out


def to_channels_first(plane: np.ndarray, channel_axis: int | None, in_channels: int) -> np.ndarray:
    """Return a (C, Y, X) array with the channel count the model takes.

    RGB(A) into a one-channel model becomes luminance (alpha dropped); a grey
    image into a three-channel model is repeated. Anything else that does not
    match raises an error naming both counts.
    """
    if channel_axis is None:
        if plane.ndim != 2:
            raise UNetError(f"expected a 2D plane, got shape {plane.shape}")
        chw = plane[None]
    else:
        chw = np.moveaxis(plane, channel_axis, 0)
        if chw.ndim != 3:
            raise UNetError(f"expected a 2D plane with channels, got shape {plane.shape}")
    c = chw.shape[0]
    if c == in_channels:
        return chw
    if c == 4 and in_channels in (1, 3):
        chw, c = chw[:3], 3  # drop alpha
    if c == in_channels:
        return chw
    if c == 3 and in_channels == 1:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.tensordot(weights, chw.astype(np.float32), axes=1)[None]
    if c == 1 and in_channels == 3:
        return np.repeat(chw, 3, axis=0)
    raise UNetError(
        f"the image has {c} channels but the model takes {in_channels}; "
        "choose the channel axis (or a model trained for this many channels)"
    )
