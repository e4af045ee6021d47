"""Tiled inference speed on a 2048x2048 image; prints one JSON object.

    python benchmarks/inference.py            # shipped default model and the paper's U-Net
    python benchmarks/inference.py --arch paper --precision float32

By default it measures float32, and bfloat16 too only where the CPU does
bfloat16 natively (emulated bfloat16 is what the library never uses, and
the paper U-Net in it ran past 15 minutes on an AVX2-only CPU); say
``--precision both`` to measure it anyway.

For each architecture and precision it reports wall seconds, megapixels per
second, the network's FLOPs over the output area divided by wall time
(GFLOP/s), the GFLOP/s of one large 3x3 convolution measured in the same run
(same precision and memory layout, base channels in and out), their ratio,
the fraction of computed FLOPs spent on tile halos, and the largest
difference between bfloat16 and float32 probabilities.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

from napari_unet.devices import cpu_name, native_bfloat16, resolve_precision
from napari_unet.images.normalize import normalize
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.models.model import UNet, input_size_for_output, output_size
from napari_unet.models.modelfile import builtin_model_path, load_model
from napari_unet.models.tiling import (
    choose_tile_output,
    plan_tiles,
    predict_tiled,
    prepare_model,
)


def conv_gflops(channels: int, size: int, dtype: torch.dtype | None, repeats: int = 5) -> float:
    """GFLOP/s of one 3x3 valid convolution, channels -> channels, on a size x size input."""
    x = torch.randn(1, channels, size, size).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3).contiguous(memory_format=torch.channels_last)
    b = torch.zeros(channels)
    if dtype is not None:
        x, w, b = x.to(dtype), w.to(dtype), b.to(dtype)
    with torch.inference_mode():
        F.conv2d(x, w, b)
        t = time.perf_counter()
        for _ in range(repeats):
            F.conv2d(x, w, b)
        dt = (time.perf_counter() - t) / repeats
    return 2 * 9 * channels * channels * (size - 2) ** 2 / dt / 1e9


def measure(net: UNet, image: np.ndarray, precision: str, tile: int | None, repeats: int) -> dict:
    dev = torch.device("cpu")
    dtype = resolve_precision(precision, dev)
    prepared = prepare_model(net, dev, dtype)
    tile_output = tile or choose_tile_output(prepared, 1 << 30, 2 if dtype else 4)
    predict_tiled(prepared, image[:, :512, :512], tile_size=tile_output, prepared=True)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        probs = predict_tiled(prepared, image, tile_size=tile_output, prepared=True)
        times.append(time.perf_counter() - t)
    wall = min(times)
    h, w = image.shape[1:]
    plan = plan_tiles((h, w), net.depth, tile_output)
    computed = net.conv_flops(plan.y.tile, plan.x.tile) * plan.n_tiles
    # FLOPs of one whole-image pass, scaled to exactly this output area.
    in_h, in_w = input_size_for_output(h, net.depth), input_size_for_output(w, net.depth)
    out_area = output_size(in_h, net.depth) * output_size(in_w, net.depth)
    whole = net.conv_flops(in_h, in_w) * (h * w) / out_area
    conv = conv_gflops(net.config.base_channels, 1024, dtype)
    network = whole / wall / 1e9
    return {
        "precision": "bfloat16" if dtype else "float32",
        "tile_output": tile_output,
        "tile_input": plan.y.tile,
        "tiles": plan.n_tiles,
        "wall_s": round(wall, 3),
        "megapixels_per_s": round(h * w / 1e6 / wall, 3),
        "network_gflops_per_s": round(network, 1),
        "conv3x3_gflops_per_s": round(conv, 1),
        "ratio": round(network / conv, 3),
        "halo_fraction": round(1 - whole / computed, 3),
        "probs": probs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--arch", choices=["default", "paper", "both"], default="both")
    ap.add_argument(
        "--precision", choices=["native", "auto", "float32", "bfloat16", "both"], default="native"
    )
    ap.add_argument("--tile", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    image_u16, _ = synthetic_nuclei(
        (args.size, args.size), n_nuclei=args.size * args.size // 2000, radius=(5, 10)
    )
    image = normalize(image_u16[None])
    nets = {}
    if args.arch in ("default", "both") and builtin_model_path("default").is_file():
        nets["default model"] = load_model("default").net
    if args.arch in ("paper", "both"):
        torch.manual_seed(0)
        nets["paper U-Net (depth 4, 64 channels)"] = UNet(
            depth=4, base_channels=64, dropout=0.5
        ).eval()
    if args.precision == "native":
        bf16 = native_bfloat16(torch.device("cpu"))
        precisions = ["float32", "bfloat16"] if bf16 else ["float32"]
    elif args.precision == "both":
        precisions = ["float32", "bfloat16"]
    else:
        precisions = [args.precision]
    results = {}
    for name, net in nets.items():
        entry = {"architecture": net.config.to_dict()}
        probs = {}
        for p in precisions:
            r = measure(net, image, p, args.tile, args.repeats)
            probs[r["precision"]] = r.pop("probs")
            entry[r["precision"]] = r
        if len(probs) == 2:
            diff = np.abs(probs["float32"] - probs["bfloat16"])
            entry["bf16_vs_fp32_max_abs_diff"] = float(diff.max())
            entry["bf16_vs_fp32_p999_abs_diff"] = float(np.quantile(diff, 0.999))
        results[name] = entry
    out = {
        "benchmark": "tiled inference",
        "image": [args.size, args.size],
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "native_bfloat16": native_bfloat16(torch.device("cpu")),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "results": results,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
