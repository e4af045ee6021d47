"""The shipped default model, scored on real held-out nuclei (skipped without ../shared/data).

The model file records the validation scores measured when it was trained
(``training.validation_final``). This test recomputes them through the public
API — reading the TIFFs from disk, ``segment(image)`` with the default model and
its stored post-processing parameters — so the numbers in the README and in the
model file cannot drift from what a user gets.
"""

import numpy as np
import pytest

from napari_unet.data import pair_by_stem
from napari_unet.io import read_image
from napari_unet.metrics import dataset_ap
from napari_unet.modelfile import load_model
from napari_unet.segmentation import segment

# Floors well below the measured scores (see README, "Results"), so that only a
# broken model, a broken pipeline or a changed normalization trips them.
AP50_FLOOR = 0.75
AP70_FLOOR = 0.58


@pytest.fixture(scope="module")
def val_scores(default_model_available, shared_data):
    model = load_model("default")
    pairs = pair_by_stem(
        shared_data / "dsb2018-fluo/val/images", shared_data / "dsb2018-fluo/val/masks"
    )
    assert len(pairs) >= 10
    gts, preds = [], []
    for image_path, mask_path in pairs:
        image = read_image(image_path)
        preds.append(segment(image.data, model, axes=image.axes))
        gts.append(np.asarray(read_image(mask_path).data))
    ap50, ap70 = dataset_ap(gts, preds, (0.5, 0.7))
    return model, len(pairs), ap50, ap70


def test_default_model_segments_real_nuclei_above_floor(val_scores):
    _, _, ap50, ap70 = val_scores
    assert ap50 >= AP50_FLOOR, f"AP50 {ap50:.3f} on dsb2018-fluo/val"
    assert ap70 >= AP70_FLOOR, f"AP70 {ap70:.3f} on dsb2018-fluo/val"


def test_recorded_validation_scores_are_reproducible(val_scores):
    model, n_images, ap50, ap70 = val_scores
    recorded = model.training["validation_final"]
    assert recorded["n_images"] == n_images
    # Half-precision storage and bf16 inference may move a few borderline matches.
    assert abs(recorded["ap50"] - ap50) <= 0.01
    assert abs(recorded["ap70"] - ap70) <= 0.01
