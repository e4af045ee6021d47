"""The segment -> correct -> fine-tune loop on stained images, three rounds, scored after each.

    python benchmarks/human_in_the_loop.py [--rounds 3] [--minutes 2]

Round k: the current model segments the next ``dsb2018-stained/train`` image
(a seeded order, among the 12 that no built-in model was trained on); the "correction" is that image's ground truth (a perfect
annotator: what a biologist's edits converge to); the model is then
fine-tuned for ``--minutes`` on all images corrected so far with the
library's FINE_TUNE recipe, as the Train widget does. After each round the
model is scored on all of ``dsb2018-stained/val``, segmenting as
``napari-unet segment`` does. Round 0 is the built-in default. Reports, per
round, how many objects of the new image the model got right before its
correction (AP@0.5 on it) and the val scores. Prints one JSON line per round.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_unet.images.io import read_image
from napari_unet.labels.metrics import dataset_ap, matching
from napari_unet.models.modelfile import load_model
from napari_unet.segmenting.segmentation import segment
from napari_unet.training.data import make_training_image, pair_by_stem
from napari_unet.training.loop import train
from napari_unet.training.recipes import FINE_TUNE

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    data = SHARED / "dsb2018-stained"
    if not data.is_dir():
        print(f"no data at {data}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from finetune import annotatable_pairs

    # Images no built-in model was trained on, as a lab's own would be.
    train_pairs = annotatable_pairs("dsb2018-stained")
    order = np.random.default_rng(args.seed).permutation(len(train_pairs))
    val = [
        (np.asarray(read_image(i).data), np.asarray(read_image(m).data))
        for i, m in pair_by_stem(data / "val/images", data / "val/masks")
    ]

    def val_scores(model) -> dict:
        preds = [segment(image, model) for image, _ in val]
        ap50, ap70 = dataset_ap([gt for _, gt in val], preds, (0.5, 0.7))
        return {"val_ap50": round(ap50, 4), "val_ap70": round(ap70, 4)}

    model = load_model("default")
    print(json.dumps({"round": 0, "model": "default", **val_scores(model)}), flush=True)
    corrected = []
    for k in range(1, args.rounds + 1):
        image_path, mask_path = train_pairs[int(order[k - 1])]
        image = np.asarray(read_image(image_path).data)
        truth = np.asarray(read_image(mask_path).data)
        before = matching(truth, segment(image, model), 0.5).ap
        corrected.append(make_training_image(image, truth, name=image_path.stem, model=model))
        t = time.perf_counter()
        model = train(corrected, init=model, config=replace(FINE_TUNE, minutes=args.minutes))
        print(
            json.dumps(
                {
                    "round": k,
                    "new_image": image_path.stem[:12],
                    "new_image_ap50_before_correction": round(before, 4),
                    "annotated_images": len(corrected),
                    "fine_tune_s": round(time.perf_counter() - t, 1),
                    "steps": model.training["steps"],
                    "kept_start_model": model.training.get("kept_start_model"),
                    **val_scores(model),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
