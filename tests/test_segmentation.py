import numpy as np
import pytest

from napari_unet.errors import UNetError
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.labels.metrics import matching
from napari_unet.models.modelfile import load_model
from napari_unet.progress import run_to_end
from napari_unet.segmenting.relabel import labels_from_probabilities
from napari_unet.segmenting.segmentation import iter_segment, segment


def test_shapes_for_grey_rgb_and_stacks(tiny_model):
    grey = np.random.default_rng(0).integers(0, 4000, (40, 50), dtype=np.uint16)
    assert segment(grey, tiny_model).shape == (40, 50)
    rgb = np.random.default_rng(1).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    assert segment(rgb, tiny_model).shape == (40, 50)
    stack = np.stack([grey, grey[::-1]])
    labels, probs = segment(stack, tiny_model, return_probabilities=True)
    assert labels.shape == (2, 40, 50) and probs.shape == (3, 2, 40, 50)
    channels_first = np.moveaxis(rgb, -1, 0)
    assert segment(channels_first, tiny_model, axes="CYX").shape == (40, 50)
    tzyx = np.zeros((2, 3, 20, 24), np.uint16)
    assert segment(tzyx, tiny_model).shape == (2, 3, 20, 24)


def test_z_planes_are_stitched_into_3d_objects_by_default(default_model_available):
    image, _ = synthetic_nuclei((96, 96), n_nuclei=6, seed=2)
    stack = np.stack([image, image, image])
    stitched = segment(stack, axes="ZYX")
    assert stitched[0].max() > 0
    assert np.array_equal(stitched[0], stitched[1]) and np.array_equal(stitched[1], stitched[2])
    apart = segment(stack, axes="ZYX", stitch=False)
    a, b = set(np.unique(apart[0])) - {0}, set(np.unique(apart[1])) - {0}
    assert a and b and not (a & b)
    # The same partition either way: stitching only renames.
    assert matching(apart[2], stitched[2], 0.99).tp == len(a)


def test_time_points_keep_their_ids_only_when_tracked(default_model_available):
    image, _ = synthetic_nuclei((96, 96), n_nuclei=6, seed=2)
    frames = np.stack([image, np.roll(image, 2, axis=1)])
    apart = segment(frames, axes="TYX")
    assert not (set(np.unique(apart[0])) - {0}) & set(np.unique(apart[1]))
    events = []
    tracked, probs = run_to_end(
        iter_segment(frames, axes="TYX", track=True, return_probabilities=True), events.append
    )
    assert set(np.unique(tracked[0])) == set(np.unique(tracked[1]))
    # Re-labelling the cached probabilities (at each plane's size, as segmented) links the same way.
    scales = [e.info["scale"] for e in events if e.stage == "segment"]
    again = labels_from_probabilities(
        probs, load_model("default"), axes="TYX", track=True, scales=scales
    )
    assert np.array_equal(again, tracked)


@pytest.mark.parametrize("threshold", [0, 1.5, -0.2])
def test_a_bad_stitch_threshold_fails_before_the_work(tiny_model, threshold):
    with pytest.raises(UNetError, match="threshold"):
        segment(np.zeros((2, 30, 30)), tiny_model, stitch_threshold=threshold)


def test_progress_events_per_plane(tiny_model):
    stack = np.zeros((3, 30, 30), np.float32)
    events = []
    gen = iter_segment(stack, tiny_model)
    while True:
        try:
            events.append(next(gen))
        except StopIteration:
            break
    planes = [e for e in events if e.stage == "segment"]
    assert [e.step for e in planes] == [1, 2, 3] and planes[0].total == 3


def test_user_errors(tiny_model):
    with pytest.raises(UNetError, match="at least 2"):
        segment(np.zeros(10), tiny_model)
    with pytest.raises(UNetError, match="empty"):
        segment(np.zeros((0, 10)), tiny_model)
    with pytest.raises(UNetError, match="NaN"):
        segment(np.full((10, 10), np.nan), tiny_model)
    with pytest.raises(UNetError, match="channels"):
        segment(np.zeros((5, 30, 30)), tiny_model, axes="CYX")
    with pytest.raises(UNetError, match="axes"):
        segment(np.zeros((30, 30)), tiny_model, axes="ZYX")


def test_relabel_from_cached_probabilities_matches_segment(tiny_model):
    image = np.random.default_rng(3).random((40, 40)).astype(np.float32)
    labels, probs = segment(image, tiny_model, return_probabilities=True)
    assert np.array_equal(labels_from_probabilities(probs, tiny_model), labels)


def _disk_probabilities(shape, centres, radius):
    """3-class probabilities (background, interior, boundary) of disks: interior 1 inside."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inside = np.zeros(shape, bool)
    for cy, cx in centres:
        inside |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    probs = np.zeros((3, *shape), np.float32)
    probs[0], probs[1] = ~inside, inside
    return probs


def test_instances_are_judged_at_the_size_the_network_saw():
    from napari_unet.labels.instances import InstanceParams, instances_from_probabilities
    from napari_unet.segmenting.relabel import instances_at_scale

    # Two nuclei of about 28 px on the plane's grid: under the 40 px smallest
    # object at the training size, unless the plane was enlarged 2x to be segmented.
    probs = _disk_probabilities((40, 40), [(10, 10), (28, 26)], 3)
    params = InstanceParams(min_size=40)
    assert np.array_equal(
        instances_at_scale(probs, 1.0, params, "3class"),
        instances_from_probabilities(probs, params, "3class"),
    )
    assert instances_at_scale(probs, 1.0, params, "3class").max() == 0
    enlarged = instances_at_scale(probs, 2.0, params, "3class")
    assert enlarged.shape == (40, 40)
    assert sorted(np.unique(enlarged)) == [0, 1, 2]
    assert enlarged[10, 10] != enlarged[28, 26]


@pytest.mark.parametrize("factor", [0.37, 0.5, 1.5, 2.0, 3.0])
def test_labels_at_any_scale_keep_the_plane_grid_and_number_objects_1_to_n(factor):
    from napari_unet.labels.instances import InstanceParams
    from napari_unet.segmenting.relabel import instances_at_scale

    rng = np.random.default_rng(int(factor * 100))
    centres = rng.integers(4, 60, (12, 2))
    probs = _disk_probabilities((64, 61), centres, 4)
    labels = instances_at_scale(probs, factor, InstanceParams(min_size=0), "3class")
    assert labels.shape == (64, 61)
    ids = np.unique(labels)
    assert list(ids) == list(range(int(ids.max()) + 1))
    assert labels.max() > 0


def test_relabel_matches_segment_on_resized_planes(tiny_model):
    # A diameter half the training size enlarges each plane 2x: re-labelling the
    # cached probabilities must label them at that size too, as segment did.
    from dataclasses import replace

    from napari_unet.labels.instances import InstanceParams
    from napari_unet.models.sizes import SizeRule

    model = replace(
        tiny_model, postprocessing=InstanceParams(min_size=12), size_rule=SizeRule(object_area=333)
    )
    image, _ = synthetic_nuclei((72, 72), n_nuclei=8, seed=4)
    stack = np.stack([image, image[::-1]])
    diameter = 2 * np.sqrt(333 / 4 / np.pi)
    events = []
    labels, probs = run_to_end(
        iter_segment(
            stack, model, axes="ZYX", stitch=False, diameter=diameter, return_probabilities=True
        ),
        events.append,
    )
    scales = [e.info["scale"] for e in events if e.stage == "segment"]
    assert scales == pytest.approx([2.0, 2.0])
    assert labels.max() > 0
    again = labels_from_probabilities(probs, model, axes="ZYX", stitch=False, scales=scales)
    assert np.array_equal(again, labels)
    # The widget keeps the resized probabilities between slider moves: the same labels.
    memo = {}
    for _ in range(2):
        kept = labels_from_probabilities(
            probs, model, axes="ZYX", stitch=False, scales=scales, memo=memo
        )
        assert np.array_equal(kept, labels)
    assert len(memo) == 2  # one resized plane each
    # Labelled on the plane's own grid instead, the same probabilities give other labels.
    assert not np.array_equal(
        labels_from_probabilities(probs, model, axes="ZYX", stitch=False), labels
    )
    with pytest.raises(UNetError, match="2 planes"):
        labels_from_probabilities(probs, model, scales=[2.0])


@pytest.mark.parametrize("factor", [0.0, -2.0, float("nan"), float("inf")])
def test_a_bad_resize_factor_for_relabelling_is_refused(tiny_model, factor):
    probs = _disk_probabilities((20, 20), [(10, 10)], 4)
    with pytest.raises(UNetError, match="positive number"):
        labels_from_probabilities(probs, tiny_model, scales=[factor])


def test_default_model_segments_synthetic_nuclei(default_model_available):
    image, truth = synthetic_nuclei((256, 256), seed=5)
    labels = segment(image)
    assert matching(truth, labels, 0.5).ap > 0.7


def test_tiny_objects_are_segmented_again_enlarged(default_model_available):
    from dataclasses import replace

    from napari_unet.models.modelfile import load_model

    model = load_model("default")
    image, truth = synthetic_nuclei((128, 128), n_nuclei=30, radius=(2.5, 4), seed=3)

    def run(area):
        events = []
        rule = replace(model.size_rule, upscale_to_area=area)
        return run_to_end(iter_segment(image, model, size_rule=rule), events.append), events

    plain, plain_events = run(0)
    enlarged, enlarged_events = run(200)
    assert not any("rescaled" in e.info for e in plain_events)
    factors = {e.info.get("rescaled") for e in enlarged_events if e.stage == "predict"} - {None}
    assert len(factors) == 1 and factors.pop() >= 2.0  # 3-5 px radii: at least doubled
    assert enlarged.shape == plain.shape == image.shape
    assert matching(truth, enlarged, 0.5).tp > 0


def test_brightfield_twin_gets_the_same_labels_and_a_note(tiny_model):
    fluo, truth = synthetic_nuclei((96, 96), n_nuclei=8, seed=4)
    bright = (int(fluo.max()) - fluo.astype(np.int64)).astype(np.uint16)
    events = []
    labels_bright = run_to_end(iter_segment(bright, tiny_model), events.append)
    np.testing.assert_array_equal(labels_bright, segment(fluo, tiny_model))
    last = [e for e in events if e.stage == "segment"][-1]
    assert last.info["image_type"] == "brightfield"
    assert any("brightfield" in n for n in last.info["notes"])


def test_forcing_the_wrong_image_type_warns(tiny_model):
    from napari_unet.segmenting.notes import InputWarning

    fluo, _ = synthetic_nuclei((96, 96), n_nuclei=8, seed=4)
    bright = (int(fluo.max()) - fluo.astype(np.int64)).astype(np.uint16)
    with pytest.warns(InputWarning, match="looks like brightfield"):
        segment(bright, tiny_model, image_type="fluorescence")
    with pytest.warns(InputWarning, match="looks like fluorescence"):
        segment(fluo, tiny_model, image_type="brightfield")
    with pytest.raises(UNetError, match="image type"):
        segment(fluo, tiny_model, image_type="phase")


def test_brightfield_planes_go_to_the_models_companion(tiny_model, tmp_path, monkeypatch):
    import torch

    import napari_unet.models.modelfile as mf

    companion = mf.load_model(mf.save_model(tiny_model, tmp_path / "c.safetensors"))
    with torch.no_grad():
        companion.net.head.bias[0] -= 5.0  # a different network: less background
    companion.name = "brightfield"
    path = mf.save_model(companion, tmp_path / "brightfield.safetensors")
    monkeypatch.setitem(mf.BUILTIN_MODELS, "brightfield", path.name)
    monkeypatch.setattr(mf, "builtin_model_path", lambda n: path if n == "brightfield" else None)
    tiny_model.companions = {"brightfield": "brightfield"}
    fluo, _ = synthetic_nuclei((96, 96), n_nuclei=8, seed=4)
    bright = (int(fluo.max()) - fluo.astype(np.int64)).astype(np.uint16)
    events = []
    with_companion = run_to_end(iter_segment(bright, tiny_model), events.append)
    note = [e for e in events if e.stage == "segment"][-1].info["notes"]
    assert any("built-in 'brightfield'" in n for n in note)
    np.testing.assert_array_equal(with_companion, segment(fluo, mf.get_model(str(path))))
    # Fluorescence planes stay with the model itself.


def test_no_size_warning_once_the_plane_was_resized_to_the_training_size(default_model_available):
    import warnings

    from napari_unet.segmenting.notes import InputWarning

    image, _ = synthetic_nuclei((900, 900), n_nuclei=6, radius=(80, 90), seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = segment(image, diameter=170)  # shrunk 4x: about the training size
    assert labels.max() > 0
    assert not [w for w in caught if issubclass(w.category, InputWarning)], [
        str(w.message) for w in caught
    ]


def test_a_grey_plane_through_a_colour_model_is_segmented_as_its_repeated_channels():
    import torch

    from napari_unet.images.normalize import normalize
    from napari_unet.models.modelfile import new_model

    torch.manual_seed(0)
    model = new_model(depth=2, base_channels=4, in_channels=3, scheme="3class", dropout=0.0)
    image, _ = synthetic_nuclei((96, 96), n_nuclei=8, seed=2)
    folded = segment(image, model, precision="float32", image_type="fluorescence")
    repeated = normalize(np.repeat(image[None], 3, axis=0).astype(np.float32))
    given = segment(repeated, model, axes="CYX", precision="float32", normalize_input=False)
    np.testing.assert_array_equal(folded, given)


@pytest.mark.parametrize(
    "recorded, warned",
    [
        (["brightfield"], True),
        (["brightfield", "fluorescence"], False),
        (None, False),  # older files: nothing recorded, nothing claimed
        ("brightfield", False),  # not a list: ignored, not split into letters
    ],
)
def test_a_plane_of_a_type_the_model_never_saw_draws_one_warning(tiny_model, recorded, warned):
    from napari_unet.progress import run_to_end
    from napari_unet.segmenting.segmentation import iter_segment

    if recorded is not None:
        tiny_model.training = {"image_types": recorded}
    fluo, _ = synthetic_nuclei((96, 96), n_nuclei=8, seed=4)
    events = []
    run_to_end(iter_segment(fluo, tiny_model), events.append)
    notes = [n for e in events if e.stage == "segment" for n in e.info.get("notes", [])]
    hits = [n for n in notes if "trained on brightfield images only" in n]
    assert len(hits) == (1 if warned else 0), notes
    if warned:
        assert "'default'" in hits[0] and "fluorescence" in hits[0]


def _blobs(shape, n, side):
    """A label image of ``n`` square objects of ``side`` pixels."""
    labels = np.zeros(shape, np.int32)
    for k in range(n):
        y, x = divmod(k, shape[1] // (side + 2))
        labels[y * (side + 2) : y * (side + 2) + side, x * (side + 2) : x * (side + 2) + side] = (
            k + 1
        )
    return labels


@pytest.mark.parametrize(
    "first_side, coarse_objects, coarse_side, look_from, expected",
    [
        (10, 8, 20, 1200.0, "shrink"),  # tiny fragments; whole and huge at a third
        (40, 8, 20, 1200.0, "shrink"),  # normal-looking fragments (1600 px >= 1200)
        (20, 8, 20, 1200.0, None),  # sizes as trained (400 px): no look at all
        (10, 3, 20, 1200.0, None),  # too few objects at a third to trust
        (10, 8, 10, 1200.0, None),  # small at a third too: tiny nuclei (clumped there)
        (10, 8, 20, 0.0, None),  # the model does not look
    ],
)
def test_a_coarse_look_shrinks_planes_whose_nuclei_came_apart(
    monkeypatch, first_side, coarse_objects, coarse_side, look_from, expected
):
    import napari_unet.segmenting.segmentation as seg
    from napari_unet.labels.instances import InstanceParams
    from napari_unet.models.sizes import SizeRule, median_object_area, rescale_factor
    from napari_unet.progress import run_to_end

    looked = []

    def fake_predict(net, chw, info, tiling):
        looked.append(chw.shape)
        return np.zeros((3, *chw.shape[1:]), np.float32)
        yield  # a generator, as the real one

    monkeypatch.setattr(seg, "_predict_with_progress", fake_predict)
    monkeypatch.setattr(
        seg,
        "instances_from_probabilities",
        lambda p, params, scheme: _blobs(p.shape[1:], coarse_objects, coarse_side),
    )
    rule = SizeRule(
        upscale_to_area=200,
        downscale_from_area=2000,
        object_area=333,
        coarse_look_from_area=look_from,
    )
    chw = np.zeros((1, 300, 300), np.float32)
    first = _blobs((300, 300), 20, first_side)
    first_factor = rescale_factor(first, rule)
    area = median_object_area(first)
    factor = run_to_end(
        seg._coarse_look_factor(
            None, chw, area, first_factor, InstanceParams(), rule, "3class", {}, {}
        )
    )
    if expected is None:
        assert factor is None
    else:
        estimate = coarse_side**2 * 9  # a third of the size: 9x the area on the plane
        assert factor == pytest.approx(np.sqrt(333 / estimate), rel=1e-3)
        assert looked == [(1, 100, 100)]


def test_a_dic_like_image_given_to_a_nuclei_model_is_said_to_be_unlike_it(tiny_model):
    from dataclasses import replace

    from scipy import ndimage as ndi

    from napari_unet.models.sizes import TrainedObjects
    from napari_unet.progress import Stage
    from napari_unet.segmenting.segmentation import iter_segment

    _, labels = synthetic_nuclei((128, 128), seed=3)
    relief = ndi.sobel(ndi.gaussian_filter((labels > 0).astype(np.float32), 2), axis=1)
    dic = 0.5 + relief + 0.05 * np.random.default_rng(0).standard_normal(relief.shape)

    def notes(model):
        out = []
        run_to_end(
            iter_segment(dic.astype(np.float32), model),
            lambda e: out.extend(e.info["notes"]) if e.stage == Stage.SEGMENT else None,
        )
        return out

    # A nuclei model that finds next to nothing on it: the warning names what to do.
    blind = replace(
        tiny_model, postprocessing=replace(tiny_model.postprocessing, foreground_threshold=0.95)
    )
    said = notes(blind)
    assert any("DIC or phase contrast" in n and n.startswith("warning:") for n in said)
    cells = replace(blind, objects=TrainedObjects("cells", 60.0, 0.6))
    assert not any(n.startswith("warning:") and "DIC" in n for n in notes(cells))
    # One that finds plenty (dense stained nuclei can look unpolarised too): no warning.
    keen = replace(
        tiny_model,
        postprocessing=replace(tiny_model.postprocessing, foreground_threshold=0.05, min_size=0),
    )
    assert not any(n.startswith("warning:") and "DIC" in n for n in notes(keen))


@pytest.mark.parametrize(
    "image_shape, axes, channels, message",
    [
        ((2, 32, 32), "CYX", (0, 0), "must differ"),
        ((2, 32, 32), "CYX", (0, 1, 1), "one or two channels"),
        ((2, 32, 32), "CYX", (True,), "does not exist"),
        ((2, 32, 32), "CYX", (2,), "does not exist"),
        ((32, 32), None, (0,), "no channel axis"),
        ((3, 32, 32), "ZYX", (0, 1), "no channel axis"),
    ],
)
def test_bad_channels_are_one_clear_error_before_any_work(
    tiny_model, image_shape, axes, channels, message
):
    with pytest.raises(UNetError, match=message):
        segment(np.zeros(image_shape, np.float32), tiny_model, axes=axes, channels=channels)


def test_named_channels_read_a_short_first_axis_as_channels_not_z(tiny_model):
    image = np.random.default_rng(0).random((2, 48, 48)).astype(np.float32)
    assert segment(image, tiny_model).shape == (2, 48, 48)  # unnamed: a Z stack
    assert segment(image, tiny_model, channels=(1,)).shape == (48, 48)


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (7, 200), (2, 7, 64)])
def test_planes_too_small_to_hold_an_object_are_a_clear_error(tiny_model, shape):
    from napari_unet.segmenting.segmentation import MIN_PLANE_SIDE

    with pytest.raises(UNetError, match="too small to segment") as info:
        segment(np.ones(shape, np.float32), tiny_model)
    assert f"at least {MIN_PLANE_SIDE} pixels" in str(info.value)


def test_note_collector_keeps_segment_notes_in_order_once():
    from napari_unet.progress import Progress, Stage
    from napari_unet.segmenting.notes import note_collector

    notes: list[str] = []
    collect = note_collector(notes)
    collect(Progress(Stage.SEGMENT, 1, 2, {"notes": ["read as fluorescence", "warning: x"]}))
    collect(Progress(Stage.PREDICT, 1, 2, {"notes": ["not a plane's note"]}))
    collect(Progress(Stage.SEGMENT, 2, 2, {"notes": ["warning: x", "second"]}))
    assert notes == ["read as fluorescence", "warning: x", "second"]
