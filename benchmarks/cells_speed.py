"""Whole cells against nuclei: seconds to segment a 2048² image, same run, same machine.

    python benchmarks/cells_speed.py --model cells.safetensors

Whole cells: a ``ctc-dic-hela/val`` frame tiled 4 x 4 (2048²), segmented with
a cell model (trained on a few frames: it segments at its working scale).
Nuclei: a 2048² synthetic fluorescence image with the built-in default.
Timed from the call, as ``segment`` runs it (best of ``--rounds``). Prints
one JSON object; the ratio is cells' seconds per pixel over nuclei's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from napari_unet.devices import cpu_name
from napari_unet.images.io import read_image
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.models.modelfile import load_model
from napari_unet.segmenting.segmentation import segment

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def best_of(rounds: int, fn) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True, help="a model trained on whole cells")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    frames = sorted((SHARED / "ctc-dic-hela" / "val" / "images").glob("*.tif"))
    if not frames:
        print(f"no data at {SHARED / 'ctc-dic-hela'}", file=sys.stderr)
        return 2
    cells_image = np.tile(np.asarray(read_image(frames[0]).data), (4, 4))
    nuclei_image, _ = synthetic_nuclei((2048, 2048), seed=0)
    cells_model, nuclei_model = load_model(args.model), load_model("default")
    segment(cells_image[:256, :256], cells_model)  # warm-up
    segment(nuclei_image[:256, :256], nuclei_model)
    cells_s = best_of(args.rounds, lambda: segment(cells_image, cells_model))
    nuclei_s = best_of(args.rounds, lambda: segment(nuclei_image, nuclei_model))
    result = {
        "benchmark": "cells_speed",
        "cpu": cpu_name(),
        "image": "2048x2048",
        "cells_s": round(cells_s, 3),
        "cells_working_scale": cells_model.objects.scale if cells_model.objects else None,
        "nuclei_s": round(nuclei_s, 3),
        "cells_over_nuclei": round(cells_s / nuclei_s, 3),
        "command": f"python benchmarks/cells_speed.py --model {args.model}",
    }
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
