"""Training checkpoints: the network, the optimizer and the run's state, to resume from."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from ..errors import UNetError
from ..images.atomic import atomic_path
from ..models.modelfile import CHECKPOINT_KEY, SegmentationModel
from .recipes import TrainConfig, TrainState


def save_checkpoint(
    path: Path,
    model: SegmentationModel,
    optimizer,
    best_state: dict,
    state: TrainState,
    config: TrainConfig,
) -> None:
    """Weights, best weights, optimizer state and the run's state, atomically (no pickle)."""
    from safetensors.torch import save_file

    tensors = {
        f"model.{k}": v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()
    }
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()})
    opt = optimizer.state_dict()
    for idx, entries in opt["state"].items():
        for key, value in entries.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    run = {**asdict(state), "config": config.to_dict()}
    meta = {
        CHECKPOINT_KEY: json.dumps(
            {"state": run, "param_groups": opt["param_groups"], "model": model.config_dict()}
        )
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_checkpoint(path: Path) -> tuple[dict, dict]:
    """(tensors, metadata) of a checkpoint written by :func:`save_checkpoint`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise UNetError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[CHECKPOINT_KEY])
        return load_file(str(path)), meta
    except Exception as exc:
        raise UNetError(
            f"{Path(path).name} is not a napari-unet training checkpoint ({exc})"
        ) from exc


def _restore_optimizer(optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
