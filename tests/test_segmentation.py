import numpy as np
import pytest

from napari_unet.errors import UNetError
from napari_unet.metrics import matching
from napari_unet.segmentation import iter_segment, labels_from_probabilities, segment
from napari_unet.synthetic import synthetic_nuclei


def test_shapes_for_grey_rgb_and_stacks(tiny_model):
    grey = np.random.default_rng(0).integers(0, 4000, (40, 50), dtype=np.uint16)
    assert segment(grey, tiny_model).shape == (40, 50)
    rgb = np.random.default_rng(1).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    assert segment(rgb, tiny_model).shape == (40, 50)
    stack = np.stack([grey, grey[::-1]])
    labels, probs = segment(stack, tiny_model, return_probabilities=True)
    assert labels.shape == (2, 40, 50) and probs.shape == (3, 2, 40, 50)
    channels_first = np.moveaxis(rgb, -1, 0)
    assert segment(channels_first, tiny_model, axes="CYX").shape == (40, 50)
    tzyx = np.zeros((2, 3, 20, 24), np.uint16)
    assert segment(tzyx, tiny_model).shape == (2, 3, 20, 24)


def test_stack_planes_get_distinct_ids(default_model_available):
    image, _ = synthetic_nuclei((96, 96), n_nuclei=6, seed=2)
    stack = np.stack([image, image])
    labels = segment(stack)
    a, b = set(np.unique(labels[0])) - {0}, set(np.unique(labels[1])) - {0}
    assert a and b and not (a & b)


def test_progress_events_per_plane(tiny_model):
    stack = np.zeros((3, 30, 30), np.float32)
    events = []
    gen = iter_segment(stack, tiny_model)
    while True:
        try:
            events.append(next(gen))
        except StopIteration:
            break
    planes = [e for e in events if e.stage == "segment"]
    assert [e.step for e in planes] == [1, 2, 3] and planes[0].total == 3


def test_user_errors(tiny_model):
    with pytest.raises(UNetError, match="at least 2"):
        segment(np.zeros(10), tiny_model)
    with pytest.raises(UNetError, match="empty"):
        segment(np.zeros((0, 10)), tiny_model)
    with pytest.raises(UNetError, match="NaN"):
        segment(np.full((10, 10), np.nan), tiny_model)
    with pytest.raises(UNetError, match="channels"):
        segment(np.zeros((5, 30, 30)), tiny_model, axes="CYX")
    with pytest.raises(UNetError, match="axes"):
        segment(np.zeros((30, 30)), tiny_model, axes="ZYX")


def test_relabel_from_cached_probabilities_matches_segment(tiny_model):
    image = np.random.default_rng(3).random((40, 40)).astype(np.float32)
    labels, probs = segment(image, tiny_model, return_probabilities=True)
    assert np.array_equal(labels_from_probabilities(probs, tiny_model), labels)


def test_default_model_segments_synthetic_nuclei(default_model_available):
    image, truth = synthetic_nuclei((256, 256), seed=5)
    labels = segment(image)
    assert matching(truth, labels, 0.5).ap > 0.7
