"""Freed buffers kept for reuse during tasks, against glibc's default, in the same run.

    python benchmarks/heap_reuse.py [--size 2048] [--pairs 3]

Segments a synthetic nuclei image twice per child process, in fresh
processes that alternate between napari-unet as shipped (freed buffers kept
in the heap while a task runs, ``napari_unet.heap``) and with that switched
off (glibc's defaults: every large buffer mapped anew and its pages faulted
in). Reports the best wall time, the CPU time in the kernel and the minor
page faults per segmentation for each. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
from napari_unet import heap
from napari_unet.segmenting.segmentation import segment
from napari_unet.images.synthetic import synthetic_nuclei
if sys.argv[2] == "off":
    heap._glibc = lambda: None  # glibc's defaults
size = int(sys.argv[1])
image, _ = synthetic_nuclei((size, size), n_nuclei=size * size // 1600, radius=(5, 10), seed=0)
segment(image[:512, :512])
r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(2):
    segment(image)
wall, r1 = (time.perf_counter() - t) / 2, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_s": wall, "kernel_s": (r1.ru_stime - r0.ru_stime) / 2,
                  "page_faults": (r1.ru_minflt - r0.ru_minflt) // 2}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    from napari_unet.devices import cpu_name

    runs = {"kept": [], "glibc_default": []}
    for _ in range(args.pairs):
        for key, switch in (("glibc_default", "off"), ("kept", "on")):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(args.size), switch],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            runs[key].append(json.loads(out.strip().splitlines()[-1]))
    best = {k: min(v, key=lambda r: r["wall_s"]) for k, v in runs.items()}
    print(
        json.dumps(
            {
                "cpu": cpu_name(),
                "image": [args.size, args.size],
                **{
                    k: {m: round(x, 3) if isinstance(x, float) else x for m, x in r.items()}
                    for k, r in best.items()
                },
                "speedup": round(best["glibc_default"]["wall_s"] / best["kept"]["wall_s"], 3),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
