"""How a batch run segments: the options the CLI, the widget's folder run and dask share.

Its own module so that ``batch`` and ``blockwise`` both import it (each
needed the other before).
"""

from __future__ import annotations

from dataclasses import dataclass

from .instances import InstanceParams, with_thresholds
from .stitching import DEFAULT_STITCH_THRESHOLD

__all__ = ["BatchOptions"]


@dataclass
class BatchOptions:
    """How a batch run segments its files: model, tiling, device, outputs and resume rules."""

    model: str = "default"
    tile_size: int | None = None
    device: str = "auto"
    axes: str | None = None
    overwrite: bool = False
    allow_input_folder: bool = False
    block_size: int = 4096  # images with a side above this go block by block
    object_margin: int = 64  # pixels around a block in which objects are completed
    precision: str = "auto"
    save_probabilities: bool = False
    overlay: bool = False
    image_type: str | None = None  # None: the model's own setting ("auto" for built-in models)
    diameter: float | None = None  # object diameter in pixels; None: the model decides
    replace_others: bool = False  # also replace outputs that napari-unet did not write
    into_input: bool = False  # OME-Zarr inputs: labels go into <image>/labels/napari-unet
    stitch: bool | None = None  # link Z planes into 3-D objects; None: yes for Z stacks
    track: bool = False  # keep ids over time points by overlap
    stitch_threshold: float = DEFAULT_STITCH_THRESHOLD  # smallest IoU to link
    # (cell channel, nuclear channel or None) of multi-channel images; None: as the model takes them
    channels: tuple[int, ...] | None = None
    # Post-processing settings to change (instances.THRESHOLD_OPTIONS' fields); the rest
    # stay the model's own. None or {}: the model's own thresholds.
    thresholds: dict[str, float] | None = None

    def params_for(self, model_params: InstanceParams) -> InstanceParams | None:
        """The post-processing to use with a model whose own is ``model_params``.

        None when no threshold is changed (each plane's model then uses its own,
        as the built-in default hands stained planes to its brightfield model).
        """
        if not self.thresholds:
            return None
        return with_thresholds(model_params, **self.thresholds)
