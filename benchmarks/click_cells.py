"""One click per cell: how good are the cells a seeded watershed grows from them?

    python benchmarks/click_cells.py                       # on the image alone
    python benchmarks/click_cells.py --model cells.safetensors   # on a cell model's probabilities

Clicks at the ground-truth cells' centres (the innermost pixel of each mask,
as a person clicks the middle of a cell) on ``ctc-dic-hela/val`` frames; the
cells grown from them (``napari_unet.segmenting.cells.cells_from_points``, what the
Annotate widget's "Cells from points" does) are scored against the masks:
AP@0.5 and SEG. Prints one JSON object.
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
from napari_unet.segmenting.cells import cells_from_points
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
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    folder = SHARED / "ctc-dic-hela" / args.split
    if not folder.is_dir():
        print(f"no data at {folder}", file=sys.stderr)
        return 2
    model = None
    if args.model:
        from napari_unet.models.modelfile import load_model

        model = load_model(args.model)
    truths, preds = [], []
    t = time.perf_counter()
    for image_path, mask_path in pair_by_stem(folder / "images", folder / "masks"):
        image, truth = (
            np.asarray(read_image(image_path).data),
            np.asarray(read_image(mask_path).data),
        )
        probs = None
        if model is not None:
            from napari_unet.segmenting.segmentation import segment

            _, probs = segment(image, model, return_probabilities=True)
        preds.append(
            cells_from_points(
                centre_clicks(truth), image, probs, model.classes if model else (), args.diameter
            )
        )
        truths.append(truth)
    ap50, ap70 = dataset_ap(truths, preds, (0.5, 0.7))
    result = {
        "benchmark": "click_cells",
        "cpu": cpu_name(),
        "data": f"ctc-dic-hela/{args.split} ({len(truths)} frames)",
        "grown_on": "model probabilities" if model is not None else "the image alone",
        "model": args.model,
        "ap50": round(ap50, 4),
        "ap70": round(ap70, 4),
        "seg": round(dataset_seg(truths, preds), 4),
        "seconds_per_frame": round((time.perf_counter() - t) / len(truths), 3),
        "command": "python benchmarks/click_cells.py"
        + (f" --model {args.model}" if args.model else ""),
    }
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
