import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_unet.errors import UNetError
from napari_unet.labels.metrics import DSB_THRESHOLDS, iou_matrix, matching, matching_dataset


def square(shape, y, x, size, value, out=None):
    out = np.zeros(shape, dtype=np.int32) if out is None else out
    out[y : y + size, x : x + size] = value
    return out


def test_perfect_match_with_non_sequential_ids():
    gt = square((20, 20), 2, 2, 5, 3)
    square((20, 20), 10, 10, 4, 17, gt)
    pred = np.where(gt == 3, 100, np.where(gt == 17, 5, 0))
    m = matching(gt, pred, 0.5)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert m.ap == m.f1 == m.precision == m.recall == 1.0
    assert m.mean_matched_iou == 1.0 and m.panoptic_quality == 1.0


def test_empty_prediction_and_empty_ground_truth():
    gt = square((10, 10), 1, 1, 4, 1)
    empty = np.zeros_like(gt)
    m = matching(gt, empty)
    assert (m.tp, m.fp, m.fn) == (0, 0, 1) and m.ap == 0.0 and m.recall == 0.0
    m = matching(empty, gt)
    assert (m.tp, m.fp, m.fn) == (0, 1, 0) and m.ap == 0.0 and m.precision == 0.0
    m = matching(empty, empty)
    assert (m.tp, m.fp, m.fn) == (0, 0, 0) and m.ap == 1.0  # nothing to find, nothing found


def test_one_object_split_in_two():
    gt = square((10, 10), 0, 0, 6, 1)  # 36 px
    pred = np.zeros_like(gt)
    pred[0:6, 0:4] = 1  # 24 px -> IoU 24/36
    pred[0:6, 4:6] = 2  # 12 px -> IoU 1/3
    m = matching(gt, pred, 0.5)
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)
    assert m.ap == pytest.approx(1 / 2)
    assert m.mean_matched_iou == pytest.approx(24 / 36)
    assert m.panoptic_quality == pytest.approx((24 / 36) / (1 + 0.5))
    m = matching(gt, pred, 0.7)
    assert (m.tp, m.fp, m.fn) == (0, 2, 1)


def test_two_objects_merged_into_one():
    gt = square((10, 10), 0, 0, 4, 1)
    gt[0:4, 4:8] = 2
    pred = (gt > 0).astype(np.int32)  # IoU 0.5 with each
    m = matching(gt, pred, 0.5)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)  # one-to-one: only one can match
    m = matching(gt, pred, 0.51)
    assert (m.tp, m.fp, m.fn) == (0, 1, 2)


def test_shifted_object_iou():
    gt = square((20, 20), 5, 5, 6, 1)
    pred = square((20, 20), 5, 7, 6, 1)  # shifted by 2: overlap 24, union 48
    iou, _, _ = iou_matrix(gt, pred)
    assert iou[0, 0] == pytest.approx(0.5)
    assert matching(gt, pred, 0.5).tp == 1
    assert matching(gt, pred, 0.55).tp == 0


def test_hungarian_prefers_the_best_total_assignment():
    # At a low threshold one prediction overlaps two objects; the assignment must
    # still give each object its best partner.
    gt = np.zeros((10, 12), dtype=np.int32)
    gt[:, 0:6] = 1
    gt[:, 6:12] = 2
    pred = np.zeros_like(gt)
    pred[:, 0:8] = 1
    pred[:, 8:12] = 2
    m = matching(gt, pred, 0.1)
    assert m.tp == 2
    assert m.matched_iou_sum == pytest.approx(60 / 80 + 40 / 60)


def test_dataset_counts_are_summed_before_dividing():
    gt1 = square((10, 10), 0, 0, 3, 1)
    gt2 = square((10, 10), 0, 0, 3, 1)
    square((10, 10), 5, 5, 3, 2, gt2)
    square((10, 10), 5, 0, 3, 3, gt2)
    pred1 = gt1.copy()
    pred2 = np.zeros_like(gt2)
    result = matching_dataset([gt1, gt2], [pred1, pred2], [0.5], per_image=True)
    c = result["thresholds"]["0.5"]
    assert (c["tp"], c["fp"], c["fn"]) == (1, 0, 3)
    assert c["ap"] == pytest.approx(1 / 4)  # not the mean of per-image APs (0.5)
    assert len(result["per_image"]) == 2
    full = matching_dataset([gt1], [pred1])
    assert len(full["thresholds"]) == len(DSB_THRESHOLDS) == 10
    assert full["mean_ap"] == 1.0


def test_shape_and_type_errors():
    with pytest.raises(UNetError, match="shape"):
        matching(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(UNetError, match="integer"):
        matching(np.zeros((3, 3)), np.zeros((3, 3), int))


def test_seg_is_the_jaccard_of_the_object_covering_more_than_half_else_zero():
    from napari_unet.labels.metrics import dataset_seg, seg_scores

    gt = np.zeros((10, 20), np.int32)
    gt[:, :10] = 1  # 100 px
    gt[:, 10:] = 2  # 100 px
    pred = np.zeros_like(gt)
    pred[:, :6] = 5  # covers 60 of object 1: IoU 0.6
    pred[:, 6:15] = 7  # covers 50 of object 2 (exactly half: not more), 40 of object 1
    assert np.allclose(seg_scores(gt, pred), [0.6, 0.0])
    assert dataset_seg([gt, gt], [pred, gt]) == pytest.approx((0.6 + 0 + 1 + 1) / 4)
    assert dataset_seg([np.zeros((4, 4), np.int32)], [np.zeros((4, 4), np.int32)]) == 1.0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_seg_of_a_perfect_prediction_is_one_and_never_above_the_matched_iou(seed):
    from napari_unet.labels.metrics import seg_scores

    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 5, (12, 12)).astype(np.int32)
    pred = rng.integers(0, 5, (12, 12)).astype(np.int32)
    if gt.max() > 0:
        assert np.allclose(seg_scores(gt, gt), 1.0)
    scores = seg_scores(gt, pred)
    for score, gid in zip(scores, np.unique(gt[gt > 0])):
        inside = pred[gt == gid]
        ids, counts = np.unique(inside[inside > 0], return_counts=True)
        cover = ids[counts * 2 > (gt == gid).sum()]
        if len(cover) == 0:
            assert score == 0
        else:
            g, q = gt == gid, pred == cover[0]
            assert score == pytest.approx((g & q).sum() / (g | q).sum())


def test_ids_at_or_above_2_to_the_63_still_count():
    gt = np.zeros((10, 10), np.uint64)
    gt[1:4, 1:4] = 1
    gt[6:9, 6:9] = 2
    pred = np.zeros_like(gt)
    pred[1:4, 1:4] = np.uint64(1 << 63)
    pred[6:9, 6:9] = np.uint64((1 << 64) - 1)
    m = matching(gt, pred, 0.5)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
