"""Choose when a plane is segmented again, shrunk, on held-out *train* images at several magnifications.

    python scripts/tune_rescaling.py [--model default] [--limits 2000 1200 800 600]
        [--coarse-looks 0 600 1200]

The held-out images are the seeded draw of ``train_default.py --holdout 40``
from ``dsb2018-fluo/train`` (``val`` stays for the report,
``benchmarks/magnification.py``). Each is resampled to 0.5x, 1x, 2x and 3x;
for every candidate ``downscale_from_area`` (planes whose median nucleus is
larger are shrunk to the model's ``object_area``) the mean AP@0.5 over the
four magnifications is printed, one JSON line per candidate, and the best
is named; with ``--coarse-looks`` each limit is tried with each
``coarse_look_from_area`` (0: off). ``--write`` stores the best in the model file.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from skimage.transform import rescale

from napari_unet.io import read_image
from napari_unet.metrics import dataset_ap
from napari_unet.modelfile import load_model, model_path, save_model
from napari_unet.segmentation import segment

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_default import SHARED, split_pairs  # noqa: E402

SCALES = (0.5, 1.0, 2.0, 3.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="default")
    ap.add_argument("--limits", nargs="+", type=float, default=[2000, 1200, 800, 600])
    ap.add_argument("--coarse-looks", nargs="+", type=float, default=None)
    ap.add_argument("--holdout", type=int, default=40)
    ap.add_argument("--write", action="store_true", help="store the best limit in the model file")
    args = ap.parse_args(argv)
    model = load_model(args.model)
    _, held = split_pairs(SHARED / "dsb2018-fluo" / "train", args.holdout, 0)
    originals = [(np.asarray(read_image(i).data), np.asarray(read_image(m).data)) for i, m in held]
    scaled = {
        s: [
            (
                rescale(img.astype(np.float32), s, order=1, preserve_range=True) if s != 1 else img,
                rescale(m, s, order=0, preserve_range=True, anti_aliasing=False).astype(np.int32)
                if s != 1
                else m,
            )
            for img, m in originals
        ]
        for s in SCALES
    }
    results = {}
    looks = args.coarse_looks or [model.postprocessing.coarse_look_from_area]
    for limit, look in [(limit, look) for limit in args.limits for look in looks]:
        params = replace(
            model.postprocessing, downscale_from_area=limit, coarse_look_from_area=look
        )
        candidate = replace(model, postprocessing=params)
        per_scale = {}
        for s, pairs in scaled.items():
            preds = [segment(img, candidate) for img, _ in pairs]
            per_scale[s] = round(dataset_ap([m for _, m in pairs], preds, (0.5,))[0], 4)
        results[limit, look] = float(np.mean(list(per_scale.values())))
        print(
            json.dumps(
                {
                    "downscale_from_area": limit,
                    "coarse_look_from_area": look,
                    "ap50": per_scale,
                    "mean": round(results[limit, look], 4),
                }
            ),
            flush=True,
        )
    best = max(results, key=results.get)
    print(
        json.dumps({"best_downscale_from_area": best[0], "best_coarse_look_from_area": best[1]}),
        flush=True,
    )
    if args.write:
        model.postprocessing = replace(
            model.postprocessing, downscale_from_area=best[0], coarse_look_from_area=best[1]
        )
        save_model(model, model_path(args.model), half=True)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
