"""Scoring checkpoints during training, and the margin a run must beat its start model by."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from ..devices import native_bfloat16
from ..labels.instances import (
    InstanceParams,
    instances_from_probabilities,
    tune_instance_params,
)
from ..labels.metrics import MatchCounts, match_counts
from ..models.model import UNet
from ..models.tiling import predict_tiled, prepare_model
from .data import TrainingImage

SELECTION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def predict_dataset(
    net: UNet, images: Sequence[TrainingImage], device: torch.device, precision: str = "auto"
):
    """Class probabilities for every image of a prepared dataset."""
    prepared = prepare_model(net, device, torch.bfloat16 if _use_bf16(precision, device) else None)
    return [predict_tiled(prepared, item.image, device=device, prepared=True) for item in images]


def tune_postprocessing(
    net: UNet,
    images: Sequence[TrainingImage],
    device: torch.device,
    start: InstanceParams,
    precision: str = "auto",
) -> tuple[InstanceParams, dict]:
    """Post-processing thresholds tuned on annotated images (only their annotated regions count)."""
    probs = predict_dataset(net, images, device, precision)
    gts = [np.where(item.valid, item.labels, 0) for item in images]
    return tune_instance_params(probs, gts, start=start)


def score_probabilities(
    probs: Sequence[np.ndarray],
    images: Sequence[TrainingImage],
    params: InstanceParams,
    thresholds: Sequence[float] = SELECTION_THRESHOLDS,
) -> dict:
    """Dataset AP at each threshold (counts summed over images), only inside annotated regions."""
    totals = [MatchCounts(t) for t in thresholds]
    for p, item in zip(probs, images):
        pred = np.where(item.valid, instances_from_probabilities(p, params), 0)
        gt = np.where(item.valid, item.labels, 0)
        totals = [a + b for a, b in zip(totals, match_counts(gt, pred, thresholds))]
    scores = {f"ap{round(t * 100):d}": c.ap for t, c in zip(thresholds, totals)}
    scores["score"] = float(np.mean([c.ap for c in totals]))
    return scores


def evaluate_model(
    net: UNet,
    images: Sequence[TrainingImage],
    params: InstanceParams,
    device: torch.device,
    precision: str = "auto",
    quick_tune: bool = True,
) -> dict:
    """Validation scores of a network.

    With ``quick_tune`` the two main thresholds are also tried on a coarse
    3x3 grid and the best is reported: early in training the probabilities
    are not yet calibrated, and a fixed threshold would pick checkpoints for
    the wrong reason. The full search runs once, at the end of training.
    """
    probs = predict_dataset(net, images, device, precision)
    best = score_probabilities(probs, images, params)
    best["foreground_threshold"], best["seed_threshold"] = (
        params.foreground_threshold,
        params.seed_threshold,
    )
    if quick_tune:
        for fg, seed in itertools.product((0.5, 0.7, 0.9), (0.5, 0.7, 0.9)):
            candidate = replace(params, foreground_threshold=fg, seed_threshold=seed)
            if candidate == params:
                continue
            scores = score_probabilities(probs, images, candidate)
            if scores["score"] > best["score"]:
                best = {**scores, "foreground_threshold": fg, "seed_threshold": seed}
    return best


def _use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "bfloat16":
        return True
    return precision == "auto" and native_bfloat16(device)


# The 2-minute runs that chose start_model_margin compared about 21 checkpoints
# (an epoch of FINE_TUNE is 8 steps; 165-190 steps each on a bfloat16 CPU).
# Longer runs, or faster machines, compare more and must win by more.
MARGIN_CHOSEN_AT = 21


def expected_maximum(k: int) -> float:
    """Expected largest of ``k`` independent standard normal draws (Blom's approximation)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf((k - 0.375) / (k + 0.25)) if k > 1 else 0.0


def start_model_margin_for(
    coefficient: float,
    nuclei: int,
    checkpoints: int,
    images: int = 1,
    image_coefficient: float = 0.0,
) -> float:
    """How much the best of ``checkpoints`` must beat the start model by on ``nuclei`` in ``images``.

    ``coefficient / sqrt(nuclei)``: a strip score's noise. ``image_coefficient
    / sqrt(images)``: how far a few images' strips can mislead as a whole
    (nuclei of one image are alike, and a network fitted to an image scores
    well on its strip). The best of the start model and many checkpoints is
    high by about the expected maximum of that many noisy draws (the
    winner's curse): beyond :data:`MARGIN_CHOSEN_AT` checkpoints, where the
    coefficients were chosen, the margin grows with it (a 5-minute run's 54
    checkpoints: 1.2x), and it never shrinks below the chosen one.
    """
    growth = expected_maximum(checkpoints + 1) / expected_maximum(MARGIN_CHOSEN_AT + 1)
    base = coefficient / math.sqrt(max(nuclei, 1)) + image_coefficient / math.sqrt(max(images, 1))
    return base * max(1.0, growth)
