"""One click per cell: how good are the cells a seeded watershed grows from them?

    python benchmarks/click_cells.py                       # on the image alone
    python benchmarks/click_cells.py --model cells.safetensors   # on a cell model's probabilities
    python benchmarks/click_cells.py --split train --skip 40 --model early.safetensors  # selection

Clicks at the ground-truth cells' centres (the innermost pixel of each mask,
as a person clicks the middle of a cell) on ``ctc-dic-hela/val`` frames; the
cells grown from them (``napari_unet.segmenting.cells.cells_from_points``, what the
Annotate widget's "Cells from points" does) are scored against the masks:
AP@0.5 and SEG. Prints one JSON object per seed size (``--seed-fractions``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_unet.devices import cpu_name
from napari_unet.images.io import read_image
from napari_unet.labels.metrics import dataset_ap, dataset_seg
from napari_unet.segmenting.cells import CLICK_SEED_FRACTION, cells_from_points
from napari_unet.training.data import pair_by_stem

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def centre_clicks(labels: np.ndarray) -> np.ndarray:
    """One (y, x) per object: its innermost pixel (the maximum of its distance transform)."""
    ids = np.unique(labels)[1:]
    distance = ndi.distance_transform_edt(labels > 0)
    return np.array(ndi.maximum_position(distance, labels, ids), dtype=float).reshape(-1, 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--split", default="val")
    ap.add_argument("--model", default=None, help="grow on this model's probabilities")
    ap.add_argument(
        "--diameter",
        type=float,
        default=None,
        help="rough cell size (px; default: the clicks' spacing)",
    )
    ap.add_argument(
        "--skip",
        type=int,
        default=0,
        help="leave out the split's first N frames (choose on late train frames "
        "with a model trained on early ones)",
    )
    ap.add_argument(
        "--seed-fractions",
        type=float,
        nargs="+",
        default=[CLICK_SEED_FRACTION],
        help="click seed radius as a fraction of the clicks' spacing (several: a sweep, "
        "one JSON line each)",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    bad = (
        "--skip must be >= 0"
        if args.skip < 0
        else "--seed-fractions must be numbers >= 0"
        if not all(np.isfinite(f) and f >= 0 for f in args.seed_fractions)
        else "--diameter must be a number > 0"
        if args.diameter is not None and not (np.isfinite(args.diameter) and args.diameter > 0)
        else None
    )
    if bad:
        print(f"click_cells: {bad}", file=sys.stderr)
        return 2
    folder = SHARED / "ctc-dic-hela" / args.split
    if not folder.is_dir():
        print(f"no data at {folder}", file=sys.stderr)
        return 2
    model = None
    if args.model:
        from napari_unet.models.modelfile import load_model
        from napari_unet.segmenting.segmentation import segment

        model = load_model(args.model)
    frames = []  # (image, truth, probabilities or None)
    model_labels = []  # what the model gives with no clicks, to compare
    for image_path, mask_path in pair_by_stem(folder / "images", folder / "masks")[args.skip :]:
        image = np.asarray(read_image(image_path).data)
        probs = None
        if model is not None:
            labels, probs = segment(image, model, return_probabilities=True)
            model_labels.append(np.asarray(labels))
        frames.append((image, np.asarray(read_image(mask_path).data), probs))
    truths = [truth for _, truth, _ in frames]
    runs = [(None, model_labels)] if model is not None else []
    for fraction in args.seed_fractions:
        t = time.perf_counter()
        preds = [
            cells_from_points(
                centre_clicks(truth),
                image,
                probs,
                model.classes if model else (),
                args.diameter,
                seed_fraction=fraction,
            )
            for image, truth, probs in frames
        ]
        runs.append((fraction, preds, (time.perf_counter() - t) / len(truths)))
    results = []
    for fraction, preds, *seconds in runs:
        ap50, ap70 = dataset_ap(truths, preds, (0.5, 0.7))
        if fraction is None:
            grown_on = "no clicks: the model's own labels"
        else:
            grown_on = "model probabilities" if model is not None else "the image alone"
        results.append(
            {
                "benchmark": "click_cells",
                "cpu": cpu_name(),
                "data": f"ctc-dic-hela/{args.split} ({len(truths)} frames"
                + (f" after the first {args.skip})" if args.skip else ")"),
                "grown_on": grown_on,
                "model": Path(args.model).name if args.model else None,
                "seed_fraction": fraction,
                "ap50": round(ap50, 4),
                "ap70": round(ap70, 4),
                "seg": round(dataset_seg(truths, preds), 4),
                "grow_seconds_per_frame": round(seconds[0], 3) if seconds else None,
                "command": "python benchmarks/click_cells.py"
                + (f" --split {args.split}" if args.split != "val" else "")
                + (f" --skip {args.skip}" if args.skip else "")
                + (f" --model {Path(args.model).name}" if args.model else "")
                + (
                    " --seed-fractions " + " ".join(map(str, args.seed_fractions))
                    if args.seed_fractions != [CLICK_SEED_FRACTION]
                    else ""
                ),
            }
        )
        print(json.dumps(results[-1]))
    if args.out:
        text = (
            json.dumps(results[0], indent=1)
            if len(results) == 1
            else "\n".join(json.dumps(r) for r in results)
        )
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
