import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from napari_unet.errors import UNetError
from napari_unet.labels.instances import (
    CLASS_SCHEMES,
    InstanceParams,
    fill_holes,
    instances_from_probabilities,
    masked_watershed,
    sequential_labels,
    split_seeds,
    tune_instance_params,
)
from napari_unet.labels.metrics import matching
from napari_unet.training.weights import class_targets


def probabilities_from_labels(labels: np.ndarray, scheme: str, blur: float = 0.7) -> np.ndarray:
    """Soft class probabilities as a well-trained network would give them."""
    target = class_targets(labels, scheme)
    k = len(CLASS_SCHEMES[scheme])
    onehot = np.stack([(target == c).astype(np.float32) for c in range(k)])
    probs = ndi.gaussian_filter(onehot, (0, blur, blur))
    return probs / probs.sum(axis=0, keepdims=True)


def touching_discs():
    yy, xx = np.mgrid[:60, :80]
    labels = np.zeros((60, 80), dtype=np.int32)
    labels[(yy - 30) ** 2 + (xx - 25) ** 2 <= 12**2] = 1
    labels[((yy - 30) ** 2 + (xx - 48) ** 2 <= 12**2) & (labels == 0)] = 2  # touches disc 1
    labels[(yy - 8) ** 2 + (xx - 70) ** 2 <= 4**2] = 3
    return labels


def neck_between_discs(labels: np.ndarray) -> np.ndarray:
    """The pixels of :func:`touching_discs` around where the two touching discs meet."""
    y, x = np.mgrid[: labels.shape[0], : labels.shape[1]]
    return (labels > 0) & (np.abs(x - 37) <= 2) & (np.abs(y - 30) <= 6)


@pytest.mark.parametrize("scheme", ["4class", "3class", "2class"])
def test_touching_cells_come_out_separate(scheme):
    labels = touching_discs()
    probs = probabilities_from_labels(labels, scheme)
    pred = instances_from_probabilities(probs, InstanceParams(min_size=5, seed_h=1.0))
    m = matching(labels, pred, 0.7)
    assert (m.tp, m.fp, m.fn) == (3, 0, 0)


def test_min_size_removes_small_objects_and_labels_are_sequential():
    labels = touching_discs()
    probs = probabilities_from_labels(labels, "3class")
    pred = instances_from_probabilities(probs, InstanceParams(min_size=100))
    assert pred.max() == 2  # the small disc (~50 px) is gone
    assert set(np.unique(pred)) == {0, 1, 2}
    assert pred.dtype == np.uint16


def test_holes_inside_one_object_are_filled_but_gaps_between_objects_stay():
    labels = np.zeros((20, 30), dtype=np.int32)
    labels[2:12, 2:12] = 1
    labels[5:8, 5:8] = 0  # hole in object 1
    labels[2:12, 14:20] = 2
    labels[2:12, 20:26] = 3
    labels[6, 19:21] = 0  # a gap touching both 2 and 3 (not enclosed by one object)
    filled = fill_holes(labels)
    assert (filled[5:8, 5:8] == 1).all()
    assert (filled[6, 19:21] == 0).all()


def test_sequential_labels_switch_to_uint32_beyond_65535_objects():
    labels = np.zeros((600, 600), dtype=np.int64)
    labels[::2, ::2] = np.arange(1, 300 * 300 + 1).reshape(300, 300) * 7  # 90000 isolated pixels
    out = sequential_labels(labels)
    assert out.dtype == np.uint32 and out.max() == 90000
    assert (out > 0).sum() == 90000


def test_sequential_labels_with_huge_ids():
    labels = np.array([[0, 2**40, 2**40], [5, 0, 5]], dtype=np.int64)
    out = sequential_labels(labels)
    assert out.tolist() == [[0, 2, 2], [1, 0, 1]]


def test_wrong_shapes_are_user_errors():
    with pytest.raises(UNetError):
        instances_from_probabilities(np.zeros((3, 4)))
    with pytest.raises(UNetError, match="classes"):
        instances_from_probabilities(np.zeros((5, 4, 4)))


def test_tuning_finds_better_thresholds():
    gts = [touching_discs(), touching_discs()[:, ::-1].copy()]
    probs = [probabilities_from_labels(g, "3class", blur=1.0) for g in gts]
    # A seed threshold this low joins the seeds of touching cells: they merge.
    start = InstanceParams(seed_threshold=0.05, min_size=0)
    start_ap = np.mean(
        [matching(g, instances_from_probabilities(p, start), 0.7).ap for g, p in zip(gts, probs)]
    )
    best, summary = tune_instance_params(probs, gts, start=start, iou_thresholds=(0.5, 0.7))
    assert start_ap < 0.9
    assert summary["mean_ap"] >= 0.99
    assert best.seed_threshold > start.seed_threshold


def two_bumps(dip: float) -> np.ndarray:
    """Two Gaussian peaks of height 0.9 whose saddle lies ``dip`` below them."""
    yy, xx = np.mgrid[:40, :80].astype(np.float32)
    bump = lambda cx: np.exp(-((yy - 20) ** 2 + (xx - cx) ** 2) / (2 * 8.0**2))  # noqa: E731
    field = np.maximum(bump(28), bump(52))
    saddle = field[20, 40]
    # Rescale so the peaks are at 0.9 and the saddle at 0.9 - dip.
    return 0.9 - dip + (field - saddle) * dip / (1.0 - saddle)


@pytest.mark.parametrize(
    "dip, dynamic, n_seeds",
    [(0.35, 0.2, 2), (0.35, 0.25, 2), (0.25, 0.1, 2), (0.15, 0.2, 1), (0.35, 0.4, 1)],
)
def test_a_seed_splits_only_where_both_peaks_rise_the_dynamic_above_the_saddle(
    dip, dynamic, n_seeds
):
    field = two_bumps(dip)
    assert ndi.label(field > 0.3)[1] == 1  # one connected region at the seed threshold
    seeds = split_seeds(field, threshold=0.3, dynamic=dynamic)
    assert len(np.unique(seeds[seeds > 0])) == n_seeds
    assert seeds[20, 28] and seeds[20, 52]  # every peak lies in a seed


def test_seed_splitting_brackets_h_maxima_on_random_fields():
    """Every peak with a dynamic of h + one level step is found; none below h.

    The shortcut tests for splits on a grid of levels 0.1 apart, so peaks whose
    dynamic lies between h and h + 0.1 may go either way.
    """
    from skimage.morphology import h_maxima

    from napari_unet.labels.instances import SPLIT_LEVEL_STEP

    rng = np.random.default_rng(3)
    for _ in range(20):
        field = ndi.gaussian_filter(rng.random((64, 64)), 4)
        field = 0.05 + 0.9 * (field - field.min()) / (field.max() - field.min())
        seeds = split_seeds(field, threshold=0.0, dynamic=0.3)
        n_split = len(np.unique(seeds[seeds > 0]))
        n_sure = ndi.label(h_maxima(field, 0.3 + SPLIT_LEVEL_STEP + 1e-6))[1]
        n_possible = ndi.label(h_maxima(field, 0.3))[1]
        assert n_sure <= n_split <= n_possible


def test_faint_boundary_between_touching_cells_is_split_with_seed_dynamic():
    labels = touching_discs()
    probs = probabilities_from_labels(labels, "3class", blur=2.0)
    # The network saw the boundary only faintly: the interior runs across it.
    neck = neck_between_discs(labels)
    probs[1][neck] = np.maximum(probs[1][neck], 0.55)
    probs[2][neck] = 0.1
    probs[0][neck] = 1 - probs[1][neck] - probs[2][neck]
    whole = instances_from_probabilities(probs, InstanceParams(min_size=5))
    split = instances_from_probabilities(probs, InstanceParams(min_size=5, seed_dynamic=0.2))
    assert whole.max() == 2  # the two discs merged into one
    assert (matching(labels, split, 0.7).tp, matching(labels, split, 0.7).fp) == (3, 0)


def test_four_classes_separate_touching_cells_whose_boundary_is_faint():
    """Where the boundary is faint the centres still lie apart: no seed splitting needed."""
    labels = touching_discs()
    neck = neck_between_discs(labels)
    faint = {}
    for scheme in ("3class", "4class"):
        probs = probabilities_from_labels(labels, scheme, blur=2.0)
        # The network took the neck for interior, not boundary.
        probs[:, neck] = 0.0
        probs[1][neck] = 0.8
        probs[0][neck] = 0.2
        faint[scheme] = probs
    merged = instances_from_probabilities(faint["3class"], InstanceParams(min_size=5))
    assert merged.max() == 2
    split = instances_from_probabilities(
        faint["4class"], InstanceParams(seed_threshold=0.5, min_size=5)
    )
    m = matching(labels, split, 0.7)
    assert (m.tp, m.fp, m.fn) == (3, 0, 0)


def big_touching_cells() -> np.ndarray:
    """Two whole cells 40 px across (the working size of cells) touching along a border."""
    yy, xx = np.mgrid[:64, :110]
    labels = np.zeros((64, 110), dtype=np.int32)
    labels[(yy - 32) ** 2 + (xx - 32) ** 2 <= 20**2] = 1
    labels[((yy - 32) ** 2 + (xx - 72) ** 2 <= 20**2) & (labels == 0)] = 2
    return labels


def textured_interior(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """3-class probabilities whose interior score has many peaks inside each cell (its texture)."""
    probs = probabilities_from_labels(labels, "3class", blur=1.0)
    rng = np.random.default_rng(seed)
    bumps = ndi.gaussian_filter(rng.normal(size=labels.shape), 3.0)
    bumps *= 0.35 / np.abs(bumps).max()
    inside = ndi.binary_erosion(labels > 0, iterations=4)
    interior = np.where(inside, np.clip(probs[1] - 0.3 + bumps, 0.05, 1.0), probs[1])
    probs[2] = np.clip(1 - probs[0] - interior, 0, 1)
    probs[1] = 1 - probs[0] - probs[2]
    return probs


@pytest.mark.parametrize("seed", range(4))
def test_distance_seeds_keep_a_textured_cell_whole_where_score_peaks_split_it(seed):
    labels = big_touching_cells()
    probs = textured_interior(labels, seed)
    by_peaks = instances_from_probabilities(
        probs, InstanceParams(seed_threshold=0.3, seed_dynamic=0.1, min_size=20)
    )
    by_distance = instances_from_probabilities(
        probs, InstanceParams(seed_threshold=0.3, seed_distance_h=5.0, min_size=20)
    )
    m = matching(labels, by_distance, 0.7)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert by_peaks.max() > 2  # what the texture does to score-peak seeds


def test_distance_seeds_separate_touching_cells():
    labels = touching_discs()
    probs = probabilities_from_labels(labels, "3class")
    pred = instances_from_probabilities(probs, InstanceParams(min_size=5, seed_distance_h=2.0))
    m = matching(labels, pred, 0.7)
    assert (m.tp, m.fp, m.fn) == (3, 0, 0)


def test_tuning_searches_the_distance_height_of_a_distance_seeded_model():
    labels = big_touching_cells()
    probs = [textured_interior(labels, s) for s in range(2)]
    start = InstanceParams(seed_threshold=0.3, seed_distance_h=1.0, min_size=20)
    tried = []
    best, _ = tune_instance_params(
        probs, [labels, labels], start=start, rounds=1, progress=lambda p, _: tried.append(p)
    )
    assert {p.seed_distance_h for p in tried} >= {2.0, 5.0, 10.0}
    assert {p.seed_dynamic for p in tried} == {0.0}
    assert best.seed_distance_h > 0


def test_offset_ids_keeps_background_and_reports_the_largest_id():
    from napari_unet.labels.instances import offset_ids

    a = np.array([[0, 1], [2, 0]], np.uint32)
    assert offset_ids(a, 10) == 12 and a.tolist() == [[0, 11], [12, 0]]
    empty = np.zeros((2, 2), np.uint32)
    assert offset_ids(empty, 7) == 7 and not empty.any()


def test_narrowed_picks_uint16_while_ids_fit():
    from napari_unet.labels.instances import narrowed

    assert narrowed(np.array([0, 65535], np.uint32)).dtype == np.uint16
    assert narrowed(np.array([0, 65536], np.uint32)).dtype == np.uint32


def _flood_case(seed, shape, cover, decimals=None):
    rng = np.random.default_rng(seed)
    elevation = ndi.gaussian_filter(rng.random(shape), 1.5)
    if decimals is not None:
        elevation = np.round(elevation, decimals)  # plateaus: pixels of equal height
    mask = ndi.gaussian_filter(rng.random(shape), 2.0) > np.quantile(rng.random(shape), 1 - cover)
    markers, _ = ndi.label(elevation < np.quantile(elevation, 0.05))
    return elevation, np.where(mask, markers, 0), mask


CASES = dict(
    seed=st.integers(0, 2**31 - 1),
    shape=st.tuples(st.integers(8, 120), st.integers(8, 120)),
    workers=st.integers(2, 5),
    cover=st.floats(0.2, 0.8),
)


@settings(max_examples=40, deadline=None)
@given(**CASES)
def test_parallel_watershed_gives_the_single_calls_labels_without_ties(seed, shape, workers, cover):
    elevation, markers, mask = _flood_case(seed, shape, cover)
    single = watershed(elevation, markers=markers, mask=mask)
    parallel = masked_watershed(elevation, markers, mask, workers=workers, min_pixels=0)
    np.testing.assert_array_equal(parallel, single)


@settings(max_examples=40, deadline=None)
@given(**CASES)
def test_parallel_watershed_with_ties_floods_each_part_from_the_same_markers(
    seed, shape, workers, cover
):
    # Where pixels of equal height meet, skimage's heap decides which marker
    # takes them, and that order depends on the rest of the heap: a plateau may
    # be shared out differently. Every part is still flooded from its own
    # markers, and every pixel the single call labels is labelled.
    elevation, markers, mask = _flood_case(seed, shape, cover, decimals=2)
    single = watershed(elevation, markers=markers, mask=mask)
    parallel = masked_watershed(elevation, markers, mask, workers=workers, min_pixels=0)
    np.testing.assert_array_equal(parallel > 0, single > 0)
    parts, n = ndi.label(mask)
    for part in range(1, n + 1):
        inside = parts == part
        assert set(np.unique(parallel[inside])) == set(np.unique(single[inside]))


@settings(max_examples=40, deadline=None)
@given(seed=CASES["seed"], shape=CASES["shape"], cover=CASES["cover"])
def test_the_flood_without_marker_interiors_gives_skimages_labels(seed, shape, cover):
    from napari_unet.labels.instances import flood

    elevation, markers, mask = _flood_case(seed, shape, cover)
    np.testing.assert_array_equal(
        flood(elevation, markers, mask), watershed(elevation, markers=markers, mask=mask)
    )


def test_marker_interiors_are_pixels_whose_neighbours_share_their_marker():
    from napari_unet.labels.instances import flood, marker_interiors

    markers = np.zeros((7, 8), np.int32)
    markers[1:6, 1:4] = 1  # 5x3: its middle column's three inner pixels are interior
    markers[1:6, 4:7] = 2  # touching 1: the shared edge is no interior
    markers[0, 0] = 3  # on the image's edge
    inner = marker_interiors(markers)
    assert set(zip(*np.nonzero(inner))) == {(r, c) for r in (2, 3, 4) for c in (2, 5)}
    # Any number of axes: a 3-D stack floods as skimage floods it.
    rng = np.random.default_rng(0)
    elevation = rng.random((4, 20, 20))
    stack = np.zeros((4, 20, 20), np.int32)
    stack[:, 3:8, 3:8], stack[:, 12:17, 12:17] = 1, 2
    mask = np.ones_like(stack, bool)
    np.testing.assert_array_equal(
        flood(elevation, stack, mask), watershed(elevation, markers=stack, mask=mask)
    )


def test_parallel_watershed_runs_one_call_for_small_or_one_part_masks():
    mask = np.zeros((30, 30), bool)
    mask[5:25, 5:25] = True  # one part: nothing to share out
    markers = np.zeros((30, 30), np.int32)
    markers[10, 10], markers[20, 20] = 1, 2
    elevation = np.zeros((30, 30))
    expected = watershed(elevation, markers=markers, mask=mask)
    for workers, min_pixels in ((4, 0), (1, 0), (4, 10**6)):
        out = masked_watershed(elevation, markers, mask, workers=workers, min_pixels=min_pixels)
        np.testing.assert_array_equal(out, expected)


def same_objects(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` and ``b`` hold the same objects, whatever their ids."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return (
        (a > 0).sum() == (b > 0).sum()
        and np.array_equal(a > 0, b > 0)
        and len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    )


def _banded_and_single(seed, workers, scheme, params):
    from napari_unet.images.synthetic import synthetic_nuclei
    from napari_unet.labels import instances

    _, truth = synthetic_nuclei((96, 128), n_nuclei=25, seed=seed % 10_000)
    probs = probabilities_from_labels(truth, scheme)
    # A network's output has no two pixels of exactly equal probability; blurred
    # symmetric shapes do (see the ties of masked_watershed).
    probs += np.random.default_rng(seed).uniform(0, 1e-4, probs.shape).astype(np.float32)
    probs /= probs.sum(axis=0, keepdims=True)
    single = instances_from_probabilities(probs, params, scheme, workers=1)
    with pytest.MonkeyPatch.context() as patch:  # bands on a plane this small too
        patch.setattr(instances, "PARALLEL_PLANE_PIXELS", 0)
        banded = instances_from_probabilities(probs, params, scheme, workers=workers)
    return banded, single


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    workers=st.integers(2, 4),
    setting=st.sampled_from(
        [("3class", InstanceParams(seed_dynamic=0.2)), ("4class", InstanceParams())]
    ),
)
def test_planes_labelled_in_parallel_bands_hold_the_single_calls_objects(seed, workers, setting):
    banded, single = _banded_and_single(seed, workers, *setting)
    assert banded.max() == single.max()
    assert same_objects(banded, single)


@pytest.mark.parametrize(
    "setting", [("3class", InstanceParams(seed_distance_h=2.0)), ("2class", InstanceParams())]
)
def test_floods_on_a_distance_are_never_cut_into_bands(setting):
    # A distance transform is full of equal heights, and at such ties
    # skimage's heap order (which depends on the rest of the plane) decides
    # which seed takes a pixel: in bands a plateau was shared out otherwise
    # (AP 0.82 against the single call), so these stay one call.
    for workers in (2, 3):
        banded, single = _banded_and_single(3, workers, *setting)
        np.testing.assert_array_equal(banded, single)
