"""``napari-unet train``: train or fine-tune from image and mask folders; resumable."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from ..errors import UNetError
from ..progress import Progress, Stage, run_to_end
from .arguments import (
    DEVICE_HELP,
    _device,
    _non_negative_float,
    _non_negative_int,
    _positive_float,
    _positive_int,
    _progress_bar,
    check_output_file,
    check_writable_file,
)


def cmd_train(args: argparse.Namespace) -> int:
    """``napari-unet train``: train or fine-tune a model; returns the exit status."""
    out, checkpoint = _check_train_arguments(args)
    with _output_lock(out):
        return _train_into(args, out, checkpoint)


def _train_into(args: argparse.Namespace, out: Path, checkpoint: Path) -> int:
    """The training run of ``napari-unet train``, once ``out`` is locked for it."""
    from ..models.modelfile import load_model, save_model
    from ..training.data import training_sets
    from ..training.loop import iter_train

    init = None if args.start_from == "scratch" else load_model(args.start_from)
    folders = {
        "train": (args.images, args.masks),
        "validation": (args.val_images, args.val_masks),
    }
    train_set, val_set = training_sets((), folders, init, args.channels)
    # A new network's (ignored when fine-tuning); unset options keep
    # new_model's own defaults (one source for them).
    architecture = dict(in_channels=args.channels, scheme=args.scheme, name=out.stem)
    architecture.update(
        {k: v for k, v in (("depth", args.depth), ("base_channels", args.base_channels)) if v}
    )
    description = {
        "train_images": str(args.images),
        "train_masks": str(args.masks),
        "n_train": len(train_set),
        "val_images": str(args.val_images) if val_set else None,
        "n_val": len(val_set),
    }
    _check_free_space(out, init, architecture)
    stop = threading.Event()
    gen = iter_train(
        train_set,
        val_set,
        init=init,
        architecture=architecture,
        config=_train_config(args, from_model=init is not None),
        stop=stop,
        checkpoint=checkpoint,
        resume=args.resume,
        data_description=description,
        save_best_to=out,
    )
    bar = _progress_bar(None, "train", args.quiet)
    previous_handler = signal.signal(signal.SIGINT, _stop_on_first_interrupt(stop))
    try:
        model = run_to_end(gen, lambda event: _show_training(bar, event))
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        bar.close()
    model.name = out.stem
    try:
        save_model(model, out)
    except OSError as exc:
        kept = f"; the checkpoint {checkpoint} keeps the run" if checkpoint.exists() else ""
        raise UNetError(
            f"could not write the model to {out}: {exc.strerror or exc}{kept} (free some "
            "space, then rerun with --resume)"
        ) from None
    _report_training(model.training, out)
    print(_objects_line(model), file=sys.stderr)
    return 0


def _check_free_space(out: Path, init, architecture: dict) -> None:
    """Room for the model, its provisional copies and the checkpoint, checked before training.

    The checkpoint holds the weights, the best weights and Adam's two moments:
    about 4x the model file; the model and its atomic copy 2x more.
    """
    import shutil

    from ..models.modelfile import new_model

    net = init.net if init is not None else new_model(**architecture).net
    weights = 4 * sum(p.numel() for p in net.parameters())
    needed = 6 * weights + (1 << 20)
    folder = out.parent if out.parent.exists() else Path(".")
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UNetError(
            f"not enough free space in {folder.resolve()}: training needs about "
            f"{needed / 1e6:.0f} MB for the model and its checkpoint, {free / 1e6:.0f} MB are free"
        )


def _objects_line(model) -> str:
    """What the masks showed and the scale the model works at, after training."""
    from ..segmenting.notes import what_model_knows

    line = f"the model finds {what_model_knows(model)}"
    objects = model.objects
    if objects is not None and objects.scale > 0:
        working = objects.diameter * objects.scale
        line += (
            f"; every image was trained resized x{objects.scale:.2f} (cells ~{working:.0f} px "
            "across there), and segment resizes images by the same factor (or give --diameter "
            "for cells of another size)"
        )
    if model.training.get("new_network_for_cells"):
        line += (
            "; the start model knew only nuclei, so a new network learnt the cells (its "
            "image preparation kept)"
        )
    return line


@contextlib.contextmanager
def _output_lock(out: Path):
    """Hold ``<out>.lock`` while a run writes ``out``: a second run with the same --out is refused.

    The lock is created exclusively (never through a planted file or link)
    and holds the owner's process id; a lock whose process is gone (a killed
    run) is taken over.
    """
    lock = out.with_name(out.name + ".lock")
    for attempt in range(2):
        try:
            fd = os.open(
                lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644
            )
            break
        except FileExistsError:
            owner = _lock_owner(lock)
            if attempt == 0 and owner is not None and not _process_alive(owner):
                lock.unlink(missing_ok=True)  # a killed run's lock
                continue
            raise UNetError(
                f"another run is writing {out} (process {owner if owner else '?'}, lock "
                f"{lock.name}); wait for it or choose another --out"
            ) from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        yield
    finally:
        lock.unlink(missing_ok=True)


def _lock_owner(lock: Path) -> int | None:
    try:
        if lock.is_symlink():
            return None
        text = lock.read_text()[:32].strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_train_arguments(args: argparse.Namespace) -> tuple[Path, Path]:
    """The model and checkpoint paths, after every check that needs no data."""
    out = check_output_file(args.out, ".safetensors", args.overwrite)
    if (args.val_images is None) != (args.val_masks is None):
        raise UNetError("give both --val-images and --val-masks, or neither")
    for images, masks, what in (
        (args.images, args.masks, "--masks"),
        (args.val_images, args.val_masks, "--val-masks"),
    ):
        if images and masks and Path(images).resolve() == Path(masks).resolve():
            raise UNetError(f"{what} is the images folder {images}: give the folder of masks")
    if args.max_zoom and args.max_zoom < 1:
        raise UNetError(f"--max-zoom must be at least 1 (or 0 for off), got {args.max_zoom}")
    checkpoint = (
        Path(args.checkpoint)
        if args.checkpoint
        else out.with_name(out.stem + ".checkpoint.safetensors")
    )
    check_writable_file(checkpoint, "--checkpoint")
    if checkpoint.exists() and not args.resume:
        raise UNetError(
            f"a checkpoint of an earlier run is at {checkpoint}; pass --resume to continue it, "
            "or remove it (or give --checkpoint) to start afresh"
        )
    return out, checkpoint


def _train_config(args: argparse.Namespace, from_model: bool):
    """One source of defaults: the fine-tuning recipe from a model, TrainConfig's own from scratch."""
    from ..training.augment import NO_AUGMENTATION, AugmentConfig
    from ..training.recipes import FINE_TUNE, TrainConfig

    given = {
        "epochs": args.epochs,
        "minutes": args.minutes,
        "patches_per_epoch": args.patches_per_epoch,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "lr": args.lr,
        "start_decay": args.start_decay,
    }
    return replace(
        FINE_TUNE if from_model else TrainConfig(),
        **{k: v for k, v in given.items() if v is not None},
        optimizer=args.optimizer,
        seed=args.seed,
        workers=args.loader_workers,
        device=args.device,
        augment=NO_AUGMENTATION if args.no_augment else AugmentConfig(max_zoom=args.max_zoom),
    )


def _stop_on_first_interrupt(stop: threading.Event):
    """A SIGINT handler: the first Ctrl-C finishes after this step and saves; a second aborts."""

    def on_interrupt(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(
            "\nstopping after this step and saving the best model (Ctrl-C again to abort)",
            file=sys.stderr,
        )

    return on_interrupt


def _show_training(bar, event: Progress) -> None:
    """Training progress on the terminal: the bar for steps, a line per validation."""
    info = event.info
    if event.stage == Stage.TRAIN:
        bar.total, bar.n = event.total, event.step
        bar.set_postfix(epoch=info["epoch"], loss=f"{info['loss']:.4f}", refresh=False)
        bar.refresh()
    elif event.stage == Stage.VALIDATE:
        best = "  (best)" if info.get("best") else ""
        which = "start model" if info["epoch"] < 0 else f"epoch {info['epoch']}"
        bar.write(
            f"{which}: AP@0.5 {info['ap50']:.3f}  AP@0.7 {info['ap70']:.3f}{best}", file=sys.stderr
        )
    elif event.stage == Stage.TUNE and event.total:
        bar.write(
            f"post-processing tuned on validation: mean AP {info['mean_ap']:.3f}", file=sys.stderr
        )


def _report_training(summary: dict, out: Path) -> None:
    print(
        f"saved {out} ({summary['steps']} steps in {summary['time_s']:.0f}s, "
        f"stopped by {summary['stopped_by']})",
        file=sys.stderr,
    )
    resized = summary.get("resized_images") or {}
    if resized and (summary.get("objects") or {}).get("kind") != "cells":
        factors = ", ".join(f"{name} x{f:g}" for name, f in list(resized.items())[:3])
        more = f" and {len(resized) - 3} more" if len(resized) > 3 else ""
        print(
            f"trained on {len(resized)} image(s) resized as the model will segment them "
            f"(nuclei far from its training size): {factors}{more}",
            file=sys.stderr,
        )
    if summary.get("kept_start_model"):
        print(
            f"training did not beat the start model on the {summary['validated_on']} "
            f"by more than chance ({summary.get('validation_nuclei', '?')} nuclei, "
            f"{summary.get('checkpoints_compared', '?')} checkpoints compared): "
            f"{out} holds the start model's weights",
            file=sys.stderr,
        )
    if summary.get("validation"):
        print(json.dumps(summary["validation"]), file=sys.stderr)


def _add_train_command(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model on image/mask folders")
    p.add_argument("--images", required=True, help="folder of training images")
    p.add_argument(
        "--masks", required=True, help="instance label images, paired with images by file name"
    )
    p.add_argument(
        "--val-images",
        help="folder of validation images (default: a held-out strip of each training image)",
    )
    p.add_argument("--val-masks", help="their instance label images, paired by file name")
    p.add_argument(
        "--from",
        dest="start_from",
        default="default",
        help="'default', a .safetensors file, or 'scratch' (default: fine-tune the default model)",
    )
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    recipe = "(default: the fine-tuning recipe from a model, TrainConfig's from scratch)"
    p.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help=f"whichever of epochs and minutes ends first wins {recipe}",
    )
    p.add_argument(
        "--minutes",
        type=_positive_float,
        default=None,
        help=f"stop after this many minutes {recipe}",
    )
    p.add_argument("--patches-per-epoch", type=_positive_int, default=None, help=recipe)
    p.add_argument("--batch-size", type=_positive_int, default=None, help=recipe)
    p.add_argument("--patch-size", type=_positive_int, default=None, help=recipe)
    p.add_argument(
        "--optimizer", default="adam", choices=["adam", "sgd"], help="(default: %(default)s)"
    )
    p.add_argument("--lr", type=_positive_float, default=None, help=recipe)
    p.add_argument(
        "--start-decay",
        type=_non_negative_float,
        default=None,
        help="(fine-tuning) pull the weights toward the start model's, "
        f"0: off; larger keeps more of what it knew {recipe}",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed of patches and augmentation (default: 0)"
    )
    p.add_argument(
        "--depth", type=_positive_int, default=None, help="(from scratch) U-Net depth (default 3)"
    )
    p.add_argument(
        "--base-channels",
        type=_positive_int,
        default=None,
        help="(from scratch) first-level channels (default 16)",
    )
    p.add_argument(
        "--channels", type=int, default=1, help="(from scratch) input channels (default: 1)"
    )
    p.add_argument(
        "--scheme",
        default="3class",
        choices=["2class", "3class", "4class"],
        help="(from scratch) classes: 2class background/cell, 3class adds the boundary, "
        "4class also the cells' centres (default: %(default)s)",
    )
    p.add_argument(
        "--no-augment",
        action="store_true",
        help="train without elastic deformations, rotations, flips and grey-value changes",
    )
    p.add_argument(
        "--max-zoom",
        type=_non_negative_float,
        default=0.0,
        help="scale augmentation: show objects at 1/z..z times their size, e.g. 1.3 (0: off)",
    )
    p.add_argument(
        "--loader-workers",
        type=_non_negative_int,
        default=0,
        help="DataLoader worker processes (default: 0, load in the training process)",
    )
    p.add_argument("--device", type=_device, default="auto", help=DEVICE_HELP)
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: beside --out)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--quiet", action="store_true", help="print only errors and the result")
    p.set_defaults(func=cmd_train)
