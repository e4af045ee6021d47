"""What a training run starts from: the start model, and what its training images tell it.

A private copy of the start model (or its companion for the images' type, or
a new network), then what the annotated masks and images show: the kind and
size of the objects (whole cells get one working scale and cell thresholds)
and, for frames without bright/dark polarity, the image type they were read as.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

from ..models.modelfile import SegmentationModel, load_model, model_for_image_types, new_model
from ..models.sizes import objects_record
from .recipes import CELL_MIN_SIZE_SHARE, CELL_SEED_DEPTH_SHARE, CELL_THRESHOLDS


def starting_model(init, architecture: dict | None, train_images=()) -> SegmentationModel:
    """A private copy of ``init`` to train (a file, a built-in name, an object), or a new network.

    When most training images are of an image type that ``init`` hands to a
    companion (brightfield images and the built-in default), training starts
    from that companion, the model that segments such images.
    """
    if init is None:
        return new_model(**(architecture or {}))
    base = load_model(init) if not isinstance(init, SegmentationModel) else init
    base = model_for_image_types(base, [item.image_type for item in train_images])
    # What the network has seen carries over: a fine-tuned model still knows its start's images.
    seen = {"image_types": base.trained_image_types}
    return SegmentationModel(
        copy.deepcopy(base.net),
        base.normalization,
        base.postprocessing,
        seen,
        base.name,
        base.source,
        # Read from these weights' features: kept only if training keeps the start model.
        size_model=base.size_model,
        size_rule=base.size_rule,
    )


def with_fixed_polarity(model: SegmentationModel, train_images) -> SegmentationModel:
    """``model`` reading every image as its training images were read, when they had no polarity.

    DIC and phase-contrast frames have no bright or dark background: the
    bright-background rule reads them as brightfield (inverted) or not
    depending on a few bright specks or the camera's gamma. A model trained
    only on such frames fixes the image type they were read as, so every
    image it segments is read the same way (a model trained on DIC frames
    read inverted found 0.19 AP@0.5 on held-out frames read the other way,
    0.61 read as trained). The user's image type still wins.
    """
    kinds = {item.image_type for item in train_images}
    if (
        model.normalization.image_type != "auto"
        or not train_images
        or not all(item.unpolarised for item in train_images)
        or len(kinds) != 1
    ):
        return model
    return replace(model, normalization=replace(model.normalization, image_type=kinds.pop()))


def with_objects_record(model: SegmentationModel, train_images) -> SegmentationModel:
    """``model`` recording what the training masks show (kind, size, working scale).

    Whole cells were all resized to one working scale: the model segments
    at it, and its size rule's ``object_area`` becomes their median area
    there (what a user's diameter and the size warning compare with).
    """
    record = objects_record(
        [(item.object_area, item.scale, item.cells) for item in train_images if item.object_area]
    )
    if record is None:
        return model
    params, rule = model.postprocessing, model.size_rule
    if record.scale > 0:
        working_area = math.pi * (record.diameter * record.scale) ** 2 / 4
        rule = replace(rule, object_area=round(working_area, 1))
        knew_cells = model.objects is not None and model.objects.kind == "cells"
        if not knew_cells:  # a nuclei model's thresholds do not fit cells
            params = replace(
                params,
                **CELL_THRESHOLDS,
                seed_distance_h=round(record.diameter * record.scale * CELL_SEED_DEPTH_SHARE, 1),
                min_size=round(working_area * CELL_MIN_SIZE_SHARE),
            )
    return replace(model, postprocessing=params, size_rule=rule, objects=record)
