import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.models.modelfile import save_model


@pytest.fixture
def model_file(tiny_model, tmp_path):
    return str(save_model(tiny_model, tmp_path / "tiny.safetensors"))


@pytest.fixture
def pairs(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(2):
        img, lab = synthetic_nuclei((96, 96), n_nuclei=6, seed=i)
        tifffile.imwrite(images / f"n{i}.tif", img)
        tifffile.imwrite(masks / f"n{i}.tif", lab.astype(np.uint16))
    return images, masks


def test_segment_then_evaluate(pairs, model_file, tmp_path, capsys):
    images, masks = pairs
    out = tmp_path / "pred"
    assert main(["segment", str(images), "--out", str(out), "--model", model_file, "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["n0_labels.tif", "n1_labels.tif"]
    capsys.readouterr()
    report = tmp_path / "scores.json"
    assert main(["evaluate", "--pred", str(out), "--gt", str(masks), "--json", str(report)]) == 0
    table = capsys.readouterr().out
    assert "mean AP" in table and "0.50" in table
    result = json.loads(report.read_text())
    assert result["n_images"] == 2 and "0.5" in result["thresholds"]


def test_evaluate_scores_ground_truth_against_itself(pairs, capsys):
    _, masks = pairs
    assert (
        main(["evaluate", "--pred", str(masks), "--gt", str(masks), "--thresholds", "0.5", "0.9"])
        == 0
    )
    assert "mean AP over 2 thresholds: 1.0000" in capsys.readouterr().out


def test_user_errors_print_one_line_and_exit_2(pairs, tmp_path, capsys):
    images, masks = pairs
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--pred", str(tmp_path / "empty"), "--gt", str(masks)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-unet: error: no prediction for 2") and "Traceback" not in err
    bad = tmp_path / "bad"
    bad.mkdir()
    tifffile.imwrite(bad / "n0.tif", np.zeros((5, 5), np.uint16))
    tifffile.imwrite(bad / "n1.tif", np.zeros((5, 5), np.uint16))
    assert main(["evaluate", "--pred", str(bad), "--gt", str(masks)]) == 2
    assert "shape" in capsys.readouterr().err
    assert (
        main(
            [
                "segment",
                str(images),
                "--out",
                str(tmp_path / "o"),
                "--model",
                str(tmp_path / "no.safetensors"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_failed_file_makes_segment_exit_non_zero(pairs, model_file, tmp_path, capsys):
    images, _ = pairs
    (images / "zz_broken.tif").write_bytes(b"junk")
    assert (
        main(
            ["segment", str(images), "--out", str(tmp_path / "o"), "--model", model_file, "--quiet"]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "2 segmented" in err and "1 failed" in err and "zz_broken" in err


def test_train_from_scratch_and_fine_tune(pairs, model_file, tmp_path, capsys):
    images, masks = pairs
    out = tmp_path / "new.safetensors"
    args = [
        "train",
        "--images",
        str(images),
        "--masks",
        str(masks),
        "--val-images",
        str(images),
        "--val-masks",
        str(masks),
        "--from",
        "scratch",
        "--scheme",
        "4class",
        "--depth",
        "2",
        "--base-channels",
        "4",
        "--epochs",
        "1",
        "--patches-per-epoch",
        "4",
        "--batch-size",
        "2",
        "--patch-size",
        "92",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    assert out.exists() and (tmp_path / "new.checkpoint.safetensors").exists()
    assert "AP@0.5" in capsys.readouterr().err  # validation printed each epoch
    assert main(args) == 2  # refuses to overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["classes"][-1] == "centre"
    pred = tmp_path / "pred4"
    assert main(["segment", str(images), "--out", str(pred), "--model", str(out), "--quiet"]) == 0
    assert len(list(pred.glob("*_labels.tif"))) == 2
    tuned = tmp_path / "tuned.safetensors"
    assert (
        main(
            [
                "train",
                "--images",
                str(images),
                "--masks",
                str(masks),
                "--from",
                model_file,
                "--max-zoom",
                "1.3",
                "--start-decay",
                "0.05",
                "--epochs",
                "1",
                "--patches-per-epoch",
                "2",
                "--batch-size",
                "2",
                "--patch-size",
                "92",
                "--out",
                str(tuned),
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["info", str(tuned)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["training"]["started_from"] == model_file
    assert info["training"]["config"]["augment"]["max_zoom"] == 1.3
    assert info["training"]["config"]["start_decay"] == 0.05


def test_fine_tuning_on_tiny_nuclei_trains_them_enlarged_and_says_so(tiny_model, tmp_path, capsys):
    from dataclasses import replace

    from napari_unet.models.sizes import SizeRule

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(2):
        img, lab = synthetic_nuclei((64, 64), n_nuclei=10, radius=(2.0, 3.0), seed=i)
        tifffile.imwrite(images / f"t{i}.tif", img)
        tifffile.imwrite(masks / f"t{i}.tif", lab.astype(np.uint16))
    rule = SizeRule(upscale_from_area=120, upscale_to_area=450)
    start = save_model(replace(tiny_model, size_rule=rule), tmp_path / "start.safetensors")
    out = tmp_path / "tuned.safetensors"
    args = ["train", "--images", str(images), "--masks", str(masks), "--from", str(start)]
    args += ["--epochs", "1", "--patches-per-epoch", "2", "--batch-size", "2"]
    assert main([*args, "--patch-size", "92", "--out", str(out), "--quiet"]) == 0
    assert "2 image(s) resized as the model will segment them" in capsys.readouterr().err
    assert main(["info", str(out)]) == 0
    resized = json.loads(capsys.readouterr().out)["training"]["resized_images"]
    assert set(resized) == {"t0", "t1"} and all(f >= 2.0 for f in resized.values())


def test_fine_tuning_that_does_not_beat_the_start_model_says_so_and_writes_it(
    pairs, model_file, tmp_path, monkeypatch, capsys
):
    import napari_unet.training.loop as training
    from napari_unet.models.modelfile import load_model

    scores = iter([0.9, 0.1, 0.2])  # the start model wins on the held-out strips
    monkeypatch.setattr(
        training,
        "evaluate_model",
        lambda *a, **k: dict.fromkeys(("ap50", "ap70", "score"), next(scores)),
    )
    images, masks = pairs
    out = tmp_path / "tuned.safetensors"
    args = ["train", "--images", str(images), "--masks", str(masks), "--from", model_file]
    args += ["--epochs", "2", "--patches-per-epoch", "2", "--batch-size", "2"]
    assert main([*args, "--patch-size", "92", "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "training did not beat the start model" in err
    assert "2 checkpoints compared" in err and str(out) in err
    kept = load_model(out)
    assert kept.training["kept_start_model"] and kept.training["checkpoints_compared"] == 2
    start = load_model(model_file).net.state_dict()
    for name, value in kept.net.state_dict().items():
        assert np.array_equal(value.numpy(), start[name].numpy())


def test_train_errors(pairs, tmp_path, capsys):
    images, masks = pairs
    (masks / "n1.tif").unlink()
    assert (
        main(
            [
                "train",
                "--images",
                str(images),
                "--masks",
                str(masks),
                "--from",
                "scratch",
                "--out",
                str(tmp_path / "m.safetensors"),
            ]
        )
        == 2
    )
    assert "no mask for 1 image" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--images",
                str(images),
                "--masks",
                str(masks),
                "--out",
                str(tmp_path / "m.pt"),
            ]
        )
        == 2
    )
    capsys.readouterr()
    bad_zoom = ["train", "--images", str(images), "--masks", str(masks), "--max-zoom", "0.5"]
    assert main([*bad_zoom, "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "--max-zoom must be at least 1" in capsys.readouterr().err


def test_demo_writes_labels_and_overlay(default_model_available, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--size", "256"]) == 0
    assert (tmp_path / "demo" / "nuclei_labels.tif").exists()
    assert (tmp_path / "demo" / "nuclei_overlay.png").exists()
    assert "AP@0.5" in capsys.readouterr().out


TRAIN_ARGV = ["train", "--images", "i", "--masks", "m", "--out", "o.safetensors"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["evaluate", "--pred", "p", "--gt", "g", "--thresholds", "abc"],
            "IoU thresholds are numbers",
        ),
        (["evaluate", "--pred", "p", "--gt", "g", "--thresholds", "1.5"], "in \\(0, 1\\]"),
        (["evaluate", "--pred", "p", "--gt", "g", "--thresholds", "0"], "in \\(0, 1\\]"),
        (["demo", "--size", "0"], "at least 1"),
        (["demo", "--size", "-5"], "at least 1"),
        (["segment", "x.tif", "--out", "o", "--block-size", "0"], "at least 1"),
        (["segment", "x.tif", "--out", "o", "--diameter", "nan"], "positive number"),
        (["segment", "x.tif", "--out", "o", "--diameter", "0"], "positive number"),
        (["segment", "x.tif", "--out", "o", "--diameter", "-3"], "positive number"),
        (["segment", "x.tif", "--out", "o", "--tile", "0"], "at least 1"),
        (["segment", "x.tif", "--out", "o", "--block-size", "abc"], "whole number"),
        (["segment", "x.tif", "--out", "o", "--stitch-threshold", "0"], "in \\(0, 1\\]"),
        (["segment", "x.tif", "--out", "o", "--stitch-threshold", "1.5"], "in \\(0, 1\\]"),
        (["segment", "x.tif", "--out", "o", "--stitch-threshold", "high"], "numbers"),
        (["segment", "x.tif", "--out", "o", "--device", "gpu0"], "unknown device"),
        (
            [
                *TRAIN_ARGV,
                "--patch-size",
                "0",
            ],
            "at least 1",
        ),
        (
            [
                *TRAIN_ARGV,
                "--batch-size",
                "-2",
            ],
            "at least 1",
        ),
        (
            [
                *TRAIN_ARGV,
                "--patches-per-epoch",
                "0",
            ],
            "at least 1",
        ),
        (
            [*TRAIN_ARGV, "--lr", "0"],
            "positive",
        ),
        (
            [*TRAIN_ARGV, "--depth", "0"],
            "at least 1",
        ),
        (
            [
                *TRAIN_ARGV,
                "--base-channels",
                "0",
            ],
            "at least 1",
        ),
        (["segment", "x.tif", "--out", "o", "--image-type", "phase"], "invalid choice"),
        (["segment", "x.tif", "--out", "o", "--channels", "a"], "CELLS,NUCLEI"),
        (["segment", "x.tif", "--out", "o", "--channels", "0,1,2"], "CELLS,NUCLEI"),
        (["segment", "x.tif", "--out", "o", "--channels", "-1"], "CELLS,NUCLEI"),
        (
            [*TRAIN_ARGV, "--epochs", "0"],
            "at least 1",
        ),
        (
            [*TRAIN_ARGV, "--minutes", "-1"],
            "positive",
        ),
        (
            [
                *TRAIN_ARGV,
                "--minutes",
                "nan",
            ],
            "positive",
        ),
        *(
            (
                [
                    *TRAIN_ARGV,
                    "--start-decay",
                    value,
                ],
                message,
            )
            for value, message in (
                ("-1", "0 or a positive"),
                ("nan", "0 or a positive"),
                ("x", "number"),
            )
        ),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("napari-unet: error:")
    assert __import__("re").search(message, err), err


def test_unwritable_outputs_fail_before_any_work(pairs, model_file, tmp_path, capsys):
    images, masks = pairs
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    folder = tmp_path / "a_folder.safetensors"
    folder.mkdir()
    cases = [
        ["segment", str(images), "--out", str(a_file), "--model", model_file],
        ["segment", str(images), "--out", str(tmp_path / "o"), "--json", str(folder)],
        [
            "train",
            "--images",
            str(images),
            "--masks",
            str(masks),
            "--out",
            str(folder),
            "--overwrite",
        ],
        [
            "tune",
            "--images",
            str(images),
            "--masks",
            str(masks),
            "--out",
            str(a_file.with_suffix(".safetensors")),
            "--model",
            model_file,
        ],
    ]
    a_file.with_suffix(".safetensors").write_text("existing")
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("napari-unet: error:") and err.count("\n") == 1, err
    assert a_file.read_text() == "mine"
    assert a_file.with_suffix(".safetensors").read_text() == "existing"
    assert not (tmp_path / "o").exists()


def test_existing_checkpoint_needs_resume(pairs, tmp_path, capsys):
    images, masks = pairs
    out = tmp_path / "m.safetensors"
    (tmp_path / "m.checkpoint.safetensors").write_bytes(b"an earlier run")
    argv = ["train", "--images", str(images), "--masks", str(masks), "--out", str(out)]
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err


def test_segment_reports_how_a_brightfield_image_was_read(tmp_path, model_file, capsys):
    d = tmp_path / "in"
    d.mkdir()
    img, _ = synthetic_nuclei((64, 64), n_nuclei=5, seed=1)
    tifffile.imwrite(d / "bf.tif", (int(img.max()) - img.astype(np.int64)).astype(np.uint16))
    assert (
        main(["segment", str(d), "--out", str(tmp_path / "o"), "--model", model_file, "--quiet"])
        == 0
    )
    assert "bf.tif: bright background: read as brightfield" in capsys.readouterr().err
    argv = ["segment", str(d), "--out", str(tmp_path / "o2"), "--model", model_file, "--quiet"]
    assert main(argv + ["--image-type", "fluorescence"]) == 0
    assert "looks like brightfield" in capsys.readouterr().err


def test_evaluate_reads_a_folder_with_overlays_and_probabilities(pairs, model_file, tmp_path):
    images, masks = pairs
    out = tmp_path / "pred"
    argv = ["segment", str(images), "--out", str(out), "--model", model_file, "--quiet"]
    assert main(argv + ["--overlay", "--probabilities"]) == 0
    assert any(p.name.endswith("_overlay.png") for p in out.iterdir())
    assert main(["evaluate", "--pred", str(out), "--gt", str(masks)]) == 0


def test_resume_from_a_checkpoint_of_another_network_is_one_line(pairs, tmp_path, capsys):
    images, masks = pairs
    out = tmp_path / "m.safetensors"
    base = ["train", "--images", str(images), "--masks", str(masks), "--from", "scratch"]
    base += ["--epochs", "1", "--patches-per-epoch", "2", "--batch-size", "2", "--patch-size", "92"]
    base += ["--out", str(out), "--quiet"]
    assert main(base + ["--depth", "2", "--base-channels", "4"]) == 0
    capsys.readouterr()
    argv = base + ["--depth", "2", "--base-channels", "8", "--resume", "--overwrite"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "another network" in err and err.count("\n") == 1


def test_segment_with_weights_that_do_not_fit_is_one_error_before_work(
    pairs, model_file, tmp_path, capsys
):
    from safetensors.torch import load_file, save_file

    from napari_unet.models.modelfile import read_model_config

    images, _ = pairs
    config = read_model_config(model_file)
    config["architecture"]["base_channels"] = 8
    bad = tmp_path / "mine.safetensors"
    save_file(load_file(model_file), str(bad), metadata={"napari_unet": json.dumps(config)})
    out = tmp_path / "out"
    assert main(["segment", str(images), "--out", str(out), "--model", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mine.safetensors" in err and "do not fit" in err
    assert not out.exists() or not any(out.iterdir())


def test_segment_stitches_a_z_stack_unless_asked_not_to(default_model_available, tmp_path):
    image, _ = synthetic_nuclei((96, 96), n_nuclei=6, seed=2)
    stack = tmp_path / "in" / "stack.tif"
    stack.parent.mkdir()
    tifffile.imwrite(
        stack, np.stack([image] * 3), photometric="minisblack", metadata={"axes": "ZYX"}
    )
    assert main(["segment", str(stack), "--out", str(tmp_path / "linked"), "--quiet"]) == 0
    linked = tifffile.imread(tmp_path / "linked" / "stack_labels.tif")
    assert (
        linked.shape == (3, 96, 96)
        and linked.max() > 0
        and all(np.array_equal(linked[0], plane) for plane in linked)
    )
    assert (
        main(["segment", str(stack), "--out", str(tmp_path / "apart"), "--no-stitch", "--quiet"])
        == 0
    )
    apart = tifffile.imread(tmp_path / "apart" / "stack_labels.tif")
    assert not (set(np.unique(apart[0])) - {0}) & set(np.unique(apart[1]))


def test_train_and_tune_on_stained_images_work_on_the_rgb_companion(tmp_path, monkeypatch, capsys):
    import napari_unet.models.modelfile as mf
    from napari_unet.models.modelfile import load_model, new_model

    arch = dict(depth=2, base_channels=4, scheme="3class", dropout=0.0)
    colour = new_model(**arch, in_channels=3)
    colour.name = "brightfield"  # as the built-in one
    companion = mf.save_model(colour, tmp_path / "bf.safetensors")
    monkeypatch.setattr(
        mf, "builtin_model_path", lambda n: companion if n == "brightfield" else None
    )
    start = new_model(**arch)
    start.companions = {"brightfield": "brightfield"}
    start_file = str(save_model(start, tmp_path / "start.safetensors"))
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for s in range(2):
        fluo, labels = synthetic_nuclei((96, 96), n_nuclei=8, seed=s)
        dark = 1.0 - fluo.astype(np.float32) / fluo.max()
        rgb = (255 * dark[..., None] * np.array([0.95, 0.75, 0.9])).astype(np.uint8)
        tifffile.imwrite(images / f"he{s}.tif", rgb, photometric="rgb")
        tifffile.imwrite(masks / f"he{s}.tif", labels.astype(np.uint16))
    folders = ["--images", str(images), "--masks", str(masks)]
    trained = tmp_path / "mine.safetensors"
    argv = ["train", *folders, "--from", start_file, "--out", str(trained), "--epochs", "1"]
    assert main([*argv, "--patches-per-epoch", "4", "--batch-size", "2", "--quiet"]) == 0
    assert load_model(trained).in_channels == 3
    tuned = tmp_path / "tuned.safetensors"
    assert main(["tune", *folders, "--model", start_file, "--out", str(tuned)]) == 0
    assert "tuning the built-in 'brightfield' model" in capsys.readouterr().err
    assert load_model(tuned).in_channels == 3


def test_info_summarizes_the_size_model_unless_asked_for_all(tiny_model, tmp_path, capsys):
    from dataclasses import replace

    from napari_unet.models.size_model import SizeModel, feature_count

    n = feature_count(tiny_model.net)
    sized = replace(tiny_model, size_model=SizeModel(np.zeros(n), np.ones(n), np.zeros(n), 5.0))
    path = save_model(sized, tmp_path / "sized.safetensors")
    assert main(["info", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)["size_model"]
    assert shown["weights"] == f"<{n} fitted numbers; --full prints them>"
    assert shown["bias"] == 5.0 and shown["crops"] == "corners"
    assert main(["info", str(path), "--full"]) == 0
    assert json.loads(capsys.readouterr().out)["size_model"]["weights"] == [0.0] * n


def test_a_two_channel_image_is_segmented_as_channels_not_a_stack(tmp_path, capsys):
    from napari_unet.images.synthetic import synthetic_cells

    image, truth = synthetic_cells((128, 128), diameter=50, seed=2, with_nuclei=True)
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "cells.tif", image)  # (2, Y, X): no axes in the file
    out = tmp_path / "out"
    argv = ["segment", str(folder), "--out", str(out), "--quiet", "--overlay"]
    assert main([*argv, "--channels", "0,1"]) == 0
    labels = tifffile.imread(out / "cells_labels.tif")
    assert labels.shape == truth.shape  # one plane of cells, not two Z planes
    assert 0 < labels.max() <= 2 * truth.max()
    assert (out / "cells_overlay.png").exists()
    err = capsys.readouterr().err
    assert "finds nuclei" in err  # the CLI names what the model finds
    # a channel the image does not have: that file fails, in one line
    bad = tmp_path / "bad"
    assert main(["segment", str(folder), "--out", str(bad), "--quiet", "--channels", "0,5"]) == 1
    assert "channel 5 does not exist" in capsys.readouterr().err
    assert not (bad / "cells_labels.tif").exists()


def test_demo_never_replaces_files_it_did_not_write(default_model_available, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "nuclei.tif").write_bytes(b"my own image")
    (out / "nuclei_overlay.png").write_bytes(b"my own figure")
    assert main(["demo", "--out", str(out), "--size", "128"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did not write" in err[0]
    assert (out / "nuclei.tif").read_bytes() == b"my own image"
    assert (out / "nuclei_overlay.png").read_bytes() == b"my own figure"
    assert not (out / "nuclei_labels.tif").exists()
    # its own earlier output it may replace
    again = tmp_path / "demo"
    assert main(["demo", "--out", str(again), "--size", "128"]) == 0
    assert main(["demo", "--out", str(again), "--size", "128"]) == 0


def test_a_second_training_into_the_same_out_is_refused_while_the_first_runs(
    pairs, tmp_path, capsys
):
    import os

    images, masks = pairs
    out = tmp_path / "m.safetensors"
    lock = tmp_path / "m.safetensors.lock"
    lock.write_text(str(os.getpid()))  # a run in progress: this very process
    argv = ["train", "--images", str(images), "--masks", str(masks), "--out", str(out)]
    argv += ["--from", "scratch", "--epochs", "1", "--depth", "2", "--base-channels", "4"]
    argv += ["--patches-per-epoch", "4", "--patch-size", "64", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another run is writing" in err[0]
    assert not out.exists() and lock.read_text() == str(os.getpid())
    # a killed run's lock (its process is gone) is taken over, and removed at the end
    lock.write_text("999999999")
    assert main(argv) == 0
    assert out.exists() and not lock.exists()


def test_every_option_has_help_and_says_its_default():
    import argparse

    from napari_unet.cli import build_parser

    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = []
    for name, command in commands.choices.items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            text = action.help or ""
            if not text:
                missing.append(f"{name} {action.option_strings[0]}: no help")
            elif action.default not in (None, False) and "default" not in text.lower():
                missing.append(f"{name} {action.option_strings[0]}: default not said")
    assert missing == []


def test_post_processing_flags_change_the_labels(pairs, model_file, tmp_path):
    images, _ = pairs
    low = ["--foreground-threshold", "0.05", "--min-size", "0"]
    assert (
        main(
            [
                "segment",
                str(images),
                "--out",
                str(tmp_path / "a"),
                "--model",
                model_file,
                "--quiet",
                *low,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "segment",
                str(images),
                "--out",
                str(tmp_path / "b"),
                "--model",
                model_file,
                "--quiet",
                *low[:2],
                "--min-size",
                "500",
            ]
        )
        == 0
    )
    a = tifffile.imread(tmp_path / "a" / "n0_labels.tif")
    b = tifffile.imread(tmp_path / "b" / "n0_labels.tif")
    assert a.max() > 0 and np.bincount(b.ravel())[1:].min(initial=500) >= 500


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--min-size", "5000"], "min-size must be in [0, 500]"),
        (["--foreground-threshold", "nan"], "foreground-threshold must be in"),
        (["--seed-distance-h", "-1"], "seed-distance-h must be in"),
    ],
)
def test_post_processing_flags_out_of_range_are_one_line_before_work(
    pairs, model_file, tmp_path, capsys, flags, message
):
    images, _ = pairs
    out = tmp_path / "out"
    code = main(["segment", str(images), "--out", str(out), "--model", model_file, *flags])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_enlarge_below_reaches_the_size_rule(pairs, model_file, tmp_path, monkeypatch):
    """--enlarge-below changes the model's size rule for the run, and only that."""
    from dataclasses import replace

    import napari_unet.segmenting.batch as batch
    from napari_unet.models.modelfile import load_model
    from napari_unet.models.sizes import SizeRule

    seen = []

    def capture(inputs, out, options, **kwargs):
        seen.append(options)
        return batch.BatchReport()
        yield  # a generator, as the real one

    monkeypatch.setattr(batch, "iter_segment_files", capture)
    images, _ = pairs
    args = ["segment", str(images), "--out", str(tmp_path / "o"), "--model", model_file]
    assert main([*args, "--quiet"]) == 0
    assert main([*args, "--quiet", "--enlarge-below", "150"]) == 0
    model = replace(load_model(model_file), size_rule=SizeRule(upscale_to_area=450))
    assert seen[0].enlarge_below is None and seen[0].segment_kwargs(model)["size_rule"] is None
    rule = seen[1].segment_kwargs(model)["size_rule"]
    assert (rule.upscale_from_area, rule.upscale_to_area) == (150, 450)
    assert seen[1].segment_kwargs(model)["params"] is None  # thresholds untouched


def test_bad_enlarge_below_from_python_is_refused_before_work(pairs, model_file, tmp_path):
    from napari_unet.errors import UNetError
    from napari_unet.segmenting.batch import iter_segment_files
    from napari_unet.segmenting.options import BatchOptions

    images, _ = pairs
    out = tmp_path / "out"
    with pytest.raises(UNetError, match="enlarge-below must be in"):
        next(iter_segment_files([images], out, BatchOptions(model=model_file, enlarge_below=-2)))
    assert not out.exists()


@pytest.mark.parametrize("where", ["images", "masks"])
def test_a_pipe_among_training_files_is_one_line_not_a_hang(pairs, tmp_path, capsys, where):
    import os

    images, masks = pairs
    os.mkfifo((images if where == "images" else masks) / "stuck.tif")
    out = tmp_path / "m.safetensors"
    code = main(["train", "--images", str(images), "--masks", str(masks), "--out", str(out)])
    assert code == 2
    assert "not a regular file (a pipe or a device?)" in capsys.readouterr().err
    assert not out.exists()


def test_a_pipe_among_evaluated_files_is_one_line_not_a_hang(pairs, tmp_path, capsys):
    import os

    images, masks = pairs
    os.mkfifo(masks / "stuck.tif")
    assert main(["evaluate", "--pred", str(masks), "--gt", str(masks)]) == 2
    assert "not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command, message",
    [
        (["train", "--max-zoom", "nan"], "--max-zoom: must be 0 or a positive number"),
        (["train", "--loader-workers", "-1"], "--loader-workers: must be 0 or more"),
        (["segment", "x", "--out", "o", "--workers", "-1"], "--workers: must be at least 1"),
        (["segment", "x", "--out", "o", "--block-size", "8"], "--block-size: must be at least 256"),
        (["segment", "x", "--out", "o", "--enlarge-below", "-1"], "must be in [0, 1000], got -1"),
        (["segment", "x", "--out", "o", "--enlarge-below", "5000"], "must be in [0, 1000]"),
        (["segment", "x", "--out", "o", "--enlarge-below", "nan"], "enlarge-below must be in"),
        (["segment", "x", "--out", "o", "--enlarge-below", "big"], "expected a number, got"),
    ],
)
def test_bad_numbers_are_one_line(command, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(command)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_more_workers_than_cpus_is_refused_before_work(pairs, tmp_path, capsys):
    import os

    images, _ = pairs
    many = str((os.cpu_count() or 1) + 1)
    assert main(["segment", str(images), "--out", str(tmp_path / "o"), "--workers", many]) == 2
    assert "this machine has" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_dead_scheduler_is_found_before_any_work(pairs, tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    images, _ = pairs
    args = [
        "segment",
        str(images),
        "--out",
        str(tmp_path / "o"),
        "--scheduler",
        f"tcp://127.0.0.1:{port}",
    ]
    assert main(args) == 2
    assert "no scheduler answers there" in capsys.readouterr().err


def test_masks_folder_that_is_the_images_folder_is_refused(pairs, tmp_path, capsys):
    images, _ = pairs
    args = [
        "train",
        "--images",
        str(images),
        "--masks",
        str(images),
        "--out",
        str(tmp_path / "m.safetensors"),
    ]
    assert main(args) == 2
    assert "--masks is the images folder" in capsys.readouterr().err


def test_a_bad_model_leaves_no_output_folder_behind(pairs, tmp_path, capsys):
    images, _ = pairs
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model at all")
    out = tmp_path / "out"
    assert main(["segment", str(images), "--out", str(out), "--model", str(bad)]) == 2
    assert "bad.safetensors" in capsys.readouterr().err
    assert not out.exists()


def test_a_diameter_larger_than_the_image_is_refused(pairs, model_file, tmp_path, capsys):
    images, _ = pairs
    out = tmp_path / "out"
    code = main(
        ["segment", str(images), "--out", str(out), "--model", model_file, "--diameter", "5000"]
    )
    report = capsys.readouterr()
    assert code != 0 and "do not fit in the image (96x96 pixels)" in report.out + report.err


def test_a_cyx_image_among_training_images_is_named(pairs, tmp_path, capsys):
    images, masks = pairs
    image, labels = synthetic_nuclei((96, 96), n_nuclei=6, seed=9)
    tifffile.imwrite(images / "two.tif", np.stack([image, image, image, image, image]))
    tifffile.imwrite(masks / "two.tif", labels.astype(np.uint16))
    code = main(
        [
            "train",
            "--images",
            str(images),
            "--masks",
            str(masks),
            "--out",
            str(tmp_path / "m.safetensors"),
        ]
    )
    assert code == 2
    assert "two.tif" in capsys.readouterr().err


def _tiny_train_args(images, masks, out):
    return [
        "train", "--images", str(images), "--masks", str(masks), "--from", "scratch",
        "--depth", "2", "--base-channels", "4", "--epochs", "2", "--patches-per-epoch", "4",
        "--batch-size", "2", "--patch-size", "92", "--out", str(out), "--quiet",
    ]  # fmt: skip


def test_training_onto_a_full_disk_is_refused_before_it_starts(
    pairs, tmp_path, capsys, monkeypatch
):
    import collections
    import shutil

    images, masks = pairs
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1000))
    out = tmp_path / "m.safetensors"
    assert main(_tiny_train_args(images, masks, out)) == 2
    err = capsys.readouterr().err
    assert "not enough free space" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_final_write_that_fails_keeps_the_checkpoint_and_says_how_to_resume(
    pairs, tmp_path, capsys, monkeypatch
):
    from napari_unet.models import modelfile

    images, masks = pairs
    out = tmp_path / "m.safetensors"
    real = modelfile.save_model

    def disk_full_at_the_end(model, path, *args, **kwargs):
        if Path(path) == out:
            raise OSError(28, "No space left on device")
        return real(model, path, *args, **kwargs)

    monkeypatch.setattr(modelfile, "save_model", disk_full_at_the_end)
    assert main(_tiny_train_args(images, masks, out)) == 2
    err = capsys.readouterr().err
    assert "could not write the model" in err and "--resume" in err
    assert (tmp_path / "m.checkpoint.safetensors").exists()


# Every option of SegmentOptions / BatchOptions and the `segment` flag that sets it.
SEGMENT_FLAGS = {
    "model": "--model",
    "tile_size": "--tile",
    "device": "--device",
    "precision": "--precision",
    "axes": "--axes",
    "image_type": "--image-type",
    "diameter": "--diameter",
    "channels": "--channels",
    "stitch": "--no-stitch",
    "track": "--track",
    "stitch_threshold": "--stitch-threshold",
    "thresholds": None,  # one flag per THRESHOLD_OPTIONS entry, checked below
    "enlarge_below": "--enlarge-below",
    "overwrite": "--overwrite",
    "allow_input_folder": "--allow-input-folder",
    "block_size": "--block-size",
    "object_margin": None,  # a constant of the block plan, not a user's choice
    "save_probabilities": "--probabilities",
    "overlay": "--overlay",
    "replace_others": "--replace-others",
    "into_input": "--into-input",
}


def test_every_segment_option_has_its_flag():
    """One declaration: a new field of SegmentOptions or BatchOptions must get its CLI flag."""
    import argparse
    from dataclasses import fields

    from napari_unet.cli import build_parser
    from napari_unet.labels.instances import THRESHOLD_OPTIONS
    from napari_unet.segmenting.options import BatchOptions

    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    flags = {s for a in commands.choices["segment"]._actions for s in a.option_strings}
    assert {f.name for f in fields(BatchOptions)} == set(SEGMENT_FLAGS)
    assert {f for f in SEGMENT_FLAGS.values() if f} <= flags
    assert {o.flag for o in THRESHOLD_OPTIONS} <= flags
