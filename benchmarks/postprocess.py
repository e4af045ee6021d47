"""Post-processing time against inference time on a 2048x2048 image with about 2000 nuclei.

    python benchmarks/postprocess.py [--model default|FILE]

Target (issue 3): the watershed post-processing takes no more than a quarter
of the inference time on 2 CPU cores. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from napari_unet.devices import cpu_name, resolve_precision
from napari_unet.images.normalize import normalize
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.labels.instances import instances_from_probabilities
from napari_unet.labels.metrics import matching
from napari_unet.models.modelfile import load_model
from napari_unet.models.tiling import predict_tiled, prepare_model
from napari_unet.segmenting.segmentation import segment


def best_of(fn, repeats=3):
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="default", help="built-in name or model file")
    args = ap.parse_args()
    model = load_model(args.model)
    image, truth = synthetic_nuclei((2048, 2048), n_nuclei=2000, radius=(5, 10), seed=1)
    x = normalize(image[None], model.normalization)
    dev = torch.device("cpu")
    net = prepare_model(model.net, dev, resolve_precision("auto", dev))
    predict_tiled(net, x[:, :512, :512], prepared=True)
    infer_s, probs = best_of(lambda: predict_tiled(net, x, prepared=True))
    post_s, labels = best_of(
        lambda: instances_from_probabilities(probs, model.postprocessing, model.scheme)
    )
    total_s, _ = best_of(lambda: segment(image, model), repeats=2)
    print(
        json.dumps(
            {
                "benchmark": "post-processing vs inference",
                "cpu": cpu_name(),
                "model": args.model,
                "architecture": model.net.config.to_dict(),
                "image": [2048, 2048],
                "threads": torch.get_num_threads(),
                "objects_true": int(truth.max()),
                "objects_found": int(labels.max()),
                "ap50_vs_synthetic_truth": round(matching(truth, labels, 0.5).ap, 4),
                "inference_s": round(infer_s, 3),
                "postprocess_s": round(post_s, 3),
                "postprocess_over_inference": round(post_s / infer_s, 3),
                "segment_total_s": round(total_s, 3),
                "segment_megapixels_per_s": round(2048 * 2048 / 1e6 / total_s, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
