"""How much must a fine-tuned model beat its start model on the held-out strips to replace it?

    python scripts/choose_replace_margin.py [--runs stained:1 stained:3 fluo-2x:3 ...] [--minutes 2]

Fine-tuning without validation images holds a strip of each annotated image
out, scores the start model there, and keeps it unless a trained checkpoint
scores higher. The best of many checkpoints, each scored on a few dozen
nuclei, beats the start model by chance alone (the winner's curse), so a
worse model can replace a better one. For each run (a shift of
``benchmarks/finetune.py`` and a number of annotated images) this trains
with the library's recipe, the start model not competing, and records the
strip scores of the start model and of the best checkpoint, the number of
nuclei in the strips, and both models' AP@0.5 on 12 held-out *train* images
(for choosing) and on ``val`` (for the report only). For candidate margins
``c / sqrt(n nuclei)`` it then prints which model each rule would keep and
the mean held-out train AP@0.5 of the kept models. One JSON line each.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "benchmarks"))
from finetune import (  # noqa: E402
    SHARED,
    SHIFTS,
    _draw,
    _read,
    annotatable_pairs,
    load_pairs,
    score,
)

from napari_unet.augment import AugmentConfig  # noqa: E402
from napari_unet.data import hold_out_strips, make_training_image, pair_by_stem  # noqa: E402
from napari_unet.devices import resolve_device  # noqa: E402
from napari_unet.modelfile import load_model, model_for_image_types  # noqa: E402
from napari_unet.training import FINE_TUNE, evaluate_model, train  # noqa: E402

MARGINS = (0.0, 0.25, 0.5, 1.0, 1.5)


def run(shift_name: str, n_images: int, minutes: float, seed: int, augment: str = "recipe") -> dict:
    dataset, shift = SHIFTS[shift_name]
    default = load_model("default")
    train_all = pair_by_stem(
        SHARED / dataset / "train" / "images", SHARED / dataset / "train" / "masks"
    )
    annotated = _draw(annotatable_pairs(dataset), n_images, seed)
    names = {i.stem for i, _ in annotated}
    rest = [pair for pair in train_all if pair[0].stem not in names]
    held = _read(_draw(rest, 12, seed + 1000), shift)
    val = load_pairs(SHARED / dataset / "val", shift, None, seed)
    items = [
        make_training_image(image, labels, name=name, model=default)
        for name, image, labels in _read(annotated, shift)
    ]
    start = model_for_image_types(default, [i.image_type for i in items])
    _, strips = hold_out_strips(items, FINE_TUNE.holdout_fraction)
    start_strip = evaluate_model(start.net, strips, start.postprocessing, resolve_device("auto"))
    n_objects = sum(len(np.unique(s.labels[s.valid & (s.labels > 0)])) for s in strips)
    config = replace(FINE_TUNE, minutes=minutes, validate_start=False)
    if augment == "start":  # the augmentation the start model was trained with, as recorded
        recorded = start.training.get("config", {}).get("augment") or {}
        fields = AugmentConfig.__dataclass_fields__
        config = replace(
            config, augment=AugmentConfig(**{k: v for k, v in recorded.items() if k in fields})
        )
    trained = train(items, init=default, config=config)
    return {
        "run": f"{shift_name}:{n_images}",
        "augment": augment,
        "strip_nuclei": int(n_objects),
        "strip_start": round(start_strip["score"], 4),
        "strip_trained": round(trained.training["validation"]["score"], 4),
        "steps": trained.training["steps"],
        "held_out_train_ap50": {
            "start": score(default, held)["ap50"],
            "trained": score(trained, held)["ap50"],
        },
        "val_ap50": {"start": score(default, val)["ap50"], "trained": score(trained, val)["ap50"]},
    }


def decisions(rows: list[dict]) -> list[dict]:
    out = []
    for c in MARGINS:
        kept = []
        for row in rows:
            margin = c / np.sqrt(max(row["strip_nuclei"], 1))
            replaced = row["strip_trained"] - row["strip_start"] > margin
            kept.append("trained" if replaced else "start")
        out.append(
            {
                "c": c,
                "kept": kept,
                "held_out_train_ap50": round(
                    float(np.mean([r["held_out_train_ap50"][k] for r, k in zip(rows, kept)])), 4
                ),
                "val_ap50_report_only": round(
                    float(np.mean([r["val_ap50"][k] for r, k in zip(rows, kept)])), 4
                ),
            }
        )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--runs",
        nargs="+",
        default=["stained:1", "stained:3", "fluo-2x:3", "fluo-0.5x:3", "fluo-blur-noise:3"],
    )
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--augment",
        choices=["recipe", "start"],
        default="recipe",
        help="fine-tune with FINE_TUNE's augmentation or the start model's recorded one",
    )
    args = ap.parse_args(argv)
    rows = []
    for spec in args.runs:
        shift_name, n = spec.split(":")
        rows.append(run(shift_name, int(n), args.minutes, args.seed, args.augment))
        print(json.dumps(rows[-1]), flush=True)
    for line in decisions(rows):
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
