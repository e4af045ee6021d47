"""Whole cells grown from seeds: clicks and nuclei."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels, find_boundaries

from napari_unet.errors import UNetError
from napari_unet.images.synthetic import synthetic_cells
from napari_unet.labels.metrics import matching
from napari_unet.segmenting.cells import (
    cells_from_nuclei,
    cells_from_points,
    click_seeds,
    click_spacing,
    clicks_in_foreground,
    grow_from_seeds,
    points_to_seeds,
)


def centres(labels):
    ids = np.unique(labels)[1:]
    return np.array(ndi.maximum_position(ndi.distance_transform_edt(labels > 0), labels, ids))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6))
def test_every_seed_grows_into_one_connected_object_holding_it(seed, n):
    rng = np.random.default_rng(seed)
    elevation = rng.random((40, 40)).astype(np.float32)
    points = rng.integers(0, 40, (n, 2))
    seeds = points_to_seeds(points, (40, 40), radius=0)
    grown = grow_from_seeds(elevation, seeds, rng.random((40, 40)) > 0.3)
    for k in np.unique(seeds[seeds > 0]):
        assert np.all(grown[seeds == k] == k)
        assert ndi.label(grown == k)[1] == 1


def test_one_click_per_synthetic_cell_gives_one_object_each_and_most_cells_whole():
    # From the image alone (no model): a start to correct, not the final cells.
    image, truth = synthetic_cells((192, 192), diameter=50, seed=4)
    labels = cells_from_points(centres(truth), image)
    assert labels.max() == truth.max()
    assert matching(truth, labels).ap >= 0.6


def test_clicks_grow_on_a_models_probabilities_when_given():
    _, truth = synthetic_cells((128, 128), diameter=40, seed=1)
    interior = ndi.binary_erosion(truth > 0, iterations=2) & (truth > 0)
    probs = np.stack([truth == 0, interior, (truth > 0) & ~interior]).astype(np.float32)
    labels = cells_from_points(
        centres(truth), np.zeros(truth.shape), probs, ("background", "interior", "boundary")
    )
    assert matching(truth, labels).ap == 1.0


def test_a_cell_whose_middle_the_model_calls_background_is_still_grown_whole():
    # What DIC did to a model's maps: the middle of a cell (the nucleus) read
    # as background. A click seed of a few pixels there was an island outside
    # the foreground and stayed a dot of 13 px.
    _, truth = synthetic_cells((160, 160), diameter=44, seed=2, coverage=1.0)
    points = centres(truth)
    interior = (truth > 0) & ~find_boundaries(truth, mode="thick")
    hole = ndi.distance_transform_edt(points_to_seeds(points, truth.shape, radius=0) == 0) < 6
    background = ((truth == 0) | hole).astype(np.float32)
    inside = (interior & ~hole).astype(np.float32)
    probs = np.stack([background, inside, 1 - background - inside])
    labels = cells_from_points(
        points, np.zeros(truth.shape), probs, ("background", "interior", "boundary")
    )
    assert matching(truth, labels).ap == 1.0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 8), st.floats(0.0, 20.0))
def test_click_seeds_keep_every_click_and_no_seed_crosses_to_a_nearer_click(seed, n, radius):
    rng = np.random.default_rng(seed)
    points = rng.choice(50 * 50, n, replace=False)
    points = np.stack([points // 50, points % 50], axis=1)
    seeds = click_seeds(points, (50, 50), radius)
    yy, xx = np.mgrid[:50, :50]
    distance = np.hypot(yy[..., None] - points[:, 0], xx[..., None] - points[:, 1])
    for k, (y, x) in enumerate(points, 1):
        assert seeds[y, x] == k
        mine = seeds == k
        # every pixel of seed k is within the radius and no farther from click k than from any other
        assert np.all(distance[mine, k - 1] <= max(radius, 2.0) + 1e-9)
        assert np.all(distance[mine, k - 1] <= distance[mine].min(axis=1) + 1e-9)


def test_one_click_among_unclicked_cells_stays_near_its_click():
    _, truth = synthetic_cells((192, 192), diameter=40, seed=3, coverage=1.0)
    truth = expand_labels(truth, 3)  # touching, as the cells of a confluent field
    interior = (truth > 0) & ~find_boundaries(truth, mode="thick")
    probs = np.stack([truth == 0, interior, (truth > 0) & ~interior]).astype(np.float32)
    points = centres(truth)
    point = points[np.argmin(np.hypot(*(points - 96).T))][None]  # the middle cell
    labels = cells_from_points(
        point, np.zeros(truth.shape), probs, ("background", "interior", "boundary"), diameter=40
    )
    grown = np.argwhere(labels == 1)
    assert np.hypot(*(grown - point[0]).T).max() < 40 + 2  # the click's own 2-px seed
    assert labels.max() == 1


def test_cells_grow_from_nuclei_on_the_cell_channel():
    image, truth = synthetic_cells((192, 192), diameter=50, seed=5, with_nuclei=True)
    nuclei, _ = ndi.label(image[1] > 0.5 * image[1].max())
    labels = cells_from_nuclei(nuclei, image[0], diameter=50)
    assert matching(truth, labels).ap >= 0.8


def test_bad_points_are_one_clear_error():
    with pytest.raises(UNetError, match="at least one point"):
        points_to_seeds(np.zeros((0, 2)), (10, 10))
    with pytest.raises(UNetError, match="outside the image"):
        points_to_seeds(np.array([[5, 12]]), (10, 10))
    with pytest.raises(UNetError, match="differ"):
        cells_from_nuclei(np.zeros((5, 5), int), np.zeros((6, 6)))


def test_click_spacing_is_the_median_nearest_neighbour_distance():
    assert click_spacing(np.array([[0, 0], [0, 10], [0, 30]])) == 10
    assert click_spacing(np.array([[3, 3]])) is None


def test_clicks_in_foreground_counts_clicks_where_background_is_under_one_half():
    probs = np.zeros((3, 10, 10), np.float32)
    probs[0] = 1.0
    probs[0, :5] = 0.2  # the top half is foreground
    points = np.array([[1, 1], [4.4, 9], [5, 5], [9, 9]])
    assert clicks_in_foreground(points, probs, ("background", "interior", "boundary")) == 2


def test_cells_grow_from_nuclei_past_the_rim_each_nucleus_makes_in_a_cytoplasm_stain():
    # A cytoplasm stain is dimmer over the nucleus: each nucleus sits in a ring
    # of high gradient, and with the bare nuclei as seeds the first to get over
    # its ring flooded its neighbours' cells through their faint borders.
    rng = np.random.default_rng(0)
    nuclei = np.zeros((200, 200), np.int32)
    yy, xx = np.mgrid[:200, :200]
    centres = [(y, x) for y in range(25, 200, 50) for x in range(25, 200, 50)]
    for k, (y, x) in enumerate(centres, 1):
        y, x = y + rng.integers(-5, 6), x + rng.integers(-5, 6)
        nuclei[(yy - y) ** 2 + (xx - x) ** 2 <= 8**2] = k
    cells = expand_labels(nuclei, 18)  # neighbours meet halfway: touching cells
    levels = np.concatenate([[0.0], rng.uniform(0.5, 1.0, len(centres))])
    stain = ndi.gaussian_filter(levels[cells] * np.where(nuclei > 0, 0.6, 1.0), 1.5) + 0.05
    stain += rng.normal(0, 0.02, stain.shape)
    labels = cells_from_nuclei(nuclei, stain, diameter=48)
    bare = cells_from_nuclei(nuclei, stain, diameter=48, seed_fraction=0.0)
    assert matching(cells, labels).ap >= 0.8  # 15 of 16 here
    assert matching(cells, bare).ap < 0.5  # 0 here: one flood took them all


@pytest.mark.parametrize("fraction", [-0.1, float("nan"), float("inf")])
def test_a_bad_seed_fraction_is_one_clear_error(fraction):
    _, truth = synthetic_cells((64, 64), diameter=30, seed=1)
    with pytest.raises(UNetError, match="seed_fraction"):
        cells_from_points(centres(truth), np.zeros(truth.shape), seed_fraction=fraction)
    with pytest.raises(UNetError, match="seed_fraction"):
        cells_from_nuclei(truth, np.zeros(truth.shape), seed_fraction=fraction)
