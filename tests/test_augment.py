from dataclasses import replace

import numpy as np
import pytest

from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.training.augment import (
    NO_AUGMENTATION,
    AugmentConfig,
    augment_intensity,
    augment_pair,
    crop_padded,
    elastic_displacement,
    flip_rotate,
)


def test_elastic_field_interpolates_a_3x3_grid_with_10px_std():
    rng = np.random.default_rng(0)
    fields = [elastic_displacement((65, 65), 10.0, 3, rng) for _ in range(300)]
    nodes = np.stack([f[:, ::32, ::32] for f in fields])  # the 3x3 grid nodes
    assert nodes.std() == pytest.approx(10.0, rel=0.1)
    f = fields[0]
    # Smooth: neighbouring pixels move almost alike (bicubic between nodes 32 px apart).
    assert np.abs(np.diff(f, axis=1)).max() < 3.0


def test_elastic_field_matches_scipy_bicubic():
    from scipy import ndimage as ndi

    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    fast = elastic_displacement((40, 50), 10.0, 3, rng1)
    coarse = rng2.normal(0.0, 10.0, size=(2, 3, 3))
    yy, xx = np.meshgrid(np.linspace(0, 2, 40), np.linspace(0, 2, 50), indexing="ij")
    slow = np.stack([ndi.map_coordinates(c, [yy, xx], order=3, mode="nearest") for c in coarse])
    assert np.abs(fast - slow).max() < 1e-9


def test_labels_keep_their_ids_and_stay_aligned_with_the_image():
    image, labels = synthetic_nuclei((96, 96), n_nuclei=12, seed=2)
    # An image that *is* the labels lets us check alignment after the warp.
    aligned = (labels > 0).astype(np.float32)[None]
    valid = np.ones(labels.shape, bool)
    config = AugmentConfig(intensity_scale=0, intensity_offset=0, gamma=0, noise=0)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        img, lab, val = augment_pair(aligned, labels, valid, (64, 64), (48.0, 48.0), rng, config)
        assert set(np.unique(lab)) <= set(np.unique(labels))
        agree = ((img[0] > 0.5) == (lab > 0)).mean()
        misaligned = ((img[0] > 0.5) == (np.roll(lab, 5, axis=0) > 0)).mean()
        assert agree > 0.95 and agree > misaligned + 0.05
        assert img.shape == (1, 64, 64) and lab.shape == val.shape == (64, 64)


def test_outside_the_image_labels_and_mask_are_zero():
    labels = np.ones((20, 20), dtype=np.int32)
    valid = np.ones((20, 20), bool)
    image = np.ones((1, 20, 20), np.float32)
    rng = np.random.default_rng(0)
    _, lab, val = augment_pair(image, labels, valid, (40, 40), (2.0, 2.0), rng, NO_AUGMENTATION)
    assert not val.all() and val.any()
    assert (lab[~val] == 0).all()


def test_flip_rotate_applies_the_same_transform_to_all():
    a = np.arange(12).reshape(3, 4)
    rng = np.random.default_rng(3)
    for _ in range(8):
        x, y = flip_rotate([a, a * 10], rng)
        assert np.array_equal(y, x * 10)
        assert sorted(x.ravel()) == list(range(12))


def test_intensity_changes_shape_and_range():
    img = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    out = augment_intensity(img, np.random.default_rng(1), AugmentConfig())
    assert out.shape == img.shape and out.dtype == np.float32
    assert not np.allclose(out, img)
    same = augment_intensity(img, np.random.default_rng(1), NO_AUGMENTATION)
    assert np.array_equal(same, img)


def test_channel_scale_changes_colour_balance_only_for_colour_images():
    from dataclasses import replace

    config = replace(NO_AUGMENTATION, channel_scale=0.3)
    rgb = np.ones((3, 8, 8), np.float32)
    out = augment_intensity(rgb, np.random.default_rng(0), config)
    per_channel = out.reshape(3, -1)
    assert np.all(per_channel == per_channel[:, :1])  # one factor per channel
    assert len(np.unique(per_channel[:, 0])) == 3 and np.all(np.abs(per_channel - 1) <= 0.3)
    grey = np.ones((1, 8, 8), np.float32)
    assert np.array_equal(augment_intensity(grey, np.random.default_rng(0), config), grey)


@pytest.mark.parametrize("y0, x0, h, w", [(-2, -1, 8, 8), (2, 3, 5, 9), (-30, -30, 70, 70)])
def test_crop_padded_matches_numpy_pad(y0, x0, h, w):
    a = np.arange(20).reshape(4, 5)
    big = np.pad(a, 200, mode="reflect")
    assert np.array_equal(
        crop_padded(a, y0, x0, h, w, "reflect"),
        big[200 + y0 : 200 + y0 + h, 200 + x0 : 200 + x0 + w],
    )
    zeros = np.pad(a, 200)
    assert np.array_equal(
        crop_padded(a, y0, x0, h, w, "constant"),
        zeros[200 + y0 : 200 + y0 + h, 200 + x0 : 200 + x0 + w],
    )


def test_zoom_shows_objects_smaller_and_larger_within_the_range():
    # One disc of radius 12 in the middle; only the zoom is random here.
    yy, xx = np.mgrid[:101, :101]
    labels = ((yy - 50) ** 2 + (xx - 50) ** 2 <= 12**2).astype(np.int32)
    image = labels[None].astype(np.float32)
    valid = np.ones(labels.shape, bool)
    config = replace(NO_AUGMENTATION, max_zoom=1.5)
    ratios = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        _, lab, _ = augment_pair(image, labels, valid, (64, 64), (50.0, 50.0), rng, config)
        ratios.append(lab.sum() / labels.sum())
    ratios = np.array(ratios)
    # Area scales with 1/zoom^2; allow a little for pixelation.
    assert ratios.min() > 1 / 1.5**2 * 0.9 and ratios.max() < 1.5**2 * 1.1
    assert (ratios < 0.8).any() and (ratios > 1.25).any()
    _, lab, _ = augment_pair(
        image, labels, valid, (64, 64), (50.0, 50.0), np.random.default_rng(0), NO_AUGMENTATION
    )
    assert lab.sum() == labels.sum()
