"""Screenshots of the whole loop in the viewer: open, segment, correct, fine-tune, segment again.

    xvfb-run -a python scripts/screenshots_loop.py --data ../shared/data/dsb2018-stained/train \
        --out docs/loop [--minutes 1]

Drives the real widgets through their own methods, as the buttons do. The
"correct" step stands in for a biologist's hand edits with the image's
ground truth (copied into the annotation layer the Annotate widget makes
from the prediction), so the run needs no mouse. Writes 01_open.png ...
05_segment_again.png and prints what each step gave.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

# Fresh widget settings: never read or overwrite the user's saved choices.
os.environ.setdefault("NAPARI_UNET_CONFIG_DIR", tempfile.mkdtemp(prefix="napari-unet-settings-"))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, required=True, help="a folder with images/ and masks/")
    ap.add_argument("--out", type=Path, default=Path("docs/loop"))
    ap.add_argument("--minutes", type=float, default=1.0, help="fine-tuning time")
    ap.add_argument("--first", type=int, default=0, help="index of the image to correct")
    ap.add_argument(
        "--next",
        type=int,
        default=None,
        help="index of the image segmented after (default: the one most like the first in colour)",
    )
    ap.add_argument(
        "--size", type=int, nargs=2, default=(1366, 768), help="window, a laptop screen"
    )
    args = ap.parse_args()

    import napari
    import numpy as np
    import tifffile
    from PIL import Image
    from qtpy.QtWidgets import QApplication, QScrollArea

    from napari_unet.labels.metrics import matching

    images = sorted((args.data / "images").glob("*.tif"))
    first = images[args.first]
    if args.next is None:
        # The next image of the same experiment: the closest mean colour.
        def colour(path: Path) -> np.ndarray:
            data = tifffile.imread(path)
            return data.reshape(-1, data.shape[-1]).mean(0) if data.ndim == 3 else data.mean()

        ref = colour(first)
        others = [p for p in images if p != first]
        second = min(others, key=lambda p: float(np.abs(colour(p) - ref).sum()))
    else:
        second = images[args.next]
    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*args.size)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {}

    def settle(widget=None, timeout_s: float = 900.0) -> None:
        deadline = time.time() + timeout_s
        while widget is not None and widget.task.busy and time.time() < deadline:
            app.processEvents()
            time.sleep(0.02)
        for _ in range(30):
            app.processEvents()
            time.sleep(0.01)

    def shot(name: str) -> None:
        viewer.reset_view()
        settle()
        viewer.screenshot(str(args.out / name), canvas_only=False)
        # 256 colours: a screenshot of a GUI loses nothing visible and the file shrinks 2-3x.
        picture = Image.open(args.out / name).convert("RGB")
        picture.quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out / name, optimize=True)
        print(f"wrote {args.out / name}")

    def score(layer, mask_path: Path) -> float:
        truth = tifffile.imread(mask_path)
        return round(matching(truth, np.asarray(layer.data), 0.5).ap, 3)

    # 1. open
    viewer.open(str(first), name="stained 1")
    image = viewer.layers["stained 1"]
    shot("01_open.png")

    # 2. segment with the default model (it hands stained images to "brightfield")
    seg_dock, seg = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    seg.image_combo.set_layer(image)
    seg.run()
    settle(seg)
    prediction = viewer.layers["stained 1 labels"]
    prediction.contour = 2
    report["segmented_ap50"] = score(prediction, args.data / "masks" / first.name)
    report["segment_status"] = seg.status.text()
    shot("02_segmented.png")

    # 3. correct: an annotation layer from the prediction, then the edits
    _, annotate = viewer.window.add_plugin_dock_widget("napari-unet", "Annotate")
    annotate.image_combo.set_layer(image)
    annotate.prediction_combo.set_layer(prediction)
    annotation = annotate.annotation_from_prediction()
    annotation.data = tifffile.imread(args.data / "masks" / first.name).astype(np.uint32)
    prediction.visible = False
    shot("03_corrected.png")

    # 4. fine-tune on the corrected image
    viewer.window.remove_dock_widget(annotate)
    _, train = viewer.window.add_plugin_dock_widget("napari-unet", "Train / fine-tune")
    train.add_pair(image, annotation, role="train")
    train.minutes_spin.setValue(args.minutes)
    train.start()
    settle(train, timeout_s=args.minutes * 60 + 600)
    report["train_status"] = train.status.text()
    scroll = train.findChild(QScrollArea)
    scroll.verticalScrollBar().setValue(scroll.verticalScrollBar().maximum())  # plot and status
    shot("04_fine_tuned.png")
    seg_dock.raise_()  # the Segment tab again

    # 5. segment the next image with the fine-tuned model (Segment selected it)
    for layer in list(viewer.layers):
        layer.visible = False
    viewer.open(str(second), name="stained 2")
    seg.image_combo.set_layer(viewer.layers["stained 2"])
    report["model_after_training"] = seg.model_combo.currentText()
    seg.run()
    settle(seg)
    again = viewer.layers["stained 2 labels"]
    again.contour = 2
    report["next_image"] = second.name
    report["next_image_ap50"] = score(again, args.data / "masks" / second.name)
    shot("05_segment_again.png")
    # The same image with the model the loop started from, for comparison.
    again.name = "stained 2 labels (fine-tuned)"
    seg.model_combo.setCurrentText("default")
    seg.run()
    settle(seg)
    report["next_image_ap50_before_fine_tuning"] = score(
        viewer.layers["stained 2 labels"], args.data / "masks" / second.name
    )
    from napari_unet.devices import cpu_name

    report["cpu"] = cpu_name()
    text = json.dumps(report, indent=2)
    (args.out / "report.json").write_text(text + "\n")  # rendered by docs/gui.md
    print(text)
    viewer.close()


if __name__ == "__main__":
    main()
