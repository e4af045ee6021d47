"""The default network in float32 three ways, in the same run: what is left for CPUs without bf16.

    python benchmarks/float32_backends.py [--tile 604] [--repeats 5] [--threads 2]

On CPUs without native bfloat16 (AVX2 only) the float32 network is most of
a segmentation's time (``time_breakdown.py``). This times one tile of the
default network, best of ``--repeats``: as napari-unet runs it (torch,
batch norm folded into the convolutions, channels_last), as a plain torch
module (contiguous), and with onnxruntime running the ONNX weights that
``napari-unet export`` writes; each as a ratio to napari-unet's own and as
GFLOP/s. Needs ``onnx`` and ``onnxruntime`` for the
last one (skipped, and said so, without them). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from napari_unet.devices import cpu_name
from napari_unet.models.modelfile import load_model
from napari_unet.models.tiling import prepare_model


def best_of(run, repeats: int) -> float:
    run()  # warm-up: first-call allocations and kernel choice
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tile", type=int, default=604)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net = load_model("default").net.float().eval()
    side = net.valid_input_size(args.tile)
    x = torch.rand(1, 1, side, side)
    gflop = net.conv_flops(side, side) / 1e9
    seconds = {}
    shipped = prepare_model(net, torch.device("cpu"))
    with torch.no_grad():
        x_last = x.contiguous(memory_format=torch.channels_last)
        seconds["napari_unet_torch"] = best_of(lambda: shipped(x_last), args.repeats)
        seconds["torch_plain_module"] = best_of(lambda: net(x), args.repeats)
    notes = []
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
        import onnxruntime

        from napari_unet.models.bioimage_package import _write_onnx

        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = Path(tmp) / "net.onnx"
            _write_onnx(net, x, path)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = args.threads
            session = onnxruntime.InferenceSession(str(path), options)
            feed = {"raw": x.numpy()}
            seconds["onnxruntime_float32"] = best_of(lambda: session.run(None, feed), args.repeats)
            with torch.no_grad():
                diff = np.abs(session.run(None, feed)[0] - shipped(x_last).numpy()).max()
            notes.append(f"onnxruntime vs torch logits: max abs diff {diff:.2e}")
    else:
        notes.append("onnxruntime not measured: pip install onnx onnxruntime")
    reference = seconds["napari_unet_torch"]
    print(
        json.dumps(
            {
                "cpu": cpu_name(),
                "threads": args.threads,
                "tile": side,
                "gflop_per_tile": round(gflop, 2),
                "seconds": {k: round(v, 4) for k, v in seconds.items()},
                "gflop_per_s": {k: round(gflop / v, 1) for k, v in seconds.items()},
                "speed_vs_napari_unet": {k: round(reference / v, 3) for k, v in seconds.items()},
                "notes": notes,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
