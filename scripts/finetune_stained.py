"""Fine-tuning evidence: the default model on a new kind of image, before and after.

    python scripts/finetune_stained.py [--minutes 5] [--images 3] [--seed 0]

Picks N images of ``dsb2018-stained/train`` (seeded), then reports AP@0.5 and
AP@0.7 on ``dsb2018-stained/val`` (counts summed over images) for

1. the default model as shipped,
2. the default model fine-tuned on those images for at most M minutes,
3. a model trained from scratch on the same images for the same time.

No validation data is used for training or selection (a lab with three
annotated images has none): each run keeps its last model. Prints one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from napari_unet.data import load_training_folder, make_training_image, pair_by_stem
from napari_unet.io import read_image
from napari_unet.metrics import dataset_ap
from napari_unet.modelfile import load_model
from napari_unet.progress import run_to_end
from napari_unet.segmentation import segment
from napari_unet.training import TrainConfig, iter_train

HERE = Path(__file__).resolve().parent


def scores(model, val) -> dict:
    preds = [segment(v.image, model, axes="CYX", normalize_input=False) for v in val]
    ap50, ap70 = dataset_ap([v.labels for v in val], preds, (0.5, 0.7))
    return {"ap50": round(ap50, 4), "ap70": round(ap70, 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data", default=str(HERE.parent.parent / "shared" / "data" / "dsb2018-stained")
    )
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default=None, help="folder to save the two trained models in")
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not (data / "train").is_dir():
        print(f"no data at {data}", file=sys.stderr)
        return 2
    default = load_model("default")
    pairs = pair_by_stem(data / "train/images", data / "train/masks")
    rng = np.random.default_rng(args.seed)
    chosen = [pairs[i] for i in sorted(rng.choice(len(pairs), args.images, replace=False))]
    train_set = [
        make_training_image(
            read_image(i).data,
            read_image(m).data,
            default.in_channels,
            default.normalization,
            name=i.stem,
        )
        for i, m in chosen
    ]
    val = load_training_folder(
        data / "val/images", data / "val/masks", default.in_channels, default.normalization
    )
    config = TrainConfig(
        epochs=100_000,
        minutes=args.minutes,
        patches_per_epoch=64,
        batch_size=8,
        lr=1e-3,
        warmup_steps=10,
        tune_postprocessing=False,
    )
    result = {
        "train_images": [i.name for i, _ in chosen],
        "train_shapes": [list(t.shape) for t in train_set],
        "val_images": len(val),
        "minutes": args.minutes,
        "default": scores(default, val),
    }
    runs = {"fine_tuned": default, "scratch": None}
    for name, init in runs.items():
        arch = (
            None
            if init is not None
            else dict(
                depth=default.net.config.depth,
                base_channels=default.net.config.base_channels,
                scheme=default.scheme,
                batch_norm=default.net.config.batch_norm,
                dropout=default.net.config.dropout,
            )
        )
        t = time.perf_counter()
        model = run_to_end(iter_train(train_set, init=init, architecture=arch, config=config))
        if init is None:
            model.postprocessing = default.postprocessing  # same thresholds for a fair comparison
        result[name] = {
            **scores(model, val),
            "steps": model.training["steps"],
            "train_s": round(time.perf_counter() - t, 1),
        }
        if args.save:
            from napari_unet.modelfile import save_model

            save_model(model, Path(args.save) / f"stained_{name}.safetensors")
    result["gain_ap50"] = round(result["fine_tuned"]["ap50"] - result["default"]["ap50"], 4)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
