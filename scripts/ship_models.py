"""Put a fluorescence model and a brightfield model together as the built-in pair, and score them.

    python scripts/ship_models.py --fluorescence FLUO.safetensors \
        --brightfield BF_A.safetensors BF_B.safetensors [--out src/napari_unet/models]
    python scripts/ship_models.py --rescore   # the shipped pair, as the code now segments

The built-in ``default`` (alias ``nuclei``) is the fluorescence model; it
names ``brightfield`` as its companion, so planes recognised as brightfield
or stained are segmented by the built-in ``brightfield`` model (see
``napari_unet.segmenting.segmentation.iter_segment_plane``). Among several brightfield
candidates the one with the best mean AP over IoU 0.5..0.9 on the held-out
``dsb2018-stained/train`` images (the same seeded draw as
``train_default.py --holdout 12``) is chosen; ``val`` is used only for the
report. Both files record their ``val`` scores (``validation_final``),
measured through ``segment`` exactly as users get them. ``--rescore``
measures and records them again for the files in ``--out`` (weights
untouched): when the pipeline or a size model changed what users get.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from napari_unet.images.io import read_image
from napari_unet.labels.metrics import dataset_ap
from napari_unet.models.modelfile import load_model, save_model
from napari_unet.segmenting.segmentation import segment
from napari_unet.training.data import pair_by_stem

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
sys.path.insert(0, str(HERE))
from train_default import split_pairs  # noqa: E402

IOUS = (0.5, 0.6, 0.7, 0.8, 0.9)


def scores(model, pairs) -> dict:
    preds = [segment(read_image(i).data, model) for i, _ in pairs]
    gts = [np.asarray(read_image(m).data) for _, m in pairs]
    aps = dataset_ap(gts, preds, IOUS)
    return {
        "ap50": round(aps[0], 4),
        "ap70": round(aps[2], 4),
        "mean_ap_50_90": round(float(np.mean(aps)), 4),
        "n_images": len(pairs),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--fluorescence")
    ap.add_argument("--brightfield", nargs="+")
    ap.add_argument("--rescore", action="store_true", help="only score and record the shipped pair")
    ap.add_argument("--holdout", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE.parent / "src" / "napari_unet" / "models"))
    args = ap.parse_args(argv)
    if not args.rescore and not (args.fluorescence and args.brightfield):
        ap.error("give --fluorescence and --brightfield, or --rescore")
    if not args.rescore:
        chosen = ship(args)
    record_val_scores(Path(args.out), chosen=None if args.rescore else chosen)
    return 0


def ship(args) -> str:
    """Write the pair into ``args.out``; the brightfield candidate chosen."""
    stained = SHARED / "dsb2018-stained"
    _, held_out = split_pairs(stained / "train", args.holdout, args.seed)
    selection = {}
    for candidate in args.brightfield:
        selection[candidate] = scores(load_model(candidate), held_out)
        print(json.dumps({"candidate": candidate, "held_out": selection[candidate]}), flush=True)
    chosen = max(selection, key=lambda c: selection[c]["mean_ap_50_90"])

    out = Path(args.out)
    brightfield = load_model(chosen)
    brightfield.name, brightfield.companions = "brightfield", {}
    # What each network was trained on: segmenting another type with it alone draws a warning.
    brightfield.training = {
        **brightfield.training,
        "chosen_on_held_out": selection,
        "image_types": ["brightfield"],
    }
    save_model(brightfield, out / "brightfield.safetensors", half=True)
    default = load_model(args.fluorescence)
    default.name, default.companions = "default", {"brightfield": "brightfield"}
    default.training = {**default.training, "image_types": ["fluorescence"]}
    # The pair converts brightfield planes alike: what the default prepares
    # (detection, block-wise percentiles, fine-tuning data) suits its companion.
    default.normalization = brightfield.normalization
    save_model(default, out / "default.safetensors", half=True)
    return chosen


def record_val_scores(out: Path, chosen: str | None) -> None:
    """Score the files in ``out`` as shipped (half precision) on ``val`` and record it in them."""
    stained, fluo = SHARED / "dsb2018-stained", SHARED / "dsb2018-fluo"
    val = {
        "dsb2018-fluo": scores(
            load_model(out / "default.safetensors"),
            pair_by_stem(fluo / "val/images", fluo / "val/masks"),
        ),
        "dsb2018-stained": scores(
            load_model(out / "default.safetensors"),
            pair_by_stem(stained / "val/images", stained / "val/masks"),
        ),
    }
    stamp = {"date": time.strftime("%Y-%m-%d"), "measured_with": "segment(image, 'default')"}
    stamp_key = "rescored" if chosen is None else "shipped"  # a rescore keeps the ship date
    for name, recorded in (
        ("default", val),
        ("brightfield", {"dsb2018-stained": val["dsb2018-stained"]}),
    ):
        path = out / f"{name}.safetensors"
        model = load_model(path)
        model.training = {**model.training, "validation_final": recorded, stamp_key: stamp}
        save_model(model, path, half=True)
    print(json.dumps({"brightfield_chosen": chosen, "val": val}), flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
