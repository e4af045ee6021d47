"""Render a screenshot of napari with the U-Net widgets docked and a segmentation shown.

    xvfb-run -a python scripts/screenshot.py --out docs/screenshot.png [--image FILE] [--model FILE]

Uses the built-in synthetic nuclei sample unless an image file is given, and
the built-in default model unless a model file is given (opened as a user
opens one: File > Open, then chosen in Segment).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

# Fresh widget settings: never read or overwrite the user's saved choices.
os.environ.setdefault("NAPARI_UNET_CONFIG_DIR", tempfile.mkdtemp(prefix="napari-unet-settings-"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/screenshot.png")
    ap.add_argument("--image", default=None)
    ap.add_argument("--model", default=None, help="a model file to segment with")
    ap.add_argument("--name", default="nuclei", help="the image layer's name")
    ap.add_argument(
        "--size", type=int, nargs=2, default=(1366, 768), help="window, a laptop screen"
    )
    args = ap.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*args.size)
    if args.image:
        viewer.open(args.image, name=args.name)
        image_layer = viewer.layers[-1]
    else:
        viewer.open_sample("napari-unet", "synthetic-nuclei")
        image_layer = viewer.layers["synthetic nuclei"]
    _, train_widget = viewer.window.add_plugin_dock_widget("napari-unet", "Train / fine-tune")
    _, seg = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    seg.image_combo.set_layer(image_layer)
    if args.model:
        viewer.open(args.model, plugin="napari-unet")  # the reader makes it selectable
        seg.model_combo.setCurrentIndex(seg.model_combo.count() - 1)
    seg.run()
    app = QApplication.instance()
    deadline = time.time() + 300
    while seg.task.busy and time.time() < deadline:
        app.processEvents()
        time.sleep(0.01)
    labels = viewer.layers[f"{image_layer.name} labels"]
    labels.contour = 2
    labels.opacity = 0.9
    viewer.reset_view()
    for _ in range(50):
        app.processEvents()
        time.sleep(0.01)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(args.out, canvas_only=False)
    print(f"wrote {args.out}")
    viewer.close()


if __name__ == "__main__":
    main()
