"""Where the time of segmenting a 2048² image goes: normalization, network, post-processing.

    python benchmarks/time_breakdown.py [--size 2048] [--repeats 2]

Times the three steps of the per-plane pipeline with the default model, in
float32 and (where the CPU does it natively) bfloat16, best of ``--repeats``.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from napari_unet.devices import cpu_name, native_bfloat16
from napari_unet.images.normalize import prepare_plane
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.labels.instances import instances_from_probabilities
from napari_unet.models.modelfile import load_model
from napari_unet.models.tiling import predict_tiled


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    model = load_model("default")
    image, _ = synthetic_nuclei((args.size, args.size), n_nuclei=2000, radius=(5, 10), seed=1)
    precisions = ["float32"] + (["bfloat16"] if native_bfloat16(torch.device("cpu")) else [])
    results = {}
    for precision in precisions:
        warm, _ = prepare_plane(image[:512, :512], None, 1, model.normalization, None)
        predict_tiled(model.net, warm, precision=precision)
        spans = {"normalization_s": [], "network_s": [], "postprocessing_s": []}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            chw, _ = prepare_plane(image, None, 1, model.normalization, None)
            t1 = time.perf_counter()
            probs = predict_tiled(model.net, chw, precision=precision)
            t2 = time.perf_counter()
            instances_from_probabilities(probs, model.postprocessing, model.scheme)
            t3 = time.perf_counter()
            for key, value in zip(spans, (t1 - t0, t2 - t1, t3 - t2)):
                spans[key].append(value)
        best = {k: round(min(v), 3) for k, v in spans.items()}
        total = sum(best.values())
        results[precision] = {
            **best,
            "network_share": round(best["network_s"] / total, 3),
            "megapixels_per_s": round(args.size**2 / 1e6 / total, 3),
        }
    print(
        json.dumps(
            {
                "benchmark": "time breakdown of one plane",
                "cpu": cpu_name(),
                "threads": torch.get_num_threads(),
                "image": [args.size, args.size],
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
