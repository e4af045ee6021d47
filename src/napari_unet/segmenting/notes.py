"""What the user is told about an input: how it was read, and warnings.

A warning is one line, given when a plane looks unlike what the model
knows. Notes travel in :func:`~napari_unet.segmenting.segmentation.iter_segment`'s
events; :func:`note_collector` is the one place that reads them (for
``segment``, batch runs and the Segment widget).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..images.normalize import (
    detect_image_type,
    looks_unpolarised,
)
from ..models.modelfile import (
    SegmentationModel,
    model_display_name,
)
from ..models.sizes import (
    median_diameter,
)
from ..progress import Progress, Stage


def type_notes(model: SegmentationModel, used: str) -> list[str]:
    """A warning when the model was trained on other image types than the plane's (when recorded)."""
    trained_on = model.trained_image_types
    if used == "prepared" or not trained_on or used in trained_on:
        return []
    return [
        f"warning: the model {model_display_name(model)!r} was trained on "
        f"{' and '.join(trained_on)} images only, and this one reads as {used}; segment it "
        "with 'default' (it hands each image type to its own built-in model)"
    ]


def what_model_knows(model: SegmentationModel) -> str:
    """'nuclei ~21 px across' or 'whole cells ~110 px across': what a model was trained to find."""
    if model.objects is not None:
        return model.objects.describe()
    area = model.size_rule.object_area
    return f"nuclei ~{median_diameter(area):.0f} px across" if area > 0 else "nuclei"


# A nuclei model's labels covering less than this share of a plane without
# polarity: it found next to nothing there. On DIC HeLa frames the built-in
# model's labels cover 0.0-0.2%; stained nuclei images that also look
# unpolarised (5 of 95 in dsb2018-stained) are 15-49% covered.
NOTHING_FOUND_COVER = 0.05


def object_notes(model: SegmentationModel, chw: np.ndarray, labels: np.ndarray) -> list[str]:
    """A warning when the plane looks unlike any image the model can segment.

    A nuclei model given a DIC or phase-contrast image (no bright or dark
    polarity; whole cells, most likely) finds next to nothing (its
    ``labels`` cover under NOTHING_FOUND_COVER of the plane): say so, and
    what to do instead. A plane it found plenty in (dense stained nuclei
    can look unpolarised too) draws no warning.
    """
    cells_model = model.objects is not None and model.objects.kind == "cells"
    if cells_model or np.count_nonzero(labels) >= NOTHING_FOUND_COVER * labels.size:
        return []
    if not looks_unpolarised(chw):
        return []
    knows = what_model_knows(model)
    return [
        "warning: this image looks like DIC or phase contrast (objects neither brighter nor "
        f"darker than the background, whole cells most likely), and the model knows {knows} "
        "in fluorescence or stained images; annotate a few cells and train a model on them "
        "(napari-unet train, or the Train widget), or give the objects' diameter"
    ]


def input_notes(chw: np.ndarray, used: str, requested: str, model_fixed: bool = False) -> list[str]:
    """One-line notes on how a plane was read, and warnings when it looks unlike that.

    ``model_fixed``: the image type is the model's own fixed one (a model
    trained on DIC or phase-contrast frames reads every image as they were
    read), not one the user asked for.
    """
    if used == "prepared":
        return []
    if model_fixed and looks_unpolarised(chw):
        return [
            f"no bright or dark background: read as {used}, as this model's training images were"
        ]
    if model_fixed:
        detected = detect_image_type(chw if used == "fluorescence" else -chw)
        if detected == used:
            return [f"read as {used}, as this model's training images were"]
        return [
            f"warning: this image looks like {detected} (a {'bright' if detected == 'brightfield' else 'dark'} "
            f"background) but the model reads every image as {used}, as its training images "
            "were; if it is another kind of image, segment it with a model trained on such images"
        ]
    if requested == "auto":
        if used == "brightfield" and looks_unpolarised(chw):
            return [
                "no bright or dark background (DIC or phase contrast?): read as brightfield (inverted)"
            ]
        if used == "brightfield":
            return ["bright background: read as brightfield/stained (inverted)"]
        return []
    detected = detect_image_type(chw if used == "fluorescence" else -chw)
    if detected != used:
        other = "brightfield/stained" if detected == "brightfield" else "fluorescence"
        return [
            f"warning: this image looks like {other} (background "
            f"{'bright' if detected == 'brightfield' else 'dark'}) but was segmented as "
            f"{used}; use image type 'auto' or '{detected}'"
        ]
    return []


def note_collector(notes: list[str]) -> Callable[[Progress], None]:
    """An event handler adding each plane's notes to ``notes``: in order, each once.

    The one place that reads notes from :func:`iter_segment`'s events (for
    :func:`segment`, batch runs and the Segment widget).
    """

    def collect(event: Progress) -> None:
        if event.stage == Stage.SEGMENT:
            notes.extend(n for n in event.info.get("notes", ()) if n not in notes)

    return collect


class InputWarning(UserWarning):
    """An image looks unlike what the model was asked to segment it as."""
