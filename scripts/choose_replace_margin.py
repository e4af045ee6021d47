"""How much must a fine-tuned model beat its start model on the held-out strips to replace it?

    python scripts/choose_replace_margin.py [--runs stained:1 stained:3:5 fluo-2x:3 ...] [--minutes 2]
    python scripts/choose_replace_margin.py --runs --rows earlier.jsonl   # decide on saved rows

Fine-tuning without validation images holds a strip of each annotated image
out, scores the start model there, and keeps it unless a trained checkpoint
scores higher. The best of many checkpoints, each scored on a few dozen
nuclei, beats the start model by chance alone (the winner's curse), so a
worse model can replace a better one. For each run (a shift of
``benchmarks/finetune.py`` and a number of annotated images) this trains
with the library's recipe, the start model not competing, and records the
strip scores of the start model and of the best checkpoint, the number of
nuclei in the strips, and both models' AP@0.5 on 12 held-out *train* images
(for choosing) and on ``val`` (for the report only), and every validation's
strip score (how many checkpoints competed). A run is SHIFT:IMAGES or
SHIFT:IMAGES:MINUTES. For candidate coefficients of the library's margin
(``c / sqrt(nuclei) + d / sqrt(images)``, grown past 21 checkpoints) it then
prints which model each would keep and the mean held-out train AP@0.5 of the
kept models. One JSON line each.
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

from napari_unet.devices import resolve_device  # noqa: E402
from napari_unet.models.modelfile import load_model, model_for_image_types  # noqa: E402
from napari_unet.progress import Stage, run_to_end  # noqa: E402
from napari_unet.training.augment import AugmentConfig  # noqa: E402
from napari_unet.training.data import hold_out_strips, make_training_image, pair_by_stem  # noqa: E402
from napari_unet.training.loop import iter_train  # noqa: E402
from napari_unet.training.recipes import FINE_TUNE  # noqa: E402
from napari_unet.training.validation import (  # noqa: E402
    MARGIN_CHOSEN_AT,
    evaluate_model,
    start_model_margin_for,
)

MARGINS = (0.0, 0.25, 0.5, 1.0, 1.5)  # per nucleus: c / sqrt(nuclei)
IMAGE_MARGINS = (0.0, 0.02, 0.05, 0.1, 0.2)  # per image: d / sqrt(images)


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
    strip_scores = []  # every validation's strip score, in order (the checkpoints compared)

    def on_event(event) -> None:
        if event.stage == Stage.VALIDATE:
            strip_scores.append(event.info["score"])

    trained = run_to_end(iter_train(items, init=default, config=config), on_event)
    return {
        "run": f"{shift_name}:{n_images}:{minutes:g}",
        "validations": len(strip_scores),
        "strip_scores": [round(v, 4) for v in strip_scores],
        "augment": augment,
        "strip_nuclei": int(n_objects),
        "strip_images": len(strips),
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
    """Which model each margin keeps, and the mean AP@0.5 of the kept models.

    The margin is the library's :func:`start_model_margin_for` with the
    coefficients ``c`` (per nucleus) and ``d`` (per image), the run's strip
    nuclei, strip images and checkpoints compared (rows from before these
    were recorded: one strip per annotated image, 21 checkpoints).
    """
    out = []
    for c in MARGINS:
        for d in IMAGE_MARGINS:
            kept = []
            for row in rows:
                images = row.get("strip_images") or int(row["run"].split(":")[1])
                checkpoints = row.get("validations") or MARGIN_CHOSEN_AT
                margin = start_model_margin_for(c, row["strip_nuclei"], checkpoints, images, d)
                replaced = row["strip_trained"] - row["strip_start"] > margin
                kept.append("trained" if replaced else "start")
            out.append(
                {
                    "c": c,
                    "d": d,
                    "kept": kept,
                    "held_out_train_ap50": round(
                        float(np.mean([r["held_out_train_ap50"][k] for r, k in zip(rows, kept)])),
                        4,
                    ),
                    "val_ap50_report_only": round(
                        float(np.mean([r["val_ap50"][k] for r, k in zip(rows, kept)])), 4
                    ),
                }
            )
    return out


def run_spec(text: str) -> tuple[str, int, float | None]:
    """SHIFT:IMAGES or SHIFT:IMAGES:MINUTES, checked before any training (argparse type)."""
    parts = text.split(":")
    try:
        images = int(parts[1])
        minutes = float(parts[2]) if len(parts) == 3 else None
    except (IndexError, ValueError):
        images, minutes = 0, None
    bad_minutes = minutes is not None and not (np.isfinite(minutes) and minutes > 0)
    if parts[0] not in SHIFTS or len(parts) > 3 or images < 1 or bad_minutes:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give SHIFT:IMAGES[:MINUTES], SHIFT one of {', '.join(SHIFTS)}"
        )
    return parts[0], images, minutes


def rows_file(text: str) -> Path:
    """An existing JSON-lines file of earlier rows (argparse type)."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--runs",
        type=run_spec,
        nargs="*",
        default=[
            run_spec(r)
            for r in ("stained:1", "stained:3", "fluo-2x:3", "fluo-0.5x:3", "fluo-blur-noise:3")
        ],
    )
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--augment",
        choices=["recipe", "start"],
        default="recipe",
        help="fine-tune with FINE_TUNE's augmentation or the start model's recorded one",
    )
    ap.add_argument(
        "--rows",
        type=rows_file,
        nargs="*",
        default=[],
        help="JSON-lines files of earlier runs' rows to decide on too (no training for them)",
    )
    args = ap.parse_args(argv)
    rows = [
        json.loads(line)
        for path in args.rows
        for line in path.read_text().splitlines()
        if line.startswith('{"run"')
    ]
    for shift_name, n, minutes in args.runs:
        rows.append(
            run(
                shift_name, n, args.minutes if minutes is None else minutes, args.seed, args.augment
            )
        )
        print(json.dumps(rows[-1]), flush=True)
    for line in decisions(rows):
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
