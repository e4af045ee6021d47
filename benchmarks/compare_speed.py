"""Speed of two models on the default path, measured in the same run, interleaved.

    python benchmarks/compare_speed.py NEW_MODEL OLD_MODEL [--rounds 3]
        [--nuclei 2000 --radius 5 10]

Segments a synthetic 2048x2048 image with 2000 nuclei (``--nuclei``, radii
``--radius`` in pixels: 10 14 with 700 nuclei makes planes the coarse look
examines) as ``segment`` does by
default (image-type detection and input conversion, tiled inference,
post-processing, the resize pass where sizes call for it), once as
fluorescence, as its brightfield twin (inverted) and as a stained RGB twin
(dark nuclei on a pink background), alternating the two
models round by round, and which goes first, so that the machine's drift hits
both alike. Reports the best time of each and the ratios of the best and of
the median times (new over old; below 1 is faster), with the CPU. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from napari_unet.devices import cpu_name
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.models.modelfile import load_model
from napari_unet.models.sizes import median_object_area
from napari_unet.segmenting.segmentation import segment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("new")
    ap.add_argument("old")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nuclei", type=int, default=2000)
    ap.add_argument("--radius", type=float, nargs=2, default=(5.0, 10.0))
    args = ap.parse_args()
    models = {"new": load_model(args.new), "old": load_model(args.old)}
    fluo, truth = synthetic_nuclei(
        (2048, 2048), n_nuclei=args.nuclei, radius=tuple(args.radius), seed=1
    )
    bright = (int(fluo.max()) - fluo.astype(np.int64)).astype(np.uint16)
    dark = 1.0 - fluo.astype(np.float32) / fluo.max()
    stained = (255 * dark[..., None] * np.array([0.95, 0.75, 0.9], np.float32)).astype(np.uint8)
    images = {"fluorescence": fluo, "brightfield": bright, "stained_rgb": stained}
    for model in models.values():
        for image in images.values():
            segment(image[:512, :512], model)  # warm-up: companions loaded, kernels chosen
    times: dict[str, dict[str, list[float]]] = {m: {k: [] for k in images} for m in models}
    for round_ in range(args.rounds):
        # Who goes first alternates: a slot that is slower for whatever reason
        # (heap state, a neighbour's load) falls on both models alike.
        order = list(models.items())[:: 1 if round_ % 2 == 0 else -1]
        for kind, image in images.items():
            for name, model in order:
                t = time.perf_counter()
                segment(image, model)
                times[name][kind].append(time.perf_counter() - t)
    best = {m: {k: min(v) for k, v in t.items()} for m, t in times.items()}
    median = {m: {k: float(np.median(v)) for k, v in t.items()} for m, t in times.items()}
    print(
        json.dumps(
            {
                "benchmark": "default path, 2048x2048, new vs old model",
                "nuclei": {"count": int(truth.max()), "median_area": median_object_area(truth)},
                "cpu": cpu_name(),
                "threads": torch.get_num_threads(),
                "models": {"new": args.new, "old": args.old},
                "best_seconds": {
                    m: {k: round(v, 3) for k, v in t.items()} for m, t in best.items()
                },
                "megapixels_per_s": {
                    m: {k: round(2048 * 2048 / 1e6 / v, 2) for k, v in t.items()}
                    for m, t in best.items()
                },
                "new_over_old_time": {k: round(best["new"][k] / best["old"][k], 3) for k in images},
                "new_over_old_median_time": {
                    k: round(median["new"][k] / median["old"][k], 3) for k in images
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
