"""Command-line interface: ``napari-unet segment | train | evaluate | tune | info | demo``.

A thin shell over the library: it parses arguments, drives the same
generators the napari widgets use with a terminal progress bar, and turns a
user's mistake (:class:`UNetError`) into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from .errors import UNetError
from .progress import Progress, Stage, minutes_seconds, run_to_end
from .stitching import DEFAULT_STITCH_THRESHOLD


class _Parser(argparse.ArgumentParser):
    """argparse, but a user's mistake is one line on stderr and exit status 2."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"napari-unet: error: {message}\n")


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


# Smallest --block-size: a block must be much larger than the margin around it
# (objects are completed there), or an image becomes thousands of tiny blocks.
MIN_BLOCK_SIZE = 256


def _block_size(text: str) -> int:
    value = _positive_int(text)
    if value < MIN_BLOCK_SIZE:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_BLOCK_SIZE} pixels, got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


DEVICE_HELP = "auto (CUDA, then Apple MPS, then CPU), cuda, cuda:N, mps or cpu (default: auto)"


def _device(text: str) -> str:
    """A device name that exists on this machine (checked before any work)."""
    from .devices import resolve_device

    try:
        resolve_device(text)
    except UNetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _finite_float(text: str) -> float:
    """``text`` as a finite number, or NaN for a number that is not (refused by the callers)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    return value if math.isfinite(value) else math.nan


def _channels(text: str) -> tuple[int, ...]:
    """argparse type of --channels: 'C' or 'C,N', channel indices from 0."""
    parts = text.split(",")
    if not 1 <= len(parts) <= 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected CELLS or CELLS,NUCLEI channel indices (e.g. 0 or 0,1), got {text!r}"
        )
    return tuple(int(p) for p in parts)


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive number, got {text}")
    return value


def _iou_threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"IoU thresholds are numbers, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"IoU thresholds lie in (0, 1], got {text}")
    return value


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_file(path: str | Path, what: str, overwrite: bool = True) -> Path:
    """Raise UNetError now, before any work, when ``path`` cannot be written as a file."""
    path = Path(path)
    if path.is_dir():
        raise UNetError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise UNetError(f"{what} {path} exists; choose another name or pass --overwrite")
    folder = _nearest_existing(path.parent)
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UNetError(f"cannot write {what} {path}: {folder} is not a writable folder")
    return path


def check_output_file(path: str | Path, suffix: str, overwrite: bool) -> Path:
    """``--out`` as a file with ``suffix`` that can be written (one line, before any work)."""
    path = Path(path)
    if path.suffix != suffix:
        raise UNetError(f"--out must end in {suffix}, got {path.name}")
    return check_writable_file(path, "--out", overwrite=overwrite)


def check_writable_folder(path: str | Path, what: str) -> Path:
    """Raise UNetError now when ``path`` cannot be (or become) a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UNetError(f"{what} {path} is a file; give a folder")
    folder = _nearest_existing(path)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UNetError(f"cannot write into {what} {path}: {folder} is not writable")
    return path


def _progress_bar(total: int | None, desc: str, disable: bool = False):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit="step", dynamic_ncols=True, disable=disable, file=sys.stderr
    )


# --------------------------------------------------------------------------
# segment
# --------------------------------------------------------------------------


def _check_scheduler(address: str, timeout_s: float = 5.0) -> None:
    """A dask scheduler answers at ``address`` (checked before loading the model or listing files)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise UNetError(f"--scheduler {address!r}: expected an address like tcp://HOST:PORT")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise UNetError(
            f"--scheduler {address}: no scheduler answers there ({exc.strerror or exc})"
        ) from None


def _given_thresholds(args: argparse.Namespace) -> dict[str, float]:
    """The post-processing flags given, checked against their ranges before any work."""
    from .instances import THRESHOLD_OPTIONS, InstanceParams, with_thresholds

    given = {
        o.field: getattr(args, o.field)
        for o in THRESHOLD_OPTIONS
        if getattr(args, o.field, None) is not None
    }
    with_thresholds(InstanceParams(), **given)  # a UNetError names the flag and its range
    return given


def cmd_segment(args: argparse.Namespace) -> int:
    """``napari-unet segment``: segment files or folders; returns the exit status."""
    from .batch import BatchOptions, iter_segment_files

    if args.into_input and args.out:
        raise UNetError("--into-input writes into the OME-Zarr inputs: leave out --out")
    if not args.into_input:
        if not args.out:
            raise UNetError(
                "give an output folder with --out (or --into-input for OME-Zarr images)"
            )
        check_writable_folder(args.out, "--out")
    if args.json:
        check_writable_file(args.json, "--json")
    cpus = os.cpu_count() or 1
    if args.workers is not None and args.workers > cpus:
        raise UNetError(
            f"--workers {args.workers}: this machine has {cpus} CPUs; give at most {cpus} "
            "(or --scheduler for a larger cluster)"
        )
    if args.scheduler:
        _check_scheduler(args.scheduler)
    options = BatchOptions(
        model=args.model,
        tile_size=args.tile,
        device=args.device,
        axes=args.axes,
        overwrite=args.overwrite,
        allow_input_folder=args.allow_input_folder,
        block_size=args.block_size,
        precision=args.precision,
        save_probabilities=args.probabilities,
        overlay=args.overlay,
        image_type=args.image_type,
        diameter=args.diameter,
        channels=args.channels,
        replace_others=args.replace_others,
        stitch=False if args.no_stitch else None,
        track=args.track,
        stitch_threshold=args.stitch_threshold,
        into_input=args.into_input,
        thresholds=_given_thresholds(args),
    )
    gen = iter_segment_files(
        args.inputs, args.out, options, workers=args.workers, scheduler=args.scheduler
    )
    bars = []  # made at the first event: a mistake found before any work stays one line

    def show(ev: Progress) -> None:
        if not bars:
            bars.append(_progress_bar(None, "segment", args.quiet))
        bar = bars[0]
        name = Path(ev.info.get("file", "")).name[-30:]
        if ev.stage == Stage.BLOCKS:
            # One image bigger than memory: the bar counts its blocks meanwhile.
            bar.set_description(f"blocks ({ev.info.get('phase', '')})", refresh=False)
            eta = ev.info.get("eta_s")
            left = f", {minutes_seconds(eta)} left" if eta is not None else ""
            bar.set_postfix_str(f"{name}{left}", refresh=False)
        else:
            bar.set_description("segment", refresh=False)
            bar.set_postfix_str(name, refresh=False)
        bar.total, bar.n = ev.total, ev.step
        bar.refresh()

    try:
        report = run_to_end(gen, show)
    finally:
        for bar in bars:
            bar.close()
    print(report.summary(), file=sys.stderr)
    print(_model_line(args.model), file=sys.stderr)
    if args.json:
        from .io import write_json

        write_json(args.json, report.to_dict())
    return 1 if report.failed else 0


def _model_line(source) -> str:
    """'model 'default': finds nuclei ~21 px across' (what the model was trained to find)."""
    from .modelfile import get_model, model_display_name
    from .segmentation import what_model_knows

    model = get_model(source)
    return f"model {model_display_name(model)!r}: finds {what_model_knows(model)}"


# --------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    """``napari-unet train``: train or fine-tune a model; returns the exit status."""
    out, checkpoint = _check_train_arguments(args)
    with _output_lock(out):
        return _train_into(args, out, checkpoint)


def _train_into(args: argparse.Namespace, out: Path, checkpoint: Path) -> int:
    """The training run of ``napari-unet train``, once ``out`` is locked for it."""
    from .data import training_sets
    from .modelfile import load_model, save_model
    from .training import iter_train

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

    from .modelfile import new_model

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
    from .segmentation import what_model_knows

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
    from .augment import NO_AUGMENTATION, AugmentConfig
    from .training import FINE_TUNE, TrainConfig

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


# --------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``napari-unet evaluate``: score predicted labels against ground truth; returns the exit status."""
    from .evaluation import evaluate_folders, format_scores
    from .io import write_json
    from .metrics import DSB_THRESHOLDS

    if args.json:
        check_writable_file(args.json, "--json")
    thresholds = [float(t) for t in args.thresholds] if args.thresholds else list(DSB_THRESHOLDS)
    result = evaluate_folders(args.pred, args.gt, thresholds, per_image=args.per_image)
    print(format_scores(result))
    if args.json:
        write_json(args.json, result)
    return 0


# --------------------------------------------------------------------------
# tune, info, demo
# --------------------------------------------------------------------------


def cmd_tune(args: argparse.Namespace) -> int:
    """``napari-unet tune``: tune a model's post-processing on labelled images; returns the exit status."""
    from .data import load_training_folder
    from .devices import resolve_device
    from .modelfile import load_model, model_for_image_types, save_model
    from .training import images_for_network, tune_postprocessing

    out = check_output_file(args.out, ".safetensors", args.overwrite)
    given = load_model(args.model)
    images = load_training_folder(args.images, args.masks, model=given)
    # Tune the network that segments these images: for mostly brightfield
    # images and the built-in default, its brightfield companion.
    model = model_for_image_types(given, [item.image_type for item in images])
    if model is not given:
        print(
            f"tuning the built-in {model.name!r} model, which segments these images",
            file=sys.stderr,
        )
    images = images_for_network(images, model)
    params, summary = tune_postprocessing(
        model.net, images, resolve_device(args.device), model.postprocessing
    )
    training = {**model.training, "postprocessing_tuning": summary}
    save_model(replace(model, postprocessing=params, training=training), out)
    print(json.dumps({"postprocessing": params.to_dict(), **summary}, indent=2))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``napari-unet info``: print a model's configuration; returns the exit status."""
    from .modelfile import read_model_config

    config = read_model_config(args.model)
    size_model = config.get("size_model")
    if not args.full and isinstance(size_model, dict):
        # Hundreds of fitted numbers (one per feature) would bury the rest of the config.
        config["size_model"] = {
            key: f"<{len(value)} fitted numbers; --full prints them>"
            if isinstance(value, list)
            else value
            for key, value in size_model.items()
        }
    print(json.dumps(config, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``napari-unet export``: write a model as a bioimage.io package; returns the exit status."""
    from .bioimage_package import export_package
    from .modelfile import get_model

    out = check_output_file(args.out, ".zip", args.overwrite)
    # A bad model, or bioimageio.spec missing, is one line before anything is written.
    export_package(get_model(args.model), out)
    print(f"wrote {out}; check it with: bioimageio test {out}", file=sys.stderr)
    return 0


def _png_has_text(path: Path) -> bool:
    """True when a PNG carries any text chunk (someone's own, since ours says napari-unet)."""
    from PIL import Image

    try:
        with Image.open(path) as picture:
            return bool(picture.text)
    except Exception:
        return True  # unreadable: not ours to replace


def _refuse_others_files(*paths: Path) -> None:
    """Refuse, before any work, to replace files that an earlier demo did not write.

    Every file napari-unet writes (TIFF, PNG, zarr) carries its mark. A PNG
    from before PNGs were marked counts as ours beside labels that are ours.
    """
    from .io import output_owner

    ours = {p for p in paths if output_owner(p) == "napari-unet"}
    labels_ours = any(p.name.endswith("_labels.tif") for p in ours)
    for path in paths:
        if not (path.exists() or path.is_symlink()) or path in ours:
            continue
        unmarked_png = path.suffix == ".png" and output_owner(path) == "other"
        if unmarked_png and labels_ours and not path.is_symlink() and not _png_has_text(path):
            continue
        raise UNetError(
            f"{path} exists and napari-unet did not write it; choose another --out folder "
            "(your files are left as they are)"
        )


def cmd_demo(args: argparse.Namespace) -> int:
    """``napari-unet demo``: segment synthetic nuclei and score them; returns the exit status."""
    from .io import overlay_png, write_png, write_tiff
    from .metrics import matching_dataset
    from .segmentation import segment
    from .synthetic import synthetic_nuclei

    out = check_writable_folder(args.out, "--out")
    _refuse_others_files(out / "nuclei.tif", out / "nuclei_labels.tif", out / "nuclei_overlay.png")
    image, truth = synthetic_nuclei((args.size, args.size), seed=args.seed)
    t = time.perf_counter()
    labels = segment(image, args.model)
    seconds = time.perf_counter() - t
    write_tiff(out / "nuclei.tif", image, axes="YX")
    write_tiff(out / "nuclei_labels.tif", labels, axes="YX")
    write_png(out / "nuclei_overlay.png", overlay_png(image, labels))
    scores = matching_dataset([truth], [labels], (0.5, 0.7))["thresholds"]
    print(
        f"segmented a {args.size}x{args.size} synthetic nuclei image in {seconds:.2f}s: "
        f"{int(labels.max())} nuclei (truth {int(truth.max())}), "
        f"AP@0.5 {scores['0.5']['ap']:.3f}, AP@0.7 {scores['0.7']['ap']:.3f}\n"
        f"wrote {out / 'nuclei_labels.tif'} and {out / 'nuclei_overlay.png'}"
    )
    return 0


# --------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------


def _add_segment_command(sub) -> None:
    from .batch import BatchOptions
    from .normalize import IMAGE_TYPES

    p = sub.add_parser(
        "segment", help="segment images or folders; one <stem>_labels file per input"
    )
    p.add_argument(
        "inputs", nargs="+", help="files, folders or globs (TIFF, OME-TIFF, PNG, zarr, OME-Zarr)"
    )
    p.add_argument("--out", default=None, help="output folder (one <stem>_labels file per input)")
    p.add_argument(
        "--into-input",
        action="store_true",
        help="OME-Zarr inputs: write the labels into each image's own labels/napari-unet group "
        "(multiscale, as OME-Zarr viewers expect) instead of --out",
    )
    p.add_argument(
        "--model",
        default="default",
        help="'default' (alias 'nuclei') or a .safetensors file (default: default)",
    )
    p.add_argument(
        "--tile",
        type=_positive_int,
        default=None,
        help="output pixels per tile and axis (default: from memory)",
    )
    p.add_argument("--device", type=_device, default="auto", help=DEVICE_HELP)
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="arithmetic of the network: auto picks bfloat16 where the CPU or GPU runs it "
        "natively, else float32 (default: auto)",
    )
    p.add_argument(
        "--axes", default=None, help="axes of the inputs, e.g. YX, YXC, CYX, ZYX, TZYX (guessed)"
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="start a local dask cluster with N worker processes (at most this machine's CPUs)",
    )
    group.add_argument("--scheduler", default=None, help="address of an existing dask scheduler")
    p.add_argument(
        "--block-size",
        type=_block_size,
        default=BatchOptions.block_size,
        help="images with a side above this are done block by block (pixels; default: %(default)s)",
    )
    p.add_argument(
        "--image-type",
        default=None,
        choices=list(IMAGE_TYPES),
        help="auto (the model's default: bright-background brightfield and stained images are "
        "recognised and inverted), fluorescence, or brightfield",
    )
    _add_threshold_options(p)
    p.add_argument(
        "--diameter",
        type=_positive_float,
        default=None,
        help="typical diameter of the objects (nuclei, or the cells of a cell model) in pixels "
        "(default: a cell model's training scale; for nuclei, estimated by the model's size "
        "model and a first pass)",
    )
    p.add_argument(
        "--channels",
        type=_channels,
        default=None,
        metavar="CELLS[,NUCLEI]",
        help="multi-channel images (e.g. CYX): the index of the channel to segment, and "
        "optionally of a nuclear channel; with a nuclei model, whole cells are grown from the "
        "nuclei on the cell channel (default: the image's channels as the model takes them)",
    )
    p.add_argument(
        "--no-stitch",
        action="store_true",
        help="keep each Z plane's own ids (default: planes are linked into 3-D objects)",
    )
    p.add_argument(
        "--track", action="store_true", help="keep a cell's id from one time point to the next"
    )
    p.add_argument(
        "--stitch-threshold",
        type=_iou_threshold,
        default=DEFAULT_STITCH_THRESHOLD,
        help="smallest overlap (IoU) that links two planes' or frames' objects "
        f"(default {DEFAULT_STITCH_THRESHOLD})",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="redo inputs whose output an earlier run wrote"
    )
    p.add_argument(
        "--replace-others",
        action="store_true",
        help="also replace <stem>_labels files that napari-unet did not write (yours!)",
    )
    p.add_argument(
        "--allow-input-folder", action="store_true", help="allow --out to be an input folder"
    )
    p.add_argument("--probabilities", action="store_true", help="also write class probabilities")
    p.add_argument(
        "--overlay", action="store_true", help="also write a PNG overlay per input (2D only)"
    )
    p.add_argument("--json", default=None, help="write the run summary here")
    p.add_argument("--quiet", action="store_true", help="print only errors and the summary")
    p.set_defaults(func=cmd_segment)


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


def _add_evaluate_command(sub) -> None:
    p = sub.add_parser("evaluate", help="score predicted labels against ground truth")
    p.add_argument("--pred", required=True, help="folder of <stem>_labels.tif or <stem>.tif")
    p.add_argument("--gt", required=True, help="folder of <stem>.tif ground-truth labels")
    p.add_argument(
        "--thresholds",
        nargs="+",
        type=_iou_threshold,
        default=None,
        help="IoU thresholds in (0, 1] (default 0.5..0.95)",
    )
    p.add_argument("--per-image", action="store_true", help="also print each image's scores")
    p.add_argument("--json", default=None, help="also write the scores here (JSON)")
    p.set_defaults(func=cmd_evaluate)


def _add_threshold_options(p: argparse.ArgumentParser) -> None:
    """One flag per post-processing setting, from the one declaration (instances.THRESHOLD_OPTIONS)."""
    from .instances import THRESHOLD_OPTIONS

    group = p.add_argument_group(
        "post-processing (default: the model's own; `napari-unet info MODEL` shows them)"
    )
    for option in THRESHOLD_OPTIONS:
        group.add_argument(
            option.flag,
            type=int if option.field == "min_size" else float,
            default=None,
            metavar="N" if option.field == "min_size" else "X",
            help=f"{option.help} [{option.low:g}-{option.high:g}] (default: the model's)",
        )


def _add_tune_command(sub) -> None:
    p = sub.add_parser("tune", help="tune a model's post-processing thresholds on annotated images")
    p.add_argument(
        "--model", default="default", help="built-in name or model file (default: default)"
    )
    p.add_argument("--images", required=True, help="folder of annotated images")
    p.add_argument("--masks", required=True, help="their instance label images, by file name")
    p.add_argument("--out", required=True, help="the tuned model file to write (.safetensors)")
    p.add_argument("--device", type=_device, default="auto", help=DEVICE_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_tune)


def _add_info_command(sub) -> None:
    p = sub.add_parser("info", help="print a model's config")
    p.add_argument("model", nargs="?", default="default")
    p.add_argument("--full", action="store_true", help="also the size model's fitted numbers")
    p.set_defaults(func=cmd_info)


def _add_export_command(sub) -> None:
    p = sub.add_parser(
        "export", help="write a model as a bioimage.io package (.zip) for other tools"
    )
    p.add_argument("model", help="a built-in name (default, brightfield) or a model file")
    p.add_argument("--out", required=True, help="the package to write, NAME.zip")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package")
    p.set_defaults(func=cmd_export)


def _add_demo_command(sub) -> None:
    p = sub.add_parser(
        "demo", help="segment a built-in synthetic image; write labels and a PNG overlay"
    )
    p.add_argument(
        "--out", default="demo_output", help="folder to write into (default: %(default)s)"
    )
    p.add_argument(
        "--model", default="default", help="built-in name or model file (default: default)"
    )
    p.add_argument(
        "--size", type=_positive_int, default=512, help="image side in pixels (default: 512)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic image (default: 0)")
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser with one sub-command per job."""
    parser = _Parser(prog="napari-unet", description="U-Net segmentation of cells and nuclei.")
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__import__('napari_unet').__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _add_segment_command(sub)
    _add_train_command(sub)
    _add_evaluate_command(sub)
    _add_tune_command(sub)
    _add_info_command(sub)
    _add_export_command(sub)
    _add_demo_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a user's mistake, one line on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UNetError as exc:
        print(f"napari-unet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("napari-unet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
