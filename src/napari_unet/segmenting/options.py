"""How images are segmented: one declaration of the options every face shares.

Its own module so that ``batch`` and ``blockwise`` both import it (each
needed the other before).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..labels.instances import InstanceParams, ThresholdOption, with_thresholds
from ..labels.stitching import DEFAULT_STITCH_THRESHOLD
from ..models.sizes import SizeRule

__all__ = ["ENLARGE_BELOW", "BatchOptions", "SegmentOptions"]

# The one size-rule setting users change (the CLI's --enlarge-below, the Segment
# widget's slider): it acts when segmenting, never when re-labelling.
ENLARGE_BELOW = ThresholdOption(
    "enlarge_below",
    "enlarge below",
    0,
    1000,
    "when a plane's median object is smaller than this many pixels, segment it again "
    "enlarged (up to 3x, to the model's target size) so tiny nuclei get finer outlines; "
    "0: never",
)


@dataclass
class SegmentOptions:
    """How an image is segmented: the one declaration every face takes its options from.

    :func:`napari_unet.segmenting.segmentation.iter_segment` takes these as keyword
    arguments (:meth:`segment_kwargs`), batch and block-wise runs take them
    through :class:`BatchOptions`, the CLI's ``segment`` flags set them (a
    test holds the flags to these fields) and the Segment widget builds one
    from its controls.
    """

    model: object = "default"  # built-in name, file, or SegmentationModel
    tile_size: int | None = None  # output pixels per tile and axis; None: from a memory budget
    device: str = "auto"
    precision: str = "auto"  # "auto", "float32" or "bfloat16"
    axes: str | None = None  # e.g. "ZYX", "CYX"; None: inferred
    image_type: str | None = None  # None: the model's own setting ("auto" for built-in models)
    diameter: float | None = None  # object diameter in pixels; None: the model decides
    # (cell channel, nuclear channel or None) of multi-channel images; None: as the model takes them
    channels: tuple[int, ...] | None = None
    stitch: bool | None = None  # link Z planes into 3-D objects; None: yes for Z stacks
    track: bool = False  # keep ids over time points by overlap
    stitch_threshold: float = DEFAULT_STITCH_THRESHOLD  # smallest IoU to link
    # Post-processing settings to change (instances.THRESHOLD_OPTIONS' fields); the rest
    # stay the model's own. None or {}: the model's own thresholds.
    thresholds: dict[str, float] | None = None
    # Planes whose first-pass median object is under this many pixels are segmented
    # again enlarged (0: never); None: the model's own size rule.
    enlarge_below: float | None = None

    def check(self) -> None:
        """A UNetError naming the first setting outside its range (before any work)."""
        with_thresholds(InstanceParams(), **(self.thresholds or {}))
        if self.enlarge_below is not None:
            ENLARGE_BELOW.check(self.enlarge_below)

    def params_for(self, model_params: InstanceParams) -> InstanceParams | None:
        """The post-processing to use with a model whose own is ``model_params``.

        None when no threshold is changed (each plane's model then uses its own,
        as the built-in default hands stained planes to its brightfield model).
        """
        if not self.thresholds:
            return None
        return with_thresholds(model_params, **self.thresholds)

    def rule_for(self, model_rule: SizeRule) -> SizeRule | None:
        """The size rule to use with a model whose own is ``model_rule`` (None: its own)."""
        if self.enlarge_below is None:
            return None
        ENLARGE_BELOW.check(self.enlarge_below)
        rule = model_rule.enlarging_below(self.enlarge_below)
        return None if rule == model_rule else rule

    def segment_kwargs(self, model) -> dict:
        """Keyword arguments of ``iter_segment`` (all but the image and ``model``, a SegmentationModel)."""
        return {
            "axes": self.axes,
            "tile_size": self.tile_size,
            "device": self.device,
            "precision": self.precision,
            "image_type": self.image_type,
            "diameter": self.diameter,
            "channels": self.channels,
            "stitch": self.stitch,
            "track": self.track,
            "stitch_threshold": self.stitch_threshold,
            "params": self.params_for(model.postprocessing),
            "size_rule": self.rule_for(model.size_rule),
        }


@dataclass
class BatchOptions(SegmentOptions):
    """:class:`SegmentOptions` for many files: outputs, resume rules and blocks."""

    overwrite: bool = False
    allow_input_folder: bool = False
    block_size: int = 4096  # images with a side above this go block by block
    object_margin: int = 64  # pixels around a block in which objects are completed
    save_probabilities: bool = False
    overlay: bool = False
    replace_others: bool = False  # also replace outputs that napari-unet did not write
    into_input: bool = False  # OME-Zarr inputs: labels go into <image>/labels/napari-unet
