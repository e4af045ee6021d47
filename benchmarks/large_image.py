"""Bounded-memory segmentation of an image far bigger than one block.

    python benchmarks/large_image.py                    # 20000 x 20000 uint16, zarr in, tiled TIFF out
    python benchmarks/large_image.py --size 8000 --format tiff

The input is written tile by tile (synthetic nuclei, never whole in memory),
then segmented block by block in a fresh process whose peak RSS is reported
together with megapixels per second. Target (issue 6): peak RSS under 4 GB.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TILE = 2048


def synthetic_band(y: int, size: int) -> np.ndarray:
    """One TILE-high row band of the synthetic input (about one nucleus per 40x40 pixels)."""
    from napari_unet.images.synthetic import synthetic_nuclei

    h = min(TILE, size - y)
    parts = []
    for j, x in enumerate(range(0, size, TILE)):
        w = min(TILE, size - x)
        parts.append(synthetic_nuclei((h, w), n_nuclei=h * w // 1600, seed=y * 7 + j)[0])
    return np.concatenate(parts, axis=1)


def write_input(path: Path, size: int, fmt: str) -> None:
    """Write the input band by band, so it is never whole in memory."""
    if fmt == "zarr":
        import zarr

        arr = zarr.open_array(
            str(path), mode="w", shape=(size, size), chunks=(1024, 1024), dtype="u2"
        )
        for y in range(0, size, TILE):
            band = synthetic_band(y, size)
            arr[y : y + band.shape[0]] = band
        return
    import tifffile

    def tiles():
        # tifffile takes 256x256 tiles in row-major order.
        for y in range(0, size, TILE):
            band = synthetic_band(y, size)
            for ty in range(0, band.shape[0], 256):
                for tx in range(0, size, 256):
                    t = np.zeros((256, 256), np.uint16)
                    part = band[ty : ty + 256, tx : tx + 256]
                    t[: part.shape[0], : part.shape[1]] = part
                    yield t

    tifffile.imwrite(
        path, tiles(), shape=(size, size), dtype=np.uint16, tile=(256, 256), bigtiff=True
    )


def run_segmentation(src: str, out: str, block: int) -> None:
    """In a fresh process: segment and print timing and peak RSS as JSON."""
    from napari_unet.images.io import read_image
    from napari_unet.segmenting.batch import BatchOptions
    from napari_unet.segmenting.blockwise import segment_large

    image = read_image(src, lazy=True)
    t = time.perf_counter()
    info = segment_large(
        image.data, out, "default", axes=image.axes, options=BatchOptions(block_size=block)
    )
    wall = time.perf_counter() - t
    h, w = image.shape
    print(
        json.dumps(
            {
                "wall_s": round(wall, 1),
                "megapixels_per_s": round(h * w / 1e6 / wall, 3),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "objects": info["objects"],
                "blocks": info["blocks"],
            }
        )
    )


def main() -> None:
    from napari_unet.devices import cpu_name

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--format", choices=["zarr", "tiff"], default="zarr")
    ap.add_argument("--block", type=int, default=4096)
    ap.add_argument(
        "--workdir", default=None, help="keep input/output here (default: a temporary folder)"
    )
    ap.add_argument("--_segment", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._segment:
        run_segmentation(args._segment[0], args._segment[1], int(args._segment[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        src = work / (
            f"input_{args.size}.zarr" if args.format == "zarr" else f"input_{args.size}.tif"
        )
        t = time.perf_counter()
        if not src.exists():
            write_input(src, args.size, args.format)
        write_s = time.perf_counter() - t
        out = work / f"input_{args.size}_labels.tif"
        result = subprocess.run(
            [sys.executable, __file__, "--_segment", str(src), str(out), str(args.block)],
            capture_output=True,
            text=True,
            check=True,
        )
        seg = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            json.dumps(
                {
                    "benchmark": "block-wise segmentation of a large image",
                    "cpu": cpu_name(),
                    "image": [args.size, args.size],
                    "dtype": "uint16",
                    "input_format": args.format,
                    "block_size": args.block,
                    "input_written_s": round(write_s, 1),
                    **seg,
                    "target_peak_rss_mb": 4096,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
