"""Linking labels of consecutive planes / frames by overlap."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from napari_unet.errors import UNetError
from napari_unet.labels.stitching import link_along, overlap_iou, stitch_stack


def spheres(shape=(12, 64, 64), centres=((6, 16, 16, 5), (5, 44, 40, 6), (7, 20, 46, 4))):
    zz, yy, xx = np.indices(shape)
    truth = np.zeros(shape, np.int32)
    for k, (cz, cy, cx, r) in enumerate(centres, start=1):
        truth[(zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    return truth


def plane_by_plane(truth: np.ndarray, min_size: int = 10) -> np.ndarray:
    """What per-plane segmentation gives: each plane labelled on its own, ids unique per stack.

    Objects under ``min_size`` pixels (a sphere's poles) are dropped, as the
    post-processing's size filter does.
    """
    out = np.zeros(truth.shape, np.uint32)
    offset = 0
    for z, plane in enumerate(truth):
        lab, n = ndi.label(plane > 0)
        sizes = np.bincount(lab.ravel())
        lab[sizes[lab] < min_size] = 0
        out[z] = np.where(lab > 0, lab + offset, 0)
        offset += n
    return out


def one_id_per_object(truth: np.ndarray, labels: np.ndarray) -> bool:
    """Every object of ``truth`` that ``labels`` found carries one id of its own."""
    pairs = {(int(t), int(p)) for t, p in zip(truth.ravel(), labels.ravel()) if p}
    by_truth = {t for t, _ in pairs}
    return all(t and p for t, p in pairs) and len(pairs) == len(by_truth) == len(
        {p for _, p in pairs}
    )


def test_a_stack_of_spheres_gets_one_id_per_sphere():
    truth = spheres()
    per_plane = plane_by_plane(truth)
    assert len(np.unique(per_plane)) - 1 > 3  # a new id in every plane before stitching
    stitched = stitch_stack(per_plane, "ZYX")
    assert one_id_per_object(truth, stitched)
    assert stitched.dtype == np.uint32 and sorted(np.unique(stitched)) == [0, 1, 2, 3]


def test_touching_objects_in_one_plane_are_never_merged():
    truth = np.zeros((3, 20, 20), np.int32)
    truth[:, 4:16, 2:10] = 1
    truth[:, 4:16, 10:18] = 2  # touching, same extent in every plane
    per_plane = np.zeros_like(truth, dtype=np.uint32)
    for z in range(3):
        per_plane[z] = np.where(truth[z] > 0, truth[z] + 2 * z, 0)
    assert one_id_per_object(truth, link_along(per_plane, 0))


def test_objects_below_the_threshold_start_a_new_id():
    stack = np.zeros((2, 20, 20), np.uint32)
    stack[0, 2:10, 2:10] = 1
    stack[1, 8:16, 8:16] = 2  # IoU 4/124
    linked = link_along(stack, 0, threshold=0.25)
    assert linked[0, 5, 5] != linked[1, 12, 12]
    assert link_along(stack, 0, threshold=0.03)[1, 12, 12] == linked[0, 5, 5]


def test_tracking_keeps_the_id_of_a_moving_nucleus_over_time():
    frames = np.zeros((5, 40, 40), np.uint32)
    for t in range(5):
        frames[t, 10:20, 5 + 2 * t : 15 + 2 * t] = 10 + t  # moves 2 px per frame
        frames[t, 25:35, 25:35] = 50 + t  # stays
    tracked = stitch_stack(frames, "TYX", stitch=False, track=True)
    assert len(set(tracked[:, 15, 12 + 0].tolist()) - {0}) >= 1
    assert len({int(tracked[t, 15, 10 + 2 * t]) for t in range(5)}) == 1
    assert len({int(tracked[t, 30, 30]) for t in range(5)}) == 1
    assert len(np.unique(tracked)) == 3
    # Without tracking, time points keep their own ids.
    assert np.array_equal(stitch_stack(frames, "TYX"), frames)


def test_z_stitching_stays_within_each_time_point():
    truth = spheres((8, 32, 32), ((4, 16, 16, 4),))
    later = plane_by_plane(truth)
    later[later > 0] += 100
    per_plane = np.stack([plane_by_plane(truth), later])
    stitched = stitch_stack(per_plane, "TZYX")
    assert one_id_per_object(truth, stitched[0]) and one_id_per_object(truth, stitched[1])
    assert set(np.unique(stitched[0])) & set(np.unique(stitched[1])) == {0}
    tracked = stitch_stack(per_plane, "TZYX", track=True)
    assert len(np.unique(tracked)) == 2


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.05, 1.0))
def test_linking_only_renames_each_plane(seed, threshold):
    rng = np.random.default_rng(seed)
    planes = []
    for _ in range(4):
        lab, _ = ndi.label(rng.random((16, 16)) > 0.6)
        planes.append(lab)
    stack = np.stack(planes).astype(np.uint32)
    linked = link_along(stack, 0, threshold)
    for before, after in zip(stack, linked):
        # The same partition of each plane, only the names differ.
        assert ((before > 0) == (after > 0)).all()
        pairs = set(zip(before.ravel().tolist(), after.ravel().tolist()))
        assert len(pairs) == len({b for b, _ in pairs}) == len({a for _, a in pairs})


def test_overlap_iou_of_two_squares():
    a = np.zeros((10, 10), np.uint32)
    b = np.zeros((10, 10), np.uint32)
    a[0:4, 0:4] = 3
    b[2:6, 0:4] = 7
    prev_ids, cur_ids, iou = overlap_iou(a, b)
    assert prev_ids.tolist() == [3] and cur_ids.tolist() == [7]
    assert iou[0] == pytest.approx(8 / 24)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_a_threshold_outside_0_1_is_refused(threshold):
    with pytest.raises(UNetError, match="threshold"):
        link_along(np.zeros((2, 4, 4), np.uint32), 0, threshold)
