"""How long until fine-tuning starts, and how fast Ctrl-C stops it, from the command line.

    python benchmarks/first_step.py

Writes three 512x512 synthetic image/mask pairs, then runs, as a user would,

    napari-unet train --images ... --masks ... --from default --epochs 1 \
        --patches-per-epoch 8 --batch-size 8 --out ...

which is exactly one training step: the command's whole wall time (Python
start, imports, reading and preparing the images, loading the model, the
first step, writing the model) bounds the time to the first step from above
(target: 5 s). Then the same command with a long schedule is interrupted
(SIGINT, as Ctrl-C) at several moments; the time from the signal to the
process's exit is reported (target: 2 s). Prints one JSON object with the CPU.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_unet.devices import cpu_name


def main() -> int:
    from napari_unet.images.synthetic import synthetic_nuclei

    tmp = Path(tempfile.mkdtemp(prefix="napari-unet-first-step-"))
    (tmp / "images").mkdir()
    (tmp / "masks").mkdir()
    for s in range(3):
        image, labels = synthetic_nuclei((512, 512), seed=s)
        tifffile.imwrite(tmp / "images" / f"n{s}.tif", image)
        tifffile.imwrite(tmp / "masks" / f"n{s}.tif", labels.astype(np.uint16))
    base = [sys.executable, "-m", "napari_unet.cli", "train", "--quiet"]
    base += ["--images", str(tmp / "images"), "--masks", str(tmp / "masks"), "--from", "default"]

    one_step = []
    for k in range(3):
        out = tmp / f"one{k}.safetensors"
        t = time.perf_counter()
        cmd = base + ["--epochs", "1", "--patches-per-epoch", "8", "--batch-size", "8"]
        subprocess.run(cmd + ["--out", str(out)], check=True, capture_output=True)
        one_step.append(round(time.perf_counter() - t, 2))

    stops = []
    for delay in (0.5, 2.0, 4.0, 8.0):
        out = tmp / f"stop{delay}.safetensors"
        proc = subprocess.Popen(
            base + ["--minutes", "5", "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(delay)
        t = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        stops.append(
            {
                "signal_after_s": delay,
                "exit_after_signal_s": round(time.perf_counter() - t, 2),
                "exit_code": proc.returncode,
                "model_written": out.exists(),
                "last_message": err.decode().strip().splitlines()[-1] if err else "",
            }
        )
    print(
        json.dumps(
            {
                "benchmark": "command to first training step, and Ctrl-C",
                "cpu": cpu_name(),
                "one_step_command_s": one_step,
                "stops": stops,
                "targets": {"first_step_s": 5, "stop_s": 2},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
