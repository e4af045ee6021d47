import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_unet.errors import UNetError
from napari_unet.models.model import UNet, is_valid_input
from napari_unet.models.tiling import (
    choose_tile_output,
    mirror_pad,
    plan_tiles,
    predict_tiled,
    predict_whole,
)


def _net(depth=2, base=4, in_channels=1):
    torch.manual_seed(depth * 10 + base)
    return UNet(
        depth=depth, base_channels=base, in_channels=in_channels, n_classes=3, dropout=0
    ).eval()


@pytest.mark.parametrize(
    "shape, tile, batch",
    [
        ((1, 1), 8, 1),
        ((1, 1), 100, 3),
        ((7, 300), 8, 1),
        ((7, 300), 24, 3),
        ((257, 1031), 100, 1),
        ((257, 1031), 256, 3),
        ((5, 3), 8, 3),
        ((64, 64), 24, 1),
    ],
)
def test_tiled_equals_whole_image_pass(shape, tile, batch):
    net = _net()
    image = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    tiled = predict_tiled(
        net, image, tile_size=tile, batch_size=batch, precision="float32", device="cpu"
    )
    whole = predict_whole(net, image, plan_tiles(shape, net.depth, tile))
    assert tiled.shape == (3, *shape)
    assert np.abs(tiled - whole).max() <= 1e-5


# Planes, tiles, batches and networks of any size, down to 1 pixel.
TILED_RUNS = dict(
    h=st.integers(1, 90),
    w=st.integers(1, 90),
    tile=st.integers(1, 70),
    batch=st.integers(1, 4),
    depth=st.integers(1, 3),
)


@settings(max_examples=25, deadline=None)
@given(**TILED_RUNS)
def test_tiled_equals_whole_property(h, w, tile, batch, depth):
    net = _net(depth=depth, base=2)
    image = np.random.default_rng(h * 1000 + w).standard_normal((1, h, w)).astype(np.float32)
    tiled = predict_tiled(
        net, image, tile_size=tile, batch_size=batch, precision="float32", device="cpu"
    )
    whole = predict_whole(net, image, plan_tiles((h, w), depth, tile))
    assert np.abs(tiled - whole).max() <= 1e-5
    assert np.allclose(tiled.sum(axis=0), 1.0, atol=1e-5)


def test_tiles_abut_and_inputs_are_valid():
    plan = plan_tiles((257, 1031), 3, 64)
    assert is_valid_input(plan.y.tile, 3) and is_valid_input(plan.x.tile, 3)
    assert plan.y.step % 8 == 0 and plan.x.step % 8 == 0
    covered = np.zeros((257, 1031), dtype=int)
    for y, x in plan.origins():
        covered[y : y + plan.y.step, x : x + plan.x.step] += 1
    assert (covered == 1).all()  # every pixel written exactly once: no overlap, no gap


def test_mirror_padding_smaller_than_halo():
    image = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    plan = plan_tiles((2, 3), 4, 16)
    padded = mirror_pad(image, plan)
    assert padded.shape[1] == plan.y.padded and padded.shape[2] == plan.x.padded
    top = plan.y.pad_before
    assert np.array_equal(
        padded[0, top : top + 2, plan.x.pad_before : plan.x.pad_before + 3], image[0]
    )
    assert set(np.unique(padded)) <= set(np.unique(image))


def test_multichannel_input_and_wrong_channel_count():
    net = _net(in_channels=2)
    image = np.random.default_rng(1).random((2, 40, 50), dtype=np.float32)
    assert predict_tiled(net, image, precision="float32").shape == (3, 40, 50)
    with pytest.raises(UNetError, match="channels"):
        predict_tiled(net, image[:1], precision="float32")
    with pytest.raises(UNetError, match="C, Y, X"):
        predict_tiled(net, image[0], precision="float32")


def test_tile_size_follows_memory_budget():
    net = _net(base=16)
    big = choose_tile_output(net, 1 << 30)
    small = choose_tile_output(net, 1 << 24)
    assert small < big
    assert small % net.stride == 0


def test_bfloat16_close_to_float32_for_trained_model(default_model_available):
    from napari_unet.images.normalize import normalize
    from napari_unet.images.synthetic import synthetic_nuclei
    from napari_unet.models.modelfile import load_model

    model = load_model("default")
    image, _ = synthetic_nuclei((256, 256), seed=3)
    x = normalize(image[None], model.normalization)
    p32 = predict_tiled(model.net, x, precision="float32")
    p16 = predict_tiled(model.net, x, precision="bfloat16")
    # Pixels at the edge of a decision can flip slightly; nearly all stay close.
    diff = np.abs(p32 - p16)
    assert np.quantile(diff, 0.999) < 1e-2


@given(
    size=st.integers(1, 20000),
    depth=st.integers(1, 4),
    step=st.sampled_from([64, 256, 1000, 1024]),
)
def test_tiles_cover_an_axis_with_less_than_a_stride_to_spare_per_tile(size, depth, step):
    from napari_unet.models.tiling import plan_axis

    stride = 2**depth
    plan = plan_axis(size, depth, step)
    assert plan.step % stride == 0 and plan.step <= max(stride, step)
    assert plan.count * plan.step >= size  # the axis is covered ...
    assert plan.count * plan.step - size < plan.count * stride  # ... without near-empty tiles
    largest = max(stride, step // stride * stride)
    assert (plan.count - 1) * largest < size  # ... with no more tiles than the largest step needs


def _whole_encoder_means(net, image: np.ndarray) -> np.ndarray:
    """One contracting-path pass over the whole mirror-padded image, means over the image's part."""
    from napari_unet.models.model import halo

    h, w = image.shape[1:]
    padded = mirror_pad(image, plan_tiles((h, w), net.depth, 10**6))
    with torch.no_grad():
        levels = net.encode(torch.from_numpy(padded[None]))
    means = []
    for level, act in enumerate(levels):
        scale = 2**level
        start = (halo(net.depth) - (2 ** (level + 2) - 2)) // scale
        part = act[0, :, start : start - (-h // scale), start : start - (-w // scale)]
        means.append(part.double().mean(dim=(1, 2)))
    return torch.cat(means).numpy()


@settings(max_examples=20, deadline=None)
@given(**TILED_RUNS)
def test_encoder_means_do_not_depend_on_the_tiles(h, w, tile, batch, depth):
    # Gathered tile by tile during prediction, they equal one pass over the
    # whole plane: a size model reads the same features whatever the tile plan
    # (memory budget, device) of the run.
    from napari_unet.models.tiling import EncoderMeans, encoder_means, iter_predict_tiled
    from napari_unet.progress import run_to_end

    net = _net(depth=depth, base=2)
    image = np.random.default_rng(h * 1000 + w).random((1, h, w), dtype=np.float32)
    gathered = EncoderMeans(depth)
    probs = run_to_end(
        iter_predict_tiled(
            net, image, tile_size=tile, batch_size=batch, precision="float32", encoder=gathered
        )
    )
    whole = _whole_encoder_means(net, image)
    np.testing.assert_allclose(gathered.means(), whole, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        encoder_means(net, image, tile_size=tile), whole, rtol=1e-4, atol=1e-6
    )
    # Gathering changes nothing in the prediction itself.
    np.testing.assert_array_equal(
        probs, predict_tiled(net, image, tile_size=tile, batch_size=batch, precision="float32")
    )


def test_encoder_means_without_a_pass_are_an_error():
    from napari_unet.models.tiling import EncoderMeans

    with pytest.raises(UNetError, match="no activations"):
        EncoderMeans(2).means()
