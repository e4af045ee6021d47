"""Fine-tuning pays off? AP on held-back images after minutes of fine-tuning on a few annotated ones.

    python benchmarks/finetune.py --shifts stained fluo-2x --images 3 --minutes 5
    python benchmarks/finetune.py            # the whole grid (hours on 2 CPU cores)

For each image shift, N annotated training images (seeded draw from a
``train`` split) and M minutes on this machine, it trains

* ``fine_tuned``: from the default model with the library's FINE_TUNE recipe
  (what ``napari-unet train`` and the Train widget do from a model),
* ``scratch``: a new network of the same architecture for the same time,

and scores both, and the default model as shipped, on held-back images
(the ``val`` split, shifted the same way), segmenting them as
``napari-unet segment`` does (image-type detection, rescaling, the start
model's post-processing: a lab with three annotated images has nothing to
tune on). Shifts: the real ``dsb2018-stained`` set, and ``dsb2018-fluo``
made unfamiliar (2x and 0.5x magnification, strong blur and noise, uneven
illumination). Stained images to annotate are drawn from the 12 ``train``
images that no built-in model was trained on (a lab's images are new to
the model). ``--partial K`` annotates only a region around K nuclei of
each training image (the Annotate widget's region). Prints one JSON object
per run and a summary; ``--out`` also writes them to a file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_unet.devices import cpu_name
from napari_unet.images.io import read_image
from napari_unet.labels.metrics import dataset_ap, dataset_seg
from napari_unet.models.modelfile import load_model, model_for_image_types
from napari_unet.models.sizes import WORKING_CELL_DIAMETER
from napari_unet.segmenting.segmentation import segment
from napari_unet.training.data import make_training_image, pair_by_stem
from napari_unet.training.loop import TrainingStopped, train
from napari_unet.training.recipes import FINE_TUNE, TrainConfig

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
# The stained train images no built-in model was trained on: the seeded draw
# that scripts/train_default.py holds out (--holdout 12, seed 0) for every
# model in the brightfield model's line. A lab's images are new to the model;
# fine-tuning on images it has already learned can only overfit.
UNSEEN = {"dsb2018-stained": 12}


def zoom(factor: float):
    def apply(image, labels):
        from skimage.transform import rescale

        img = rescale(image.astype(np.float32), factor, order=1, preserve_range=True)
        lab = rescale(labels, factor, order=0, preserve_range=True, anti_aliasing=False)
        return img.astype(np.float32), lab.astype(np.int32)

    return apply


def blur_noise(image, labels, seed=0):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    img = gaussian_filter(image.astype(np.float32), 2.0)
    scale = np.percentile(img, 99.5) - np.percentile(img, 1) + 1e-6
    return img + rng.normal(0, 0.15 * scale, img.shape).astype(np.float32), labels


def uneven(image, labels):
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    field = 0.25 + 1.5 * (xx / max(w - 1, 1)) * (0.5 + 0.5 * np.cos(np.pi * yy / max(h - 1, 1)))
    img = image.astype(np.float32) * field
    return img + 0.3 * np.percentile(img, 99) * (yy / max(h - 1, 1)), labels


def low_contrast(image, labels, seed=0):
    """Half the contrast around the mean, blurred a little and noisy: a dimmer, softer DIC."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    img = image.astype(np.float32)
    img = img.mean() + 0.5 * (gaussian_filter(img, 1.0) - img.mean())
    return img + rng.normal(0, 0.05 * img.std() + 1.0, img.shape).astype(np.float32), labels


SHIFTS = {
    "stained": ("dsb2018-stained", None),
    # whole cells (DIC HeLa, the U-Net paper's task), and made unfamiliar
    "cells": ("ctc-dic-hela", None),
    "cells-0.5x": ("ctc-dic-hela", zoom(0.5)),
    "cells-low-contrast": ("ctc-dic-hela", low_contrast),
    "fluo-2x": ("dsb2018-fluo", zoom(2.0)),
    "fluo-0.5x": ("dsb2018-fluo", zoom(0.5)),
    "fluo-blur-noise": ("dsb2018-fluo", blur_noise),
    "fluo-uneven": ("dsb2018-fluo", uneven),
}


def _draw(pairs: list, limit: int | None, seed: int) -> list:
    if limit is None:
        return pairs
    rng = np.random.default_rng(seed)
    return [pairs[i] for i in sorted(rng.choice(len(pairs), limit, replace=False))]


def annotatable_pairs(dataset: str) -> list:
    """The ``train`` pairs a benchmark may annotate: those the built-in models never trained on."""
    folder = SHARED / dataset / "train"
    if dataset not in UNSEEN:
        return pair_by_stem(folder / "images", folder / "masks")
    sys.path.insert(0, str(HERE.parent / "scripts"))
    from train_default import split_pairs

    return split_pairs(folder, UNSEEN[dataset], 0)[1]


def load_pairs(folder: Path, shift, limit: int | None = None, seed: int = 0):
    return _read(_draw(pair_by_stem(folder / "images", folder / "masks"), limit, seed), shift)


def _read(pairs: list, shift) -> list:
    out = []
    for i, m in pairs:
        image, labels = np.asarray(read_image(i).data), np.asarray(read_image(m).data)
        if shift is not None:
            image, labels = shift(image, labels)
        out.append((i.stem, image, labels))
    return out


def region_around(labels: np.ndarray, k: int) -> np.ndarray:
    """The smallest square around the image centre holding at least ``k`` whole nuclei."""
    from scipy import ndimage as ndi

    ids = np.unique(labels)[1:]
    centres = (
        np.array(ndi.center_of_mass(labels > 0, labels, ids)) if len(ids) else np.zeros((0, 2))
    )
    mid = np.array(labels.shape) / 2
    order = np.argsort(np.abs(centres - mid).max(axis=1))
    chosen = ids[order[: max(k, 1)]]
    ys, xs = np.nonzero(np.isin(labels, chosen))
    valid = np.zeros(labels.shape, bool)
    valid[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
    return valid


def score(model, val) -> dict:
    preds = [segment(image, model) for _, image, _ in val]
    truths = [lab for _, _, lab in val]
    ap50, ap70 = dataset_ap(truths, preds, (0.5, 0.7))
    objects = [int(p.max()) for p in preds]
    return {
        "ap50": round(ap50, 4),
        "ap70": round(ap70, 4),
        "seg": round(dataset_seg(truths, preds), 4),
        "objects_per_image": round(float(np.mean(objects)), 1),
        "true_objects_per_image": round(float(np.mean([len(np.unique(t)) - 1 for t in truths])), 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shifts", nargs="+", default=list(SHIFTS), choices=list(SHIFTS))
    ap.add_argument("--images", nargs="+", type=int, default=[1, 3, 10])
    ap.add_argument("--minutes", nargs="+", type=float, default=[1.0, 2.0, 5.0])
    ap.add_argument("--starts", nargs="+", default=["fine_tuned", "scratch"])
    ap.add_argument("--partial", type=int, default=0, help="annotate a region around K nuclei")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--model", default="default", help="the model to start from and compare with (file or name)"
    )
    ap.add_argument(
        "--lr", type=float, default=None, help="try another learning rate than the recipe's"
    )
    ap.add_argument("--val-limit", type=int, default=None, help="score on N val images only")
    ap.add_argument(
        "--select-on-train",
        type=int,
        default=0,
        metavar="K",
        help="score on K held-out train images instead of val: for choosing the recipe "
        "(never choose on the images you report)",
    )
    ap.add_argument(
        "--start-decay",
        type=float,
        default=None,
        help="try another pull toward the start model's weights than the recipe's",
    )
    ap.add_argument(
        "--start-margin-scale",
        type=float,
        default=None,
        help="scale the margin a checkpoint must beat the start model by (0: any gain replaces it)",
    )
    ap.add_argument(
        "--freeze-batch-norm",
        choices=["recipe", "on", "off"],
        default="recipe",
        help="keep the start model's batch-norm statistics (default: as the recipe says)",
    )
    ap.add_argument(
        "--cell-diameter",
        type=float,
        default=WORKING_CELL_DIAMETER,
        help="the working diameter whole cells are trained and segmented at (px)",
    )
    ap.add_argument("--out", default=None, help="also write the JSON lines here")
    args = ap.parse_args(argv)
    if not SHARED.is_dir():
        print(f"no data at {SHARED}", file=sys.stderr)
        return 2
    default = load_model(args.model)
    lines = []

    def emit(obj):
        line = json.dumps(obj)
        print(line, flush=True)
        lines.append(line)

    emit({"cpu": cpu_name(), "recipe": FINE_TUNE.to_dict()})
    for shift_name in args.shifts:
        dataset, shift = SHIFTS[shift_name]
        if args.select_on_train:
            # Held-out train images: drawn with another seed, never among the annotated ones.
            train_all = pair_by_stem(
                SHARED / dataset / "train" / "images", SHARED / dataset / "train" / "masks"
            )
            pool = annotatable_pairs(dataset)
            annotated = {i.stem for n in args.images for i, _ in _draw(pool, n, args.seed)}
            rest = [pair for pair in train_all if pair[0].stem not in annotated]
            val = _read(_draw(rest, args.select_on_train, args.seed + 1000), shift)
        else:
            val = load_pairs(SHARED / dataset / "val", shift, args.val_limit, args.seed)
        scored_on = f"train hold-out ({len(val)})" if args.select_on_train else f"val ({len(val)})"
        emit(
            {
                "shift": shift_name,
                "model": args.model,
                "scored_on": scored_on,
                **score(default, val),
            }
        )
        for n in args.images:
            chosen = _read(_draw(annotatable_pairs(dataset), n, args.seed), shift)
            items = [
                make_training_image(
                    image,
                    labels,
                    valid=region_around(labels, args.partial) if args.partial else None,
                    name=name,
                    model=default,  # as segmenting sees it: stained images for the companion
                    working_diameter=args.cell_diameter,
                )
                for name, image, labels in chosen
            ]
            for minutes in args.minutes:
                for start in args.starts:
                    if start == "fine_tuned":
                        init, arch = default, None
                        config = replace(FINE_TUNE, minutes=minutes, lr=args.lr or FINE_TUNE.lr)
                        if args.start_decay is not None:
                            config = replace(config, start_decay=args.start_decay)
                        if args.start_margin_scale is not None:
                            config = replace(
                                config,
                                start_model_margin=config.start_model_margin
                                * args.start_margin_scale,
                                start_model_image_margin=config.start_model_image_margin
                                * args.start_margin_scale,
                            )
                        if args.freeze_batch_norm != "recipe":
                            config = replace(
                                config, freeze_batch_norm=args.freeze_batch_norm == "on"
                            )
                    else:
                        # The network fine-tuning would train, new: same architecture and input.
                        trained = model_for_image_types(default, [i.image_type for i in items])
                        arch = dict(trained.net.config.to_dict(), scheme=trained.scheme)
                        arch.pop("n_classes")
                        init = None
                        config = replace(FINE_TUNE, minutes=minutes, lr=TrainConfig().lr or 1e-3)
                    t = time.perf_counter()
                    try:
                        model = train(items, init=init, architecture=arch, config=config)
                    except TrainingStopped as exc:
                        emit({"shift": shift_name, "model": start, "error": str(exc)})
                        continue
                    cells = model.objects is not None and model.objects.kind == "cells"
                    if start == "scratch" and not cells:  # no thresholds of its own
                        own = model_for_image_types(default, [i.image_type for i in items])
                        model.postprocessing = own.postprocessing
                        model.size_rule = replace(
                            own.size_rule, object_area=model.size_rule.object_area
                        )
                    emit(
                        {
                            "shift": shift_name,
                            "model": start,
                            "lr": config.lr,
                            "freeze_batch_norm": config.freeze_batch_norm,
                            # the pull this run used (none when a nuclei model learns cells)
                            "start_decay": model.training.get("start_decay", config.start_decay),
                            "scored_on": scored_on,
                            "images": n,
                            "partial_nuclei": args.partial or None,
                            "minutes": minutes,
                            "cell_diameter": args.cell_diameter,
                            "objects": model.objects.to_dict() if model.objects else None,
                            "steps": model.training["steps"],
                            "kept_start_model": model.training.get("kept_start_model"),
                            "new_network_for_cells": model.training.get("new_network_for_cells"),
                            "validated_on": model.training.get("validated_on"),
                            "validation_nuclei": model.training.get("validation_nuclei"),
                            "start_model_margin": model.training.get("start_model_margin"),
                            "train_s": round(time.perf_counter() - t, 1),
                            **score(model, val),
                        }
                    )
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
