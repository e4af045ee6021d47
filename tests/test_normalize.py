import numpy as np
import pytest

from napari_unet.errors import UNetError
from napari_unet.images.normalize import (
    Normalization,
    check_finite_array,
    normalize,
    percentile_range,
    to_channels_first,
)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_percentiles_map_to_zero_and_one(dtype):
    rng = np.random.default_rng(0)
    image = (rng.random((50, 60)) * 200).astype(dtype)
    out = normalize(image, Normalization(1, 99))
    assert out.dtype == np.float32
    lo, hi = np.percentile(out, [1, 99])
    assert lo == pytest.approx(0, abs=1e-5) and hi == pytest.approx(1, abs=1e-5)


def test_constant_image_does_not_divide_by_zero():
    out = normalize(np.full((8, 8), 7, np.uint16))
    assert np.isfinite(out).all()


def test_large_images_use_a_subsample_that_agrees():
    rng = np.random.default_rng(1)
    image = rng.gamma(2.0, 100.0, size=(3000, 2000)).astype(np.float32)
    lo, hi = percentile_range(image, 1, 99.8)
    exact = np.percentile(image, [1, 99.8])
    assert lo == pytest.approx(exact[0], rel=0.02) and hi == pytest.approx(exact[1], rel=0.02)


def test_nan_inf_and_empty_are_clear_errors():
    with pytest.raises(UNetError, match="NaN"):
        check_finite_array(np.array([[1.0, np.nan]]))
    with pytest.raises(UNetError, match="NaN or infinite"):
        normalize(np.array([[1.0, np.inf]]))
    with pytest.raises(UNetError, match="empty"):
        normalize(np.zeros((0, 5)))


def test_channel_conversions():
    rgb = np.random.default_rng(0).random((10, 12, 3)).astype(np.float32)
    grey = to_channels_first(rgb, -1, 1)
    assert grey.shape == (1, 10, 12)
    assert np.allclose(grey[0], rgb @ np.array([0.299, 0.587, 0.114], np.float32), atol=1e-6)
    rgba = np.concatenate([rgb, np.ones((10, 12, 1), np.float32)], axis=-1)
    assert np.allclose(to_channels_first(rgba, -1, 3), np.moveaxis(rgb, -1, 0))
    assert to_channels_first(rgb[..., 0], None, 3).shape == (3, 10, 12)
    with pytest.raises(UNetError, match="channels"):
        to_channels_first(np.zeros((5, 10, 12)), 0, 2)


# --------------------------------------------------------------------------
# Image type: brightfield / stained images are recognised and inverted
# --------------------------------------------------------------------------


def _fluorescence_and_brightfield_twins():
    from napari_unet.images.synthetic import synthetic_nuclei

    fluo, truth = synthetic_nuclei((96, 96), n_nuclei=8, seed=4)
    bright = (int(fluo.max()) - fluo.astype(np.int64)).astype(np.uint16)
    return fluo, bright, truth


def test_bright_background_is_detected_as_brightfield():
    from napari_unet.images.normalize import bright_background_score, detect_image_type

    fluo, bright, _ = _fluorescence_and_brightfield_twins()
    assert bright_background_score(fluo[None]) < 0.3 < bright_background_score(bright[None])
    assert detect_image_type(fluo[None]) == "fluorescence"
    assert detect_image_type(bright[None]) == "brightfield"
    # An RGB stain: dark purple nuclei on near-white.
    rgb = np.stack([bright, (bright * 0.8).astype(np.uint16), bright], axis=-1)
    assert detect_image_type(np.moveaxis(rgb, -1, 0)) == "brightfield"


def test_brightfield_twin_becomes_the_fluorescence_input():
    from napari_unet.images.normalize import prepare_plane

    fluo, bright, _ = _fluorescence_and_brightfield_twins()
    a, kind_a = prepare_plane(fluo, None, 1, Normalization())
    b, kind_b = prepare_plane(bright, None, 1, Normalization())
    assert (kind_a, kind_b) == ("fluorescence", "brightfield")
    np.testing.assert_allclose(a, b, atol=1e-5)
    # Forced types are obeyed.
    c, kind_c = prepare_plane(bright, None, 1, Normalization(), image_type="fluorescence")
    assert kind_c == "fluorescence" and not np.allclose(a, c)


def test_unknown_image_type_is_a_clear_error():
    from napari_unet.images.normalize import prepare_plane

    with pytest.raises(UNetError, match="image type 'phase'"):
        prepare_plane(np.zeros((8, 8)), None, 1, Normalization(), image_type="phase")


def test_float64_beyond_float32_range_is_normalized_not_lost():
    from napari_unet.images.synthetic import synthetic_nuclei

    image, _ = synthetic_nuclei((64, 64), n_nuclei=5, seed=1)
    huge = image.astype(np.float64) * 1e300
    out = normalize(huge)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out, normalize(image), atol=1e-5)


def _stained_field(seed=0):
    """Synthetic H&E: blue-purple nuclei (hematoxylin) and pink cytoplasm (eosin) on white."""
    from skimage.color import hed2rgb

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    nuclei = np.zeros((96, 96), bool)
    for cy, cx in rng.uniform(12, 84, size=(8, 2)):
        nuclei |= (yy - cy) ** 2 + (xx - cx) ** 2 < 36
    cytoplasm = ((xx // 16) % 3 == 0) & ~nuclei
    hed = np.zeros((96, 96, 3))
    hed[..., 0] = 0.1 * nuclei
    hed[..., 1] = 0.15 * cytoplasm  # eosin as dark as the nuclei in grey
    rgb = (np.clip(hed2rgb(hed), 0, 1) * 255).astype(np.uint8)
    return rgb, nuclei, cytoplasm


def test_hematoxylin_separates_nuclei_from_eosin_where_grey_cannot():
    from napari_unet.images.normalize import prepare_plane

    rgb, nuclei, cytoplasm = _stained_field()

    def contrast(norm):
        x, kind = prepare_plane(rgb, -1, 1, norm)
        assert kind == "brightfield" and x.shape == (1, 96, 96)
        return x[0][nuclei].mean() - x[0][cytoplasm].mean()

    inverted = contrast(Normalization())
    hematoxylin = contrast(Normalization(brightfield="hematoxylin"))
    assert hematoxylin > 0.5 and hematoxylin > inverted + 0.3


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_hematoxylin_of_grey_is_monotone_in_darkness(dtype):
    from napari_unet.images.normalize import hematoxylin_density

    scale = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    ramp = (np.linspace(1.0, 0.0, 50) * scale).astype(dtype)[None, None]
    density = hematoxylin_density(ramp)[0, 0]
    assert np.all(np.isfinite(density)) and np.all(np.diff(density) > 0)
    # A grey plane is the same density in R, G and B.
    np.testing.assert_allclose(
        hematoxylin_density(np.repeat(ramp, 3, axis=0)), density[None, None], rtol=1e-5
    )


def test_three_channel_model_gets_the_density_in_each_channel():
    from napari_unet.images.normalize import prepare_plane

    rgb, _, _ = _stained_field()
    x, _ = prepare_plane(rgb, -1, 3, Normalization(brightfield="hematoxylin"))
    assert x.shape == (3, 96, 96) and np.array_equal(x[0], x[2])


def test_unknown_brightfield_conversion_is_a_clear_error():
    with pytest.raises(UNetError, match="brightfield conversion 'sepia'"):
        Normalization(brightfield="sepia")
    assert Normalization.from_dict({"brightfield": "hematoxylin"}).brightfield == "hematoxylin"
    assert Normalization.from_dict({}).brightfield == "invert"  # model files from before


def test_colour_deconvolution_of_two_channels_is_a_clear_error():
    from napari_unet.images.normalize import hematoxylin_density

    with pytest.raises(UNetError, match="grey or RGB, got 2 channels"):
        hematoxylin_density(np.ones((2, 8, 8), np.uint8))


@pytest.mark.parametrize(
    "kind, unpolarised",
    [("fluorescence", False), ("brightfield", False), ("dic", True), ("flat", False)],
)
def test_images_without_bright_or_dark_polarity_are_told_apart(kind, unpolarised):
    from scipy import ndimage as ndi

    from napari_unet.images.normalize import looks_unpolarised
    from napari_unet.images.synthetic import synthetic_nuclei

    image, labels = synthetic_nuclei((128, 128), seed=3)
    image = image.astype(np.float32)
    if kind == "brightfield":
        image = image.max() - image
    elif kind == "dic":  # relief: each object bright on one side, dark on the other
        relief = ndi.sobel(ndi.gaussian_filter((labels > 0).astype(np.float32), 2), axis=1)
        rng = np.random.default_rng(0)
        image = 0.5 + relief + 0.05 * rng.standard_normal(relief.shape)
    elif kind == "flat":
        image = np.zeros((64, 64), np.float32)
    assert looks_unpolarised(image[None]) is unpolarised


def test_a_channel_count_the_model_does_not_take_names_the_channels_option():
    from napari_unet.images.normalize import Normalization, convert_plane

    with pytest.raises(UNetError, match=r"--channels CELLS\[,NUCLEI\]"):
        convert_plane(np.zeros((2, 16, 16), np.float32), 0, 1, Normalization())
