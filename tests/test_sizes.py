import numpy as np
import pytest

from napari_unet.errors import UNetError
from napari_unet.models.sizes import SizeRule, resize_channels


def test_rescale_factor_brings_objects_to_the_training_sizes():
    from napari_unet.models.sizes import (
        MAX_UPSCALE,
        MIN_DOWNSCALE,
        RESCALE_WORTH,
        rescale_factor,
    )

    labels = np.zeros((100, 100), np.int32)
    for i in range(5):  # five 5x10 objects: median area 50
        labels[i * 12 : i * 12 + 5, :10] = i + 1

    def up(area):
        return rescale_factor(labels, SizeRule(upscale_to_area=area))

    def down(above, target):
        return rescale_factor(labels, SizeRule(downscale_from_area=above, object_area=target))

    assert up(200) == pytest.approx(2.0)  # sqrt(200 / 50)
    assert up(100) == pytest.approx(np.sqrt(2))
    assert up(10_000) == MAX_UPSCALE  # capped
    assert up(50 * (RESCALE_WORTH**2) * 0.99) == 1.0  # not worth a second pass
    assert up(0) == 1.0  # switched off

    def up_from(below, to):
        params = SizeRule(upscale_from_area=below, upscale_to_area=to)
        return rescale_factor(labels, params)

    assert up_from(60, 450) == pytest.approx(3.0)  # under 60: enlarged to 450
    assert up_from(60, 50 * 16) == MAX_UPSCALE  # capped
    assert up_from(40, 450) == 1.0  # not under the trigger
    assert up_from(100, 30) == 1.0  # a target below the median never shrinks
    assert rescale_factor(np.zeros((8, 8), np.int32), SizeRule(upscale_to_area=200)) == 1.0
    assert down(40, 12.5) == pytest.approx(0.5)  # sqrt(12.5 / 50)
    assert down(40, 0.01) == MIN_DOWNSCALE  # capped
    assert down(60, 12.5) == 1.0  # not above the limit
    assert down(40, 45) == 1.0  # not worth it


def test_enlarging_below_changes_only_the_trigger_and_refuses_bad_areas():
    rule = SizeRule(upscale_to_area=450, upscale_from_area=120, downscale_from_area=2000)
    assert rule.enlarge_below == 120 and SizeRule(upscale_to_area=200).enlarge_below == 200
    assert SizeRule(upscale_from_area=120).enlarge_below == 0  # no target: never enlarges
    assert rule.enlarging_below(120) is rule
    assert rule.enlarging_below(60).to_dict() == {**rule.to_dict(), "upscale_from_area": 60}
    assert rule.enlarging_below(600).upscale_to_area == 600  # never less than it names
    assert rule.enlarging_below(0).enlarge_below == 0
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(UNetError, match="enlarge-below"):
            rule.enlarging_below(bad)


def test_diameter_sets_the_scale_and_bad_diameters_are_clear():
    from napari_unet.models.sizes import diameter_factor

    params = SizeRule(object_area=np.pi * 10**2)  # trained on 20 px wide nuclei
    assert diameter_factor(40, params) == pytest.approx(0.5)
    assert diameter_factor(10, params) == pytest.approx(2.0)
    for bad in (0, -3, float("nan")):
        with pytest.raises(UNetError, match="diameter"):
            diameter_factor(bad, params)
    with pytest.raises(UNetError, match="does not record"):
        diameter_factor(20, SizeRule())


def test_resizing_there_and_back_keeps_objects_in_place():
    image = np.zeros((1, 41, 57), np.float32)
    image[0, 10:17, 30:35] = 1.0
    big = resize_channels(image, (round(41 * 1.7), round(57 * 1.7)))
    back = resize_channels(big, (41, 57))
    assert back.shape == image.shape
    com = lambda a: np.array(np.nonzero(a[0] > 0.5)).mean(axis=1)  # noqa: E731
    assert np.allclose(com(back), com(image), atol=0.05)
    assert abs((back[0] > 0.5).sum() - (image[0] > 0.5).sum()) <= 4


def test_labels_resize_with_the_image_geometry_and_keep_their_ids():
    from napari_unet.models.sizes import resize_labels, resized_shape

    labels = np.zeros((41, 57), np.int32)
    labels[10:17, 30:35] = 7
    labels[25:33, 5:15] = 3
    for factor in (0.5, 1.7, 3.0):
        shape = resized_shape(labels.shape, factor)
        big = resize_labels(labels, shape)
        assert big.dtype == labels.dtype and big.shape == shape
        assert set(np.unique(big)) == {0, 3, 7}
        image = resize_channels((labels == 7)[None].astype(np.float32), shape)[0]
        com = lambda a: np.array(np.nonzero(a)).mean(axis=1)  # noqa: E731
        assert np.allclose(com(big == 7), com(image > 0.5), atol=0.6)


@pytest.mark.parametrize(
    "shape, out", [((2, 37, 41), (80, 95)), ((3, 10, 10), (31, 12)), ((1, 5, 7), (15, 21))]
)
def test_fast_enlargement_matches_the_resize_geometry_inside(shape, out):
    from napari_unet.models.sizes import enlarge_channels

    image = np.random.default_rng(sum(out)).random(shape).astype(np.float32)
    fast, reference = enlarge_channels(image, out), resize_channels(image, out)
    assert fast.shape == reference.shape == (shape[0], *out) and fast.dtype == np.float32
    # Only the outermost pixels may differ (edges held, not mirrored).
    margin = (-(-out[0] // shape[1]), -(-out[1] // shape[2]))
    inner = (slice(None), slice(margin[0], -margin[0]), slice(margin[1], -margin[1]))
    np.testing.assert_allclose(fast[inner], reference[inner], atol=1e-4)


@pytest.mark.parametrize(
    "record",
    [
        {"kind": "organelles", "diameter": 10, "scale": 0},
        {"kind": "cells", "diameter": -3, "scale": 0.3},
        {"kind": "cells", "diameter": 100, "scale": 0.001},
        {"kind": "cells", "diameter": "big", "scale": 0.3},
        {"kind": "cells", "diameter": True, "scale": 0.3},
        {"kind": "nuclei"},
    ],
)
def test_a_crafted_objects_record_is_refused_in_one_line(record):
    from napari_unet.errors import UNetError
    from napari_unet.models.sizes import TrainedObjects

    with pytest.raises(UNetError, match="'objects' record"):
        TrainedObjects.from_dict(record, "m.safetensors")


def test_cells_go_to_the_working_scale_and_nuclei_keep_the_rule():
    from napari_unet.models.sizes import (
        WORKING_CELL_DIAMETER,
        TrainedObjects,
        factor_for_area,
        median_diameter,
        segmenting_scale,
        training_scale,
    )

    params = SizeRule(downscale_from_area=2000, object_area=333)
    cell_area = np.pi * 110**2 / 4
    assert training_scale(cell_area, params) == pytest.approx(WORKING_CELL_DIAMETER / 110)
    assert training_scale(cell_area, None) == pytest.approx(WORKING_CELL_DIAMETER / 110)
    assert training_scale(300.0, params) == factor_for_area(300.0, params)
    assert training_scale(300.0, None) == 1.0
    assert training_scale(None, params) == 1.0
    assert median_diameter(np.pi * 25) == pytest.approx(10)
    cells = TrainedObjects("cells", 110.0, 0.36)
    assert segmenting_scale(cells, params, None) == 0.36
    assert segmenting_scale(cells, params, 55.0) == pytest.approx(0.72)
    nuclei = TrainedObjects("nuclei", 20.0, 0.0)
    assert segmenting_scale(nuclei, params, None) is None
    assert segmenting_scale(None, params, None) is None
