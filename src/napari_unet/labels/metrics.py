"""Instance matching scores: one-to-one matching by IoU, AP, F1, panoptic quality; SEG.

Conventions follow the 2018 Data Science Bowl and StarDist: a predicted object
matches a ground-truth object when their IoU reaches the threshold, with a
one-to-one assignment (Hungarian, maximizing the summed IoU). Then
``AP = TP / (TP + FP + FN)``. Dataset scores sum the counts over images before
dividing. Where a ratio is 0/0 (nothing to find and nothing found) it is 1.

SEG is the Cell Tracking Challenge's segmentation measure (the U-Net paper's
DIC-HeLa 0.7756): for each true object, the Jaccard index of the predicted
object covering more than half of its pixels, else 0; the mean over all true
objects (of the dataset, for :func:`dataset_seg`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..errors import UNetError

DSB_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2).tolist())


@dataclass
class MatchCounts:
    """Counts at one IoU threshold; add them over images, then read the scores."""

    threshold: float
    tp: int = 0
    fp: int = 0
    fn: int = 0
    matched_iou_sum: float = 0.0
    n_true: int = 0
    n_pred: int = 0

    def __add__(self, other: MatchCounts) -> MatchCounts:
        if other.threshold != self.threshold:
            raise ValueError("cannot add counts made at different thresholds")
        return MatchCounts(
            self.threshold,
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.matched_iou_sum + other.matched_iou_sum,
            self.n_true + other.n_true,
            self.n_pred + other.n_pred,
        )

    @staticmethod
    def _ratio(num: float, den: float) -> float:
        return float(num / den) if den > 0 else 1.0

    @property
    def precision(self) -> float:
        """TP / (TP + FP)."""
        return self._ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """TP / (TP + FN)."""
        return self._ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """2 TP / (2 TP + FP + FN)."""
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def ap(self) -> float:
        """TP / (TP + FP + FN): the DSB 2018 average precision at this IoU threshold."""
        return self._ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def mean_matched_iou(self) -> float:
        """Mean IoU of the matched pairs (0 when none matched)."""
        return float(self.matched_iou_sum / self.tp) if self.tp else 0.0

    @property
    def panoptic_quality(self) -> float:
        """Sum of matched IoUs / (TP + FP/2 + FN/2)."""
        den = self.tp + 0.5 * self.fp + 0.5 * self.fn
        return float(self.matched_iou_sum / den) if den > 0 else 1.0

    def to_dict(self) -> dict:
        """Counts and scores as a JSON-ready dict."""
        d = asdict(self)
        d.update(
            precision=self.precision,
            recall=self.recall,
            f1=self.f1,
            ap=self.ap,
            mean_matched_iou=self.mean_matched_iou,
            panoptic_quality=self.panoptic_quality,
        )
        return d


def _check_labels(gt: np.ndarray, pred: np.ndarray) -> None:
    if gt.shape != pred.shape:
        raise UNetError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    for name, arr in (("ground truth", gt), ("prediction", pred)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise UNetError(f"the {name} must be integer labels, got {arr.dtype}")
        if arr.size and arr.min() < 0:
            raise UNetError(f"the {name} has negative labels")


def _signed_ids(flat: np.ndarray) -> np.ndarray:
    """Label ids as int64 with 0 kept as background and every other id still positive.

    uint64 ids at or above 2**63 would turn negative in a plain cast and be
    counted as background (a silent wrong score): such images are relabelled
    to 1..n first.
    """
    if flat.dtype == np.uint64 and flat.size and flat.max() >= np.uint64(1 << 63):
        ids, inverse = np.unique(flat, return_inverse=True)
        return (inverse.reshape(-1) + (0 if ids[0] == 0 else 1)).astype(np.int64)
    return flat.astype(np.int64, copy=False)


def overlapping_pairs(gt: np.ndarray, pred: np.ndarray) -> dict:
    """Sparse overlap table: every (gt id, pred id) pair sharing pixels, with its IoU.

    Works on label images of any size and object count: only pairs that
    actually overlap are listed, never the full n_true x n_pred matrix.
    """
    _check_labels(gt, pred)
    g, p = _signed_ids(gt.reshape(-1)), _signed_ids(pred.reshape(-1))
    gt_ids, gt_sizes = np.unique(g[g > 0], return_counts=True)
    pred_ids, pred_sizes = np.unique(p[p > 0], return_counts=True)
    both = (g > 0) & (p > 0)
    gi = np.searchsorted(gt_ids, g[both])
    pj = np.searchsorted(pred_ids, p[both])
    codes, inter = np.unique(gi * max(len(pred_ids), 1) + pj, return_counts=True)
    gi, pj = np.divmod(codes, max(len(pred_ids), 1))
    union = gt_sizes[gi] + pred_sizes[pj] - inter
    return {
        "gt_ids": gt_ids,
        "pred_ids": pred_ids,
        "gt_index": gi,
        "pred_index": pj,
        "iou": inter / union,
        "intersection": inter,
        "gt_sizes": gt_sizes,
    }


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense IoU between every ground-truth and predicted object, with their ids.

    Returns ``(iou, gt_ids, pred_ids)``; ``iou[i, j]`` is the IoU of ``gt_ids[i]``
    and ``pred_ids[j]``. Ids need not be sequential.
    """
    pairs = overlapping_pairs(gt, pred)
    iou = np.zeros((len(pairs["gt_ids"]), len(pairs["pred_ids"])))
    iou[pairs["gt_index"], pairs["pred_index"]] = pairs["iou"]
    return iou, pairs["gt_ids"], pairs["pred_ids"]


def _count_matches(gi: np.ndarray, pj: np.ndarray, iou: np.ndarray) -> tuple[int, float]:
    """Size and summed IoU of the one-to-one assignment maximizing summed IoU."""
    if len(iou) == 0:
        return 0, 0.0
    if len(np.unique(gi)) == len(gi) and len(np.unique(pj)) == len(pj):
        return len(iou), float(iou.sum())  # already one-to-one (always so for IoU > 0.5)
    rows, ri = np.unique(gi, return_inverse=True)
    cols, ci = np.unique(pj, return_inverse=True)
    score = np.zeros((len(rows), len(cols)))
    score[ri, ci] = iou
    r, c = linear_sum_assignment(score, maximize=True)
    ok = score[r, c] > 0
    return int(ok.sum()), float(score[r, c][ok].sum())


def match_counts(
    gt: np.ndarray, pred: np.ndarray, thresholds: Iterable[float] = (0.5,)
) -> list[MatchCounts]:
    """Match counts for one image at each IoU threshold."""
    pairs = overlapping_pairs(gt, pred)
    n_true, n_pred = len(pairs["gt_ids"]), len(pairs["pred_ids"])
    result = []
    for t in thresholds:
        t = float(t)
        keep = pairs["iou"] >= t
        tp, iou_sum = _count_matches(
            pairs["gt_index"][keep], pairs["pred_index"][keep], pairs["iou"][keep]
        )
        result.append(MatchCounts(t, tp, n_pred - tp, n_true - tp, iou_sum, n_true, n_pred))
    return result


def matching(gt: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> MatchCounts:
    """Scores of one prediction against its ground truth at one IoU threshold."""
    return match_counts(gt, pred, (threshold,))[0]


def matching_dataset(
    gts: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    thresholds: Iterable[float] = DSB_THRESHOLDS,
    per_image: bool = False,
) -> dict:
    """Counts summed over a dataset at each threshold, plus the DSB-style mean AP.

    Returns ``{"thresholds": {t: MatchCounts.to_dict()}, "mean_ap": float,
    "per_image": [...]}`` (per-image entries only when asked for).
    """
    if len(gts) != len(preds):
        raise UNetError(f"{len(gts)} ground-truth images but {len(preds)} predictions")
    thresholds = [float(t) for t in thresholds]
    totals = [MatchCounts(t) for t in thresholds]
    images = []
    for gt, pred in zip(gts, preds):
        counts = match_counts(np.asarray(gt), np.asarray(pred), thresholds)
        totals = [a + b for a, b in zip(totals, counts)]
        if per_image:
            images.append({f"{c.threshold:g}": c.to_dict() for c in counts})
    out = {
        "n_images": len(gts),
        "thresholds": {f"{c.threshold:g}": c.to_dict() for c in totals},
        "mean_ap": float(np.mean([c.ap for c in totals])) if totals else float("nan"),
    }
    if per_image:
        out["per_image"] = images
    return out


def dataset_ap(
    gts: Sequence[np.ndarray], preds: Sequence[np.ndarray], thresholds=(0.5,)
) -> list[float]:
    """AP at each threshold with counts summed over the dataset."""
    totals = [MatchCounts(float(t)) for t in thresholds]
    for gt, pred in zip(gts, preds):
        totals = [a + b for a, b in zip(totals, match_counts(gt, pred, thresholds))]
    return [c.ap for c in totals]


def seg_scores(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The Cell Tracking Challenge's SEG score of every true object, in order of its id.

    A true object's score is its Jaccard index (IoU) with the predicted object
    that covers more than half of its pixels, and 0 when no predicted object
    does; at most one can. The image's SEG is the mean of these.
    """
    pairs = overlapping_pairs(gt, pred)
    gi, iou = pairs["gt_index"], pairs["iou"]
    covers = pairs["intersection"] * 2 > pairs["gt_sizes"][gi]
    scores = np.zeros(len(pairs["gt_ids"]))
    scores[gi[covers]] = iou[covers]
    return scores


def dataset_seg(gts: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> float:
    """SEG over a dataset: the mean of every true object's score (:func:`seg_scores`).

    1.0 when there is no true object at all (nothing to find).
    """
    if len(gts) != len(preds):
        raise UNetError(f"{len(gts)} ground-truth images but {len(preds)} predictions")
    scores = [seg_scores(np.asarray(g), np.asarray(p)) for g, p in zip(gts, preds)]
    flat = np.concatenate(scores) if scores else np.zeros(0)
    return float(flat.mean()) if len(flat) else 1.0
