import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from napari_unet.errors import UNetError
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.training.weights import (
    border_term,
    border_weight_map,
    cell_boundary,
    cell_centres,
    class_targets,
    separated_labels,
    touching_border,
    weight_maps_per_plane,
)


def random_labels(rng: np.random.Generator, shape=(40, 48), n=5) -> np.ndarray:
    """Random rectangles and discs, some touching, some isolated."""
    labels = np.zeros(shape, dtype=np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for i in range(1, n + 1):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r = rng.integers(2, 8)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return labels


def brute_force_border_term(labels, w0=10.0, sigma=5.0):
    """The paper's formula with one full distance transform per cell."""
    ids = [i for i in np.unique(labels) if i != 0]
    out = np.zeros(labels.shape)
    if len(ids) < 2:
        return out
    d = np.sort(np.stack([ndi.distance_transform_edt(labels != i) for i in ids]), axis=0)
    term = w0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2))
    return np.where(labels == 0, term, 0.0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(0, 9), sigma=st.sampled_from([1.0, 2.5, 5.0]))
def test_border_term_equals_brute_force(seed, n, sigma):
    labels = random_labels(np.random.default_rng(seed), (36, 44), n)
    fast = border_term(labels, 10.0, sigma)
    assert np.abs(fast - brute_force_border_term(labels, 10.0, sigma)).max() <= 1e-5


@pytest.mark.parametrize("case", ["touching", "isolated", "single", "none"])
def test_border_term_cases(case):
    labels = np.zeros((40, 60), dtype=np.int32)
    if case in ("touching", "isolated", "single"):
        labels[10:20, 10:20] = 1
    if case == "touching":
        labels[10:20, 20:30] = 2
    if case == "isolated":
        labels[10:20, 40:50] = 2
    fast = border_term(labels)
    assert np.abs(fast - brute_force_border_term(labels)).max() <= 1e-5
    if case in ("single", "none"):
        assert not fast.any()


def test_weight_is_highest_in_a_narrow_gap():
    labels = np.zeros((30, 40), dtype=np.int32)
    labels[5:25, 5:18] = 1
    labels[5:25, 20:35] = 2  # a 2-pixel gap between the cells
    w = border_weight_map(labels, class_weights=(1.0, 1.0))
    gap = w[15, 18:20]
    assert gap.min() > 1 + 10 * np.exp(-((1 + 2) ** 2) / 50) - 1e-4  # d1 + d2 <= 3 there
    assert w[15, 18] > w[2, 2]


def test_class_balance_and_annotated_region():
    labels = np.zeros((20, 20), dtype=np.int32)
    labels[5:10, 5:10] = 1  # 25 of 400 pixels
    w = border_weight_map(labels, w0=0)
    assert w[7, 7] / w[0, 0] == pytest.approx((375 / 25), rel=1e-5)
    mask = np.zeros_like(labels, dtype=bool)
    mask[:, :10] = True
    w = border_weight_map(labels, mask=mask)
    assert (w[:, 10:] == 0).all() and (w[:, :10] > 0).all()
    with pytest.raises(UNetError):
        border_weight_map(labels, mask=mask[:5])


def test_touching_border_and_separation():
    labels = np.zeros((10, 10), dtype=np.int32)
    labels[2:8, 1:5] = 1
    labels[2:8, 5:9] = 2
    border = touching_border(labels)
    assert border[2:8, 4].all() and border[2:8, 5].all()
    assert not border[:, :4].any() and not border[:, 6:].any()
    sep = separated_labels(labels)
    assert (sep[2:8, 4:6] == 0).all()
    lab2, n = ndi.label(sep > 0)
    assert n == 2  # the two cells no longer touch


def test_class_targets_schemes():
    labels = np.zeros((12, 12), dtype=np.int32)
    labels[2:10, 2:6] = 1
    labels[2:10, 6:10] = 2
    t3 = class_targets(labels, "3class")
    assert set(np.unique(t3)) == {0, 1, 2}
    assert (t3[cell_boundary(labels)] == 2).all()
    assert t3[5, 3] == 1 and t3[0, 0] == 0
    # Touching cells are always split by boundary pixels.
    interior, n = ndi.label(t3 == 1)
    assert n == 2
    t2 = class_targets(labels, "2class")
    assert set(np.unique(t2)) == {0, 1}
    assert (t2[2:10, 5:7] == 0).all()
    t4 = class_targets(labels, "4class")
    assert (t4 == 3).any()
    # 4-class is 3-class with the deeper interior relabelled as centre.
    assert (np.where(t4 == 3, 1, t4) == t3).all()
    with pytest.raises(UNetError):
        class_targets(labels, "5class")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fraction", [0.3, 0.5])
def test_cell_centres_equal_the_per_cell_brute_force(seed, fraction):
    _, labels = synthetic_nuclei((128, 128), touching=0.6, seed=seed)
    centres = cell_centres(labels, fraction)
    boundary = cell_boundary(labels)
    expected = np.zeros_like(centres)
    for i in np.unique(labels[labels > 0]):
        core = (labels == i) & ~boundary
        if not core.any():
            continue
        # The image edge is no contour: a cell cut by it continues beyond.
        depth = ndi.distance_transform_edt(core)
        cell_centre = core & (depth >= fraction * depth.max())
        assert cell_centre.any()  # every cell with an interior keeps its deepest pixels
        expected |= cell_centre
    assert (centres == expected).all()
    # Centres of different cells never touch, even where the cells do.
    lab = np.where(centres, labels, 0)
    grown = ndi.grey_dilation(lab, size=3)
    assert not ((lab > 0) & (grown != lab)).any()


def test_weight_map_speed_is_not_quadratic():
    # 300 cells in 1024x1024 must not run one full distance transform per cell;
    # timing lives in benchmarks/, here we check the result on a larger case.
    from napari_unet.images.synthetic import synthetic_nuclei

    _, labels = synthetic_nuclei((256, 256), n_nuclei=60, seed=4)
    assert np.abs(border_term(labels) - brute_force_border_term(labels)).max() <= 1e-5


def test_weight_maps_per_plane_equal_the_training_map_of_each_plane():
    rng = np.random.default_rng(3)
    stack = np.stack([random_labels(rng), random_labels(rng), np.zeros((40, 48), np.int32)])
    maps = weight_maps_per_plane(stack.reshape(3, 1, 40, 48), w0=8.0, sigma=4.0)
    assert maps.shape == (3, 1, 40, 48) and maps.dtype == np.float32
    for plane, got in zip(stack, maps[:, 0]):
        expected = border_weight_map(separated_labels(plane), 8.0, 4.0)
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_weight_maps_per_plane_refuse_a_line():
    with pytest.raises(UNetError, match="two dimensions"):
        weight_maps_per_plane(np.zeros(5, np.int32))
