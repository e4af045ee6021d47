"""Other magnifications: AP on held-back images resampled to 0.5x, 2x and 3x their size.

    python benchmarks/magnification.py [--model default] [--scales 0.5 1 2 3]

Images of ``dsb2018-fluo/val`` (and masks, nearest neighbour) are resampled
as if taken at another magnification, then segmented as ``napari-unet
segment`` does (sizes estimated from a first pass, the plane rescaled when
its nuclei are far from the training sizes). Prints one JSON line per scale,
with the change from the 1x score, and the seconds taken.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from skimage.transform import rescale

from napari_unet.images.io import read_image
from napari_unet.labels.metrics import dataset_ap
from napari_unet.models.modelfile import load_model
from napari_unet.segmenting.segmentation import segment
from napari_unet.training.data import pair_by_stem

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default=str(SHARED / "dsb2018-fluo" / "val"))
    ap.add_argument("--scales", nargs="+", type=float, default=[1.0, 0.5, 2.0, 3.0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument(
        "--diameter-from-truth",
        action="store_true",
        help="give segment each image's nucleus diameter (from its mask's median area), "
        "as a user who knows the magnification would",
    )
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not (data / "images").is_dir():
        print(f"no data at {data}", file=sys.stderr)
        return 2
    model = load_model(args.model)
    pairs = pair_by_stem(data / "images", data / "masks")[: args.limit]
    originals = [(np.asarray(read_image(i).data), np.asarray(read_image(m).data)) for i, m in pairs]
    base = None
    for scale in args.scales:
        preds, gts = [], []
        t = time.perf_counter()
        for image, mask in originals:
            if scale != 1.0:
                image = rescale(image.astype(np.float32), scale, order=1, preserve_range=True)
                mask = rescale(mask, scale, order=0, preserve_range=True, anti_aliasing=False)
            diameter = None
            if args.diameter_from_truth:
                areas = np.bincount(mask.astype(np.int64).ravel())[1:]
                diameter = float(2 * np.sqrt(np.median(areas[areas > 0]) / np.pi))
            preds.append(segment(image, model, diameter=diameter))
            gts.append(mask.astype(np.int32))
        ap50, ap70 = dataset_ap(gts, preds, (0.5, 0.7))
        base = ap50 if scale == 1.0 else base
        print(
            json.dumps(
                {
                    "model": args.model,
                    "diameter": "from truth" if args.diameter_from_truth else "estimated",
                    "scale": scale,
                    "n_images": len(pairs),
                    "ap50": round(ap50, 4),
                    "ap70": round(ap70, 4),
                    "ap50_change_from_1x": None if base is None else round(ap50 - base, 4),
                    "seconds": round(time.perf_counter() - t, 1),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
