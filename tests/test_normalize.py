import numpy as np
import pytest

from napari_unet.errors import UNetError
from napari_unet.normalize import (
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
