"""``napari-unet evaluate | tune | info | export | demo``: the smaller commands."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..errors import UNetError
from .arguments import (
    DEVICE_HELP,
    _device,
    _iou_threshold,
    _positive_int,
    check_output_file,
    check_writable_file,
    check_writable_folder,
)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``napari-unet evaluate``: score predicted labels against ground truth; returns the exit status."""
    from ..images.io import write_json
    from ..labels.evaluation import evaluate_folders, format_scores
    from ..labels.metrics import DSB_THRESHOLDS

    if args.json:
        check_writable_file(args.json, "--json")
    thresholds = [float(t) for t in args.thresholds] if args.thresholds else list(DSB_THRESHOLDS)
    result = evaluate_folders(args.pred, args.gt, thresholds, per_image=args.per_image)
    print(format_scores(result))
    if args.json:
        write_json(args.json, result)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """``napari-unet tune``: tune a model's post-processing on labelled images; returns the exit status."""
    from ..devices import resolve_device
    from ..models.modelfile import load_model, model_for_image_types, save_model
    from ..training.data import load_training_folder
    from ..training.loop import images_for_network, tune_postprocessing

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
    from ..models.modelfile import read_model_config

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
    from ..models.bioimage_package import export_package
    from ..models.modelfile import get_model

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
    from ..images.io import output_owner

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
    from ..images.io import overlay_png, write_png, write_tiff
    from ..images.synthetic import synthetic_nuclei
    from ..labels.metrics import matching_dataset
    from ..segmenting.segmentation import segment

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
