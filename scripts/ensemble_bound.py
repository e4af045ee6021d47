"""How far can the networks trained here go at any inference cost? Score an ensemble with test-time augmentation.

    python scripts/ensemble_bound.py default z1.safetensors b24.safetensors d0.safetensors

Averages the class probabilities of several trained 3-class models, each
over the 8 flips/rotations of the image (so 8 x N forward passes per image),
on ``dsb2018-fluo/val``; tunes the post-processing on those averaged
probabilities, segments tiny-nuclei images again enlarged exactly like
``segment`` does (``upscale_to_area`` 200), re-tunes, and prints one JSON line
per stage. Post-processing tuned on ``val`` and scored on ``val`` is an
optimistic figure: it bounds from above what a single network distilled from
this ensemble could score. It is not a product setting (far too slow).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_unet.devices import resolve_device, resolve_precision
from napari_unet.images.normalize import Normalization
from napari_unet.labels.instances import instances_from_probabilities, tune_instance_params
from napari_unet.models.modelfile import load_model

# The same enlargement rule and resampling as `segment`, so the bound includes the shipped upscaling.
from napari_unet.models.sizes import rescale_factor, resize_channels
from napari_unet.models.tiling import predict_tiled, prepare_model
from napari_unet.training.data import load_training_folder

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "dsb2018-fluo" / "val"
UPSCALE_TO_AREA = 200.0


def d4_average(nets, image: np.ndarray, device) -> np.ndarray:
    """Mean class probabilities over the models and the 8 rotations/flips of a (C, Y, X) image."""
    total = 0.0
    for net in nets:
        for quarter_turns in range(4):
            for mirror in (False, True):
                view = np.rot90(image, quarter_turns, axes=(1, 2))
                view = view[:, :, ::-1] if mirror else view
                probs = predict_tiled(net, np.ascontiguousarray(view), device=device, prepared=True)
                probs = probs[:, :, ::-1] if mirror else probs
                total = total + np.rot90(probs, -quarter_turns, axes=(1, 2))
    return total / (8 * len(nets))


def scores(summary: dict) -> dict:
    """AP@0.5 and AP@0.7 of the tuned parameters, as the tuning already counted them."""
    ap = summary["ap"]
    return {"ap50": round(ap["0.5"], 4), "ap70": round(ap["0.7"], 4), "mean_ap": summary["mean_ap"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("models", nargs="+", help='"default" or model files (3-class)')
    ap.add_argument("--data", type=Path, default=DATA, help="folder with images/ and masks/")
    args = ap.parse_args(argv)
    if not (args.data / "images").is_dir():
        print(f"no images/ folder in {args.data}", file=sys.stderr)
        return 2

    device = resolve_device("cpu")
    models = [load_model(m) for m in args.models]
    nets = [prepare_model(m.net, device, resolve_precision("auto", device)) for m in models]
    val = load_training_folder(args.data / "images", args.data / "masks", 1, Normalization())
    gts = [np.where(item.valid, item.labels, 0) for item in val]

    started = time.perf_counter()
    probs = [d4_average(nets, item.image, device) for item in val]
    start = models[0].postprocessing
    params, summary = tune_instance_params(probs, gts, start=start)
    report = {"stage": "ensemble x 8 views, tuned", "models": args.models}
    print(json.dumps({**report, **scores(summary)}))

    upscaled = 0
    for i, item in enumerate(val):
        factor = rescale_factor(
            instances_from_probabilities(probs[i], params),
            replace(models[0].size_rule, upscale_to_area=UPSCALE_TO_AREA),
        )
        if factor > 1.0:
            shape = tuple(round(n * factor) for n in item.image.shape[1:])
            big = d4_average(nets, resize_channels(item.image, shape), device)
            probs[i] = resize_channels(big, item.image.shape[1:])
            upscaled += 1
    params, summary = tune_instance_params(probs, gts, start=params)
    report = {
        "stage": "+ tiny nuclei upscaled, re-tuned",
        "upscaled_images": upscaled,
        "postprocessing": params.to_dict(),
        "size_rule": {**models[0].size_rule.to_dict(), "upscale_to_area": UPSCALE_TO_AREA},
        "seconds": round(time.perf_counter() - started),
    }
    print(json.dumps({**report, **scores(summary)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
