"""The shipped default model, scored on real held-out nuclei of both families (skipped without ../shared/data).

The model file records the ``val`` scores measured when it was made
(``training.validation_final``, per data set). This test recomputes them
through the public API — reading the TIFFs from disk, ``segment(image)`` with
the default model, its image-type detection and its stored post-processing
— so the numbers in docs/results.md and in the model file cannot drift from what a
user gets: fluorescence images as they are, stained/brightfield RGB images
recognised and inverted.
"""

import numpy as np
import pytest

from napari_unet.images.io import read_image
from napari_unet.labels.metrics import dataset_ap
from napari_unet.models.modelfile import load_model
from napari_unet.segmenting.segmentation import segment
from napari_unet.training.data import pair_by_stem

# Floors well below the measured scores (see docs/results.md), so that only a
# broken model, a broken pipeline or a changed normalization trips them.
FLOORS = {"dsb2018-fluo": (0.75, 0.58), "dsb2018-stained": (0.40, 0.25)}


@pytest.fixture(scope="module", params=sorted(FLOORS))
def val_scores(request, default_model_available, shared_data):
    name = request.param
    model = load_model("default")
    pairs = pair_by_stem(shared_data / name / "val/images", shared_data / name / "val/masks")
    assert len(pairs) >= 10
    gts, preds = [], []
    for image_path, mask_path in pairs:
        image = read_image(image_path)
        preds.append(segment(image.data, model, axes=image.axes))
        gts.append(np.asarray(read_image(mask_path).data))
    ap50, ap70 = dataset_ap(gts, preds, (0.5, 0.7))
    return name, model, len(pairs), ap50, ap70


def test_default_model_segments_real_nuclei_above_floor(val_scores):
    name, _, _, ap50, ap70 = val_scores
    floor50, floor70 = FLOORS[name]
    assert ap50 >= floor50, f"AP50 {ap50:.3f} on {name}/val"
    assert ap70 >= floor70, f"AP70 {ap70:.3f} on {name}/val"


def test_recorded_validation_scores_are_reproducible(val_scores):
    name, model, n_images, ap50, ap70 = val_scores
    recorded = model.training["validation_final"][name]
    assert recorded["n_images"] == n_images
    # Half-precision storage and bf16 inference may move a few borderline matches.
    assert abs(recorded["ap50"] - ap50) <= 0.01
    assert abs(recorded["ap70"] - ap70) <= 0.01
