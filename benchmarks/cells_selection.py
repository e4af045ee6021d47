"""How the whole-cell recipe was chosen: start weights and seeds, on held-out train frames only.

    python benchmarks/cells_selection.py --start default --draw 0 [--minutes 5] [--out F.jsonl]
    python benchmarks/cells_selection.py --start scratch --draw 1 --seed 1

Trains on 3 ``ctc-dic-hela/train`` frames (drawn with ``--draw``) for
``--minutes`` on this machine's CPUs, from the nuclei model's weights
(``default``, with ``cells_from_new_network`` off) or a new network
(``scratch``: the recipe), then scores 6 other ``train`` frames (drawn with
seed 1000 from the rest) with two seedings of the watershed: at the peaks of
the interior score (the nuclei models' rule) and at the maxima of the
distance to the interior's edge (the recipe). ``val`` is never read: it
reports the chosen recipe (``benchmarks/finetune.py``). One JSON line per
seeding.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from finetune import SHARED, _draw, _read  # noqa: E402

# The nuclei models' seeding, as the recipe replaced it (training.py, CELL_THRESHOLDS).
PEAK_SEEDS = dict(seed_threshold=0.35, seed_dynamic=0.4, seed_distance_h=0.0)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--start", choices=["default", "scratch"], default="scratch")
    ap.add_argument("--draw", type=int, default=0, help="seed of the 3 annotated frames' draw")
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--out", default=None, help="also append the JSON lines here")
    args = ap.parse_args()

    from napari_unet.devices import cpu_name
    from napari_unet.labels.metrics import dataset_ap, dataset_seg
    from napari_unet.models.modelfile import load_model
    from napari_unet.segmenting.relabel import instances_at_scale
    from napari_unet.segmenting.segmentation import segment
    from napari_unet.training.data import make_training_image, pair_by_stem
    from napari_unet.training.loop import train
    from napari_unet.training.recipes import FINE_TUNE

    folder = SHARED / "ctc-dic-hela" / "train"
    pool = pair_by_stem(folder / "images", folder / "masks")
    chosen = _read(_draw(pool, 3, args.draw), None)
    annotated = {name for name, _, _ in chosen}
    held = _read(_draw([p for p in pool if p[0].stem not in annotated], 6, 1000), None)
    default = load_model("default")
    items = [make_training_image(im, lab, name=n, model=default) for n, im, lab in chosen]
    config = replace(FINE_TUNE, minutes=args.minutes, seed=args.seed)
    if args.start == "default":
        config = replace(config, cells_from_new_network=False)
    t0 = time.perf_counter()
    model = train(items, init=default, config=config)
    seconds = time.perf_counter() - t0
    probs = [segment(im, model, return_probabilities=True)[1] for _, im, _ in held]
    truths = [lab for _, _, lab in held]
    recipe = model.postprocessing
    for seeding, params in (
        ("interior distance", recipe),
        ("score peaks", replace(recipe, **PEAK_SEEDS)),
    ):
        preds = [instances_at_scale(p, model.objects.scale, params, model.scheme) for p in probs]
        ap50, ap70 = dataset_ap(truths, preds, (0.5, 0.7))
        row = {
            "shift": "cells",
            "model": f"{'nuclei weights' if args.start == 'default' else 'new network'}, "
            f"seeds at {seeding}",
            "images": 3,
            "minutes": args.minutes,
            "scored_on": f"held-out train ({len(held)}), draw {args.draw}",
            "steps": model.training["steps"],
            "train_s": round(seconds, 1),
            "ap50": round(ap50, 4),
            "ap70": round(ap70, 4),
            "seg": round(dataset_seg(truths, preds), 4),
            "objects_per_image": round(float(np.mean([p.max() for p in preds])), 1),
            "true_objects_per_image": round(
                float(np.mean([len(np.unique(t)) - 1 for t in truths])), 1
            ),
            "cpu": cpu_name(),
        }
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as handle:
                handle.write(line + "\n")


if __name__ == "__main__":
    main()
