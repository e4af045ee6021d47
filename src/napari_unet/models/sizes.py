"""The size rule: how much a plane is resized so its nuclei reach the sizes a model was trained on.

One home for the rule that ``segment`` (whole images, stacks, blocks) and
fine-tuning share: a plane whose nuclei are far from the model's training
sizes is segmented resized, and an annotated image is trained on resized
the same way, so a fine-tuned network learns nuclei at the scale it will
see them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from ..errors import UNetError

# A plane is segmented again, rescaled, when its objects are far from the
# training sizes: enlarged by at most MAX_UPSCALE (3: nuclei of a 0.5x image
# gained up to 3 on held-out train images, scripts/tune_rescaling.py), by
# MAX_DIAMETER_UPSCALE when the user gives their diameter, shrunk by at most
# 1 / MIN_DOWNSCALE; a change smaller than RESCALE_WORTH gains less than the
# second pass costs.
MAX_UPSCALE = 3.0
MAX_DIAMETER_UPSCALE = 4.0
MIN_DOWNSCALE = 0.25
RESCALE_WORTH = 1.25
# Objects whose annotated median area exceeds this (and the start model's
# downscale_from_area) are whole cells or objects
# like them: training brings every image to one working scale where their
# median diameter is WORKING_CELL_DIAMETER pixels (chosen by
# benchmarks/finetune.py's whole-cell shifts on held-out frames), records that
# scale in the model file, and segmenting uses it (never the nuclei rule).
WHOLE_CELL_AREA = 2000.0
WORKING_CELL_DIAMETER = 40.0
MIN_CELL_SCALE = 0.05


@dataclass(frozen=True)
class SizeRule:
    """When a plane is segmented resized, and to what size; stored in every model file.

    Acts when segmenting (a first pass measures the plane's objects), never
    when re-labelling cached probabilities: the post-processing thresholds
    are :class:`~napari_unet.labels.instances.InstanceParams`.

    upscale_to_area, upscale_from_area
        When the median object of a plane is smaller than ``upscale_from_area``
        pixels (0: than ``upscale_to_area``), the plane is segmented again,
        enlarged (at most 3x) so that it reaches ``upscale_to_area``; tiny
        nuclei get their outlines from more pixels. ``upscale_to_area`` 0
        never enlarges.
    downscale_from_area, object_area
        Planes whose median object is larger than ``downscale_from_area``
        are segmented again, shrunk so it reaches ``object_area`` (the
        training median, also what a user's diameter is compared with).
    coarse_look_from_area
        When the first pass's median object is tiny (small enough to be
        enlarged) or at least this large, the plane is also segmented at a
        third of its size: nuclei far larger than the training size come
        apart into fragments that look tiny or normal, and seen at a third
        they come out whole. If that look measures them over
        ``downscale_from_area``, the plane is shrunk to ``object_area``.
        0 never looks.
    """

    upscale_to_area: float = 0.0
    upscale_from_area: float = 0.0
    downscale_from_area: float = 0.0
    object_area: float = 0.0
    coarse_look_from_area: float = 0.0

    @property
    def enlarge_below(self) -> float:
        """Median object area (pixels) under which a plane is enlarged (0: never)."""
        return (self.upscale_from_area or self.upscale_to_area) if self.upscale_to_area > 0 else 0.0

    def enlarging_below(self, area: float) -> SizeRule:
        """This rule, enlarging planes whose median object is under ``area`` pixels (0: never).

        Enlarged planes reach at least ``area``: the user's threshold never
        asks for less than it names.
        """
        if not (np.isfinite(area) and area >= 0):
            raise UNetError(f"enlarge-below must be a number of pixels >= 0, got {area}")
        if area == self.enlarge_below:
            return self
        if area == 0:
            return replace(self, upscale_from_area=0.0, upscale_to_area=0.0)
        return replace(
            self, upscale_from_area=float(area), upscale_to_area=max(self.upscale_to_area, area)
        )

    def to_dict(self) -> dict:
        """The rule as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SizeRule:
        """A rule from a dict; unknown keys are ignored, missing ones take their defaults.

        Model files before format 2 kept these fields among their
        post-processing settings: that section reads as a rule too.
        """
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class TrainedObjects:
    """What a model's training masks showed, recorded in its file.

    kind
        "cells" when the annotated objects were larger than nuclei (see
        WHOLE_CELL_AREA), else "nuclei".
    diameter
        Median diameter (pixels) of the annotated objects in the images as
        the user gave them.
    scale
        The factor every training image was resized by before the network
        saw it (0: each image by the nuclei size rule). Segmenting resizes
        every plane by it too, unless the user gives the objects' diameter.
    """

    kind: str
    diameter: float
    scale: float = 0.0

    def to_dict(self) -> dict:
        """The record as a JSON-ready dict."""
        return {"kind": self.kind, "diameter": self.diameter, "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict, name: str = "model") -> TrainedObjects:
        """A record from a model file's config (raises UNetError naming ``name`` if invalid)."""
        kind, diameter, scale = d.get("kind"), d.get("diameter"), d.get("scale", 0.0)
        numbers = all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in (diameter, scale)
        )
        if (
            kind not in ("nuclei", "cells")
            or not numbers
            or not 0 < diameter < 1e5
            or not (scale == 0 or MIN_CELL_SCALE <= scale <= MAX_DIAMETER_UPSCALE)
        ):
            raise UNetError(f"{name} is not a valid model: its 'objects' record is not valid")
        return cls(kind, float(diameter), float(scale))

    def describe(self) -> str:
        """'whole cells ~110 px across' for status lines."""
        what = "whole cells" if self.kind == "cells" else "nuclei"
        return f"{what} ~{self.diameter:.0f} px across"


def median_diameter(area: float) -> float:
    """The diameter of a disc of ``area`` pixels."""
    return float(2 * np.sqrt(area / np.pi))


def is_cell_size(area: float, rule: SizeRule | None) -> bool:
    """Whether objects of median ``area`` are whole-cell sized for a start model with ``rule``."""
    limit = max(WHOLE_CELL_AREA, rule.downscale_from_area if rule is not None else 0)
    return area > limit


def cell_scale(area: float, working_diameter: float = WORKING_CELL_DIAMETER) -> float:
    """The factor that brings objects of median ``area`` to ``working_diameter`` (never enlarges)."""
    return float(np.clip(working_diameter / median_diameter(area), MIN_CELL_SCALE, 1.0))


def training_scale(
    area: float | None,
    rule: SizeRule | None,
    working_diameter: float = WORKING_CELL_DIAMETER,
) -> float:
    """How much a training image whose annotated objects have median ``area`` is resized.

    Whole cells (:func:`is_cell_size`) go to the working scale; nuclei follow
    the start model's size rule (``rule``; none for a new network: as given).
    """
    if area is None:
        return 1.0
    if is_cell_size(area, rule):
        return cell_scale(area, working_diameter)
    return 1.0 if rule is None else factor_for_area(area, rule)


def objects_record(images: list[tuple[float, float, bool]]) -> TrainedObjects | None:
    """The record of what training images showed, from each image's (median object area,
    resize factor, whether its objects were whole-cell sized).

    When most images held whole cells the record's scale is the median of
    their factors (one working scale for segmenting), else 0 (the nuclei rule).
    """
    if not images:
        return None
    areas, scales, cells = (np.array(column, dtype=np.float64) for column in zip(*images))
    is_cells = cells.mean() > 0.5
    scale = float(np.median(scales[cells > 0])) if is_cells else 0.0
    diameter = round(median_diameter(float(np.median(areas))), 1)
    return TrainedObjects("cells" if is_cells else "nuclei", diameter, round(scale, 4))


def segmenting_scale(
    objects: TrainedObjects | None, rule: SizeRule, diameter: float | None
) -> float | None:
    """The fixed resize factor for segmenting (None: decide per plane from a first pass).

    A user's ``diameter`` wins; else a model trained at one working scale
    (whole cells) segments at that scale.
    """
    if diameter is not None:
        if objects is not None and objects.scale > 0:
            _check_diameter(diameter)
            working = objects.scale * objects.diameter
            return float(np.clip(working / diameter, MIN_CELL_SCALE, MAX_DIAMETER_UPSCALE))
        return diameter_factor(diameter, rule)
    if objects is not None and objects.scale > 0:
        return objects.scale
    return None


def median_object_area(labels: np.ndarray) -> float | None:
    """Median area of the objects in ``labels`` (None when there are none)."""
    areas = np.bincount(labels.reshape(-1))[1:]
    areas = areas[areas > 0]
    return float(np.median(areas)) if len(areas) else None


def rescale_factor(labels: np.ndarray, rule: SizeRule) -> float:
    """How much to resize a plane whose first-pass objects are ``labels`` (1: not at all)."""
    area = median_object_area(labels)
    return 1.0 if area is None else factor_for_area(area, rule)


def factor_for_area(area: float, rule: SizeRule) -> float:
    """How much to resize a plane whose median object measures ``area`` pixels (1: not at all).

    Tiny objects (median under ``upscale_from_area``, or ``upscale_to_area``
    when that is 0) are enlarged to reach ``upscale_to_area``; huge ones
    (over ``downscale_from_area``) shrunk to reach ``object_area``.
    """
    factor = 1.0
    if area < rule.enlarge_below:
        factor = float(np.clip(np.sqrt(rule.upscale_to_area / area), 1.0, MAX_UPSCALE))
    elif rule.downscale_from_area > 0 and area > rule.downscale_from_area:
        target = rule.object_area or rule.downscale_from_area / 4
        factor = max(MIN_DOWNSCALE, float(np.sqrt(target / area)))
    worth = factor >= RESCALE_WORTH or factor <= 1 / RESCALE_WORTH
    return factor if worth else 1.0


def _check_diameter(diameter: float) -> None:
    if not diameter > 0:
        raise UNetError(f"the object diameter must be a positive number of pixels, got {diameter}")


def diameter_factor(diameter: float, rule: SizeRule) -> float:
    """Resize factor that brings nuclei of ``diameter`` pixels to the model's training size."""
    _check_diameter(diameter)
    if rule.object_area <= 0:
        raise UNetError(
            "this model does not record the nucleus size it was trained on; "
            "segment without a diameter (sizes are then estimated)"
        )
    area = np.pi * diameter**2 / 4
    return float(np.clip(np.sqrt(rule.object_area / area), MIN_DOWNSCALE, MAX_DIAMETER_UPSCALE))


def block_means(chw: np.ndarray, step: int) -> np.ndarray | None:
    """(C, Y, X) seen through the means of ``step`` x ``step`` pixel blocks (None: too small).

    An eighth of the time of a smoothed resize; a look that only measures
    sizes can leave out the few edge pixels that do not fill a block.
    """
    rows, cols = chw.shape[1] // step, chw.shape[2] // step
    if min(rows, cols) == 0:
        return None
    blocks = chw[:, : rows * step, : cols * step].reshape(len(chw), rows, step, cols, step)
    return blocks.mean(axis=(2, 4), dtype=np.float32)


def resize_channels(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C, Y, X) resampled to ``shape``, linearly, pixel centres on pixel centres.

    The same geometry both ways (smoothed when shrinking), so enlarging, then
    shrinking the result, puts every object back where it was.
    """
    from skimage.transform import resize

    shrinking = shape[0] < image.shape[1]
    out = resize(
        image, (image.shape[0], *shape), order=1, anti_aliasing=shrinking, preserve_range=True
    )
    return out.astype(np.float32)


def enlarge_channels(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C, Y, X) enlarged to ``shape`` linearly: :func:`resize_channels`' geometry, about 25x faster.

    torch's bilinear interpolation maps pixel centres as skimage does (equal
    to 1e-4 inside); only the outermost pixels differ, edges being held
    rather than mirrored. For re-labelling probabilities at the size the
    network saw them, where skimage took 0.9 s for a 1000² plane enlarged 2.5x.
    """
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    out = torch.nn.functional.interpolate(
        tensor, size=tuple(shape), mode="bilinear", align_corners=False
    )
    return out[0].numpy()


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Labels or a mask (Y, X) resized to ``shape``: nearest neighbour, the images' geometry."""
    from skimage.transform import resize

    out = resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True)
    return out.astype(labels.dtype)


def resized_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    """(Y, X) of a plane of ``shape`` (its last two axes) resized by ``factor``."""
    return tuple(max(1, round(n * factor)) for n in shape[-2:])
