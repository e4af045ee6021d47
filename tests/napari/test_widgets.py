import re
import time

import numpy as np
import tifffile

from napari_unet._napari.annotate_widget import AnnotateWidget
from napari_unet._napari.model_registry import registry
from napari_unet._napari.segment_widget import SegmentWidget
from napari_unet._napari.train_widget import TrainWidget
from napari_unet._napari.weight_map_widget import weight_map_widget
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.models.modelfile import load_model

WIDGETS = ["Segment", "Annotate", "Train / fine-tune", "Show weight map"]


def true_centres(truth):
    """Where a person clicks each true object: its innermost pixel, as (y, x) rows."""
    from scipy import ndimage as ndi

    ids = np.unique(truth)[1:]
    return np.array(ndi.maximum_position(ndi.distance_transform_edt(truth > 0), truth, ids), float)


def wait_idle(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: not widget.task.busy, timeout=timeout)


def segment_with_tiny(viewer, qtbot, scope: str) -> SegmentWidget:
    """Run Segment with the untrained tiny model, thresholds low enough that it labels something."""
    seg = SegmentWidget(viewer)
    seg.model_combo.setCurrentText("tiny")
    seg.scope_combo.setCurrentText(scope)
    seg.foreground_slider.setValue(0.05)
    seg.min_size_slider.setValue(0)
    seg.run()
    wait_idle(qtbot, seg)
    return seg


def test_every_widget_opens_through_the_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    for name in WIDGETS:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
        assert widget is not None and dock is not None


def test_sample_data_loads_image_and_ground_truth(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "synthetic-nuclei")
    assert [layer.name for layer in viewer.layers] == [
        "synthetic nuclei",
        "synthetic nuclei ground truth",
    ]
    assert viewer.layers["synthetic nuclei ground truth"].data.max() > 10


def test_segment_relabel_and_correct(make_napari_viewer, qtbot, registered_tiny, errors):
    viewer = make_napari_viewer()
    image, _ = synthetic_nuclei((96, 96), n_nuclei=6, seed=0)
    viewer.add_image(image, name="cells")
    seg = SegmentWidget(viewer)
    seg.model_combo.setCurrentText("tiny")
    seg.probabilities_check.setChecked(True)
    seg.run()
    wait_idle(qtbot, seg)
    labels = viewer.layers["cells labels"]
    assert labels.data.shape == (96, 96)
    assert "cells interior probability" in viewer.layers
    cached = seg.cached_probabilities
    # Changing a threshold re-labels from the cached probabilities, without new inference.
    seg.foreground_slider.setValue(0.05)
    seg.min_size_slider.setValue(0)
    qtbot.waitUntil(lambda: seg.idle, timeout=30_000)
    qtbot.wait(300)
    wait_idle(qtbot, seg)
    assert seg.cached_probabilities is cached
    # Re-running updates the same layer in place.
    seg.run()
    wait_idle(qtbot, seg)
    assert [layer.name for layer in viewer.layers].count("cells labels") == 1
    assert not errors

    ann = AnnotateWidget(viewer)
    ann.image_combo.set_layer(viewer.layers["cells"])
    ann.prediction_combo.set_layer(labels)
    layer = ann.annotation_from_prediction()
    assert layer.name == "cells annotation"
    layer.paint((10, 10), 77, refresh=True)  # a brush stroke, as a user would paint
    assert layer.data[10, 10] == 77
    ann.merge_edit.setText("77")
    ann.merge()
    assert errors and "at least two" in errors[-1]


def test_relabel_redraws_the_labels_once(make_napari_viewer, qtbot, registered_tiny):
    # Each redraw of a 2048² labels layer stalls the event loop (about 12 ms
    # in software OpenGL): a re-label must not pay for two.
    viewer = make_napari_viewer()
    image, _ = synthetic_nuclei((96, 96), n_nuclei=6, seed=0)
    viewer.add_image(image, name="cells")
    seg = SegmentWidget(viewer)
    seg.model_combo.setCurrentText("tiny")
    seg.run()
    wait_idle(qtbot, seg)
    labels = viewer.layers["cells labels"]
    redraws = []
    labels.events.set_data.connect(lambda event: redraws.append(event))
    written = seg.results_written
    seg.relabel()
    qtbot.waitUntil(lambda: seg.results_written > written and seg.idle, timeout=30_000)
    assert len(redraws) == 1


def test_relabel_of_a_resized_plane_gives_what_segment_gave(
    make_napari_viewer, qtbot, tiny_model, registered_tiny
):
    # A diameter half the training size: the plane is segmented enlarged 2x, and
    # re-labelling (sliders unchanged) must label it at that size again.
    from dataclasses import replace

    tiny_model.size_rule = replace(tiny_model.size_rule, object_area=333)
    viewer = make_napari_viewer()
    image, _ = synthetic_nuclei((80, 80), n_nuclei=8, seed=4)
    viewer.add_image(image, name="cells")
    seg = SegmentWidget(viewer)
    seg.model_combo.setCurrentText("tiny")
    seg.diameter_spin.setValue(10)
    seg.run()
    wait_idle(qtbot, seg)
    segmented = np.array(viewer.layers["cells labels"].data, copy=True)
    assert segmented.max() > 0
    written = seg.results_written
    seg.relabel()
    qtbot.waitUntil(lambda: seg.results_written > written and seg.idle, timeout=30_000)
    np.testing.assert_array_equal(viewer.layers["cells labels"].data, segmented)


def test_segment_without_image_is_a_notification(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    SegmentWidget(viewer).run()
    assert errors == ["add or open an image layer first"]


def test_current_plane_only(make_napari_viewer, qtbot, registered_tiny):
    viewer = make_napari_viewer()
    stack = np.stack([synthetic_nuclei((64, 64), n_nuclei=4, seed=s)[0] for s in range(3)])
    viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(0, 1)
    segment_with_tiny(viewer, qtbot, "current plane")
    data = viewer.layers["stack labels"].data
    assert data.shape == (3, 64, 64)
    assert data[1].any() and not data[0].any() and not data[2].any()


def test_annotation_helpers_split_and_region(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    image, labels = synthetic_nuclei((80, 80), n_nuclei=3, seed=1, touching=0)
    viewer.add_image(image, name="img")
    ann = AnnotateWidget(viewer)
    layer = ann.new_annotation()
    assert layer.data.shape == (80, 80) and not layer.data.any()
    layer.data = np.zeros((80, 80), np.uint32)
    layer.data[20:40, 10:60] = 5
    ann.labels_combo.set_layer(layer)
    ann.split()  # first click creates the points layer and explains
    assert errors and "points" in errors[-1]
    points = viewer.layers["split points"]
    points.add([[30, 15]])
    points.add([[30, 55]])
    ann.split()
    assert len(np.unique(layer.data)) == 3
    region = ann.add_region_layer()
    assert region.name == "img annotated region"


def test_fine_tune_two_steps_save_and_reload(make_napari_viewer, qtbot, registered_tiny, tmp_path):
    viewer = make_napari_viewer()
    image, labels = synthetic_nuclei((96, 96), n_nuclei=6, seed=3)
    viewer.add_image(image, name="img")
    viewer.add_labels(labels, name="truth")
    trainer = TrainWidget(viewer)
    trainer.image_combo.set_layer(viewer.layers["img"])
    trainer.labels_combo.set_layer(viewer.layers["truth"])
    trainer.add_pair()
    trainer.add_pair(role="validation")
    # From scratch: two steps of a fine-tune rarely beat the start model, and a run
    # that keeps it makes no new model (test_a_fine_tune_that_kept_the_start_model…).
    trainer.start_combo.setCurrentText("scratch")
    trainer.epochs_spin.setValue(1)
    trainer.batch_spin.setValue(2)
    trainer.patches_spin.setValue(4)
    trainer.minutes_spin.setValue(0)
    trainer.start()
    wait_idle(qtbot, trainer)
    assert trainer.trained is not None and trainer.trained.training["steps"] == 2
    assert len(trainer.plot.loss) == 2 and len(trainer.plot.score) == 1
    # The new model is selectable in Segment at once.
    seg = SegmentWidget(viewer)
    names = [seg.model_combo.itemText(i) for i in range(seg.model_combo.count())]
    assert trainer.trained.name in names
    path = trainer.save(tmp_path / "mine.safetensors")
    assert load_model(path).training["steps"] == 2
    # Opening the file through napari registers it again (reader contribution).
    viewer.open(str(path), plugin="napari-unet")
    assert "mine" in registry().names()


def test_stop_midway_keeps_a_model(make_napari_viewer, qtbot, registered_tiny):
    viewer = make_napari_viewer()
    image, labels = synthetic_nuclei((96, 96), n_nuclei=6, seed=4)
    viewer.add_image(image, name="img")
    viewer.add_labels(labels, name="truth")
    trainer = TrainWidget(viewer)
    trainer.add_pair(viewer.layers["img"], viewer.layers["truth"])
    trainer.start_combo.setCurrentText("scratch")  # a stop keeps the best so far
    trainer.epochs_spin.setValue(1000)
    trainer.batch_spin.setValue(2)
    trainer.patches_spin.setValue(4)
    trainer.minutes_spin.setValue(0)
    trainer.start()
    qtbot.waitUntil(lambda: len(trainer.plot.loss) >= 3, timeout=60_000)
    trainer.stop()
    wait_idle(qtbot, trainer)
    assert trainer.trained.training["stopped_by"] == "stop"
    assert trainer.trained.training["steps"] < 1000


def test_weight_map_and_labels_writer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    _, labels = synthetic_nuclei((64, 64), n_nuclei=5, seed=2)
    layer = viewer.add_labels(labels, name="cells", scale=(2.0, 2.0))
    widget = weight_map_widget()
    viewer.window.add_dock_widget(widget)
    assert widget.labels_layer.value is layer  # the choice follows the viewer's layers
    widget()
    out = viewer.layers["cells weight map"]
    assert out.data.shape == (64, 64) and out.data.max() > 1
    assert tuple(out.scale) == (2.0, 2.0)
    with_border = float(out.data.max())
    widget.w0.value = 0.0  # pressing again updates the same layer, no duplicate
    widget()
    assert len(viewer.layers) == 2 and viewer.layers["cells weight map"] is out
    assert out.data.max() < with_border
    written = layer.save(str(tmp_path / "cells.tif"), plugin="napari-unet")
    assert np.array_equal(tifffile.imread(written[0]), labels)
    from napari_unet.images.io import read_image

    assert read_image(written[0]).pixel_size == {"Y": 2.0, "X": 2.0}  # the layer's scale
    as_zarr = layer.save(str(tmp_path / "cells.ome.zarr"), plugin="napari-unet")
    again = read_image(as_zarr[0])
    assert np.array_equal(np.asarray(again.data), labels) and again.pixel_size == {
        "Y": 2.0,
        "X": 2.0,
    }


def test_settings_persist_across_widgets(make_napari_viewer, registered_tiny):
    viewer = make_napari_viewer()
    first = SegmentWidget(viewer)
    first.tile_spin.setValue(256)
    first.scope_combo.setCurrentText("field of view")
    first.model_combo.setCurrentText("tiny")
    second = SegmentWidget(viewer)
    assert second.tile_spin.value() == 256
    assert second.scope_combo.currentText() == "whole image"  # per-image, not restored
    assert second.model_combo.currentText() == "tiny"


def test_field_of_view_only(make_napari_viewer, qtbot, registered_tiny):
    viewer = make_napari_viewer(show=True)
    image = np.random.default_rng(0).integers(0, 4000, (256, 256), dtype=np.uint16)
    layer = viewer.add_image(image, name="wide")
    viewer.scene.camera.zoom = 8 * viewer.scene.camera.zoom
    viewer.scene.camera.center = (64, 64)
    qtbot.waitUntil(lambda: np.asarray(layer.corner_pixels)[1, 0] < 200, timeout=10_000)
    segment_with_tiny(viewer, qtbot, "field of view")
    data = viewer.layers["wide labels"].data
    (y0, x0), (y1, x1) = np.asarray(layer.corner_pixels)
    assert data[y0 : y1 + 1, x0 : x1 + 1].any()
    outside = data.copy()
    outside[y0 : y1 + 1, x0 : x1 + 1] = 0
    assert not outside.any()


def test_post_processing_sliders_carry_every_model_parameter(make_napari_viewer, tiny_model):
    """The GUI must label exactly as the CLI: every stored parameter survives the sliders."""
    from napari_unet._napari.model_registry import registry
    from napari_unet.labels.instances import InstanceParams
    from napari_unet.models.sizes import SizeRule

    tiny_model.name = "tuned"
    tiny_model.postprocessing = InstanceParams(
        foreground_threshold=0.6,
        seed_threshold=0.3,
        seed_dynamic=0.2,
        seed_h=1.5,
        min_size=24,
    )
    tiny_model.size_rule = SizeRule(
        upscale_to_area=450.0,
        upscale_from_area=120.0,
        downscale_from_area=3000.0,
        object_area=400.0,
        coarse_look_from_area=1200.0,
    )
    registry().add("tuned", tiny_model)
    seg = SegmentWidget(make_napari_viewer())
    seg.model_combo.setCurrentText("tuned")
    seg.reset_params()
    assert seg.params() == tiny_model.postprocessing
    assert seg.enlarge_slider.value() == 120  # "enlarge below": the trigger
    assert seg.enlarge_below() is None and seg.folder_options().enlarge_below is None

    # The size rule's slider is not a post-processing one: it changes no threshold.
    seg.enlarge_slider.setValue(200)
    assert seg.params() == tiny_model.postprocessing
    rule = seg.folder_options().rule_for(tiny_model.size_rule)
    assert (rule.upscale_from_area, rule.upscale_to_area) == (200, 450)
    seg.enlarge_slider.setValue(600)  # a trigger above the target: enlarged to the trigger
    rule = seg.folder_options().rule_for(tiny_model.size_rule)
    assert (rule.upscale_from_area, rule.upscale_to_area) == (600, 600)
    seg.enlarge_slider.setValue(0)
    assert seg.folder_options().rule_for(tiny_model.size_rule).enlarge_below == 0  # never


def test_brightfield_image_is_inverted_and_said_so(make_napari_viewer, qtbot, registered_tiny):
    viewer = make_napari_viewer()
    image, _ = synthetic_nuclei((96, 96), n_nuclei=6, seed=0)
    viewer.add_image(image, name="fluo")
    viewer.add_image((int(image.max()) - image.astype(np.int64)).astype(np.uint16), name="bf")
    seg = SegmentWidget(viewer)
    seg.model_combo.setCurrentText("tiny")
    seg.foreground_slider.setValue(0.05)
    seg.min_size_slider.setValue(0)
    for name in ("fluo", "bf"):
        seg.image_combo.set_layer(viewer.layers[name])
        seg.run()
        wait_idle(qtbot, seg)
    assert "brightfield" in seg.status.text()
    np.testing.assert_array_equal(
        viewer.layers["bf labels"].data, viewer.layers["fluo labels"].data
    )


def test_forced_image_type_that_does_not_fit_warns(
    make_napari_viewer, qtbot, registered_tiny, monkeypatch
):
    import napari_unet._napari.segment_widget as sw

    warnings = []
    monkeypatch.setattr(sw, "show_warning", warnings.append)
    viewer = make_napari_viewer()
    image, _ = synthetic_nuclei((96, 96), n_nuclei=6, seed=0)
    viewer.add_image((int(image.max()) - image.astype(np.int64)).astype(np.uint16), name="bf")
    seg = SegmentWidget(viewer)
    seg.model_combo.setCurrentText("tiny")
    seg.image_type_combo.setCurrentText("fluorescence")
    seg.run()
    wait_idle(qtbot, seg)
    assert len(warnings) == 1 and "looks like brightfield" in warnings[0]


def _trainer_with_a_pair(viewer, seed=4):
    image, labels = synthetic_nuclei((96, 96), n_nuclei=6, seed=seed)
    viewer.add_image(image, name="img")
    viewer.add_labels(labels, name="truth")
    _, trainer = viewer.window.add_plugin_dock_widget("napari-unet", "Train / fine-tune")
    trainer.add_pair(viewer.layers["img"], viewer.layers["truth"])
    trainer.start_combo.setCurrentText("tiny")
    return trainer


def test_stop_before_the_first_step_is_a_stop_not_an_error(
    make_napari_viewer, qtbot, registered_tiny, errors
):
    viewer = make_napari_viewer()
    trainer = _trainer_with_a_pair(viewer)
    trainer.start()
    trainer.stop()  # at once: before any training step
    wait_idle(qtbot, trainer)
    assert trainer.trained is None
    assert errors == []  # no red notification: stopping is the user's own choice
    assert "stopped before training began; no model was made" in trainer.status.text()
    assert trainer.task.bar.format() == "stopped"
    assert trainer.start_button.isEnabled()


def test_a_fine_tune_that_kept_the_start_model_registers_nothing_and_offers_longer(
    make_napari_viewer, qtbot, registered_tiny, monkeypatch, errors
):
    from dataclasses import replace

    from napari_unet._napari import train_widget as module

    viewer = make_napari_viewer()
    _, seg = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    seg.model_combo.setCurrentText("tiny")
    trainer = _trainer_with_a_pair(viewer)
    trainer.minutes_spin.setValue(1.5)
    starts = []

    def no_better(train_set, val_set, init, config, **_):
        starts.append(config.minutes)
        summary = {
            "steps": 40,
            "time_s": 90.0,
            "stopped_by": "time",
            "kept_start_model": True,
            "validated_on": "held-out strips of the training images",
            "validation_nuclei": 9,
        }
        return replace(init, training=summary)
        yield  # a generator, as iter_train is

    monkeypatch.setattr(module, "iter_train", no_better)
    names_before = registry().names()
    trainer.start()
    wait_idle(qtbot, trainer)
    assert registry().names() == names_before  # no "…, fine-tuned" copy of the start model
    assert seg.model_combo.currentText() == "tiny"
    assert trainer.trained is None and not trainer.save_button.isEnabled()
    status = trainer.status.text()
    assert "did not beat 'tiny'" in status and "stays selected" in status
    assert status.count("start model") == 0  # said once, in its own words
    assert not trainer.train_longer_button.isHidden()
    trainer.train_longer_button.click()
    wait_idle(qtbot, trainer)
    assert starts == [1.5, 3.0]
    assert errors == []


def test_live_plot_right_axis_runs_from_0_to_1_and_the_legend_names_last_and_best():
    from napari_unet._napari.plot import LivePlot

    plot = LivePlot()
    for step, ap in ((0, 0.5), (10, 0.9), (20, 0.88)):
        plot.add_score(step, ap)
    assert plot.score_axis() == ("1.0", "0")
    assert plot.score_legend() == "AP@0.5 last 0.88, best 0.90"


def test_merge_is_one_undoable_and_redoable_step(make_napari_viewer):
    viewer = make_napari_viewer()
    labels = np.zeros((40, 40), np.uint32)
    labels[2:10, 2:10] = 1
    labels[20:30, 20:30] = 2
    image = viewer.add_image(np.zeros((40, 40), np.float32), name="img")
    layer = viewer.add_labels(labels.copy(), name="img annotation")
    # A brush stroke first, recorded by napari as usual.
    layer.paint((35, 35), 3)
    after_stroke = np.array(layer.data, copy=True)
    ann = AnnotateWidget(viewer)
    ann.image_combo.set_layer(image)
    ann.labels_combo.set_layer(layer)
    ann.merge_edit.setText("1, 2")
    ann.merge()
    assert set(np.unique(layer.data)) == {0, 1, 3}
    layer.undo()  # undoes the merge, keeps the stroke
    np.testing.assert_array_equal(layer.data, after_stroke)
    layer.redo()
    assert set(np.unique(layer.data)) == {0, 1, 3}


def test_relabel_never_overwrites_hand_edits(make_napari_viewer, qtbot, registered_tiny):
    viewer = make_napari_viewer()
    image, _ = synthetic_nuclei((96, 96), n_nuclei=6, seed=0)
    viewer.add_image(image, name="cells")
    seg = segment_with_tiny(viewer, qtbot, "whole image")
    labels = viewer.layers["cells labels"]
    labels.paint((50, 50), 99)  # a hand edit
    edited = np.array(labels.data, copy=True)
    seg.relabel()
    wait_idle(qtbot, seg)
    np.testing.assert_array_equal(labels.data, edited)
    assert "cells labels (2)" in viewer.layers
    assert "edited by hand" in seg.status.text()


def test_image_choice_follows_a_newly_opened_image(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 8)), name="first")
    seg = SegmentWidget(viewer)
    assert seg.image_combo.currentText() == "first"
    viewer.add_image(np.zeros((8, 8)), name="second")
    assert seg.image_combo.currentText() == "second"


def test_probability_maps_do_not_take_over_the_image_choice(
    make_napari_viewer, qtbot, registered_tiny
):
    viewer = make_napari_viewer()
    image, _ = synthetic_nuclei((64, 64), n_nuclei=4, seed=0)
    viewer.add_image(image, name="cells")
    seg = SegmentWidget(viewer)
    seg.model_combo.setCurrentText("tiny")
    seg.probabilities_check.setChecked(True)
    seg.run()
    wait_idle(qtbot, seg)
    assert "cells interior probability" in viewer.layers
    assert seg.image_combo.currentText() == "cells"
    names = [layer.name for layer in viewer.layers]
    assert names.index("cells interior probability") < names.index("cells labels")


def test_opening_a_model_twice_selects_it_once(make_napari_viewer, tiny_model, tmp_path):
    from napari_unet.models.modelfile import save_model

    path = save_model(tiny_model, tmp_path / "lab.safetensors")
    seg = SegmentWidget(make_napari_viewer())
    seg.add_model_file(str(path))
    seg.model_combo.setCurrentText("default")
    seg.add_model_file(str(path))
    assert registry().names().count("lab") == 1 and "lab (2)" not in registry().names()
    assert seg.model_combo.currentText() == "lab"


# The primary controls of each widget, by their stable object names (the contract).
PRIMARY = {
    "Segment": ("segment_button",),
    "Annotate": ("merge_button", "split_button"),
    "Train / fine-tune": ("train_start_button", "train_stop_button"),
    "Show weight map": (),  # magicgui's call button, found by its text
}
LAPTOP = (1366, 768)


def _primary_buttons(name, widget):
    from qtpy.QtWidgets import QPushButton, QWidget

    root = widget if isinstance(widget, QWidget) else widget.native
    if name == "Show weight map":
        return [b for b in root.findChildren(QPushButton) if b.text() == "Show weight map"]
    found = [root.findChild(QWidget, object_name) for object_name in PRIMARY[name]]
    assert all(found), (name, found)
    return found


def _wholly_in_view(control, window) -> bool:
    """Shown, and not cut by any scroll area, dock or the window's edge."""
    from qtpy.QtCore import QPoint, QRect

    if not control.isVisible():
        return False
    rect = QRect(control.mapTo(window, QPoint(0, 0)), control.size())
    seen = QRect(rect)
    parent = control.parentWidget()
    while parent is not None and parent is not window:
        seen = seen.intersected(QRect(parent.mapTo(window, QPoint(0, 0)), parent.size()))
        parent = parent.parentWidget()
    return seen == rect and window.rect().contains(rect)


def _settle(qtbot):
    qtbot.wait(150)


def _canvas_share(viewer) -> float:
    return viewer.window._qt_viewer.canvas.native.width() / viewer.window._qt_window.width()


def test_each_widget_docked_alone_shows_its_primary_actions_on_a_laptop(make_napari_viewer, qtbot):
    for name in WIDGETS:
        viewer = make_napari_viewer(show=True)
        window = viewer.window._qt_window
        window.resize(*LAPTOP)
        _, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
        _settle(qtbot)
        for button in _primary_buttons(name, widget):
            assert _wholly_in_view(button, window), (name, button.objectName() or button.text())
        assert _canvas_share(viewer) > 0.5, (name, _canvas_share(viewer))


def test_all_widgets_open_as_tabs_of_one_dock_and_keep_their_actions_in_view(
    make_napari_viewer, qtbot
):
    from qtpy.QtWidgets import QDockWidget

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(*LAPTOP)
    opened = {}
    for name in WIDGETS:
        opened[name] = viewer.window.add_plugin_dock_widget("napari-unet", name)
        _settle(qtbot)
    docks = [dock for dock, _ in opened.values()]
    # One group of tabs: each dock is tabbed with the three others.
    for dock in docks:
        assert set(window.tabifiedDockWidgets(dock)) == set(docks) - {dock}
    assert window.width() <= LAPTOP[0] and window.height() <= LAPTOP[1]
    assert _canvas_share(viewer) > 0.5, _canvas_share(viewer)
    for name, (dock, widget) in opened.items():
        dock.raise_()
        _settle(qtbot)
        assert isinstance(dock, QDockWidget)
        for button in _primary_buttons(name, widget):
            assert _wholly_in_view(button, window), (name, button.objectName() or button.text())
    # A widget closed and opened again joins the tabs again.
    viewer.window.remove_dock_widget(opened["Segment"][0])
    dock, _ = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    _settle(qtbot)
    assert len(window.tabifiedDockWidgets(dock)) == 3


def test_each_model_shows_only_its_own_sliders(make_napari_viewer, tiny_model):
    from napari_unet.models.modelfile import new_model

    registry().add("three", tiny_model)
    registry().add("two", new_model(depth=2, base_channels=4, scheme="2class"))
    seg = SegmentWidget(make_napari_viewer())
    seg.model_combo.setCurrentText("three")
    assert (
        seg.seed_h_slider.parentWidget().isHidden()
        and not seg.seed_slider.parentWidget().isHidden()
    )
    seg.model_combo.setCurrentText("two")
    assert (
        not seg.seed_h_slider.parentWidget().isHidden()
        and seg.seed_slider.parentWidget().isHidden()
    )


def test_weight_map_without_labels_says_so_and_adds_nothing(make_napari_viewer, monkeypatch):
    from napari_unet._napari import weight_map_widget as module

    errors = []
    monkeypatch.setattr(module, "report_error", lambda exc: errors.append(str(exc)))
    viewer = make_napari_viewer()
    widget = weight_map_widget()
    viewer.window.add_dock_widget(widget)
    widget()
    assert errors == ["choose a labels layer"] and len(viewer.layers) == 0


def test_closed_widgets_are_not_called_by_signals_that_outlive_them(
    make_napari_viewer, qtbot, tiny_model
):
    # A dock closed by the user loses its Qt half; the model registry and the
    # layer list live on and must not call into it (it failed after training).
    from qtpy import sip

    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    for widget_type in (SegmentWidget, TrainWidget, AnnotateWidget):
        widget = widget_type(viewer)
        sip.delete(widget)
    registry().add("after", tiny_model)
    viewer.add_image(np.zeros((32, 32), np.float32), name="img2")
    image.name = "renamed"
    viewer.layers.remove("img2")
    assert "after" in registry().names()


def test_segment_links_the_planes_of_a_stack_as_chosen(make_napari_viewer, qtbot):
    image, _ = synthetic_nuclei((96, 96), n_nuclei=6, seed=2)
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([image, image]), name="stack")
    seg = SegmentWidget(viewer)
    assert seg.link_combo.currentText() == "3-D objects (Z)"
    seg.run()
    wait_idle(qtbot, seg)
    labels = viewer.layers["stack labels"].data
    assert labels.max() > 0 and np.array_equal(labels[0], labels[1])
    # A slider move re-labels the cached probabilities and links them the same way.
    seg.foreground_slider.setValue(seg.foreground_slider.value() - 0.05)
    qtbot.waitUntil(lambda: seg.idle, timeout=30_000)
    relabelled = viewer.layers["stack labels"].data
    assert np.array_equal(relabelled[0], relabelled[1])
    seg.link_combo.setCurrentText("none")
    seg.run()
    wait_idle(qtbot, seg)
    apart = viewer.layers["stack labels"].data
    assert not (set(np.unique(apart[0])) - {0}) & set(np.unique(apart[1]))


def test_train_widget_prepares_stained_layers_for_an_rgb_companion(tmp_path, monkeypatch):
    import napari_unet.models.modelfile as mf
    from napari_unet._napari.train_widget import prepare_training_data
    from napari_unet.models.modelfile import new_model

    arch = dict(depth=2, base_channels=4, scheme="3class", dropout=0.0)
    colour = mf.save_model(new_model(**arch, in_channels=3), tmp_path / "bf.safetensors")
    monkeypatch.setattr(mf, "builtin_model_path", lambda n: colour if n == "brightfield" else None)
    start = new_model(**arch)
    start.companions = {"brightfield": "brightfield"}
    fluo, labels = synthetic_nuclei((96, 96), n_nuclei=8, seed=1)
    dark = 1.0 - fluo.astype(np.float32) / fluo.max()
    rgb = (255 * dark[..., None] * np.array([0.95, 0.75, 0.9])).astype(np.uint8)
    pair = {"image": rgb, "labels": labels, "axes": "YXC", "valid": None, "name": "he"}
    sources = {"pairs": [{**pair, "role": "train"}], "folders": {"train": ("", "")}}
    train_set, val_set = prepare_training_data(sources, start, None)
    assert [(i.image.shape[0], i.image_type) for i in train_set] == [(3, "brightfield")]
    # From scratch: the new network's channel count, as before.
    scratch, _ = prepare_training_data(sources, None, {"in_channels": 1})
    assert scratch[0].image.shape[0] == 1 and val_set == []


def test_cells_from_points_through_the_plugin_menu(make_napari_viewer, errors):
    from scipy import ndimage as ndi

    from napari_unet.images.synthetic import synthetic_cells
    from napari_unet.labels.metrics import matching

    viewer = make_napari_viewer()
    image, truth = synthetic_cells((160, 160), diameter=50, seed=4)
    viewer.add_image(image, name="cells")
    _, ann = viewer.window.add_plugin_dock_widget("napari-unet", "Annotate")
    assert ann.cells_from_points() is None  # first click: the points layer, and what to do
    assert errors and "cell points" in errors[-1]
    ids = np.unique(truth)[1:]
    viewer.layers["cell points"].add(true_centres(truth))
    layer = ann.cells_from_points()
    assert layer.name == "cells annotation" and layer.data.max() == len(ids)
    assert matching(truth, np.asarray(layer.data).astype(np.int32)).ap >= 0.5
    # With the model's probability layers there (Segment's "also show probability maps"),
    # cells are grown on them instead.
    interior = ndi.binary_erosion(truth > 0, iterations=2)
    viewer.add_image(interior.astype(np.float32), name="cells interior probability")
    viewer.add_image(
        ((truth > 0) & ~interior).astype(np.float32), name="cells boundary probability"
    )
    ann.image_combo.set_layer(viewer.layers["cells"])
    layer = ann.cells_from_points()
    assert matching(truth, np.asarray(layer.data).astype(np.int32)).ap == 1.0
    assert "probabilities" in ann.info.text()


def test_cells_from_points_grow_on_the_last_segmentation_without_its_probability_layers(
    make_napari_viewer, qtbot, default_model_available
):

    from napari_unet.images.synthetic import synthetic_nuclei
    from napari_unet.labels.metrics import matching

    viewer = make_napari_viewer()
    image, truth = synthetic_nuclei((160, 160), n_nuclei=12, seed=3)
    viewer.add_image(image, name="nuclei")
    _, seg = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    _, ann = viewer.window.add_plugin_dock_widget("napari-unet", "Annotate")
    seg.image_combo.set_layer(viewer.layers["nuclei"])
    seg.model_combo.setCurrentText("default")
    seg.run()
    wait_idle(qtbot, seg)
    assert not [layer for layer in viewer.layers if "probability" in layer.name]
    viewer.add_points(true_centres(truth), name="cell points", ndim=2)
    ann.image_combo.set_layer(viewer.layers["nuclei"])
    layer = ann.cells_from_points()
    assert "the model's probabilities" in ann.info.text()
    assert matching(truth, np.asarray(layer.data).astype(np.int32)).ap >= 0.8


def test_cells_from_points_leave_a_model_that_does_not_see_the_clicked_objects(
    make_napari_viewer,
):
    # Probabilities whose foreground misses the clicks (whole cells given to a
    # nuclei model) would shrink each cell to a dot: the image is used, and said.

    from napari_unet.images.synthetic import synthetic_cells

    viewer = make_napari_viewer()
    image, truth = synthetic_cells((160, 160), diameter=50, seed=4)
    viewer.add_image(image, name="cells")
    tiny = np.zeros(truth.shape, np.float32)
    tiny[::40, ::40] = 1.0  # a few specks of "nuclei"
    viewer.add_image(tiny, name="cells interior probability")
    viewer.add_image(np.zeros_like(tiny), name="cells boundary probability")
    _, ann = viewer.window.add_plugin_dock_widget("napari-unet", "Annotate")
    ann.image_combo.set_layer(viewer.layers["cells"])
    ids = np.unique(truth)[1:]
    viewer.add_points(true_centres(truth), name="cell points", ndim=2)
    layer = ann.cells_from_points()
    assert layer.data.max() == len(ids)
    assert "grown on the image" in ann.info.text() and "holds only" in ann.info.text()


def test_segment_grows_whole_cells_from_a_nuclei_channel_layer(
    make_napari_viewer, qtbot, default_model_available
):
    from napari_unet.images.synthetic import synthetic_cells
    from napari_unet.labels.metrics import matching

    viewer = make_napari_viewer()
    image, truth = synthetic_cells((192, 192), diameter=50, seed=5, with_nuclei=True)
    viewer.add_image(image[0], name="membrane")
    viewer.add_image(image[1], name="dapi")
    _, seg = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    assert seg.nuclei_combo.currentText() == "(none)"  # opening a layer does not pick it
    seg.image_combo.set_layer(viewer.layers["membrane"])
    seg.nuclei_combo.set_layer(viewer.layers["dapi"])
    seg.model_combo.setCurrentText("default")
    seg.run()
    wait_idle(qtbot, seg)
    labels = np.asarray(viewer.layers["membrane labels"].data).astype(np.int32)
    assert matching(truth, labels).ap >= 0.8
    assert "finds nuclei" in seg.status.text()


def test_segment_stays_usable_after_ten_fast_failures_in_a_row(
    make_napari_viewer, qtbot, registered_tiny, errors
):
    viewer = make_napari_viewer()
    viewer.add_image(np.full((64, 64), np.nan, np.float32), name="broken")
    _, seg = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    seg.model_combo.setCurrentText("tiny")
    for attempt in range(10):
        seg.run()
        qtbot.waitUntil(lambda: not seg.task.busy and seg.run_button.isEnabled(), timeout=30_000)
        assert len(errors) == attempt + 1


def test_slider_moves_through_the_plugin_menu_update_one_labels_layer(
    make_napari_viewer, qtbot, registered_tiny
):
    # napari gives plugin widgets a proxy viewer whose every lookup returns a
    # new object: the layer this widget wrote must still be recognised as its own.
    viewer = make_napari_viewer()
    image, _ = synthetic_nuclei((96, 96), n_nuclei=6, seed=0)
    viewer.add_image(image, name="cells")
    _, seg = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    seg.model_combo.setCurrentText("tiny")
    seg.run()
    wait_idle(qtbot, seg)
    for value in (0.05, 0.1, 0.2, 0.3):
        seg.foreground_slider.setValue(value)
        qtbot.waitUntil(lambda: seg.idle, timeout=30_000)
        qtbot.wait(300)
        wait_idle(qtbot, seg)
    names = [layer.name for layer in viewer.layers]
    assert [n for n in names if "labels" in n] == ["cells labels"]
    assert "edited by hand" not in seg.status.text()
    # A real hand edit is still kept: the next result goes to a new layer.
    viewer.layers["cells labels"].paint((5, 5), 99, refresh=True)
    seg.foreground_slider.setValue(0.4)
    qtbot.waitUntil(lambda: seg.idle, timeout=30_000)
    qtbot.wait(300)
    wait_idle(qtbot, seg)
    assert "cells labels (2)" in viewer.layers


# Error paths, through the plugin path ------------------------------------------------


def _plugin(viewer, name):
    return viewer.window.add_plugin_dock_widget("napari-unet", name)[1]


def test_removing_the_image_mid_segment_cancels_and_says_so(
    make_napari_viewer, qtbot, registered_tiny, monkeypatch
):
    from napari_unet._napari import segment_widget as module
    from napari_unet.progress import Progress, Stage

    release = []

    def slow_segment(*args, **kwargs):  # stands in for a long run, yielding as it goes
        while not release:
            yield Progress(Stage.PREDICT, 0, 1)
            import time

            time.sleep(0.01)
        return np.zeros((64, 64), np.uint16), np.zeros((3, 64, 64), np.float32)

    monkeypatch.setattr(module, "iter_segment", slow_segment)
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((64, 64)), name="cells")
    seg = _plugin(viewer, "Segment")
    seg.model_combo.setCurrentText("tiny")
    seg.run()
    qtbot.waitUntil(lambda: seg.task.busy, timeout=5_000)
    viewer.layers.remove("cells")
    wait_idle(qtbot, seg, timeout=10_000)
    release.append(True)
    qtbot.wait(200)
    assert "cancelled: the image 'cells' was removed" in seg.status.text()
    assert [layer.name for layer in viewer.layers] == []  # no orphan labels layer
    assert seg.run_button.isEnabled()


def test_a_tiny_image_is_too_small_not_zero_objects(
    make_napari_viewer, qtbot, registered_tiny, errors
):
    viewer = make_napari_viewer()
    viewer.add_image(np.ones((3, 3), np.float32), name="speck")
    seg = _plugin(viewer, "Segment")
    seg.model_combo.setCurrentText("tiny")
    seg.run()
    wait_idle(qtbot, seg)
    assert errors and "3x3 pixels: too small to segment" in errors[-1]
    assert "speck labels" not in viewer.layers
    assert seg.run_button.isEnabled()


def test_the_status_forgets_the_last_images_count_when_another_is_chosen(
    make_napari_viewer, qtbot, registered_tiny
):
    viewer = make_napari_viewer()
    image, _ = synthetic_nuclei((64, 64), n_nuclei=4, seed=1)
    viewer.add_image(image, name="first")
    seg = _plugin(viewer, "Segment")
    seg.model_combo.setCurrentText("tiny")
    seg.run()
    wait_idle(qtbot, seg)
    assert "objects" in seg.status.text()
    viewer.add_image(image, name="second")  # opening an image selects it
    assert seg.status.text() == "'second': not segmented yet"


def test_add_pair_refuses_labels_of_another_shape_naming_the_labels_layer(
    make_napari_viewer, errors
):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((64, 64), np.float32), name="img")
    wrong = viewer.add_labels(np.zeros((32, 64), np.uint16), name="other labels")
    trainer = _plugin(viewer, "Train / fine-tune")
    trainer.add_pair(image, wrong)
    assert trainer.pairs.rowCount() == 0
    assert errors and "'other labels' is (32, 64)" in errors[-1] and "(64, 64)" in errors[-1]


def test_empty_labels_are_blamed_on_the_labels_not_on_a_region_never_drawn(
    make_napari_viewer, qtbot, registered_tiny, errors
):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((64, 64)), name="img")
    empty = viewer.add_labels(np.zeros((64, 64), np.uint16), name="img annotation")
    trainer = _plugin(viewer, "Train / fine-tune")
    trainer.add_pair(image, empty)
    trainer.start()
    wait_idle(qtbot, trainer)
    assert errors and "have no labelled object: paint some first" in errors[-1]
    assert "region" not in errors[-1]
    assert trainer.start_button.isEnabled()


def test_merge_without_ids_merges_the_objects_under_the_merge_points(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    labels = np.zeros((40, 40), np.uint16)
    labels[2:10, 2:10] = 1
    labels[20:30, 20:30] = 2
    labels[30:38, 2:10] = 3
    image = viewer.add_image(np.zeros((40, 40), np.float32), name="img")
    layer = viewer.add_labels(labels.copy(), name="img annotation")
    layer.selected_label = 9  # napari's selected label plays no part
    ann = _plugin(viewer, "Annotate")
    ann.image_combo.set_layer(image)
    ann.labels_combo.set_layer(layer)
    ann.merge()  # first click: the points layer appears, with what to do
    assert "merge points" in viewer.layers and "place two or more points" in errors[-1]
    viewer.layers["merge points"].add([[5, 5], [25, 25]])
    ann.merge()
    assert set(np.unique(layer.data)) == {0, 1, 3}
    assert (layer.data[20:30, 20:30] == 1).all()
    assert len(viewer.layers["merge points"].data) == 0  # used up
    viewer.layers["merge points"].add([[5, 5], [15, 15]])  # the second on background
    ann.merge()
    assert "on the background" in errors[-1]


def test_a_short_stack_is_said_to_be_maybe_channels(
    make_napari_viewer, qtbot, registered_tiny, monkeypatch
):
    from napari_unet._napari import segment_widget as module

    warnings = []
    monkeypatch.setattr(module, "show_warning", warnings.append)
    viewer = make_napari_viewer()
    image, _ = synthetic_nuclei((64, 64), n_nuclei=4, seed=1)
    viewer.add_image(np.stack([image, image]), name="two channels")
    seg = _plugin(viewer, "Segment")
    seg.model_combo.setCurrentText("tiny")
    seg.run()
    wait_idle(qtbot, seg)
    assert len(warnings) == 1 and "Split Stack" in warnings[0] and "nuclei channel" in warnings[0]


def test_a_mask_opened_as_an_image_is_offered_as_training_labels(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    image, labels = synthetic_nuclei((64, 64), n_nuclei=4, seed=1)
    raw = viewer.add_image(image, name="cells")
    trainer = _plugin(viewer, "Train / fine-tune")
    path = tmp_path / "cells_masks.tif"
    tifffile.imwrite(path, labels.astype(np.uint16))
    [mask] = viewer.open(str(path))  # File > Open: napari reads it as an image layer
    assert isinstance(mask, __import__("napari").layers.Image)
    assert trainer.labels_combo.layer().name == mask.name  # named like a mask: chosen when opened
    trainer.add_pair(raw, trainer.labels_combo.layer())
    assert trainer.pairs.rowCount() == 1
    pairs = trainer.layer_pairs()
    assert (pairs[0]["labels"] == labels).all()
    # A float image is never offered as labels.
    viewer.add_image(image.astype(np.float32), name="float")
    items = [trainer.labels_combo.itemText(i) for i in range(trainer.labels_combo.count())]
    assert "float" not in items and "cells_masks" in items


def test_measurements_table_as_csv_and_features(make_napari_viewer, qtbot, tmp_path, errors):
    import csv

    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((40, 40), np.float32), name="cells", scale=(0.5, 0.5))
    seg = _plugin(viewer, "Segment")
    seg.image_combo.set_layer(image)
    assert seg.save_measurements(tmp_path / "m.csv") is None
    assert "segment 'cells' first" in errors[-1]
    labels = np.zeros((40, 40), np.uint16)
    labels[2:6, 2:6] = 1
    labels[20:30, 20:30] = 2
    image.data = np.where(labels == 2, 3.0, 1.0).astype(np.float32)
    layer = viewer.add_labels(labels, name="cells labels", scale=(0.5, 0.5))
    path = seg.save_measurements(tmp_path / "m.csv")
    rows = list(csv.DictReader(open(path)))
    assert [float(r["area"]) for r in rows] == [4.0, 25.0]  # µm² at 0.5 µm pixels
    assert float(rows[1]["intensity_mean"]) == 3.0
    assert list(layer.features["area"]) == [4.0, 25.0]
    assert "2 objects measured" in seg.status.text()


def test_outlines_option_draws_contours(make_napari_viewer, qtbot, registered_tiny):
    viewer = make_napari_viewer()
    image, _ = synthetic_nuclei((64, 64), n_nuclei=4, seed=1)
    viewer.add_image(image, name="cells")
    seg = _plugin(viewer, "Segment")
    seg.model_combo.setCurrentText("tiny")
    seg.outline_check.setChecked(True)
    seg.run()
    wait_idle(qtbot, seg)
    assert viewer.layers["cells labels"].contour == 2


def test_segment_a_folder_from_the_viewer(make_napari_viewer, qtbot, registered_tiny, tmp_path):
    viewer = make_napari_viewer()
    source = tmp_path / "in"
    source.mkdir()
    for i in range(3):
        image, _ = synthetic_nuclei((48, 48), n_nuclei=3, seed=i)
        tifffile.imwrite(source / f"img{i}.tif", image)
    seg = _plugin(viewer, "Segment")
    seg.model_combo.setCurrentText("tiny")
    seg.folder_in.setText(str(source))
    seg.folder_out.setText(str(tmp_path / "out"))
    seg.segment_folder()
    wait_idle(qtbot, seg)
    written = sorted(p.name for p in (tmp_path / "out").glob("*_labels.tif"))
    assert written == ["img0_labels.tif", "img1_labels.tif", "img2_labels.tif"]
    assert "3 segmented" in seg.status.text()
    assert seg.run_button.isEnabled() and seg.folder_button.isEnabled()
    seg.segment_folder()  # again: everything was done, nothing is redone
    wait_idle(qtbot, seg)
    assert "0 segmented, 3 skipped" in seg.status.text()


def test_segment_folder_refuses_a_missing_folder_before_any_work(
    make_napari_viewer, tmp_path, errors
):
    viewer = make_napari_viewer()
    seg = _plugin(viewer, "Segment")
    seg.folder_in.setText(str(tmp_path / "nowhere"))
    seg.folder_out.setText(str(tmp_path / "out"))
    seg.segment_folder()
    assert "choose a folder of images" in errors[-1]
    assert not (tmp_path / "out").exists() and not seg.task.busy


def test_sliders_follow_the_one_declaration_of_thresholds(make_napari_viewer):
    from napari_unet.labels.instances import THRESHOLD_OPTIONS

    seg = _plugin(make_napari_viewer(), "Segment")
    sliders = {
        "foreground_threshold": seg.foreground_slider,
        "seed_threshold": seg.seed_slider,
        "seed_dynamic": seg.seed_dynamic_slider,
        "min_size": seg.min_size_slider,
    }
    for option in THRESHOLD_OPTIONS:
        if option.field in sliders:
            slider = sliders[option.field]
            assert (slider.minimum(), slider.maximum()) == (option.low, option.high)
            assert slider.toolTip() == option.help


# Progress bars -------------------------------------------------------------------


def test_a_long_task_shows_the_time_left_and_a_stop_keeps_its_text(qtbot, monkeypatch):
    from napari_unet._napari import _common
    from napari_unet.progress import Progress, Stage

    monkeypatch.setattr(_common, "ETA_FROM_S", 0.0)  # the 5 s rule, for a short test
    bar = _common.TaskBar(napari_activity=False)
    qtbot.addWidget(bar)
    seen: list[str] = []

    def tiles():
        for step in range(6):
            time.sleep(0.05)
            yield Progress(Stage.PREDICT, step, 6)
        return "labels"

    bar.run(tiles, on_event=lambda event: seen.append(bar.bar.format()), description="segment")
    qtbot.waitUntil(lambda: not bar.busy, timeout=30_000)
    assert seen[0] == "segment: 0/6"  # the pace is not known yet
    assert re.fullmatch(r"segment: 5/6, 0:0\d left", seen[-1]), seen
    assert bar.bar.format() == "done"

    def slow():
        for step in range(1000):
            time.sleep(0.01)
            yield Progress(Stage.TRAIN, step, 1000, {"eta_s": 90.0})

    seen.clear()
    bar.run(slow, on_event=lambda event: seen.append(bar.bar.format()), description="train")
    qtbot.waitUntil(lambda: len(seen) > 2, timeout=30_000)
    assert seen[-1].endswith(", 1:30 left")
    bar.request_stop()
    qtbot.waitUntil(lambda: not bar.busy, timeout=30_000)
    assert bar.bar.format() == "stopped"
