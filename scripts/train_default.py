"""Train the shipped default nuclei model from the shared DSB2018 data and print its scores.

    python scripts/train_default.py --init default --minutes 50 \
        --out src/napari_unet/models/default.safetensors

Trains on the ``train`` split of every ``--data`` set (by default fluorescence
and stained/brightfield nuclei, the stained images shown ``--repeat`` times
as often since they are fewer). A seeded part of each ``train`` split
(``--holdout``) is kept out of training: it selects the checkpoint and tunes
the post-processing. The ``val`` splits are used only for the final report,
segmented from their files exactly as ``napari-unet segment`` does (input
conversion, rescaling, post-processing), so the scores are not tuned on the
images they are reported on. Prints one JSON line with the scores, the
training time and the segmentation speed on a 2048x2048 image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_unet import __version__
from napari_unet.devices import resolve_device
from napari_unet.images.io import read_image
from napari_unet.images.normalize import Normalization
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.labels.instances import CLASS_SCHEMES
from napari_unet.labels.metrics import dataset_ap
from napari_unet.models.model import UNet
from napari_unet.models.modelfile import load_model, save_model
from napari_unet.progress import Progress, Stage, run_to_end
from napari_unet.segmenting.segmentation import segment
from napari_unet.training.augment import AugmentConfig
from napari_unet.training.data import make_training_image, pair_by_stem
from napari_unet.training.loop import TrainConfig, iter_train, tune_postprocessing

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
# --strong-intensity: wider grey-value changes than AugmentConfig's defaults.
STRONG_INTENSITY = dict(intensity_scale=0.3, gamma=0.3, noise=0.05, blur=1.0)
# Per-image median nucleus areas of dsb2018-fluo/train span 71..2606 px (5th
# percentile 71, 95th 1930); all its nuclei have a median of 333 px. Planes
# whose nuclei lie beyond the 95th percentile are shrunk towards the median.
DOWNSCALE_FROM_AREA = 2000.0
OBJECT_AREA = 333.0


def split_pairs(folder: Path, holdout: int, seed: int):
    """(train pairs, held-out pairs) of a ``train`` split, held-out chosen by a seeded draw."""
    pairs = pair_by_stem(folder / "images", folder / "masks")
    rng = np.random.default_rng(seed)
    held = set(rng.choice(len(pairs), min(holdout, len(pairs) // 2), replace=False).tolist())
    return (
        [p for i, p in enumerate(pairs) if i not in held],
        [p for i, p in enumerate(pairs) if i in held],
    )


def prepare(pairs, norm: Normalization, in_channels: int = 1):
    return [
        make_training_image(read_image(i).data, read_image(m).data, in_channels, norm, name=i.stem)
        for i, m in pairs
    ]


def starting_model(init: str, in_channels: int, norm: Normalization):
    """``init`` loaded with the run's input settings: ``norm``, and ``in_channels``.

    A one-channel ``init`` gets a first convolution that takes ``in_channels``.
    The one-channel weights are spread evenly over the new channels, so a grey
    image repeated into them gives the start model's output exactly and a
    colour image starts from its channel mean.
    """
    import torch

    model = load_model(init)
    # The script trains exactly this network: no hand-over to a companion model.
    model.normalization, model.companions = norm, {}
    old = model.net
    if old.config.in_channels == in_channels:
        return model
    if old.config.in_channels != 1:
        raise SystemExit(
            f"can only widen a one-channel model, {init} takes {old.config.in_channels}"
        )
    net = UNet(**{**old.config.to_dict(), "in_channels": in_channels})
    state = old.state_dict()
    first = next(k for k, v in state.items() if v.ndim == 4)  # the first convolution's weight
    state[first] = state[first].repeat(1, in_channels, 1, 1) / in_channels
    net.load_state_dict(state)
    model.net = net.to(torch.float32)
    return model


def report_on_val(model, data: Path) -> dict:
    """AP@0.5/0.7 on ``data/val``, segmenting the raw files as the CLI does."""
    pairs = pair_by_stem(data / "val/images", data / "val/masks")
    preds = [segment(read_image(i).data, model) for i, _ in pairs]
    gts = [np.asarray(read_image(m).data) for _, m in pairs]
    ap50, ap70 = dataset_ap(gts, preds, (0.5, 0.7))
    return {"ap50": round(ap50, 4), "ap70": round(ap70, 4), "n_images": len(pairs)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data",
        nargs="+",
        default=[str(SHARED / "dsb2018-fluo"), str(SHARED / "dsb2018-stained")],
    )
    ap.add_argument(
        "--repeat",
        nargs="+",
        type=int,
        default=[1, 3],
        help="how often each --data set's images are shown, in its order",
    )
    ap.add_argument(
        "--holdout",
        nargs="+",
        type=int,
        default=[40, 12],
        help="train images of each --data set kept for checkpoint selection and tuning",
    )
    ap.add_argument("--out", default="default.safetensors")
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--base-channels", type=int, default=16)
    ap.add_argument("--scheme", default="3class", choices=sorted(CLASS_SCHEMES))
    ap.add_argument("--no-batch-norm", action="store_true")
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--minutes", type=float, default=120.0)
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--patches-per-epoch", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--patch-size", type=int, default=252)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--w0", type=float, default=10.0, help="border weight of touching cells")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--validate-every", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--log", default=None, help="append progress lines to this file")
    ap.add_argument(
        "--resume", action="store_true", help="continue from <out>.checkpoint.safetensors"
    )
    ap.add_argument(
        "--init",
        default=None,
        help="start from this model (a file or a built-in name) instead of from scratch",
    )
    ap.add_argument(
        "--retune",
        default=None,
        metavar="MODEL",
        help="do not train: re-tune MODEL's post-processing on the held-out images, "
        "then score and save it like a trained one",
    )
    ap.add_argument(
        "--upscale-to-area",
        type=float,
        default=200.0,
        help="segment images whose median nucleus is smaller than this (pixels) again, "
        "enlarged (0 switches it off)",
    )
    ap.add_argument(
        "--downscale-from-area",
        type=float,
        default=DOWNSCALE_FROM_AREA,
        help="segment images whose median nucleus is larger than this again, shrunk (0: off)",
    )
    ap.add_argument(
        "--object-area",
        type=float,
        default=OBJECT_AREA,
        help="median nucleus area of the training data (what shrinking aims for)",
    )
    ap.add_argument(
        "--in-channels",
        type=int,
        default=1,
        help="channels the network takes (3: colour; a one-channel --init is widened)",
    )
    ap.add_argument(
        "--brightfield",
        default="invert",
        choices=["invert", "hematoxylin"],
        help="how brightfield and stained images become network input",
    )
    ap.add_argument(
        "--channel-scale",
        type=float,
        default=0.0,
        help="colour augmentation: each channel scaled by its own U(1-c, 1+c)",
    )
    ap.add_argument("--name", default="default", help="the model's name in its file")
    ap.add_argument("--strong-intensity", action="store_true", help="wider grey-value augmentation")
    ap.add_argument(
        "--max-zoom",
        type=float,
        default=0.0,
        help="scale augmentation: show nuclei at 1/z..z times their size (0: off)",
    )
    args = ap.parse_args(argv)

    datasets = [Path(d) for d in args.data]
    for d in datasets:
        if not (d / "train").is_dir():
            print(f"no training data at {d}", file=sys.stderr)
            return 2
    if not len(args.repeat) == len(args.holdout) == len(datasets):
        print("give one --repeat and one --holdout per --data set", file=sys.stderr)
        return 2
    norm = Normalization(brightfield=args.brightfield)
    t_load = time.perf_counter()
    train_set, select_set, description = [], [], {}
    for d, repeat, holdout in zip(datasets, args.repeat, args.holdout):
        train_pairs, held_pairs = split_pairs(d / "train", holdout, args.seed)
        images = [] if args.retune else prepare(train_pairs, norm, args.in_channels)
        train_set += images * repeat
        select_set += prepare(held_pairs, norm, args.in_channels)
        description[d.name] = (
            f"{d.name}/train: {len(train_pairs)} images shown x{repeat}, "
            f"{len(held_pairs)} held out for selection and tuning; {d.name}/val for the report"
        )
    print(
        f"loaded {len(train_set)} train / {len(select_set)} selection images "
        f"in {time.perf_counter() - t_load:.1f}s",
        flush=True,
    )

    config = TrainConfig(
        epochs=args.epochs,
        minutes=args.minutes,
        patches_per_epoch=args.patches_per_epoch,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        lr=args.lr,
        w0=args.w0,
        seed=args.seed,
        workers=args.workers,
        device=args.device,
        validate_every=args.validate_every,
        augment=AugmentConfig(
            max_zoom=args.max_zoom,
            channel_scale=args.channel_scale,
            **(STRONG_INTENSITY if args.strong_intensity else {}),
        ),
    )
    checkpoint = Path(args.out).with_name(Path(args.out).stem + ".checkpoint.safetensors")
    arch = dict(
        depth=args.depth,
        base_channels=args.base_channels,
        scheme=args.scheme,
        batch_norm=not args.no_batch_norm,
        dropout=args.dropout,
        in_channels=args.in_channels,
        name="default",
    )
    log = open(args.log, "a") if args.log else None

    def report(event: Progress) -> None:
        if event.stage == Stage.TRAIN and event.step % 50:
            return
        line = json.dumps(
            {
                "stage": event.stage,
                "step": event.step,
                **{
                    k: (round(v, 4) if isinstance(v, float) else v)
                    for k, v in event.info.items()
                    if k != "ap"
                },
            }
        )
        print(line, flush=True)
        if log:
            log.write(line + "\n")
            log.flush()

    description["source"] = "2018 Data Science Bowl stage1_train (CC0)"
    if args.retune:
        model = load_model(args.retune)
        params, summary = tune_postprocessing(
            model.net, select_set, resolve_device(args.device), model.postprocessing
        )
        model.postprocessing = params
        model.training["postprocessing_tuning"] = summary
        model.training["postprocessing_retuned"] = {
            "date": time.strftime("%Y-%m-%d"),
            "package_version": __version__,
            "on": "held-out train images",
        }
    else:
        model = run_to_end(
            iter_train(
                train_set,
                select_set,
                init=starting_model(args.init, args.in_channels, norm) if args.init else None,
                architecture=None if args.init else arch,
                config=config,
                data_description=description,
                checkpoint=checkpoint,
                resume=args.resume,
            ),
            report,
        )
    model.name = args.name
    model.size_rule = replace(
        model.size_rule,
        upscale_to_area=args.upscale_to_area,
        downscale_from_area=args.downscale_from_area,
        object_area=args.object_area,
    )

    # Final scores on the val splits, exactly as users will get them.
    scores = {d.name: report_on_val(model, d) for d in datasets}
    image, _ = synthetic_nuclei((2048, 2048), n_nuclei=2000, radius=(5, 10), seed=1)
    segment(image[:512, :512], model)
    t = time.perf_counter()
    segment(image, model)
    seg_s = time.perf_counter() - t
    model.training["validation_final"] = scores
    model.training["segment_2048_seconds"] = round(seg_s, 3)
    out = save_model(model, args.out, half=True)
    result = {
        "model": str(out),
        "size_mb": round(out.stat().st_size / 1e6, 2),
        "architecture": model.net.config.to_dict(),
        "val": scores,
        "postprocessing": model.postprocessing.to_dict(),
        "size_rule": model.size_rule.to_dict(),
        "train_minutes": round(model.training.get("time_s", 0) / 60, 1),
        "steps": model.training.get("steps"),
        "best_epoch": model.training.get("best_epoch"),
        "segment_2048_s": round(seg_s, 3),
        "segment_mpx_per_s": round(2048 * 2048 / 1e6 / seg_s, 2),
    }
    print(json.dumps(result), flush=True)
    if log:
        log.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
