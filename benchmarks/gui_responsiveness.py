"""Event-loop responsiveness of napari while the Train widget trains, and GUI vs CLI speed.

    xvfb-run -a python benchmarks/gui_responsiveness.py [--seconds 60]

A 5 ms QTimer in the GUI thread records how late each tick arrives from the
click on Start to the first training step (setup) and while training runs in
the widget's thread worker; the longest delay is the worst event-loop stall
(target: under 100 ms). The time from the click to the first step is
reported too (target: 5 s). The same training
configuration then runs headless (as the CLI drives it) for the same time;
the ratio of the two patch rates is reported (target: within 10%). Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np


def make_data():
    from napari_unet.synthetic import synthetic_nuclei

    return [synthetic_nuclei((512, 512), seed=s) for s in range(3)]


def training_config(seconds: float):
    from napari_unet.training import TrainConfig

    return TrainConfig(
        epochs=100_000,
        minutes=seconds / 60,
        patches_per_epoch=64,
        batch_size=8,
        validate_every=10_000,
        tune_postprocessing=False,
    )


def rate_from(stamps: list[float], batch: int) -> float:
    skip = min(5, len(stamps) // 4)
    return batch * (len(stamps) - 1 - skip) / (stamps[-1] - stamps[skip])


def gui_run(seconds: float) -> dict:
    import napari
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_unet._napari.train_widget import TrainWidget

    viewer = napari.Viewer(show=True)
    data = make_data()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    for k, (image, labels) in enumerate(data):
        img = viewer.add_image(image, name=f"img{k}")
        lab = viewer.add_labels(labels, name=f"lab{k}")
        widget.add_pair(img, lab, role="train")
    widget.start_combo.setCurrentText("scratch")
    config = training_config(seconds)
    widget.config = lambda *args: config  # same schedule as the headless run
    app = QApplication.instance()
    for _ in range(20):
        app.processEvents()

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    stamps: list[float] = []
    original = widget.plot.add_loss
    widget.plot.add_loss = lambda s, v: (stamps.append(time.perf_counter()), original(s, v))
    # Run Qt's own event loop, as napari does, instead of polling
    # processEvents (a busy loop would compete with training for the GIL).
    loop = QEventLoop()
    watcher = QTimer()
    watcher.setInterval(100)
    started = time.perf_counter()
    watcher.timeout.connect(
        lambda: None if widget.task.busy or time.perf_counter() - started < 1.0 else loop.quit()
    )
    timer.start()
    clicked = time.perf_counter()
    widget.start()
    start_call = time.perf_counter() - clicked
    watcher.start()
    loop.exec()
    watcher.stop()
    timer.stop()
    # The event loop from the click to the first step (setup), and while training ran.
    setup = np.diff([t for t in ticks if stamps and clicked <= t <= stamps[0]]) * 1000
    gaps = np.diff([t for t in ticks if stamps and stamps[0] <= t <= stamps[-1]]) * 1000
    viewer.close()
    return {
        "click_to_first_step_s": round(stamps[0] - clicked, 2) if stamps else None,
        "start_click_blocks_gui_ms": round(start_call * 1000, 1),
        "max_stall_before_first_step_ms": round(float(setup.max() - 5), 1) if len(setup) else None,
        "max_stall_ms": round(float(gaps.max() - 5), 1) if len(gaps) else None,
        "p99_stall_ms": round(float(np.percentile(gaps, 99) - 5), 1) if len(gaps) else None,
        "ticks": len(gaps),
        "patches_per_s": round(rate_from(stamps, config.batch_size), 2),
        "steps": len(stamps),
    }


def cli_run(seconds: float) -> dict:
    from napari_unet.data import make_training_image
    from napari_unet.training import iter_train

    data = [make_training_image(i, lab, 1) for i, lab in make_data()]
    stamps = []
    for event in iter_train(data, config=training_config(seconds)):
        if event.stage == "train":
            stamps.append(time.perf_counter())
    return {"patches_per_s": round(rate_from(stamps, 8), 2), "steps": len(stamps)}


# Fresh widget settings: never read or overwrite the user's saved choices.
os.environ.setdefault("NAPARI_UNET_CONFIG_DIR", tempfile.mkdtemp(prefix="napari-unet-settings-"))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    gui = gui_run(args.seconds)
    cli = cli_run(args.seconds)
    print(
        json.dumps(
            {
                "benchmark": "napari event loop during training",
                "seconds": args.seconds,
                "gui": gui,
                "cli": cli,
                "gui_over_cli_speed": round(gui["patches_per_s"] / cli["patches_per_s"], 3),
                "targets": {"max_stall_ms": 100, "gui_over_cli_speed": 0.9},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
