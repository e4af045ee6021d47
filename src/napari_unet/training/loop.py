"""Training and fine-tuning as a generator of progress events.

``iter_train(...)`` yields :class:`~napari_unet.progress.Progress` events (one
per optimizer step, one per validation) and returns the best model;
``train(...)`` is its blocking form. The CLI and the napari widget drive the
same generator. Setting the ``stop`` event makes it finish after the current
step and return the best model so far; a run stopped before its first step
raises :class:`TrainingStopped` (there is no model to return).

Stages: ``Stage.PREPARE``, ``TRAIN``, ``VALIDATE``, ``TUNE`` (their ``info``
keys are listed on :class:`~napari_unet.progress.Stage`). The ``TRAIN`` total
follows the minutes limit when it ends the run before the epochs do.

Loss: the paper's pixelwise softmax cross-entropy weighted by the border
weight map. Model selection: validation AP through the same instance
post-processing users get.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..devices import resolve_device
from ..errors import UNetError
from ..heap import reusing_freed_memory
from ..models.model import UNet, halo, valid_input_size
from ..models.modelfile import (
    SegmentationModel,
    save_model,
)
from ..progress import Progress, Stage, run_to_end
from .checkpoints import (
    _restore_optimizer,
    load_checkpoint,
    save_checkpoint,
)
from .data import (
    PatchDataset,
    TrainingImage,
    adapt_channels,
    dataset_class_weights,
    hold_out_strips,
)
from .loss import (
    weighted_cross_entropy,
)
from .optimizers import (
    learning_rate,
    make_optimizer,
)
from .recipes import (
    TrainConfig,
    TrainState,
)
from .start import starting_model, with_fixed_polarity, with_objects_record
from .validation import (
    _use_bf16,
    evaluate_model,
    start_model_margin_for,
    tune_postprocessing,
)


class TrainingStopped(UNetError):
    """Training was stopped before its first step: there is no model."""


# --------------------------------------------------------------------------
# The training generator
# --------------------------------------------------------------------------


def _train_mode(net: torch.nn.Module, config: TrainConfig) -> None:
    """Training mode, with batch-norm layers left in eval mode when ``freeze_batch_norm``."""
    net.train()
    if config.freeze_batch_norm:
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def images_for_network(items, model: SegmentationModel, fine_tuning: bool = True) -> list:
    """The training images with the channel count of the network trained.

    When fine-tuning a built-in model on a mix of image types, the minority
    was prepared for the other network (one channel vs three); it is adapted
    exactly (:func:`~napari_unet.training.data.adapt_channels`). Any other mismatch
    is one clear error.
    """
    in_ch, out = model.in_channels, []
    for item in items:
        if item.image.shape[0] != in_ch and fine_tuning and item.image.shape[0] in (1, 3):
            item = adapt_channels(item, in_ch, model.normalization)
        if item.image.shape[0] != in_ch:
            raise UNetError(
                f"{item.name or 'an image'} has {item.image.shape[0]} channels; the model takes {in_ch}"
            )
        out.append(item)
    return out


def _patch_loader(model: SegmentationModel, train_images, config: TrainConfig):
    """(dataset, loader, class weights) of random valid-size training patches."""
    depth = model.net.config.depth
    patch = valid_input_size(max(config.patch_size, 2 * halo(depth) + 2**depth), depth)
    class_weights = dataset_class_weights(
        list(train_images), model.scheme, model.net.config.n_classes, config.class_balance
    )
    dataset = PatchDataset(
        list(train_images),
        patch,
        halo(depth),
        model.scheme,
        class_weights,
        config.patches_per_epoch,
        config.augment,
        config.w0,
        config.sigma,
        config.seed,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=False,
        num_workers=config.workers,
        drop_last=False,
        persistent_workers=False,
    )
    return dataset, loader, class_weights


def _resume(checkpoint: Path, net: UNet, optimizer) -> tuple[TrainState, dict]:
    """Load a checkpoint into ``net`` and ``optimizer``; returns its state and best weights."""
    tensors, meta = load_checkpoint(checkpoint)
    try:
        net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        _restore_optimizer(optimizer, tensors, meta)
    except (RuntimeError, KeyError, ValueError) as exc:
        theirs = meta.get("model", {}).get("architecture", "unknown")
        raise UNetError(
            f"the checkpoint {checkpoint.name} is of another network than this run "
            f"(it holds {theirs}, this run builds {net.config.to_dict()}); "
            "start without --resume, or give the same architecture"
        ) from exc
    return TrainState.from_dict(meta["state"]), best_state


def _train_step(net: UNet, optimizer, batch, device: torch.device, bf16: bool) -> float:
    """One optimizer step on a batch of (images, targets, weights); returns the loss."""
    images, targets, weights = batch
    images = images.to(device).contiguous(memory_format=torch.channels_last)
    targets, weights = targets.to(device), weights.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = net(images)
    loss = weighted_cross_entropy(logits, targets, weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@reusing_freed_memory
def iter_train(
    train_images: Sequence[TrainingImage],
    val_images: Sequence[TrainingImage] = (),
    *,
    init: SegmentationModel | str | Path | None = None,
    architecture: dict | None = None,
    config: TrainConfig | None = None,
    stop: threading.Event | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    data_description: dict | None = None,
    save_best_to: str | Path | None = None,
) -> Generator[Progress, None, SegmentationModel]:
    """Train or fine-tune a model; a generator of progress events returning the best model.

    Parameters
    ----------
    train_images, val_images
        Prepared pairs (see :func:`napari_unet.training.data.make_training_image`).
        Without validation images, ``config.holdout_fraction`` of each
        training image is held out to validate on (if 0, the last epoch's
        model is returned). With ``config.validate_start`` the start model
        is scored first and kept unless training beats it (the summary's
        ``kept_start_model``).
    init
        Start from this model (file, built-in name, or object); None starts
        from scratch with ``architecture`` (keyword arguments of ``new_model``).
    config
        Schedule, optimizer, augmentation, limits (epochs and/or minutes).
    stop
        Set it to finish after the current step, keeping the best model.
    checkpoint, resume
        Write a checkpoint there after every epoch; with ``resume`` continue
        from it (weights, optimizer, epoch, best score).
    save_best_to
        Write the best model so far to this model file (atomically) whenever
        it changes, so a crash or a killed process still leaves a usable
        model; its training summary says it is provisional.
    """
    config = config or TrainConfig()
    if not train_images:
        raise UNetError("training needs at least one annotated image")
    if not 0 <= config.holdout_fraction < 1:
        raise UNetError(f"the held-out share must be in [0, 1), got {config.holdout_fraction}")
    for margin in (config.start_model_margin, config.start_model_image_margin):
        if not (math.isfinite(margin) and margin >= 0):
            raise UNetError(f"the start model's margin must be 0 or more, got {margin}")
    for decay in (config.start_decay, config.cells_start_decay):
        if not (math.isfinite(decay) and decay >= 0):
            raise UNetError(f"the pull toward the start model must be 0 or more, got {decay}")
    given_validation = bool(val_images)
    if not val_images and config.holdout_fraction > 0:
        train_images, val_images = hold_out_strips(train_images, config.holdout_fraction)
    yield Progress(Stage.PREPARE, 0, None, {"what": "training patches"})
    run = _TrainingRun(train_images, val_images, init, architecture, config, checkpoint, resume)
    if config.validate_start and run.fine_tunes and val_images and not resume:
        yield run.validate(-1)  # the start model: training must beat it to replace it
    epoch = run.start_epoch
    for epoch in range(run.start_epoch, config.epochs):
        if stop is not None and stop.is_set():  # before the first batch is even made
            run.stopped_by = "stop"
            break
        seen = yield from run.train_epoch(epoch, stop)
        yield from run.end_epoch(epoch, seen, save_best_to)
        if run.stopped_by != "epochs":
            break
    # A run cut short by time still gets one look at the validation set.
    if val_images and run.last_validated != epoch and run.stopped_by == "time":
        yield run.validate(epoch)
    model, summary = run.best_model(epoch, data_description, given_validation)
    params = model.postprocessing
    # Thresholds are tuned only on validation images the user gave: strips
    # held out of a few images are too small to tune on without overfitting.
    if given_validation and config.tune_postprocessing and not summary["kept_start_model"]:
        yield Progress(Stage.TUNE, 0, None, {})
        params, tuned = tune_postprocessing(
            model.net, val_images, run.device, params, config.precision
        )
        summary["postprocessing_tuning"] = tuned
        yield Progress(Stage.TUNE, 1, 1, tuned)
    return replace(model, net=model.net.cpu(), postprocessing=params, training=summary)


class _TrainingRun:
    """The state of one training run, advanced phase by phase by :func:`iter_train`."""

    def __init__(
        self, train_images, val_images, init, architecture, config: TrainConfig, checkpoint, resume
    ) -> None:
        self.config, self.init = config, init
        self.train_images, self.val_images = list(train_images), list(val_images)
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        start = starting_model(init, architecture, train_images)
        self.start_knew_cells = start.objects is not None and start.objects.kind == "cells"
        self.model = with_fixed_polarity(
            with_objects_record(start, self.train_images), self.train_images
        )
        # Fine-tuning proper: the start model's weights are kept, pulled toward and competed with.
        self.new_network = (
            init is not None and config.cells_from_new_network and self.learns_new_cells
        )
        if self.new_network:
            arch = self.model.net.config
            fresh = UNet(
                arch.depth,
                arch.base_channels,
                arch.in_channels,
                arch.n_classes,
                arch.batch_norm,
                arch.dropout,
            )
            self.model = replace(self.model, net=fresh, size_model=None)
        self.fine_tunes = init is not None and not self.new_network
        self.net = self.model.net.to(self.device)
        self.train_images, self.val_images = (
            images_for_network(items, self.model, init is not None)
            for items in (self.train_images, self.val_images)
        )
        self.dataset, self.loader, self.class_weights = _patch_loader(
            self.model, self.train_images, config
        )
        scratch_lr = 1e-3 if config.optimizer == "adam" else 1e-2
        # A new network takes the from-scratch rate, not a fine-tune's gentler one.
        self.base_lr = scratch_lr if self.new_network else (config.lr or scratch_lr)
        # Made before a resumed checkpoint's weights are loaded: the pull of
        # start_decay is toward the start model, not toward the checkpoint.
        self.optimizer = make_optimizer(
            config.optimizer,
            self.net.parameters(),
            self.base_lr,
            config.weight_decay,
            self.start_decay(),
        )
        self.bf16 = _use_bf16(config.precision, self.device)
        self.total_steps = config.epochs * math.ceil(config.patches_per_epoch / config.batch_size)
        self.limit_s = None if config.minutes is None else 60.0 * config.minutes
        self.checkpoint = Path(checkpoint) if checkpoint else None
        # The start model's weights, before a resumed checkpoint's replace them: the
        # model kept when no checkpoint beats it by the margin (which grows as more compete).
        competes = self.fine_tunes and config.validate_start
        self.start_state = copy.deepcopy(self.net.state_dict()) if competes else None
        if resume:
            if self.checkpoint is None:
                raise UNetError("resume needs a checkpoint path")
            state, self.best_state = _resume(self.checkpoint, self.net, self.optimizer)
        else:
            state, self.best_state = TrainState(), copy.deepcopy(self.net.state_dict())
        self.start_epoch, self.step = state.epoch, state.step
        self.best_score, self.best_epoch, self.history = (
            state.best_score,
            state.best_epoch,
            state.history,
        )
        self.saved_best_epoch = self.best_epoch
        self.validation_nuclei = sum(
            len(np.unique(item.labels[item.valid & (item.labels > 0)])) for item in self.val_images
        )
        scored = [h for h in self.history if "score" in h]
        self.start_score = next((h["score"] for h in scored if h["epoch"] < 0), None)
        self.trained_scores = [h["score"] for h in scored if h["epoch"] >= 0]
        self.t0 = time.perf_counter() - state.elapsed_s
        self.stopped_by = "epochs"
        self.last_validated = -1
        _train_mode(self.net, config)

    def start_decay(self) -> float:
        """The pull toward the start model's weights: none from scratch, less for new cells."""
        if not self.fine_tunes:
            return 0.0
        return self.config.cells_start_decay if self.learns_new_cells else self.config.start_decay

    @property
    def learns_new_cells(self) -> bool:
        """Whole cells in the training images, and a start model that knew only nuclei."""
        objects = self.model.objects
        return objects is not None and objects.kind == "cells" and not self.start_knew_cells

    @property
    def start_margin(self) -> float:
        """The margin the best checkpoint must beat the start model by, at this many checkpoints."""
        return start_model_margin_for(
            self.config.start_model_margin,
            self.validation_nuclei,
            len(self.trained_scores),
            len(self.val_images),
            self.config.start_model_image_margin,
        )

    def _keep_start_model_unless_beaten(self) -> None:
        """Fall back to the start model when the best checkpoint no longer clears the margin.

        The margin grows with every checkpoint compared, so a checkpoint that
        cleared it early may not clear it at the end; the start model was
        scored, and its weights are kept for this.
        """
        if self.start_score is None or self.best_epoch < 0:
            return
        if self.best_score <= self.start_score + self.start_margin:
            self.best_score, self.best_epoch = self.start_score, -1
            self.best_state = self.start_state

    def elapsed(self) -> float:
        """Seconds of training so far (a resumed run's earlier time included)."""
        return time.perf_counter() - self.t0

    def validate(self, epoch: int) -> Progress:
        """Score the network on the validation images; keep it when it is the best so far."""
        self.net.eval()
        scores = evaluate_model(
            self.net, self.val_images, self.model.postprocessing, self.device, self.config.precision
        )
        _train_mode(self.net, self.config)
        score = scores["score"]
        if epoch < 0:  # the start model: a checkpoint must beat it by more than chance
            self.start_score = score
            improved = True
            self.best_score, self.best_epoch, self.best_state = score, epoch, self.start_state
        else:
            best_trained = score > max(self.trained_scores, default=-math.inf)
            self.trained_scores.append(score)
            beats_start = self.start_score is None or score > self.start_score + self.start_margin
            if best_trained and beats_start:
                self.best_score, self.best_epoch = score, epoch
                self.best_state = copy.deepcopy(self.net.state_dict())
            self._keep_start_model_unless_beaten()
            improved = self.best_epoch == epoch
        self.history.append(
            {"epoch": epoch, "step": self.step, "time_s": round(self.elapsed(), 1), **scores}
        )
        self.last_validated = epoch
        info = {**scores, "epoch": epoch, "best": improved}
        return Progress(Stage.VALIDATE, max(epoch, 0), self.config.epochs, info)

    def train_epoch(self, epoch: int, stop) -> Generator[Progress, None, int]:
        """One epoch of optimizer steps (fewer when stopped or out of time); returns patches seen."""
        config = self.config
        self.dataset.epoch = epoch
        running, seen = 0.0, 0
        epoch_t0 = time.perf_counter()
        for batch in self.loader:
            if stop is not None and stop.is_set():
                self.stopped_by = "stop"
                break
            if self.limit_s is not None and self.elapsed() >= self.limit_s:
                self.stopped_by = "time"
                break
            fraction = max(
                self.step / max(self.total_steps, 1),
                self.elapsed() / self.limit_s if self.limit_s else 0.0,
            )
            lr = learning_rate(self.base_lr, fraction, self.step, config)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            loss = _train_step(self.net, self.optimizer, batch, self.device, self.bf16)
            self.step += 1
            running += loss * len(batch[0])
            seen += len(batch[0])
            rate = seen / max(time.perf_counter() - epoch_t0, 1e-9)
            eta, shown_total = self._eta(rate)
            info = {"epoch": epoch, "loss": loss, "lr": lr, "eta_s": eta, "patches_per_s": rate}
            yield Progress(Stage.TRAIN, self.step, shown_total, info)
        if seen:
            self.history.append(
                {
                    "epoch": epoch,
                    "step": self.step,
                    "time_s": round(self.elapsed(), 1),
                    "train_loss": running / seen,
                }
            )
        return seen

    def _eta(self, rate: float) -> tuple[float, int]:
        """Seconds left and the step total to show; both follow a binding minutes limit."""
        eta = (self.total_steps - self.step) * self.config.batch_size / max(rate, 1e-9)
        shown_total = self.total_steps
        if self.limit_s is not None and max(self.limit_s - self.elapsed(), 0.0) < eta:
            eta = max(self.limit_s - self.elapsed(), 0.0)
            shown_total = self.step + math.ceil(eta * rate / self.config.batch_size)
        return eta, shown_total

    def end_epoch(self, epoch: int, seen: int, save_best_to) -> Generator[Progress, None, None]:
        """Validate, checkpoint and write the best model so far, as the epoch's end asks."""
        config = self.config
        finished = seen > 0 and self.stopped_by == "epochs"
        if finished and self.val_images and (epoch + 1) % config.validate_every == 0:
            yield self.validate(epoch)
        if not self.val_images and seen:
            self.best_state, self.best_epoch = copy.deepcopy(self.net.state_dict()), epoch
        if self.checkpoint is not None and finished:
            state = TrainState(
                epoch + 1, self.step, self.elapsed(), self.best_score, self.best_epoch, self.history
            )
            save_checkpoint(
                self.checkpoint, self.model, self.optimizer, self.best_state, state, config
            )
        if save_best_to is not None and self.best_epoch != self.saved_best_epoch and seen:
            _save_provisional(save_best_to, self.model, self.best_state, self.best_epoch, self.step)
            self.saved_best_epoch = self.best_epoch

    def best_model(
        self, epoch: int, data_description: dict | None, given_validation: bool
    ) -> tuple[SegmentationModel, dict]:
        """The best network as a model, and the training summary it will carry."""
        if self.step == 0:
            raise TrainingStopped(
                "training was stopped before its first step; no model was made"
                if self.stopped_by == "stop"
                else "training ended before its first step (time limit too short); no model was made"
            )
        self.net.load_state_dict(self.best_state)
        self.net.eval()
        train_images, val_images = self.train_images, self.val_images
        summary = {
            "data": data_description
            or {"train_images": len(train_images), "val_images": len(val_images)},
            "n_train_images": len(train_images),
            # Image types the network was trained on (its start model's too): segmenting
            # another type draws a warning.
            "image_types": sorted(
                set(self.model.trained_image_types)
                | {item.image_type for item in train_images if item.image_type}
            ),
            "n_val_images": len(val_images),
            "objects": self.model.objects.to_dict() if self.model.objects else None,
            # The pull toward the start model this run used (none for new cells).
            "start_decay": getattr(self.optimizer, "start_decay", 0.0),
            # Annotated images resized by the start model's size rule, as it will segment them.
            "resized_images": {
                item.name or f"image {k}": round(item.scale, 2)
                for k, item in enumerate(train_images)
                if item.scale != 1.0
            },
            "epochs_run": epoch + 1 - self.start_epoch,
            "steps": self.step,
            "stopped_by": self.stopped_by,
            "time_s": round(self.elapsed(), 1),
            "best_epoch": self.best_epoch,
            # The start model was scored (epoch -1) and nothing trained beat it.
            "kept_start_model": self.best_epoch < 0
            and any(h.get("epoch") == -1 for h in self.history),
            "validation_nuclei": self.validation_nuclei,
            # How much the best checkpoint had to beat the start model by (when it
            # competed), with how many checkpoints compared.
            "start_model_margin": round(self.start_margin, 4),
            "checkpoints_compared": len(self.trained_scores),
            "validated_on": "validation images"
            if given_validation
            else ("held-out strips of the training images" if val_images else None),
            "validation": next(
                (h for h in self.history if h.get("epoch") == self.best_epoch and "score" in h),
                None,
            ),
            "config": self.config.to_dict(),
            "class_weights": self.class_weights.tolist(),
            "started_from": None if self.init is None else (self.model.source or self.model.name),
            # Whole cells from a nuclei model: a new network, prepared as that model prepares images.
            "new_network_for_cells": self.new_network,
            "device": str(self.device),
            "package_version": __version__,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        # A size model reads its own network's features: trained weights lose it
        # (sizes then come from a first pass), the start model kept keeps it.
        size_model = self.model.size_model if summary["kept_start_model"] else None
        return replace(self.model, net=self.net, source=None, size_model=size_model), summary


def _save_provisional(path, model: SegmentationModel, state: dict, epoch: int, step: int) -> None:
    net = copy.deepcopy(model.net).cpu()
    net.load_state_dict(state)
    snapshot = replace(
        model,
        net=net,
        training={"provisional": True, "best_epoch": epoch, "steps_so_far": step},
        source=None,
    )
    save_model(snapshot, path)


def train(*args, **kwargs) -> SegmentationModel:
    """Blocking form of :func:`iter_train` (same arguments): the trained model."""

    return run_to_end(iter_train(*args, **kwargs))
