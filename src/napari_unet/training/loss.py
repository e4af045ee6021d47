"""What training minimises: the paper's weighted cross-entropy, and the pull toward the start model.

The pull (L2-SP) is a named regulariser with its penalty and its gradient;
the optimizers (:mod:`napari_unet.training.optimizers`) apply its gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Sum of w(x) * CE(x) over pixels, divided by the number of pixels with w > 0."""
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    return (ce * weights).sum() / (weights > 0).sum().clamp_min(1)


class StartModelPull:
    """The regulariser that keeps a fine-tune near its start model (L2-SP, Li et al. 2018).

    Adds ``decay / 2 * ||w - w_start||^2`` to the loss, where ``w_start`` are
    the parameters' values when it was made (the start model's). The
    optimizers apply its gradient, ``decay * (w - w_start)``, with the loss's,
    exactly as if it were summed into the loss (:meth:`penalty` gives that sum).
    """

    def __init__(self, params, decay: float) -> None:
        self.decay = decay
        self.start = [p.detach().clone() for p in params]

    def gradient(self, index: int, param: torch.Tensor) -> torch.Tensor:
        """The regulariser's gradient for parameter number ``index``."""
        return (param - self.start[index]) * self.decay

    @torch.no_grad()
    def penalty(self, params) -> float:
        """The regulariser's value for ``params`` (the same parameters, in the same order)."""
        return (
            0.5 * self.decay * sum(float(((p - s) ** 2).sum()) for p, s in zip(params, self.start))
        )
