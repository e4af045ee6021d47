"""Scoring folders of predicted labels against ground truth: ``napari-unet evaluate``'s core.

The CLI prints :func:`format_scores` of :func:`evaluate_folders`; scripts and
benchmarks call the same functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import UNetError
from ..images.io import files_by_stem, match_stems, read_image
from .metrics import DSB_THRESHOLDS, dataset_seg, matching_dataset


def pair_predictions(pred_dir: str | Path, gt_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair ``<stem>_labels.tif`` or ``<stem>.tif`` predictions with ``<stem>.tif`` ground truth."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, what in ((pred_dir, "--pred"), (gt_dir, "--gt")):
        if not d.is_dir():
            raise UNetError(f"{what} folder {d} does not exist")
    gts = files_by_stem(gt_dir)
    if not gts:
        raise UNetError(f"no ground-truth images in {gt_dir}")
    predictions = files_by_stem(pred_dir, ("_labels",))
    # A folder written by `segment` also holds its side outputs: only the labels count.
    side_outputs = ("_overlay", "_probabilities")
    if any(p.stem.endswith("_labels") for p in predictions.values()):
        predictions = {s: p for s, p in predictions.items() if p.stem.endswith("_labels")}
    predictions = {
        s: p for s, p in predictions.items() if not any(s.endswith(x) for x in side_outputs)
    }
    pairs = match_stems(gts, predictions, "ground-truth file", "prediction")
    return [(pred, gt) for gt, pred in pairs]


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    thresholds: Sequence[float] = DSB_THRESHOLDS,
    per_image: bool = False,
) -> dict:
    """Scores of every prediction against its ground truth, counts summed over images.

    Returns
    -------
    dict
        :func:`~napari_unet.labels.metrics.matching_dataset`'s result (per IoU
        threshold: TP, FP, FN, precision, recall, F1, AP, PQ, mean matched
        IoU; ``mean_ap``), with ``seg`` (the Cell Tracking Challenge's SEG),
        ``n_images`` and, with ``per_image``, each image's scores and ``files``.
    """
    pairs = pair_predictions(pred_dir, gt_dir)
    preds, gts = [], []
    for p, g in pairs:
        pred, gt = np.asarray(read_image(p).data), np.asarray(read_image(g).data)
        if pred.shape != gt.shape:
            raise UNetError(f"{p.name} has shape {pred.shape} but {g.name} has {gt.shape}")
        preds.append(pred)
        gts.append(gt)
    result = matching_dataset(gts, preds, list(thresholds), per_image=per_image)
    result["seg"] = dataset_seg(gts, preds)
    result["n_images"] = len(pairs)
    if per_image:
        result["files"] = [p.name for p, _ in pairs]
    return result


def format_scores(result: dict) -> str:
    """The table ``napari-unet evaluate`` prints."""
    head = "IoU TP FP FN prec recall F1 AP PQ mIoU".split()
    lines = [
        f"{result['n_images']} image pairs; counts summed over images",
        f"{head[0]:>5} " + " ".join(f"{h:>6}" for h in head[1:]),
    ]
    for t, c in result["thresholds"].items():
        lines.append(
            f"{float(t):5.2f} {c['tp']:6d} {c['fp']:6d} {c['fn']:6d} {c['precision']:6.3f} "
            f"{c['recall']:6.3f} {c['f1']:6.3f} {c['ap']:6.3f} {c['panoptic_quality']:6.3f} "
            f"{c['mean_matched_iou']:6.3f}"
        )
    lines.append(f"mean AP over {len(result['thresholds'])} thresholds: {result['mean_ap']:.4f}")
    lines.append(f"SEG (Cell Tracking Challenge, mean over true objects): {result['seg']:.4f}")
    return "\n".join(lines)
