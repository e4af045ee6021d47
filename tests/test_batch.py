import numpy as np
import pytest
import tifffile

from napari_unet.errors import UNetError
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.labels.metrics import matching
from napari_unet.segmenting.batch import BatchOptions, expand_inputs, segment_files
from napari_unet.segmenting.blockwise import plan_blocks, segment_large
from napari_unet.segmenting.segmentation import segment


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        img, _ = synthetic_nuclei((64, 72), n_nuclei=5, seed=i)
        tifffile.imwrite(d / f"img{i}.tif", img)
    return d


def test_folder_batch_resumes_skips_and_overwrites(folder, tmp_path, tiny_model):
    out = tmp_path / "out"
    options = BatchOptions(model=tiny_model)
    report = segment_files([folder], out, options)
    assert len(report.done) == 3 and not report.failed
    produced = sorted(p.name for p in out.iterdir())
    assert produced == ["img0_labels.tif", "img1_labels.tif", "img2_labels.tif"]
    first = tifffile.imread(out / "img0_labels.tif")
    assert first.shape == (64, 72)
    again = segment_files([folder], out, options)
    assert len(again.skipped) == 3 and not again.done
    options.overwrite = True
    assert len(segment_files([str(folder / "*.tif")], out, options).done) == 3


def test_one_bad_file_does_not_stop_the_batch(folder, tmp_path, tiny_model):
    (folder / "broken.tif").write_bytes(b"garbage")
    report = segment_files([folder], tmp_path / "out", BatchOptions(model=tiny_model))
    assert len(report.done) == 3
    assert list(report.failed) == [str((folder / "broken.tif").resolve())]
    assert "cannot read" in next(iter(report.failed.values()))
    assert "FAILED" in report.summary()


def test_inputs_are_never_overwritten_and_output_folder_checked(folder, tiny_model):
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(UNetError, match="holds input images"):
        segment_files([folder], folder, BatchOptions(model=tiny_model))
    report = segment_files(
        [folder], folder, BatchOptions(model=tiny_model, allow_input_folder=True)
    )
    assert len(report.done) == 3
    for name, content in before.items():
        assert (folder / name).read_bytes() == content
    # Label files from that run are not taken as inputs next time.
    assert all(not p.stem.endswith("_labels") for p in expand_inputs([folder]))


def test_missing_inputs_are_clear_errors(tmp_path):
    with pytest.raises(UNetError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.tif")])
    with pytest.raises(UNetError, match="does not exist"):
        expand_inputs([tmp_path / "nope.tif"])


def test_blocks_tile_the_image_with_aligned_margins():
    blocks = plan_blocks((1000, 700), 256, 50, 8)
    covered = np.zeros((1000, 700), int)
    for b in blocks:
        covered[b.core] += 1
        assert b.core[0].start % 8 == 0 and b.region[0].start % 8 == 0
    assert (covered == 1).all()


def test_large_image_in_blocks_equals_whole_image(default_model_available, tmp_path):
    import zarr

    image, _ = synthetic_nuclei((3000, 3000), n_nuclei=4000, radius=(5, 11), seed=7)
    source = zarr.open_array(
        str(tmp_path / "big.zarr"),
        mode="w",
        shape=image.shape,
        chunks=(512, 512),
        dtype=image.dtype,
    )
    source[:] = image
    whole = segment(image, "default")
    info = segment_large(
        source, tmp_path / "big_labels.tif", "default", options=BatchOptions(block_size=1024)
    )
    blocks = tifffile.imread(tmp_path / "big_labels.tif")
    assert info["blocks"] == 9
    assert blocks.max() == whole.max() == info["objects"]
    m = matching(whole, blocks, 0.99)
    assert m.tp == int(whole.max())  # every object matched with IoU >= 0.99


def test_ome_zarr_input_gives_ngff_labels(tmp_path, tiny_model):
    import zarr

    img, _ = synthetic_nuclei((64, 64), n_nuclei=5, seed=0)
    group = zarr.open_group(str(tmp_path / "cells.ome.zarr"), mode="w", zarr_format=2)
    group.create_array("0", shape=img.shape, chunks=(32, 32), dtype=img.dtype)[:] = img
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [{"path": "0"}],
        }
    ]
    report = segment_files(
        [tmp_path / "cells.ome.zarr"], tmp_path / "out", BatchOptions(model=tiny_model)
    )
    assert not report.failed, report.failed
    labels = zarr.open_group(str(tmp_path / "out" / "cells_labels.ome.zarr"), mode="r")
    assert "image-label" in labels.attrs and labels["0"].shape == (64, 64)
    assert np.array_equal(labels["0"][:], segment(img, tiny_model))


def test_local_cluster_with_two_workers(folder, tmp_path, tiny_model):
    report = segment_files(
        [folder], tmp_path / "cluster", BatchOptions(model=tiny_model), workers=2
    )
    assert len(report.done) == 3 and not report.failed
    local = segment_files([folder], tmp_path / "local", BatchOptions(model=tiny_model))
    assert len(local.done) == 3
    for name in ("img0_labels.tif", "img2_labels.tif"):
        assert np.array_equal(
            tifffile.imread(tmp_path / "cluster" / name), tifffile.imread(tmp_path / "local" / name)
        )


def test_blocks_use_the_same_rescaling_as_the_whole_image(default_model_available, tmp_path):
    # Tiny nuclei: the whole image is segmented again enlarged; so must every block.
    from napari_unet.progress import run_to_end
    from napari_unet.segmenting.segmentation import iter_segment

    image, truth = synthetic_nuclei((1200, 1200), n_nuclei=900, radius=(2.5, 4), seed=2)
    events = []
    whole = run_to_end(iter_segment(image, "default"), events.append)
    factors = {e.info["rescaled"] for e in events if "rescaled" in e.info}
    info = segment_large(
        image, tmp_path / "tiny_labels.tif", "default", options=BatchOptions(block_size=512)
    )
    (factor,) = factors
    # The blocks' factor is read on the middle block's nuclei, a sample of the whole image's.
    assert factor >= 2.0 and info["scale"] == pytest.approx(factor, rel=0.05)
    blocks = tifffile.imread(tmp_path / "tiny_labels.tif")
    m = matching(whole, blocks, 0.8)
    assert m.tp >= 0.95 * int(whole.max())


def test_blocks_shrink_like_the_whole_image_with_wider_context(default_model_available, tmp_path):
    # Huge nuclei: the whole image is segmented again shrunk; the block that
    # decides so is redone with the context a shrunk plane needs.
    image, _ = synthetic_nuclei((1200, 1200), n_nuclei=180, radius=(28, 36), seed=3)
    whole = segment(image, "default")
    info = segment_large(
        image, tmp_path / "huge_labels.tif", "default", options=BatchOptions(block_size=512)
    )
    assert info["scale"] < 0.5
    blocks = tifffile.imread(tmp_path / "huge_labels.tif")
    m = matching(whole, blocks, 0.8)
    assert m.tp >= 0.97 * int(whole.max())


def test_brightfield_blocks_equal_their_fluorescence_twin(tmp_path, tiny_model):
    image, _ = synthetic_nuclei((300, 260), n_nuclei=40, seed=5)
    bright = (int(image.max()) - image.astype(np.int64)).astype(np.uint16)
    options = BatchOptions(block_size=128, diameter=None)
    fluo_info = segment_large(image, tmp_path / "f_labels.tif", tiny_model, options=options)
    bright_info = segment_large(bright, tmp_path / "b_labels.tif", tiny_model, options=options)
    assert (fluo_info["image_type"], bright_info["image_type"]) == ("fluorescence", "brightfield")
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "f_labels.tif"), tifffile.imread(tmp_path / "b_labels.tif")
    )


def test_wide_image_whose_height_is_not_a_multiple_of_256(tmp_path, tiny_model):
    image, _ = synthetic_nuclei((300, 1100), n_nuclei=30, seed=6)
    out = tmp_path / "wide_labels.tif"
    segment_large(image, out, tiny_model, options=BatchOptions(block_size=512))
    labels = tifffile.imread(out)
    assert labels.shape == image.shape and labels.max() > 0


def test_pipes_are_skipped_with_a_note(folder, tmp_path, tiny_model):
    import os

    os.mkfifo(folder / "stuck.tif")
    report = segment_files([folder], tmp_path / "out", BatchOptions(model=tiny_model))
    assert len(report.done) == 3 and not report.failed
    assert "not a regular file" in report.summary()


def test_linked_inputs_keep_their_own_names(folder, tmp_path, tiny_model):
    links = tmp_path / "links"
    links.mkdir()
    (links / "first.tif").symlink_to(folder / "img0.tif")
    (links / "second.tif").symlink_to(folder / "img0.tif")
    report = segment_files([links], tmp_path / "out", BatchOptions(model=tiny_model))
    assert len(report.done) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "first_labels.tif",
        "second_labels.tif",
    ]


def test_a_name_too_long_fails_only_that_file(folder, tmp_path, tiny_model):
    long_name = "x" * 250 + ".tif"  # its output name, + "_labels", is too long
    (folder / long_name).write_bytes((folder / "img0.tif").read_bytes())
    report = segment_files([folder], tmp_path / "out", BatchOptions(model=tiny_model))
    assert len(report.done) == 3
    assert len(report.failed) == 1 and "too long" in next(iter(report.failed.values()))


def test_users_own_label_files_are_never_taken_or_replaced(folder, tmp_path, tiny_model):
    out = tmp_path / "out"
    out.mkdir()
    mine = np.full((64, 72), 7, np.uint16)
    tifffile.imwrite(out / "img0_labels.tif", mine)  # hand-made annotations
    for overwrite in (False, True):
        report = segment_files([folder], out, BatchOptions(model=tiny_model, overwrite=overwrite))
        assert len(report.done) == 2 and list(report.failed) == [str(folder / "img0.tif")]
        assert "not written by napari-unet" in report.summary()
        np.testing.assert_array_equal(tifffile.imread(out / "img0_labels.tif"), mine)
    report = segment_files([folder], out, BatchOptions(model=tiny_model, replace_others=True))
    assert str(folder / "img0.tif") in report.done


def test_resume_redoes_a_truncated_output(folder, tmp_path, tiny_model):
    out = tmp_path / "out"
    segment_files([folder], out, BatchOptions(model=tiny_model))
    whole = (out / "img1_labels.tif").read_bytes()
    (out / "img1_labels.tif").write_bytes(whole[: len(whole) // 2])
    report = segment_files([folder], out, BatchOptions(model=tiny_model))
    assert report.done == [str(folder / "img1.tif")] and len(report.skipped) == 2
    assert "incomplete" in report.summary()
    assert (out / "img1_labels.tif").read_bytes() == whole


def test_a_stack_too_big_for_memory_is_refused_before_allocating(tmp_path, tiny_model):
    import resource

    import zarr

    # A tiny store that declares 1000 planes of 4096x4096 (a 64 GB label stack).
    path = tmp_path / "liar.zarr"
    zarr.open_array(
        str(path), mode="w", shape=(1000, 4096, 4096), chunks=(1, 1024, 1024), dtype=np.uint16
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = segment_files([path], tmp_path / "out", BatchOptions(model=tiny_model))
    assert "GB of memory" in next(iter(report.failed.values()))
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 2_000_000


def test_a_single_large_image_reports_progress_per_block(tmp_path, tiny_model):
    from napari_unet.progress import Stage, run_to_end
    from napari_unet.segmenting.batch import iter_segment_files

    image, _ = synthetic_nuclei((300, 500), n_nuclei=30, seed=6)
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "big.tif", image)
    events = []
    options = BatchOptions(model=tiny_model, block_size=128)
    report = run_to_end(iter_segment_files([folder], tmp_path / "out", options), events.append)
    assert report.done and not report.failed
    blocks = [e for e in events if e.stage == Stage.BLOCKS]
    assert len(blocks) > 4 and blocks[-1].step == blocks[-1].total
    assert all(e.info["file"].endswith("big.tif") for e in blocks)
    assert blocks[-1].info["eta_s"] == 0 and all(
        e.info["eta_s"] is None or e.info["eta_s"] >= 0 for e in blocks
    )
    assert events[-1].stage == Stage.BATCH and events[-1].step == 1


@pytest.mark.parametrize("block_size", [4096, 128])
def test_outputs_keep_the_inputs_pixel_size(tmp_path, tiny_model, block_size):
    from napari_unet.images.io import read_image

    image, _ = synthetic_nuclei((300, 260), n_nuclei=20, seed=7)
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(
        folder / "cells.tif", image, imagej=True, resolution=(4.0, 4.0), metadata={"unit": "um"}
    )
    options = BatchOptions(
        model=tiny_model, block_size=block_size, save_probabilities=block_size > 300
    )
    report = segment_files([folder], tmp_path / "out", options)
    assert report.done and not report.failed
    labels = read_image(tmp_path / "out" / "cells_labels.tif")
    assert labels.pixel_size == pytest.approx({"X": 0.25, "Y": 0.25})
    assert labels.unit == "micrometer"


def test_thresholds_reach_every_path_in_memory_and_block_by_block(tmp_path, tiny_model):
    """A changed min_size removes objects in batch runs and block-wise alike."""
    from dataclasses import replace

    tiny = replace(
        tiny_model, postprocessing=replace(tiny_model.postprocessing, foreground_threshold=0.05)
    )
    image, _ = synthetic_nuclei((300, 260), n_nuclei=40, seed=5)
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", image)
    own = segment_files([folder], tmp_path / "own", BatchOptions(model=tiny))
    huge = {"min_size": 500}
    big_only = segment_files([folder], tmp_path / "big", BatchOptions(model=tiny, thresholds=huge))
    assert not own.failed and not big_only.failed
    own_labels = tifffile.imread(tmp_path / "own" / "a_labels.tif")
    big_labels = tifffile.imread(tmp_path / "big" / "a_labels.tif")
    assert own_labels.max() > 0
    assert np.bincount(big_labels.ravel())[1:].min(initial=500) >= 500
    for name, thresholds in (("b_own", None), ("b_big", huge)):
        options = BatchOptions(block_size=128, thresholds=thresholds)
        segment_large(image, tmp_path / f"{name}_labels.tif", tiny, options=options)
    blocks_big = tifffile.imread(tmp_path / "b_big_labels.tif")
    # Objects cut by a block's edge may leave a few pixels in its core: most are large.
    assert np.median(np.bincount(blocks_big.ravel())[1:]) >= 500
    assert blocks_big.max() < tifffile.imread(tmp_path / "b_own_labels.tif").max()


def test_a_threshold_out_of_its_range_is_refused():
    from napari_unet.labels.instances import InstanceParams

    with pytest.raises(UNetError, match=r"min-size must be in \[0, 500\]"):
        BatchOptions(thresholds={"min_size": -1}).params_for(InstanceParams())
    with pytest.raises(UNetError, match="unknown post-processing setting"):
        BatchOptions(thresholds={"min_sise": 3}).params_for(InstanceParams())


def test_side_outputs_asked_for_later_are_made_on_a_rerun(tmp_path, tiny_model):
    image, _ = synthetic_nuclei((64, 64), n_nuclei=4, seed=1)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", image)
    out = tmp_path / "out"
    first = segment_files([tmp_path / "in"], out, BatchOptions(model=tiny_model))
    assert first.done and not (out / "a_probabilities.tif").exists()
    options = BatchOptions(model=tiny_model, save_probabilities=True, overlay=True)
    again = segment_files([tmp_path / "in"], out, options)
    assert again.done and "probabilities and overlay were missing" in again.summary()
    assert (out / "a_probabilities.tif").exists() and (out / "a_overlay.png").exists()
    assert segment_files([tmp_path / "in"], out, options).skipped  # all there now


def test_a_side_output_killed_before_its_labels_leaves_the_input_to_redo(
    tmp_path, tiny_model, monkeypatch
):
    """Labels are written last: a run that dies after the side outputs has not finished."""
    import napari_unet.images.io as io

    image, _ = synthetic_nuclei((64, 64), n_nuclei=4, seed=1)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", image)
    out = tmp_path / "out"
    options = BatchOptions(model=tiny_model, save_probabilities=True)
    written = []
    original = io.write_tiff

    def dies_at_labels(path, *args, **kwargs):
        if str(path).endswith("_labels.tif"):
            raise OSError(28, "No space left on device")
        written.append(path)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(io, "write_tiff", dies_at_labels)
    report = segment_files([tmp_path / "in"], out, options)
    assert report.failed and not (out / "a_labels.tif").exists()
    assert [p.name for p in written] == ["a_probabilities.tif"]  # the side output went first
    monkeypatch.undo()
    again = segment_files([tmp_path / "in"], out, options)
    assert again.done and (out / "a_labels.tif").exists()


def test_someone_elses_side_output_is_never_overwritten(tmp_path, tiny_model):
    image, _ = synthetic_nuclei((64, 64), n_nuclei=4, seed=1)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", image)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_overlay.png").write_bytes(b"my own picture")
    report = segment_files([tmp_path / "in"], out, BatchOptions(model=tiny_model, overlay=True))
    assert (
        report.failed
        and "a_overlay.png exists and was not written by napari-unet" in report.summary()
    )
    assert (out / "a_overlay.png").read_bytes() == b"my own picture"
    assert not (out / "a_labels.tif").exists()


def test_an_input_whose_labels_name_is_long_but_legal(tmp_path, tiny_model):
    stem = "x" * (255 - len("_labels.tif"))
    image, _ = synthetic_nuclei((48, 48), n_nuclei=3, seed=1)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / f"{stem}.tif", image)
    report = segment_files([tmp_path / "in"], tmp_path / "out", BatchOptions(model=tiny_model))
    assert report.done and not report.failed
    assert (tmp_path / "out" / f"{stem}_labels.tif").exists()


def test_a_killed_block_wise_run_is_taken_up_where_it_stopped(tmp_path, tiny_model, monkeypatch):
    from napari_unet.segmenting import blockwise

    image, _ = synthetic_nuclei((300, 260), n_nuclei=40, seed=5)
    options = BatchOptions(block_size=128)
    clean = tmp_path / "clean_labels.tif"
    segment_large(image, clean, tiny_model, options=options)
    real = blockwise._segment_block
    calls = []

    def dies_after_three(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt  # as good as kill -9 for the blocks folder
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(blockwise, "_segment_block", dies_after_three)
    out = tmp_path / "out_labels.tif"
    with pytest.raises(KeyboardInterrupt):
        segment_large(image, out, tiny_model, options=options)
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".out_labels.tif.blocks-")]
    assert len(left) == 1 and len(list(left[0].glob("[0-9]*.npy"))) >= 2  # the finished blocks
    calls.clear()
    monkeypatch.setattr(
        blockwise, "_segment_block", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    segment_large(image, out, tiny_model, options=options)
    n_blocks = len(
        blockwise.plan_blocks(image.shape, 128, options.object_margin, tiny_model.net.stride)
    )
    assert len(calls) < n_blocks  # the finished ones were not redone
    np.testing.assert_array_equal(tifffile.imread(out), tifffile.imread(clean))
    assert not any(p.name.startswith(".out_labels.tif.blocks-") for p in tmp_path.iterdir())


def test_blocks_of_another_job_for_the_same_output_are_not_taken_up(tmp_path, tiny_model):
    from napari_unet.images.atomic import resumable_blocks

    with pytest.raises(RuntimeError), resumable_blocks(tmp_path, "a_labels.tif", "plan1") as store:
        (store / "0.npy").write_bytes(b"old")
        raise RuntimeError("killed")
    assert (tmp_path / ".a_labels.tif.blocks-plan1").exists()
    with resumable_blocks(tmp_path, "a_labels.tif", "plan2") as store:
        assert not (tmp_path / ".a_labels.tif.blocks-plan1").exists()  # another plan: removed
        assert list(store.iterdir()) == []
