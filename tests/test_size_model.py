import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from napari_unet.errors import UNetError
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.models.modelfile import load_model, read_model_config, save_model
from napari_unet.models.size_model import (
    SizeModel,
    feature_count,
    fit_size_model,
    predicted_factor,
    size_features,
)
from napari_unet.progress import run_to_end


def constant_size_model(tiny_model, area: float) -> SizeModel:
    """A size model that reads every plane as nuclei of ``area`` pixels."""
    n = feature_count(tiny_model.net)
    return SizeModel(np.zeros(n), np.ones(n), np.zeros(n), float(np.log(area)))


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.floats(-1, 1), min_size=3, max_size=3),
    st.floats(3, 7),
    st.integers(0, 2**16),
)
def test_a_fitted_size_model_recovers_a_linear_log_area(weights, bias, seed):
    rng = np.random.default_rng(seed)
    # log areas stay within the clip of predict_area ([-10, 20]): 4 sigma of features
    features = np.clip(rng.normal(size=(60, 3)), -4, 4) * [1.0, 2.0, 0.1] + [0.0, 1.0, -1.0]
    areas = np.exp(features @ np.asarray(weights) + bias)
    fitted = fit_size_model(features, areas, alpha=1e-6)
    predicted = [fitted.predict_area(f) for f in features]
    np.testing.assert_allclose(np.log(predicted), np.log(areas), atol=1e-3)


def test_fitting_needs_rows_and_areas_that_match():
    with pytest.raises(UNetError, match="two or more samples"):
        fit_size_model(np.zeros((3, 2)), np.ones(2))
    with pytest.raises(UNetError, match="two or more samples"):
        fit_size_model(np.zeros((1, 2)), np.ones(1))


def test_features_have_a_fixed_length_for_any_plane_size(tiny_model):
    net = tiny_model.net.eval()
    for shape in ((1, 9, 7), (1, 40, 300), (1, 700, 650)):
        plane = np.random.default_rng(0).random(shape, dtype=np.float32)
        features = size_features(net, plane)
        assert features.shape == (feature_count(net),) and np.isfinite(features).all()
    again = size_features(net, plane)
    np.testing.assert_array_equal(features, again)


def test_brightest_crops_read_the_nuclei_not_the_empty_margins(tiny_model):
    from napari_unet.models.size_model import CROP, _crops

    image, _ = synthetic_nuclei((400, 400), n_nuclei=25, seed=3)
    plane = np.zeros((1, 1024, 1024), np.float32)
    plane[0, 312:712, 312:712] = image / image.max()
    corners, brightest = _crops(plane, "corners"), _crops(plane, "brightest")
    assert [c.shape for c in brightest] == [(1, CROP, CROP)] * 4
    assert all(c.max() == 0 for c in corners) and all(c.mean() > 0.01 for c in brightest)
    net = tiny_model.net.eval()
    assert not np.allclose(
        size_features(net, plane, "corners"), size_features(net, plane, "brightest")
    )


@pytest.mark.parametrize("crops", ["brightest", "first_pass"])
def test_a_size_model_survives_the_model_file(tiny_model, tmp_path, crops):
    rng = np.random.default_rng(1)
    n = feature_count(tiny_model.net)
    fitted = fit_size_model(rng.normal(size=(20, n)), np.exp(rng.uniform(3, 7, 20)), crops=crops)
    fitted.record = {"data": "test"}
    path = save_model(replace(tiny_model, size_model=fitted), tmp_path / "m.safetensors")
    loaded = load_model(path).size_model
    assert loaded.record == {"data": "test"} and loaded.crops == crops
    plane = rng.random((1, 64, 64), dtype=np.float32)
    assert predicted_factor(loaded, tiny_model.net.eval(), plane, 333) == pytest.approx(
        predicted_factor(fitted, tiny_model.net.eval(), plane, 333), rel=1e-6
    )
    assert load_model(save_model(tiny_model, tmp_path / "plain.safetensors")).size_model is None


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(weights=d["weights"][:-1]), "does not fit the network"),
        (lambda d: d.update(bias=float("nan")), "bad numbers"),
        (lambda d: d.update(scale=[0.0] * len(d["scale"])), "bad numbers"),
        (lambda d: d.update(shrink_below=2.0), "bad numbers"),
        (lambda d: d.pop("mean"), "damaged"),
        (lambda d: d.update(mean="x"), "damaged"),
        (lambda d: d.update(crops="middle"), "damaged"),
        (lambda d: d.update(crops=["brightest"]), "damaged"),
    ],
)
def test_a_damaged_size_model_is_a_clear_error(tiny_model, tmp_path, change, message):
    path = save_model(
        replace(tiny_model, size_model=constant_size_model(tiny_model, 300)),
        tmp_path / "m.safetensors",
    )
    config = read_model_config(path)
    change(config["size_model"])
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(path)), str(bad), metadata={"napari_unet": json.dumps(config)})
    with pytest.raises(UNetError, match=message) as info:
        load_model(bad)
    assert "bad.safetensors" in str(info.value) and "\n" not in str(info.value)


def test_a_size_model_that_is_not_a_mapping_is_refused(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    config = read_model_config(path)
    config["size_model"] = [1, 2]
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(path)), str(bad), metadata={"napari_unet": json.dumps(config)})
    with pytest.raises(UNetError, match="'size_model' is not a mapping"):
        load_model(bad)


def _segmented_scale(model, image) -> float:
    from napari_unet.segmenting.segmentation import iter_segment

    events = []
    run_to_end(iter_segment(image, model), events.append)
    return [e.info["scale"] for e in events if e.stage == "segment"][-1]


@pytest.mark.parametrize(
    "predicted_area, shrinks",
    [
        (333 * 9, True),  # nuclei three times as wide as trained: shrunk to a third
        (333 * 1.5**2 * 1.1, True),  # just past the shrinking threshold
        (333 * 1.5**2 * 0.9, False),  # just short of it
        (333, False),  # the training size
        (10, False),  # tiny: enlarging stays the first pass's decision
    ],
)
def test_the_size_model_decides_shrinking(tiny_model, predicted_area, shrinks):
    from napari_unet.models.sizes import SizeRule

    image, _ = synthetic_nuclei((160, 160), n_nuclei=12, seed=3)
    # No first-pass resizing of its own: only the size model can shrink.
    rule = SizeRule(object_area=333, upscale_to_area=0, downscale_from_area=0)
    model = replace(
        tiny_model,
        size_rule=rule,
        size_model=constant_size_model(tiny_model, predicted_area),
    )
    scale = _segmented_scale(model, image)
    if shrinks:
        assert scale == pytest.approx(np.sqrt(333 / predicted_area), abs=1e-3)
    else:
        assert scale == 1.0
    assert _segmented_scale(replace(model, size_model=None), image) == 1.0


def test_a_diameter_given_overrides_the_size_model(tiny_model):
    from napari_unet.models.sizes import SizeRule
    from napari_unet.segmenting.segmentation import iter_segment

    image, _ = synthetic_nuclei((160, 160), n_nuclei=12, seed=3)
    model = replace(
        tiny_model,
        size_rule=SizeRule(object_area=333),
        size_model=constant_size_model(tiny_model, 333 * 9),
    )
    events = []
    run_to_end(iter_segment(image, model, diameter=2 * np.sqrt(333 / np.pi)), events.append)
    assert [e.info["scale"] for e in events if e.stage == "segment"] == [1.0]


def test_the_default_model_reads_nucleus_sizes(default_model_available):
    # The built-in fluorescence model's size model on synthetic nuclei at two
    # magnifications: it must see the 3x view as larger, by about 3x in width.
    from napari_unet.images.normalize import normalize
    from napari_unet.models.modelfile import convert_for_segmenting
    from napari_unet.models.sizes import resize_channels

    model = load_model("default")
    assert model.size_model is not None and model.size_model.record.get("command")
    image, _ = synthetic_nuclei((256, 256), n_nuclei=40, radius=(4, 6), seed=4)
    chw, _, chosen = convert_for_segmenting(image, None, model)
    chw = normalize(chw, chosen.normalization)
    net = model.net.eval()
    small = predicted_factor(model.size_model, net, chw, 333)
    big = predicted_factor(model.size_model, net, resize_channels(chw, (768, 768)), 333)
    assert 1.5 < small / big < 6


@pytest.mark.parametrize("dtype, tolerance", [(None, 1e-4), (torch.bfloat16, 0.05)])
def test_the_pipeline_reads_the_features_the_size_model_was_fitted_on(tiny_model, dtype, tolerance):
    # The pipeline reads features through the run's network (batch norm fused,
    # channels_last, maybe bfloat16); the fit reads them through the plain
    # float32 one: they must agree, bfloat16 to its rounding.
    from napari_unet.segmenting.segmentation import PreparedNets

    tiny_model.net.eval()
    plane = np.random.default_rng(2).random((1, 300, 280), dtype=np.float32)
    nets = PreparedNets(torch.device("cpu"), dtype)
    np.testing.assert_allclose(
        size_features(nets(tiny_model), plane), size_features(tiny_model.net, plane), atol=tolerance
    )


def test_first_pass_features_are_the_whole_plane_means_and_the_coarse_brightest_squares(tiny_model):
    from napari_unet.models.tiling import encoder_means

    net = tiny_model.net.eval()
    plane = np.random.default_rng(5).random((1, 300, 420), dtype=np.float32)
    features = size_features(net, plane, "first_pass")
    half = feature_count(net) // 2
    np.testing.assert_allclose(
        features[:half], np.log(np.abs(encoder_means(net, plane)) + 1e-3), atol=1e-6
    )
    np.testing.assert_array_equal(features[half:], size_features(net, plane, "brightest")[half:])
    given = np.full(half, 0.5)
    assert size_features(net, plane, "first_pass", given)[:half] == pytest.approx(np.log(0.501))


def test_the_pipeline_hands_the_first_pass_means_to_the_size_model(tiny_model, monkeypatch):
    # No second pass over the plane: the size model reads what the first pass
    # gathered, and that equals a pass of its own.
    import napari_unet.models.size_model as size_model
    from napari_unet.models.sizes import SizeRule
    from napari_unet.models.tiling import encoder_means

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the size model ran a pass of its own")

    seen = {}
    read = size_model.size_features

    def spy(net, chw, crops="corners", first_pass=None):
        seen["gathered"], seen["own pass"] = first_pass, encoder_means(net, chw)
        return read(net, chw, crops, first_pass)

    monkeypatch.setattr(size_model, "encoder_means", no_second_pass)
    monkeypatch.setattr(size_model, "size_features", spy)
    image, _ = synthetic_nuclei((160, 160), n_nuclei=12, seed=3)
    sized = replace(constant_size_model(tiny_model, 333 * 9), crops="first_pass")
    rule = SizeRule(object_area=333, upscale_to_area=0, downscale_from_area=0)
    model = replace(tiny_model, size_rule=rule, size_model=sized)
    assert _segmented_scale(model, image) == pytest.approx(1 / 3, abs=1e-3)
    np.testing.assert_allclose(seen["gathered"], seen["own pass"], rtol=1e-4, atol=1e-6)
