"""Labels written into an OME-Zarr image's own labels group (NGFF 0.4 / 0.5)."""

import numpy as np
import pytest
import zarr

from napari_unet.cli import main
from napari_unet.errors import UNetError
from napari_unet.images.io import read_image
from napari_unet.images.ngff_labels import label_colours, write_labels_into_image
from napari_unet.segmenting.batch import BatchOptions, segment_files


def label_attrs(group):
    attrs = dict(group.attrs)
    return attrs.get("ome", attrs)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_labels_go_into_the_image_with_its_levels_scale_and_colours(
    tmp_path, zarr_format, ome_zarr_image
):
    image = ome_zarr_image(tmp_path / "img.ome.zarr", zarr_format, channels=True)
    labels = np.zeros((200, 240), np.uint16)
    labels[20:60, 30:90], labels[100:180, 120:230] = 1, 2
    out = write_labels_into_image(image, labels)
    assert out == image / "labels" / "napari-unet"
    group = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(group["0"][...], labels)
    np.testing.assert_array_equal(group["1"][...], labels[::2, ::2])  # nearest, like the image
    meta = label_attrs(group)
    ms = meta["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["y", "x"]  # the channel axis is dropped
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"] == [1.0, 1.0]
    assert meta["image-label"]["source"]["image"] == "../../"
    assert [c["label-value"] for c in meta["image-label"]["colors"]] == [1, 2]
    listing = label_attrs(zarr.open_group(str(image / "labels"), mode="r"))
    assert listing["labels"] == ["napari-unet"]
    assert (zarr_format == 3) == ("ome" in dict(group.attrs))
    assert read_image(out).pixel_size == {"Y": 0.5, "X": 0.5}


def test_labels_that_do_not_fit_the_image_are_refused(tmp_path, ome_zarr_image):
    image = ome_zarr_image(tmp_path / "img.ome.zarr")
    with pytest.raises(UNetError, match="do not fit"):
        write_labels_into_image(image, np.zeros((10, 10), np.uint16))
    assert not (image / "labels").exists()


def test_colours_are_distinct_and_reproducible():
    colours = label_colours(50)
    assert colours == label_colours(50)
    assert len({tuple(c["rgba"]) for c in colours}) == 50


@pytest.mark.parametrize("block_size", [4096, 128])
def test_segment_into_input_in_memory_and_block_wise_then_resume(
    tmp_path, tiny_model, block_size, ome_zarr_image
):
    image = ome_zarr_image(tmp_path / "img.ome.zarr")
    options = BatchOptions(model=tiny_model, into_input=True, block_size=block_size)
    report = segment_files([image], None, options)
    assert report.done and not report.failed
    group = zarr.open_group(str(image / "labels" / "napari-unet"), mode="r")
    assert group["0"].shape == (200, 240) and group["1"].shape == (100, 120)
    np.testing.assert_array_equal(group["1"][...], group["0"][...][::2, ::2])
    assert not any(p.name.startswith("napari-unet-blocks") for p in tmp_path.iterdir())
    again = segment_files([image], None, options)
    assert again.skipped and not again.done  # its own complete output: resumed, not redone


def test_someone_elses_labels_of_that_name_are_not_touched(tmp_path, tiny_model, ome_zarr_image):
    image = ome_zarr_image(tmp_path / "img.ome.zarr")
    theirs = zarr.open_group(str(image / "labels" / "napari-unet"), mode="w", zarr_format=2)
    theirs.attrs["note"] = "hand-made"
    report = segment_files([image], None, BatchOptions(model=tiny_model, into_input=True))
    assert report.failed and "not written by napari-unet" in report.summary()
    assert dict(zarr.open_group(str(image / "labels" / "napari-unet"), mode="r").attrs) == {
        "note": "hand-made"
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "OUT"], "leave out --out"),
        (["--probabilities"], "only labels"),
    ],
)
def test_cli_into_input_mistakes_are_one_line_before_work(
    tmp_path, capsys, extra, message, ome_zarr_image
):
    image = ome_zarr_image(tmp_path / "img.ome.zarr")
    argv = ["segment", str(image), "--into-input"] + [
        str(tmp_path / "o") if a == "OUT" else a for a in extra
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (image / "labels").exists()


def test_cli_into_input_refuses_an_input_that_is_not_ome_zarr(tmp_path, capsys):
    import tifffile

    tif = tmp_path / "cells.tif"
    tifffile.imwrite(tif, np.zeros((64, 64), np.uint16))
    assert main(["segment", str(tif), "--into-input"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not one (use --out)" in err[0]
    assert main(["segment", str(tif)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give an output folder" in err[0]


@pytest.mark.parametrize("replace_others", [False, True])
def test_a_link_planted_at_labels_is_never_followed(
    tmp_path, tiny_model, ome_zarr_image, capsys, replace_others
):
    image = ome_zarr_image(tmp_path / "img.ome.zarr")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "napari-unet").mkdir(parents=True)
    (elsewhere / "napari-unet" / "mine.txt").write_text("the user's")
    (image / "labels").symlink_to(elsewhere, target_is_directory=True)
    argv = ["segment", str(image), "--into-input", "--model", "default"]
    assert main(argv + (["--replace-others"] if replace_others else [])) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert sorted(p.name for p in elsewhere.rglob("*")) == ["mine.txt", "napari-unet"]


def test_a_link_planted_at_the_labels_metadata_is_never_followed(
    tmp_path, tiny_model, ome_zarr_image
):
    image = ome_zarr_image(tmp_path / "img.ome.zarr")
    (image / "labels").mkdir()
    victim = tmp_path / "victim.json"
    victim.write_text("{}")
    (image / "labels" / ".zattrs").symlink_to(victim)
    with pytest.raises(UNetError, match="is a symbolic link"):
        segment_files([image], None, BatchOptions(model=tiny_model, into_input=True))
    assert victim.read_text() == "{}"


def test_labels_swapped_in_but_never_listed_are_redone_on_resume(
    tmp_path, tiny_model, ome_zarr_image, monkeypatch
):
    """A run killed between swapping the labels in and listing them: the rerun finishes it."""
    from napari_unet.images import ngff_labels

    image = ome_zarr_image(tmp_path / "img.ome.zarr")
    options = BatchOptions(model=tiny_model, into_input=True)
    monkeypatch.setattr(ngff_labels, "_list_in_labels_group", lambda *a: None)  # "killed"
    segment_files([image], None, options)
    assert not ngff_labels.labels_listed(image)
    monkeypatch.undo()
    again = segment_files([image], None, options)
    assert again.done and not again.skipped
    assert "was not listed" in again.summary()
    assert ngff_labels.labels_listed(image)
    assert segment_files([image], None, options).skipped  # now really done


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_image_is_refused_before_segmenting(tmp_path, tiny_model, ome_zarr_image):
    import os

    image = ome_zarr_image(tmp_path / "img.ome.zarr")
    os.chmod(image, 0o555)
    try:
        with pytest.raises(UNetError, match="read-only for you"):
            segment_files([image], None, BatchOptions(model=tiny_model, into_input=True))
    finally:
        os.chmod(image, 0o755)


def test_the_old_labels_are_swapped_out_whole(tmp_path, tiny_model, ome_zarr_image):
    image = ome_zarr_image(tmp_path / "img.ome.zarr")
    first = np.zeros((200, 240), np.uint16)
    first[10:20, 10:20] = 1
    write_labels_into_image(image, first)
    second = np.zeros((200, 240), np.uint16)
    second[50:60, 50:60] = 7
    write_labels_into_image(image, second)
    group = zarr.open_group(str(image / "labels" / "napari-unet"), mode="r")
    np.testing.assert_array_equal(group["0"][...], second)
    assert [p.name for p in (image / "labels").iterdir() if p.name.endswith(".part")] == []
