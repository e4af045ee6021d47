import os
import stat

import numpy as np
import pytest
import tifffile

from napari_unet.errors import UNetError
from napari_unet.images.io import atomic_path, infer_axes, read_image, write_tiff


@pytest.mark.parametrize(
    "shape, axes",
    [
        ((10, 12), "YX"),
        ((10, 12, 3), "YXC"),
        ((5, 10, 12), "ZYX"),
        ((2, 5, 10, 12), "TZYX"),
        ((5, 10, 12, 3), "ZYXC"),
    ],
)
def test_infer_axes(shape, axes):
    assert infer_axes(shape) == axes


def test_infer_axes_rejects_1d_and_6d():
    with pytest.raises(UNetError, match="at least 2"):
        infer_axes((10,))
    with pytest.raises(UNetError):
        infer_axes((2, 2, 2, 2, 2, 2))


def test_read_tiff_png_and_axes_metadata(tmp_path):
    data = np.arange(2 * 3 * 20 * 30, dtype=np.uint16).reshape(2, 3, 20, 30)
    tifffile.imwrite(tmp_path / "a.ome.tif", data, metadata={"axes": "TCYX"})
    img = read_image(tmp_path / "a.ome.tif")
    assert img.axes == "TCYX" and img.shape == data.shape
    lazy = read_image(tmp_path / "a.ome.tif", lazy=True)
    assert np.array_equal(np.asarray(lazy.data[1, 2, 5:7]), data[1, 2, 5:7])
    import imageio.v3 as iio

    iio.imwrite(
        tmp_path / "b.png", (np.random.default_rng(0).random((16, 18, 3)) * 255).astype(np.uint8)
    )
    assert read_image(tmp_path / "b.png").axes == "YXC"
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((1, 20, 30), np.uint8))
    c = read_image(tmp_path / "c.tif")
    assert c.axes == "YX" and c.shape == (20, 30)  # a single plane stored as 1xYxX


def test_read_zarr_and_ome_zarr(tmp_path):
    import zarr

    arr = zarr.open_array(
        str(tmp_path / "plain.zarr"), mode="w", shape=(40, 50), chunks=(16, 16), dtype="u2"
    )
    arr[:] = 7
    img = read_image(tmp_path / "plain.zarr", lazy=True)
    assert img.axes == "YX" and hasattr(img.data, "chunks")
    group = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w", zarr_format=2)
    group.create_array("0", shape=(3, 40, 50), chunks=(1, 16, 16), dtype="u2")
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": "c"}, {"name": "y"}, {"name": "x"}],
            "datasets": [{"path": "0"}],
        }
    ]
    ome = read_image(tmp_path / "img.ome.zarr")
    assert ome.axes == "CYX" and ome.shape == (3, 40, 50)


def test_unreadable_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    with pytest.raises(UNetError, match="cannot read"):
        read_image(bad)
    with pytest.raises(UNetError, match="does not exist"):
        read_image(tmp_path / "missing.tif")
    (tmp_path / "x.xyz").write_text("?")
    with pytest.raises(UNetError, match="unsupported"):
        read_image(tmp_path / "x.xyz")
    with pytest.raises(UNetError, match="axes"):
        read_image(_write(tmp_path / "ok.tif"), axes="ZYX")


def _write(path):
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8))
    return path


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = write_tiff(tmp_path / "out.tif", np.ones((4, 4), np.uint8))
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crash")
    assert np.array_equal(tifffile.imread(target), np.ones((4, 4)))
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]


def test_atomic_write_gives_ordinary_file_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        written = write_tiff(tmp_path / "labels.tif", np.zeros((4, 4), np.uint16))
    finally:
        os.umask(old)
    assert stat.S_IMODE(written.stat().st_mode) == 0o644


def test_planar_rgb_tiff_is_one_colour_image(tmp_path, tiny_model):
    from napari_unet.images.io import read_image
    from napari_unet.segmenting.segmentation import segment

    rgb = np.random.default_rng(0).integers(0, 255, (3, 40, 50), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", rgb, photometric="rgb", planarconfig="separate")
    image = read_image(tmp_path / "planar.tif")
    assert image.axes == "CYX" and image.shape == (3, 40, 50)
    assert segment(image.data, tiny_model, axes=image.axes).shape == (40, 50)


def test_pixel_sizes_are_read_from_imagej_ome_and_zarr_and_written_back(tmp_path):
    import zarr

    from napari_unet.images.io import write_ngff_labels, write_tiff

    image = np.zeros((20, 30), np.uint16)
    imagej = tmp_path / "imagej.tif"
    tifffile.imwrite(imagej, image, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um"})
    read = read_image(imagej)
    assert read.pixel_size == pytest.approx({"X": 0.5, "Y": 0.5}) and read.unit == "micrometer"

    ome = tmp_path / "ome.ome.tif"
    tifffile.imwrite(
        ome, image, ome=True, metadata={"axes": "YX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.3}
    )
    read = read_image(ome)
    assert read.pixel_size == pytest.approx({"X": 0.25, "Y": 0.3}) and read.unit == "micrometer"

    # Our own outputs keep what they were given, in TIFF and in OME-Zarr.
    out = write_tiff(
        tmp_path / "labels.tif",
        image,
        axes="YX",
        pixel_size={"X": 0.5, "Y": 0.5},
        unit="micrometer",
    )
    again = read_image(out)
    assert again.pixel_size == {"X": 0.5, "Y": 0.5} and again.unit == "micrometer"
    ngff = write_ngff_labels(
        tmp_path / "labels.ome.zarr",
        image,
        "YX",
        pixel_size={"X": 0.5, "Y": 0.7},
        unit="micrometer",
    )
    ms = zarr.open_group(str(ngff), mode="r").attrs["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.7, 0.5]
    assert ms["axes"][0]["unit"] == "micrometer"
    assert read_image(ngff).pixel_size == {"Y": 0.7, "X": 0.5}

    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, image)
    assert read_image(plain).pixel_size == {} and read_image(plain).unit is None


def test_a_standalone_ome_zarr_points_at_its_image_by_a_relative_path(tmp_path):
    import zarr

    from napari_unet.images.io import write_ngff_labels

    source = tmp_path / "images" / "cells.tif"
    out = write_ngff_labels(
        tmp_path / "out" / "cells_labels.ome.zarr", np.zeros((8, 8), np.uint16), "YX", source
    )
    image_label = zarr.open_group(str(out), mode="r").attrs["image-label"]
    assert image_label["source"]["image"] == "../../images/cells.tif"
    assert (out / image_label["source"]["image"]).resolve() == source.resolve()


@pytest.mark.parametrize(
    "name, stem",
    [
        ("a.ome.zarr", "a"),
        ("a.zarr", "a"),
        ("b.ome.tif", "b"),
        ("b.OME.TIFF", "b"),
        ("c.TIF", "c"),
        ("d.bmp", "d"),
        ("e.v2.png", "e.v2"),
        ("f.txt", "f"),
    ],
)
def test_image_stem_drops_the_longest_image_suffix(name, stem):
    from napari_unet.images.io import image_stem

    assert image_stem(name) == stem


def test_one_format_registry_for_reading_batch_and_training():
    """What read_image reads is what batch runs list and training folders pair (.bmp included)."""
    from napari_unet.images import io
    from napari_unet.segmenting import batch

    # Training folders are listed by io.files_by_stem itself, on io.FILE_IMAGE_SUFFIXES.
    assert set(batch.INPUT_SUFFIXES) == set(io.READABLE_SUFFIXES)
    assert ".bmp" in io.FILE_IMAGE_SUFFIXES


def test_bmp_images_are_found_by_batch_runs_and_training_folders(tmp_path):
    import imageio.v3 as iio

    from napari_unet.segmenting.batch import expand_inputs
    from napari_unet.training.data import pair_by_stem

    (tmp_path / "img").mkdir()
    (tmp_path / "masks").mkdir()
    iio.imwrite(tmp_path / "img" / "a.bmp", np.zeros((16, 16), np.uint8))
    iio.imwrite(tmp_path / "masks" / "a_labels.png", np.zeros((16, 16), np.uint8))
    assert [p.name for p in expand_inputs([tmp_path / "img"])] == ["a.bmp"]
    assert [(i.name, m.name) for i, m in pair_by_stem(tmp_path / "img", tmp_path / "masks")] == [
        ("a.bmp", "a_labels.png")
    ]


def test_pngs_carry_the_mark_so_later_runs_know_their_own(tmp_path):
    from napari_unet.images.io import output_owner, write_png

    ours = write_png(tmp_path / "o.png", np.zeros((8, 8, 3), np.uint8))
    assert output_owner(ours) == "napari-unet"
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "theirs.png", np.zeros((8, 8, 3), np.uint8))
    assert output_owner(tmp_path / "theirs.png") == "other"
