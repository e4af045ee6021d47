"""Block-wise against in-memory segmentation of the same image, in the same run.

    python benchmarks/blockwise_vs_memory.py [--size 6144] [--block 4096]

The image (synthetic nuclei, about one per 40x40 pixels) is written to a zarr
array and segmented block by block from it (TIFF output), then segmented
whole in memory. Prints one JSON object with both speeds and their ratio
(target: block-wise within 10% of in memory).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import zarr

from napari_unet.devices import cpu_name
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.segmenting.batch import BatchOptions
from napari_unet.segmenting.blockwise import segment_large
from napari_unet.segmenting.segmentation import segment


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=6144)
    ap.add_argument("--block", type=int, default=4096)
    args = ap.parse_args()
    size = args.size
    image, _ = synthetic_nuclei((size, size), n_nuclei=size * size // 1600, radius=(5, 10), seed=0)
    with tempfile.TemporaryDirectory() as folder:
        source = zarr.open_array(
            f"{folder}/in.zarr",
            mode="w",
            shape=image.shape,
            dtype=image.dtype,
            chunks=(1024, 1024),
            zarr_format=2,
        )
        source[:] = image
        segment(image[:512, :512])  # warm-up: model loading and first-call costs
        t = time.perf_counter()
        info = segment_large(
            source,
            f"{folder}/out.tif",
            "default",
            axes="YX",
            options=BatchOptions(block_size=args.block),
        )
        blockwise = time.perf_counter() - t
    t = time.perf_counter()
    labels = segment(image)
    in_memory = time.perf_counter() - t
    megapixels = size * size / 1e6
    print(
        json.dumps(
            {
                "benchmark": "block-wise vs in-memory segmentation",
                "cpu": cpu_name(),
                "image": [size, size],
                "block_size": args.block,
                "blocks": info["blocks"],
                "blockwise_mp_per_s": round(megapixels / blockwise, 3),
                "in_memory_mp_per_s": round(megapixels / in_memory, 3),
                "ratio": round(in_memory / blockwise, 3),
                "objects": [info["objects"], int(np.max(labels))],
                "target_ratio": 0.9,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
