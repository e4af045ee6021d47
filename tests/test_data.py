import numpy as np
import pytest
import tifffile

from napari_unet.errors import UNetError
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.training.augment import AugmentConfig
from napari_unet.training.data import (
    PatchDataset,
    dataset_class_weights,
    load_training_folder,
    make_training_image,
    pair_by_stem,
)


def write_pairs(tmp_path, n=3, mask_suffix=""):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(n):
        img, lab = synthetic_nuclei((64, 80), n_nuclei=4, seed=i)
        tifffile.imwrite(images / f"s{i}.tif", img)
        tifffile.imwrite(masks / f"s{i}{mask_suffix}.tif", lab.astype(np.uint16))
    return images, masks


def test_pairs_by_stem_with_label_suffix(tmp_path):
    images, masks = write_pairs(tmp_path, mask_suffix="_labels")
    pairs = pair_by_stem(images, masks)
    assert [p[0].stem for p in pairs] == ["s0", "s1", "s2"]
    data = load_training_folder(images, masks, 1)
    assert len(data) == 3 and data[0].image.shape == (1, 64, 80)


def test_unpaired_empty_and_mismatched_are_clear_errors(tmp_path):
    images, masks = write_pairs(tmp_path)
    (masks / "s2.tif").unlink()
    with pytest.raises(UNetError, match="no mask for 1 image"):
        pair_by_stem(images, masks)
    tifffile.imwrite(masks / "s2.tif", np.zeros((64, 80), np.uint16))
    with pytest.raises(UNetError, match="s2.tif is empty"):
        load_training_folder(images, masks, 1)
    tifffile.imwrite(masks / "s2.tif", np.ones((10, 10), np.uint16))
    with pytest.raises(UNetError, match="must match"):
        load_training_folder(images, masks, 1)
    with pytest.raises(UNetError, match="does not exist"):
        pair_by_stem(tmp_path / "nope", masks)


def test_rgb_images_become_grey_for_one_channel_models():
    rgb = np.random.default_rng(0).integers(0, 255, (32, 40, 3), dtype=np.uint8)
    item = make_training_image(rgb, np.ones((32, 40), np.int32), 1)
    assert item.image.shape == (1, 32, 40)
    item3 = make_training_image(rgb, np.ones((32, 40), np.int32), 3)
    assert item3.image.shape == (3, 32, 40)
    with pytest.raises(UNetError, match="channels"):
        make_training_image(rgb, np.ones((32, 40), np.int32), 2)


@pytest.mark.parametrize("augment", [None, AugmentConfig()])
def test_patches_have_valid_sizes_and_are_reproducible(augment):
    img, lab = synthetic_nuclei((100, 90), n_nuclei=8, seed=0)
    items = [make_training_image(img, lab, 1)]
    weights = dataset_class_weights(items, "3class", 3)
    ds = PatchDataset(items, 92, 20, "3class", weights, 4, augment, seed=3)
    x, t, w = ds[0]
    assert x.shape == (1, 92, 92) and t.shape == w.shape == (52, 52)
    assert set(np.unique(t.numpy())) <= {0, 1, 2}
    x2, t2, w2 = ds[0]
    assert np.array_equal(x.numpy(), x2.numpy()) and np.array_equal(w.numpy(), w2.numpy())
    ds.epoch = 1
    assert not np.array_equal(ds[0][0].numpy(), x.numpy())


def test_partial_annotation_zeroes_weights_outside_the_region():
    img, lab = synthetic_nuclei((120, 120), n_nuclei=12, seed=1)
    valid = np.zeros(lab.shape, bool)
    valid[40:70, 40:70] = True  # 900 annotated pixels
    items = [make_training_image(img, lab, 1, valid=valid)]
    for augment in (None, AugmentConfig()):
        ds = PatchDataset(items, 92, 20, "3class", np.ones(3, np.float32), 10, augment, seed=0)
        for i in range(10):
            _, _, w = ds[i]
            assert (
                0 < np.count_nonzero(w.numpy()) <= 900 * 1.1
            )  # a warp may stretch the region a little
    with pytest.raises(UNetError, match="empty"):
        make_training_image(img, lab, 1, valid=np.zeros(lab.shape, bool))


def test_class_weights_grow_for_rare_classes():
    img, lab = synthetic_nuclei((100, 100), n_nuclei=6, seed=0)
    items = [make_training_image(img, lab, 1)]
    w = dataset_class_weights(items, "3class", 3, balance=1.0)
    assert w[0] == 1.0 and w[1] > 1.0 and w[2] > w[1]
    assert np.allclose(dataset_class_weights(items, "3class", 3, balance=0.0), 1.0)


@pytest.mark.parametrize(
    "ids, message",
    [
        (np.array([0, -3]), "negative ids"),
        (np.array([0, 2**31], dtype=np.uint32), "below 2\\*\\*31"),
    ],
)
def test_label_ids_that_would_be_lost_are_refused(ids, message):
    from napari_unet.training.data import make_training_image

    labels = np.zeros((16, 16), dtype=ids.dtype)
    labels[4:8, 4:8] = ids[1]
    with pytest.raises(UNetError, match=message):
        make_training_image(np.ones((16, 16)), labels, 1)


def test_training_images_of_brightfield_are_inverted_like_segmentation():
    from napari_unet.images.synthetic import synthetic_nuclei
    from napari_unet.training.data import make_training_image

    fluo, truth = synthetic_nuclei((64, 64), n_nuclei=5, seed=2)
    bright = (int(fluo.max()) - fluo.astype(np.int64)).astype(np.uint16)
    a = make_training_image(fluo, truth, 1)
    b = make_training_image(bright, truth, 1)
    np.testing.assert_allclose(a.image, b.image, atol=1e-5)


@pytest.mark.parametrize(
    "radius, rule, expected",
    [
        ((2.0, 3.0), dict(upscale_from_area=120, upscale_to_area=450), "enlarged"),
        ((12.0, 14.0), dict(downscale_from_area=300, object_area=100), "shrunk"),
        (
            (5.0, 7.0),
            dict(upscale_from_area=40, upscale_to_area=450, downscale_from_area=2000),
            1.0,
        ),
        ((2.0, 3.0), dict(), 1.0),  # a model without a size rule
    ],
)
def test_annotated_images_are_resized_as_the_model_will_segment_them(
    tiny_model, radius, rule, expected
):
    from dataclasses import replace

    from napari_unet.models.sizes import SizeRule, factor_for_area, median_object_area

    image, truth = synthetic_nuclei((80, 96), n_nuclei=12, radius=radius, seed=5)
    valid = np.zeros(truth.shape, bool)
    valid[:40] = True  # a partial annotation: its region is resized too
    size_rule = SizeRule(**rule)
    model = replace(tiny_model, size_rule=size_rule)
    item = make_training_image(image, truth, model=model, valid=valid)
    factor = factor_for_area(median_object_area(truth), size_rule)
    assert item.scale == factor
    if expected == 1.0:
        assert factor == 1.0 and item.labels.shape == truth.shape
        np.testing.assert_array_equal(item.labels, truth)
        return
    assert (factor > 1) == (expected == "enlarged") and factor != 1.0
    shape = tuple(round(n * factor) for n in truth.shape)
    assert item.image.shape[1:] == item.labels.shape == item.valid.shape == shape
    assert set(np.unique(item.labels)) <= set(np.unique(truth))
    assert item.valid.mean() == pytest.approx(valid.mean(), abs=0.03)
    # Annotated nuclei now measure what the network will see (about the rule's target).
    area = median_object_area(item.labels)
    assert area == pytest.approx(median_object_area(truth) * factor**2, rel=0.2)


def test_training_sets_from_layers_and_folders_in_one_place(tmp_path, tiny_model):
    import tifffile

    from napari_unet.images.synthetic import synthetic_nuclei
    from napari_unet.training.data import AnnotatedStack, training_sets

    image, labels = synthetic_nuclei((64, 64), n_nuclei=4, seed=1)
    stack = np.stack([image, image])
    stack_labels = np.stack([labels, np.zeros_like(labels)])  # the second plane unannotated
    for name in ("images", "masks"):
        (tmp_path / name).mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", image)
    tifffile.imwrite(tmp_path / "masks" / "a.tif", labels.astype(np.uint16))
    stacks = [
        AnnotatedStack(stack, stack_labels, "ZYX", "train", name="zs"),
        AnnotatedStack(image, labels, "YX", "validation", name="v"),
    ]
    folders = {"train": (tmp_path / "images", tmp_path / "masks"), "validation": ("", "")}
    train, val = training_sets(stacks, folders, init=tiny_model)
    assert [t.name for t in train] == ["zs[0]", "a"] and [v.name for v in val] == ["v"]
    train, _ = training_sets(stacks[:1], None, init=None, in_channels=1)
    assert train[0].image.shape[0] == 1
    with pytest.raises(UNetError, match="how many channels"):
        training_sets(stacks, None, init=None)
    with pytest.raises(UNetError, match="'train' or 'validation'"):
        training_sets([AnnotatedStack(image, labels, "YX", "test")], None, init=tiny_model)
