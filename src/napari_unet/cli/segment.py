"""``napari-unet segment``: files, folders and images bigger than memory, in place or on dask."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import UNetError
from ..labels.stitching import DEFAULT_STITCH_THRESHOLD
from ..progress import Progress, Stage, minutes_seconds, run_to_end
from .arguments import (
    DEVICE_HELP,
    _add_threshold_options,
    _block_size,
    _channels,
    _device,
    _given_thresholds,
    _in_range,
    _iou_threshold,
    _model_line,
    _positive_float,
    _positive_int,
    _progress_bar,
    check_writable_file,
    check_writable_folder,
)


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


def cmd_segment(args: argparse.Namespace) -> int:
    """``napari-unet segment``: segment files or folders; returns the exit status."""
    from ..segmenting.batch import BatchOptions, iter_segment_files

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
        enlarge_below=args.enlarge_below,
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
        from ..images.io import write_json

        write_json(args.json, report.to_dict())
    return 1 if report.failed else 0


def _add_segment_command(sub) -> None:
    from ..images.normalize import IMAGE_TYPES
    from ..segmenting.batch import BatchOptions
    from ..segmenting.options import ENLARGE_BELOW

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
        help="auto (bright-background brightfield and stained images are recognised and "
        "inverted), fluorescence, or brightfield (default: the model's own reading: auto for the "
        "built-in models; a model trained on DIC or phase contrast reads every image as its "
        "frames were)",
    )
    _add_threshold_options(p)
    p.add_argument(
        ENLARGE_BELOW.flag,
        type=_in_range(ENLARGE_BELOW),
        default=None,
        metavar="AREA",
        help=f"{ENLARGE_BELOW.help} [{ENLARGE_BELOW.low:g}-{ENLARGE_BELOW.high:g} px] "
        "(default: the model's size rule)",
    )
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
