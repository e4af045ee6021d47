"""Whole cells from a nuclear channel, with no cell training: where does it hold?

    python benchmarks/two_channel_cells.py [--split val] [--grow 6 12 24] [--seed-fractions F ...] [--out FILE]

Two-channel images made from real data: the nuclear channel is a real
``dsb2018-fluo`` image; each true nucleus is grown by ``--grow`` pixels
(``skimage.segmentation.expand_labels``: neighbours meet halfway, as touching
cells do) into a whole cell, and the cell channel is drawn from those cells
as a stain would show them: ``cytoplasm`` (each cell evenly bright at its
own level, the nucleus dimmer, a soft edge) or ``membrane`` (bright cell
borders, dim inside). Then ``segment(image, channels=(0, 1))`` with the
built-in nuclei model (what ``napari-unet segment --channels 0,1`` does)
is scored against the grown cells: AP@0.5, AP@0.7, SEG, and the nuclei
alone for reference. One JSON line per stain and growth (and seed size,
``--seed-fractions``: how far each nucleus seed is enlarged; chosen with
``--split train --limit 25``, reported on ``val``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels, find_boundaries

from napari_unet.devices import cpu_name
from napari_unet.images.io import read_image
from napari_unet.labels.metrics import dataset_ap, dataset_seg
from napari_unet.segmenting import cells as cells_module
from napari_unet.segmenting.segmentation import segment
from napari_unet.training.data import pair_by_stem

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def cell_channel(cells: np.ndarray, nuclei: np.ndarray, stain: str, seed: int) -> np.ndarray:
    """A cytoplasm or membrane stain of ``cells`` (uint16), with blur and noise."""
    rng = np.random.default_rng(seed)
    levels = rng.uniform(0.4, 1.0, int(cells.max()) + 1)
    levels[0] = 0.0
    if stain == "cytoplasm":
        signal = levels[cells] * np.where(nuclei > 0, 0.6, 1.0)
    elif stain == "membrane":
        edges = find_boundaries(cells, mode="inner") & (cells > 0)
        signal = levels[cells] * np.where(edges, 1.0, 0.25)
    else:
        raise ValueError(stain)
    signal = ndi.gaussian_filter(signal, 1.5) + 0.05
    signal += rng.normal(0, 0.03, signal.shape)
    return np.clip(signal * 40000, 0, 65535).astype(np.uint16)


def grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:  # RGB(A) nuclei images: their mean
        image = image[..., :3].mean(axis=-1)
    return image


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--split", default="val")
    ap.add_argument("--grow", type=int, nargs="+", default=[6, 12, 24])
    ap.add_argument("--stains", nargs="+", default=["cytoplasm", "membrane"])
    ap.add_argument("--limit", type=int, default=None, help="the first N images only")
    ap.add_argument(
        "--seed-fractions",
        type=float,
        nargs="+",
        default=[cells_module.NUCLEUS_SEED_FRACTION],
        help="nucleus seeds enlarged by this fraction of the cells' diameter (several: a sweep)",
    )
    ap.add_argument("--out", default=None, help="also write the JSON lines here")
    args = ap.parse_args(argv)
    bad = (
        "--grow must be whole numbers >= 0"
        if any(g < 0 for g in args.grow)
        else "--seed-fractions must be numbers >= 0"
        if not all(np.isfinite(f) and f >= 0 for f in args.seed_fractions)
        else "--limit must be >= 1"
        if args.limit is not None and args.limit < 1
        else None
    )
    if bad:
        print(f"two_channel_cells: {bad}", file=sys.stderr)
        return 2
    folder = SHARED / "dsb2018-fluo" / args.split
    if not folder.is_dir():
        print(f"no data at {folder}", file=sys.stderr)
        return 2
    pairs = pair_by_stem(folder / "images", folder / "masks")[: args.limit]
    data = [
        (grey(read_image(i).data), np.asarray(read_image(m).data).astype(np.int32))
        for i, m in pairs
    ]
    # The nuclei alone on their channel, for reference.
    nuclei_ap50 = dataset_ap(
        [nuclei for _, nuclei in data], [np.asarray(segment(image)) for image, _ in data], (0.5,)
    )[0]
    rows = []
    for fraction, stain, grow in itertools.product(args.seed_fractions, args.stains, args.grow):
        cells_module.NUCLEUS_SEED_FRACTION = fraction  # what segment(channels=) grows with
        truths, preds = [], []
        t = time.perf_counter()
        for k, (nuclei_image, nuclei) in enumerate(data):
            whole_cells = expand_labels(nuclei, grow)
            image = np.stack([cell_channel(whole_cells, nuclei, stain, k), nuclei_image])
            preds.append(np.asarray(segment(image, channels=(0, 1))))
            truths.append(whole_cells)
        ap50, ap70 = dataset_ap(truths, preds, (0.5, 0.7))
        row = {
            "benchmark": "two_channel_cells",
            "cpu": cpu_name(),
            "data": f"dsb2018-fluo/{args.split} ({len(data)} images)",
            "stain": stain,
            "grown_px": grow,
            "seed_fraction": fraction,
            "ap50": round(ap50, 4),
            "ap70": round(ap70, 4),
            "seg": round(dataset_seg(truths, preds), 4),
            "nuclei_alone_ap50": round(nuclei_ap50, 4),
            "seconds_per_image": round((time.perf_counter() - t) / len(data), 3),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
