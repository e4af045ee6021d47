"""napari-ome-zarr opens what napari-unet writes: image and labels, at the image's scale."""

import numpy as np
import pytest
import zarr

from napari_unet.segmenting.batch import BatchOptions, segment_files

pytest.importorskip("napari_ome_zarr", reason="napari-ome-zarr is not installed")
# napari-ome-zarr colours labels 1..n as the metadata lists them and leaves 0
# (background) without a colour, which napari notes on every layer.
pytestmark = pytest.mark.filterwarnings("ignore:color_dict did not provide a default color")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_labels_written_into_the_image_open_with_it(
    make_napari_viewer, tmp_path, tiny_model, ome_zarr_image, zarr_format
):
    image = ome_zarr_image(tmp_path / "img.ome.zarr", zarr_format)
    report = segment_files([image], None, BatchOptions(model=tiny_model, into_input=True))
    assert report.done and not report.failed
    written = zarr.open_group(str(image / "labels" / "napari-unet"), mode="r")["0"][...]

    viewer = make_napari_viewer()
    layers = viewer.open(str(image), plugin="napari-ome-zarr")
    kinds = {layer._type_string: layer for layer in layers}
    assert set(kinds) == {"image", "labels"}
    labels, picture = kinds["labels"], kinds["image"]
    assert labels.name.endswith("napari-unet")  # napari-ome-zarr names it by its path
    np.testing.assert_array_equal(np.asarray(labels.data[0]), written)  # the full-resolution level
    assert len(labels.data) == len(picture.data) == 2  # the image's pyramid, level for level
    np.testing.assert_allclose(labels.scale, picture.scale)  # 0.5 um pixels, both
    np.testing.assert_allclose(picture.scale, [0.5, 0.5])


def test_a_labels_layer_saved_as_ome_zarr_opens_as_labels(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    data = np.zeros((64, 80), np.uint16)
    data[10:30, 10:40], data[40:60, 50:75] = 1, 2
    viewer.add_labels(data, name="cells", scale=(0.25, 0.25))
    saved = viewer.layers["cells"].save(str(tmp_path / "cells.ome.zarr"), plugin="napari-unet")
    viewer.layers.clear()
    (layer,) = viewer.open(saved[0], plugin="napari-ome-zarr")
    assert layer._type_string == "labels"
    np.testing.assert_array_equal(
        np.asarray(layer.data[0] if layer.multiscale else layer.data), data
    )
    np.testing.assert_allclose(layer.scale, [0.25, 0.25])
