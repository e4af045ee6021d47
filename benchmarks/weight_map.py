"""Border weight map speed: 1024x1024 labels with 300 cells (target: under 1 s).

python benchmarks/weight_map.py
"""

from __future__ import annotations

import json
import time

from napari_unet.devices import cpu_name
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.training.weights import border_weight_map, separated_labels


def main() -> None:
    _, labels = synthetic_nuclei((1024, 1024), n_nuclei=300, radius=(6, 14), seed=0)
    sep = separated_labels(labels)
    border_weight_map(sep)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        border_weight_map(sep)
        times.append(time.perf_counter() - t)
    print(
        json.dumps(
            {
                "benchmark": "border weight map",
                "cpu": cpu_name(),
                "shape": [1024, 1024],
                "cells": int(labels.max()),
                "median_s": round(sorted(times)[2], 4),
                "min_s": round(min(times), 4),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
