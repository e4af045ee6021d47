"""Tiles sized to the image against fixed 1024-px tiles, same run: in-memory `segment` times.

    python benchmarks/tile_plan.py [--sizes 2048 2500 1100] [--repeats 3]

The previous release cut every axis into tiles of 1024 output pixels, so an
axis just over a multiple of 1024 computed a nearly empty last tile (1100 px:
2048 px of work). ``tiling.plan_axis`` now takes as many tiles as 1024-px
ones would need, each only as large as covering the axis takes. This times
``segment`` of synthetic nuclei images with both rules, interleaved, best of
``--repeats``. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import napari_unet.models.tiling as tiling
from napari_unet.devices import cpu_name
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.models.model import halo, input_size_for_output
from napari_unet.segmenting.segmentation import segment

SIZED_TO_IMAGE = tiling.plan_axis


def fixed_step_plan(size: int, depth: int, step: int) -> tiling.AxisPlan:
    """The previous release's rule: every tile ``step`` output pixels (at most the axis)."""
    stride = 2**depth
    step = max(stride, min(step // stride * stride, math.ceil(size / stride) * stride))
    tile = input_size_for_output(step, depth)
    count = math.ceil(size / step)
    padded = (count - 1) * step + tile
    return tiling.AxisPlan(size, step, tile, count, halo(depth), padded - size - halo(depth))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", nargs="+", type=int, default=[2048, 2500, 1100])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    results = {}
    for size in args.sizes:
        image, _ = synthetic_nuclei((size, size), n_nuclei=size * size // 2000, radius=(5, 10))
        segment(image[:512, :512])  # warm-up
        times = {"fixed_1024_s": [], "sized_to_image_s": []}
        for _ in range(args.repeats):
            for key, rule in (
                ("fixed_1024_s", fixed_step_plan),
                ("sized_to_image_s", SIZED_TO_IMAGE),
            ):
                tiling.plan_axis = rule
                t = time.perf_counter()
                segment(image)
                times[key].append(time.perf_counter() - t)
        tiling.plan_axis = SIZED_TO_IMAGE
        best = {k: round(min(v), 3) for k, v in times.items()}
        results[str(size)] = {
            **best,
            "speedup": round(best["fixed_1024_s"] / best["sized_to_image_s"], 3),
        }
    print(json.dumps({"cpu": cpu_name(), "segment": results}, indent=1))


if __name__ == "__main__":
    main()
