"""Optimizers and the learning-rate schedule of training.

Adam and SGD as a few tensor operations (torch.optim's first use imports
``torch._dynamo``, seconds before the first step), tested to give torch's updates.
"""

from __future__ import annotations

import math

import torch

from ..errors import UNetError
from .loss import StartModelPull
from .recipes import TrainConfig


class LeanAdam:
    """Adam (torch.optim.Adam's update, L2 weight decay added to the gradient) in plain tensor ops.

    ``start_decay`` adds the :class:`StartModelPull` regulariser toward the
    parameters' values when the optimizer was made (the start model's, when
    fine-tuning); it is the optimizer's ``pull``.

    torch.optim's optimizers import ``torch._dynamo`` on first use, which took
    up to 18 s in the GUI before the first training step; this one imports
    nothing. ``state_dict``/``load_state_dict`` keep torch's layout, so
    checkpoints store them the same way.
    """

    def __init__(
        self,
        params,
        lr: float,
        weight_decay: float = 0.0,
        betas=(0.9, 0.999),
        eps=1e-8,
        start_decay: float = 0.0,
    ):
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [
            {"lr": lr, "weight_decay": weight_decay, "betas": tuple(betas), "eps": eps}
        ]
        self.state: dict[int, dict[str, torch.Tensor]] = {}
        self.start_decay = start_decay
        self.pull = StartModelPull(self.params, start_decay) if start_decay else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients."""
        for p in self.params:
            p.grad = None

    def _gradients(self):
        """(index, parameter, gradient with L2 weight decay) of every parameter that has one."""
        decay = self.param_groups[0]["weight_decay"]
        for i, p in enumerate(self.params):
            if p.grad is not None:
                grad = p.grad.add(p, alpha=decay) if decay else p.grad
                if self.pull is not None:
                    grad = grad + self.pull.gradient(i, p)
                yield i, p, grad

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter from its gradient."""
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        for i, p, grad in self._gradients():
            st = self.state.get(i)
            if st is None:
                st = self.state[i] = {
                    "step": torch.zeros((), dtype=torch.float32),
                    "exp_avg": torch.zeros_like(p),
                    "exp_avg_sq": torch.zeros_like(p),
                }
            st["step"] += 1
            t = float(st["step"])
            st["exp_avg"].lerp_(grad, 1 - beta1)
            st["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (st["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
            p.addcdiv_(st["exp_avg"], denom, value=-group["lr"] / (1 - beta1**t))

    def state_dict(self) -> dict:
        """Optimizer state in torch's layout, for checkpoints."""
        group = self.param_groups[0]
        groups = [{**group, "betas": list(group["betas"]), "params": list(range(len(self.params)))}]
        return {"state": self.state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the state saved by :meth:`state_dict`."""
        group = state_dict["param_groups"][0]
        self.param_groups[0].update(
            {k: (tuple(v) if k == "betas" else v) for k, v in group.items() if k != "params"}
        )
        self.state = {
            int(i): {k: v.clone() for k, v in entries.items()}
            for i, entries in state_dict["state"].items()
        }


class LeanSGD(LeanAdam):
    """SGD with momentum (torch.optim.SGD's update) without importing torch._dynamo."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.99,
        weight_decay: float = 0.0,
        start_decay: float = 0.0,
    ):
        super().__init__(params, lr, weight_decay, start_decay=start_decay)
        self.param_groups[0] = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter from its gradient."""
        group = self.param_groups[0]
        for i, p, grad in self._gradients():
            st = self.state.get(i)
            if st is None:
                st = self.state[i] = {"momentum_buffer": grad.clone()}
            else:
                st["momentum_buffer"].mul_(group["momentum"]).add_(grad)
            p.add_(st["momentum_buffer"], alpha=-group["lr"])

    def state_dict(self) -> dict:
        """Optimizer state in torch's layout, for checkpoints."""
        groups = [{**self.param_groups[0], "params": list(range(len(self.params)))}]
        return {"state": self.state, "param_groups": groups}


def make_optimizer(name: str, params, lr: float, weight_decay: float, start_decay: float = 0.0):
    """The optimizer called ``name`` ("adam" or "sgd") over ``params``.

    ``start_decay`` pulls the parameters toward their present values.
    """
    if name == "adam":
        return LeanAdam(params, lr=lr, weight_decay=weight_decay, start_decay=start_decay)
    if name == "sgd":
        return LeanSGD(
            params, lr=lr, momentum=0.99, weight_decay=weight_decay, start_decay=start_decay
        )
    raise UNetError(f"unknown optimizer {name!r}; use adam or sgd")


def learning_rate(base: float, progress: float, step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay over the run's progress (steps or time) to 2%."""
    warm = min(1.0, (step + 1) / max(config.warmup_steps, 1))
    if config.schedule == "constant":
        return base * warm
    return base * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
