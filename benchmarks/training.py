"""Training throughput: patches per second and GFLOP/s against one 3x3 convolution.

    python benchmarks/training.py [--depth 3 --base 16 --patch 252 --batch 8 --steps 40]

Runs the real training generator (augmentation, weight maps, bf16 autocast
where native) on synthetic nuclei and reports the steady-state rate. Training
FLOPs are counted as 3x the forward convolutions (forward + two backward
products). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from inference import conv_gflops

from napari_unet.devices import cpu_name, native_bfloat16
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.models.model import UNet, valid_input_size
from napari_unet.progress import Progress, Stage
from napari_unet.training.data import make_training_image
from napari_unet.training.loop import TrainConfig, iter_train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--base-channels", type=int, default=16)
    ap.add_argument("--patch-size", type=int, default=252)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    data = [make_training_image(*synthetic_nuclei((512, 512), seed=s), 1) for s in range(6)]
    patch = valid_input_size(args.patch_size, args.depth)
    config = TrainConfig(
        epochs=1,
        patches_per_epoch=args.steps * args.batch_size,
        batch_size=args.batch_size,
        patch_size=patch,
        workers=args.workers,
        tune_postprocessing=False,
    )
    stamps: list[float] = []

    def on_event(e: Progress) -> None:
        if e.stage == Stage.TRAIN:
            stamps.append(time.perf_counter())

    gen = iter_train(
        data, architecture=dict(depth=args.depth, base_channels=args.base_channels), config=config
    )
    for e in gen:
        on_event(e)
    skip = min(5, len(stamps) // 4)  # warm-up steps
    steady = (stamps[-1] - stamps[skip]) / (len(stamps) - 1 - skip)
    patches_per_s = args.batch_size / steady
    net = UNet(depth=args.depth, base_channels=args.base_channels, n_classes=3)
    flops_per_patch = 3 * net.conv_flops(patch, patch)
    bf16 = native_bfloat16(torch.device("cpu"))
    conv = conv_gflops(args.base_channels, 1024, torch.bfloat16 if bf16 else None)
    gflops = flops_per_patch * patches_per_s / 1e9
    print(
        json.dumps(
            {
                "benchmark": "training throughput",
                "cpu": cpu_name(),
                "architecture": {"depth": args.depth, "base_channels": args.base_channels},
                "patch_input": patch,
                "patch_output": net.output_size(patch),
                "batch": args.batch_size,
                "threads": torch.get_num_threads(),
                "loader_workers": args.workers,
                "bfloat16_autocast": bf16,
                "patches_per_s": round(patches_per_s, 2),
                "training_gflops_per_s": round(gflops, 1),
                "conv3x3_gflops_per_s": round(conv, 1),
                "ratio": round(gflops / conv, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
