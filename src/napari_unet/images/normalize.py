"""What the network sees: image type, channels and intensities, once per plane, never per tile.

1. Image type. The networks are trained on nuclei that are brighter than
   their background (fluorescence). Brightfield and stained images (H&E,
   IHC, RGB or grey) show dark nuclei on a bright background; they are
   recognised by where the bulk of their pixels lies (see
   :func:`bright_background_score`) and converted, as the model's
   ``Normalization.brightfield`` says: inverted after colour is reduced to
   what the model takes ("invert"), or to the optical density of
   hematoxylin, the stain of nuclei, by colour deconvolution
   ("hematoxylin", :func:`hematoxylin_density`). ``image_type`` forces a choice.
2. Channels: :func:`to_channels_first` maps RGB(A) and grey to the model's count.
3. Intensities: percentile normalization over the whole plane. Per-tile
   statistics would give every tile a different scale and visible seams; the
   percentiles come from the whole plane (a regular subsample for very large
   ones) and are applied everywhere.

:func:`convert_plane` does the first two and :func:`prepare_plane` all
three; every path (segment, block-wise statistics, training data, widgets)
goes through them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UNetError

# Above this many pixels the percentiles come from a regular subsample: the
# estimate is stable to well under one grey level and avoids a full sort.
MAX_PERCENTILE_SAMPLES = 4_000_000


# The image types a plane can be segmented as; "auto" decides per plane.
IMAGE_TYPES = ("auto", "fluorescence", "brightfield")
# How a brightfield plane becomes bright nuclei on a dark background.
BRIGHTFIELD_CONVERSIONS = ("invert", "hematoxylin")
# Above this bright_background_score a plane is taken as brightfield. On the
# DSB 2018 data fluorescence planes score 0.00-0.13 and stained/brightfield
# ones 0.40-0.94 (all 582 train and val images).
BRIGHT_BACKGROUND_THRESHOLD = 0.3
# Where the median of a plane without bright/dark polarity (DIC, phase contrast)
# lies between its 1st and 99.8th percentiles (looks_unpolarised).
UNPOLARISED_MIDDLE = (0.25, 0.75)


@dataclass(frozen=True)
class Normalization:
    """How an image becomes network input; stored in every model file.

    low, high
        Percentiles that map to 0 and 1 (no clipping).
    image_type
        "auto" (decide per plane), "fluorescence" (use as is) or
        "brightfield" (dark nuclei on a bright background: converted). A
        model trained only on frames without polarity (DIC, phase contrast)
        fixes the type they were read as, so every image is read the same way.
    brightfield
        How brightfield planes are converted: "invert" (colour reduced to
        the model's channels, then negated) or "hematoxylin" (the optical
        density of the nuclear stain, :func:`hematoxylin_density`).
    """

    low: float = 1.0
    high: float = 99.8
    method: str = "percentile"
    image_type: str = "auto"
    brightfield: str = "invert"

    def __post_init__(self) -> None:
        if self.brightfield not in BRIGHTFIELD_CONVERSIONS:
            raise UNetError(
                f"unknown brightfield conversion {self.brightfield!r}; "
                f"choose one of {', '.join(BRIGHTFIELD_CONVERSIONS)}"
            )

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        """Settings from a dict; unknown keys are ignored, missing ones take their defaults."""
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


def working_dtype(array: np.ndarray) -> type:
    """float64 for float64 input (its values may lie beyond float32's range), else float32."""
    return np.float64 if np.asarray(array).dtype == np.float64 else np.float32


def check_image_type(image_type: str) -> str:
    """``image_type`` if it is one of IMAGE_TYPES, else a UNetError listing them."""
    if image_type not in IMAGE_TYPES:
        raise UNetError(
            f"unknown image type {image_type!r}; choose one of {', '.join(IMAGE_TYPES)}"
        )
    return image_type


def bright_background_score(chw: np.ndarray) -> float:
    """Where the median pixel lies between the 1st and 99.8th percentile (0: dark, 1: bright).

    Nuclei cover a minority of most fields, so the median is background:
    near 0 in fluorescence, near 1 in brightfield and stained images.
    Channels are averaged.
    """
    chw = np.asarray(chw)
    # The same grid as averaging first, then sampling: only the sample is converted.
    step = subsample_step(chw.shape[-2] * chw.shape[-1])
    sample = chw[..., ::step, ::step] if step > 1 else chw
    sample = np.asarray(sample, dtype=working_dtype(chw))
    sample = sample.mean(axis=0) if sample.ndim == 3 else sample
    lo, mid, hi = np.percentile(sample, [1.0, 50.0, 99.8])
    return float((mid - lo) / (hi - lo)) if hi > lo else 0.0


def looks_unpolarised(chw: np.ndarray) -> bool:
    """Whether a plane shows objects neither brighter nor darker than its background.

    DIC and phase contrast give objects both brighter and darker edges on a
    mid-grey background: the median sits mid-range and the intensities are
    nearly symmetric. Fluorescence (median near the dark end, skewed to the
    bright side) and stained or brightfield images (the reverse) are not.
    On the shared data: DIC HeLa median at 0.38-0.41 of the range, skewness
    0.2-0.4; fluorescence skewness above 1, stained below -0.4 with the
    median above 0.6.
    """
    chw = np.asarray(chw)
    step = subsample_step(chw.shape[-2] * chw.shape[-1])
    sample = chw[..., ::step, ::step] if step > 1 else chw
    sample = np.asarray(sample, dtype=np.float64)
    sample = sample.mean(axis=0) if sample.ndim == 3 else sample
    lo, mid, hi = np.percentile(sample, [1.0, 50.0, 99.8])
    if not hi > lo:
        return False
    x = (np.clip(sample, lo, hi) - lo) / (hi - lo)
    spread = x.std()
    skewness = float(((x - x.mean()) ** 3).mean() / spread**3) if spread > 0 else 0.0
    middle = (mid - lo) / (hi - lo)
    return bool(UNPOLARISED_MIDDLE[0] < middle < UNPOLARISED_MIDDLE[1] and abs(skewness) < 0.6)


def detect_image_type(chw: np.ndarray) -> str:
    """ "brightfield" for a bright background or none (DIC, phase contrast), else "fluorescence".

    Planes without polarity are always read the same way, whichever side of
    the threshold their background falls: a model trained on DIC frames read
    as brightfield found 0.19 AP@0.5 instead of 0.61 on held-out frames read
    the other way. (Such planes have their median in (0.25, 0.75) of the
    range, so only those scoring 0.25-0.3 are looked at again.)
    """
    score = bright_background_score(chw)
    if score > BRIGHT_BACKGROUND_THRESHOLD:
        return "brightfield"
    return (
        "brightfield"
        if score > UNPOLARISED_MIDDLE[0] and looks_unpolarised(chw)
        else "fluorescence"
    )


def resolve_image_type(chw: np.ndarray, requested: str) -> str:
    """The image type to use for a plane: ``requested``, or the detected one for "auto"."""
    check_image_type(requested)
    return detect_image_type(chw) if requested == "auto" else requested


def as_fluorescence(chw: np.ndarray, image_type: str) -> np.ndarray:
    """Bring a plane to bright nuclei on a dark background (brightfield is negated).

    Negation is inversion here: the percentile normalization that follows
    maps the new range to 0..1 again.
    """
    if image_type == "brightfield":
        # One C-ordered copy (a channels-last view would stay strided and
        # slow every later pass), negated in place.
        out = np.array(chw, dtype=working_dtype(chw), order="C")
        return np.negative(out, out=out)
    return chw


# Colour deconvolution (Ruifrok & Johnston 2001, scikit-image's H&E-DAB
# vectors): optical densities of R, G, B -> hematoxylin. A grey plane is the
# same density in all three channels.
HEMATOXYLIN_FROM_RGB = np.array([1.87798274, -0.06590806, -0.60190736])


def hematoxylin_density(chw: np.ndarray) -> np.ndarray:
    """The (1, Y, X) hematoxylin optical density of a brightfield plane (1 or 3 channels).

    Optical density is -log of the transmitted light relative to the
    background's; the background term is a constant per channel, which the
    percentile normalization that follows removes, so no white point is
    needed. Integer images add 1 before the logarithm (float images 1/255) so
    black pixels stay finite.
    """
    chw = np.asarray(chw)
    dtype = working_dtype(chw)
    offset = 1.0 if not np.issubdtype(chw.dtype, np.floating) else 1 / 255
    density = np.maximum(chw, 0, dtype=dtype)  # one working copy, changed in place
    density += dtype(offset)
    np.log(density, out=density)
    np.negative(density, out=density)
    weights = HEMATOXYLIN_FROM_RGB.astype(dtype)
    if chw.shape[0] == 1:
        return density * weights.sum()
    if chw.shape[0] != 3:
        raise UNetError(f"colour deconvolution takes grey or RGB, got {chw.shape[0]} channels")
    return np.tensordot(weights, density, axes=1)[None]


def convert_plane(
    plane: np.ndarray,
    channel_axis: int | None,
    in_channels: int,
    norm: Normalization,
    image_type: str | None = None,
) -> tuple[np.ndarray, str]:
    """One plane as (C, Y, X) bright nuclei on a dark background, before normalization.

    Returns the converted plane and the image type used (``image_type``
    overrides the model's own setting).
    """
    # A grey plane for a colour model is converted once, then shown to every
    # channel as a read-only view (no copies; the pipeline folds the network).
    grey = (channel_axis is None or plane.shape[channel_axis] == 1) and in_channels > 1
    chw = to_channels_first(plane, channel_axis, 1 if grey else in_channels)
    kind = resolve_image_type(chw, image_type or norm.image_type)
    if kind == "brightfield" and norm.brightfield == "hematoxylin":
        colour = (
            to_channels_first(plane, channel_axis, 3) if channel_axis is not None else plane[None]
        )
        return to_channels_first(hematoxylin_density(colour), 0, in_channels), kind
    chw = as_fluorescence(chw, kind)
    if grey:
        chw = np.broadcast_to(chw, (in_channels, *chw.shape[1:]))
    return chw, kind


def prepare_plane(
    plane: np.ndarray,
    channel_axis: int | None,
    in_channels: int,
    norm: Normalization,
    image_type: str | None = None,
    value_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, str]:
    """One plane as network input: channels mapped, image type applied, normalized.

    Returns the (C, Y, X) float32 input and the image type used.
    ``image_type`` overrides the model's own setting; ``value_range`` gives
    percentiles computed elsewhere (block-wise processing), already for the
    converted plane.
    """
    check_finite_array(plane)
    chw, kind = convert_plane(plane, channel_axis, in_channels, norm, image_type)
    return normalize(chw, norm, value_range), kind


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
    lo, hi = np.percentile(sample.astype(working_dtype(sample)), [low, high])
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
    # float64 input is scaled in float64 first: values beyond float32's range
    # would otherwise become inf and every pixel the same.
    dtype = working_dtype(image)
    out = np.asarray(image, dtype=dtype) - dtype(lo)
    out *= dtype(scale)
    return out.astype(np.float32, copy=False)


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
        dtype = working_dtype(chw)
        weights = np.array([0.299, 0.587, 0.114], dtype=dtype)
        return np.tensordot(weights, chw.astype(dtype), axes=1)[None]
    if c == 1 and in_channels == 3:
        return np.repeat(chw, 3, axis=0)
    raise UNetError(
        f"the image has {c} channels but the model takes {in_channels}; choose which to "
        "segment: --channels CELLS[,NUCLEI] (segment(..., channels=...); the Segment widget's "
        "layers), or use a model trained for this many channels"
    )
