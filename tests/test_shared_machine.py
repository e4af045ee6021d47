"""A shared lab machine: nothing in a shared folder is trusted by its name, no write follows a link.

These are the hostile-neighbour cases of issue 16: a model planted in the
temp folder under the name an old version used, links planted where outputs
or temporary files go, and crafted model files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np
import pytest
import tifffile
import torch
from safetensors.torch import load_file, save_file

from napari_unet.errors import UNetError
from napari_unet.images.io import atomic_path, write_tiff
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.models.modelfile import (
    cached_model_from_bytes,
    get_model,
    load_model,
    model_to_bytes,
    read_model_config,
    save_model,
)
from napari_unet.segmenting.batch import BatchOptions, segment_files


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """A temp folder of its own, standing in for the machine's shared /tmp."""
    shared = tmp_path / "shared_tmp"
    shared.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    monkeypatch.setenv("TMPDIR", str(shared))
    return shared


def _image_folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    img, _ = synthetic_nuclei((64, 64), n_nuclei=5, seed=3)
    tifffile.imwrite(d / "a.tif", img)
    return d


def test_planted_model_in_temp_folder_is_never_loaded(tmp_path, tiny_model, private_tmp):
    model_file = save_model(tiny_model, tmp_path / "mine.safetensors")
    blob = model_file.read_bytes()
    # What older versions would have loaded: a file named after the model's public hash.
    for digest in (hashlib.sha1(blob).hexdigest(), hashlib.sha256(blob).hexdigest()):
        (private_tmp / f"napari-unet-{digest}.safetensors").write_bytes(b"planted garbage")
    folder = _image_folder(tmp_path)
    report = segment_files([folder], tmp_path / "out", BatchOptions(model=str(model_file)))
    assert not report.failed and len(report.done) == 1
    expected = get_model(tiny_model)
    from napari_unet.segmenting.segmentation import segment

    truth = segment(tifffile.imread(folder / "a.tif"), expected)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "a_labels.tif"), truth)


def test_batch_writes_nothing_into_the_temp_folder(tmp_path, tiny_model, private_tmp):
    model_file = save_model(tiny_model, tmp_path / "mine.safetensors")
    folder = _image_folder(tmp_path)
    segment_files([folder], tmp_path / "out", BatchOptions(model=str(model_file)))
    assert list(private_tmp.iterdir()) == []


def test_models_in_memory_are_cached_by_content_not_name(tmp_path, tiny_model):
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    first = get_model(path)
    assert get_model(path) is first
    # The same name with other bytes is another model.
    with torch.no_grad():
        tiny_model.net.head.bias.add_(1.0)
    save_model(tiny_model, path)
    second = get_model(path)
    assert second is not first
    assert torch.equal(second.net.head.bias, tiny_model.net.head.bias)
    # Objects go to bytes and back without any file.
    again = cached_model_from_bytes(model_to_bytes(tiny_model))
    assert torch.equal(again.net.head.bias, tiny_model.net.head.bias)


def test_writes_replace_a_planted_link_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_labels.tif").symlink_to(victim)
    write_tiff(out / "a_labels.tif", np.zeros((4, 4), np.uint16))
    assert victim.read_text() == "precious"
    assert not (out / "a_labels.tif").is_symlink()


def test_stale_parts_of_dead_writers_are_removed_others_kept(tmp_path):
    target = tmp_path / "x.tif"
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    stale = tmp_path / f".x.tif.{dead}.abc.part"
    stale.write_bytes(b"left by a killed run")
    live = tmp_path / f".x.tif.{os.getpid()}.def.part"
    live.write_bytes(b"being written right now")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / f".x.tif.{dead}.ghi.part"
    link.symlink_to(victim)
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"result")
    assert target.read_bytes() == b"result"
    assert not stale.exists()
    assert live.exists()
    assert victim.read_text() == "precious"


def _crafted(tmp_path, tiny_model, name, change_config=None, change_state=None):
    path = save_model(tiny_model, tmp_path / "good.safetensors")
    config = read_model_config(path)
    state = load_file(str(path))
    if change_config is not None:
        config = change_config(config)
    if change_state is not None:
        change_state(state)
    out = tmp_path / name
    save_file(state, str(out), metadata={"napari_unet": json.dumps(config)})
    return out


def _set(section, key, value):
    def change(config):
        config[section][key] = value
        return config

    return change


@pytest.mark.parametrize(
    "change_config, message",
    [
        (lambda c: {**c, "format_version": "abc"}, "format_version"),
        (lambda c: [c], "not a napari-unet model"),
        (_set("postprocessing", "foreground_threshold", 7.0), "foreground_threshold"),
        (_set("postprocessing", "seed_threshold", -1), "seed_threshold"),
        (_set("size_rule", "coarse_look_from_area", "big"), "coarse_look_from_area"),
        (_set("size_rule", "downscale_from_area", -5.0), "downscale_from_area"),
        (_set("size_rule", "upscale_from_area", float("nan")), "upscale_from_area"),
        (_set("postprocessing", "min_size", -3), "min_size"),
        (_set("postprocessing", "seed_distance_h", -1.0), "seed_distance_h"),
        (_set("postprocessing", "seed_dynamic", "x"), "seed_dynamic"),
        (_set("normalization", "high", 250.0), "high"),
        (_set("normalization", "low", "abc"), "low"),
        (lambda c: {**c, "architecture": "unet"}, "architecture"),
        (lambda c: {**c, "companions": {"brightfield": "/etc/passwd"}}, "companion"),
        (lambda c: {**c, "companions": {"phase": "default"}}, "companion"),
    ],
)
def test_crafted_model_metadata_is_a_clear_error(tmp_path, tiny_model, change_config, message):
    path = _crafted(tmp_path, tiny_model, "crafted.safetensors", change_config)
    with pytest.raises(UNetError, match=message) as info:
        load_model(path)
    assert "crafted.safetensors" in str(info.value)


def test_nan_weights_are_refused(tmp_path, tiny_model):
    def poison(state):
        state["head.weight"][:] = float("nan")

    path = _crafted(tmp_path, tiny_model, "nan.safetensors", change_state=poison)
    with pytest.raises(UNetError, match="NaN"):
        load_model(path)


def test_napari_reader_declines_crafted_models_and_says_why(tmp_path, tiny_model, monkeypatch):
    pytest.importorskip("napari.utils", reason="the viewer is not installed (the [napari] extra)")
    import napari.utils.notifications as notifications

    from napari_unet._napari.reader import get_reader

    shown = []
    monkeypatch.setattr(notifications, "show_warning", shown.append)
    path = _crafted(tmp_path, tiny_model, "crafted.safetensors", lambda c: [c])
    assert get_reader(str(path)) is None
    assert len(shown) == 1 and "crafted.safetensors is not a napari-unet model" in shown[0]


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("depth", 100, "architecture.depth is 100"),
        ("base_channels", 1 << 20, "architecture.base_channels"),
        ("in_channels", 0, "architecture.in_channels"),
        ("n_classes", 1000, "architecture.n_classes"),
        ("depth", 3, "do not fit the stored architecture"),  # honest size, wrong tensors
    ],
)
def test_a_declared_network_is_checked_before_anything_is_built(
    tmp_path, tiny_model, monkeypatch, key, value, message
):
    from napari_unet.models import modelfile

    built = []
    real = modelfile.UNet

    def spy(*args, **kwargs):  # counts networks given memory (not torch's "meta" ones)
        net = real(*args, **kwargs)
        if next(net.parameters()).device.type != "meta":
            built.append(kwargs)
        return net

    monkeypatch.setattr(modelfile, "UNet", spy)
    path = _crafted(tmp_path, tiny_model, "big.safetensors", _set("architecture", key, value))
    with pytest.raises(UNetError, match=message):
        load_model(path)
    assert built == []  # refused from the header alone


def test_integer_weights_are_refused(tmp_path, tiny_model):
    import torch

    def to_int(state):
        state["head.weight"] = state["head.weight"].to(torch.int32)

    path = _crafted(tmp_path, tiny_model, "int.safetensors", change_state=to_int)
    with pytest.raises(UNetError, match="'head.weight' are I32, not floating point"):
        load_model(path)


# Broken and hostile bioimage.io packages -------------------------------------------------


def _package(tmp_path, tiny_model, compression=None, name="pkg.zip"):
    """A zip shaped like napari-unet's package: rdf.yaml and the attached model file."""
    import zipfile

    from napari_unet.models.modelfile import model_to_bytes
    from napari_unet.models.package_files import NATIVE_ATTACHMENT

    path = tmp_path / name
    method = zipfile.ZIP_STORED if compression is None else compression
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        archive.writestr("rdf.yaml", "type: model\n")
        archive.writestr(NATIVE_ATTACHMENT, model_to_bytes(tiny_model))
    return path


def _patch_member(path, field_local, field_central, value: bytes):
    """Overwrite a field of the model attachment's local and central zip headers."""
    from napari_unet.models.package_files import NATIVE_ATTACHMENT

    blob = bytearray(path.read_bytes())
    name = NATIVE_ATTACHMENT.encode()
    for signature, offset, name_at in (
        (b"PK\x03\x04", field_local, 30),
        (b"PK\x01\x02", field_central, 46),
    ):
        start = 0
        while (at := blob.find(signature, start)) >= 0:
            if blob[at + name_at : at + name_at + len(name)] == name and offset is not None:
                blob[at + offset : at + offset + len(value)] = value
            start = at + 4
    path.write_bytes(bytes(blob))


def _corrupt_deflate(tmp_path, tiny_model):
    import zipfile

    path = _package(tmp_path, tiny_model, zipfile.ZIP_DEFLATED, "deflate.zip")
    blob = bytearray(path.read_bytes())
    middle = blob.find(b"napari_unet.safetensors") + 200
    blob[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(blob))
    return path


BROKEN = {
    "bad central directory": lambda t, m: _truncated(_package(t, m)),
    "corrupt deflate": _corrupt_deflate,
    "encrypted member": lambda t, m: _patched(_package(t, m), 6, 8, b"\x01\x00"),
    "unknown compression": lambda t, m: _patched(_package(t, m), 8, 10, b"\x63\x00"),
    "claims 50 MB from 36 kB": lambda t, m: _patched(
        _package(t, m), 22, 24, (50_000_000).to_bytes(4, "little")
    ),
    "claims 1.9 GB": lambda t, m: _patched(
        _package(t, m), 22, 24, (1_900_000_000).to_bytes(4, "little")
    ),
}


def _truncated(path):
    blob = path.read_bytes()
    path.write_bytes(blob[: blob.find(b"PK\x05\x06") - 10])  # end of central directory gone
    return path


def _patched(path, local, central, value):
    _patch_member(path, local, central, value)
    return path


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_packages_are_one_clear_error_in_the_cli(tmp_path, tiny_model, capsys, kind):
    from napari_unet.cli import main

    path = BROKEN[kind](tmp_path, tiny_model)
    code = main(["info", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert path.name in err


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_the_napari_reader_declines_broken_packages(tmp_path, tiny_model, monkeypatch, kind):
    pytest.importorskip("napari")
    import napari.utils.notifications as notifications

    from napari_unet._napari.reader import get_reader

    monkeypatch.setattr(notifications, "show_warning", lambda msg: None)
    path = BROKEN[kind](tmp_path, tiny_model)
    assert get_reader(str(path)) is None


def test_scratch_folders_of_killed_runs_are_cleaned_and_nothing_else(tmp_path):
    import os

    from napari_unet.images.atomic import scratch_dir

    dead = tmp_path / "napari-unet-blocks-999999999-abc"
    dead.mkdir()
    (dead / "0.npy").write_bytes(b"x" * 100)
    alive = tmp_path / f"napari-unet-blocks-{os.getpid()}-def"
    alive.mkdir()
    foreign = tmp_path / "napari-unet-blocks-mine"  # not named by napari-unet
    foreign.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "napari-unet-blocks-999999998-link").symlink_to(victim)
    other_kind = tmp_path / "napari-unet-export-999999999-x"
    other_kind.mkdir()
    with scratch_dir("blocks", tmp_path) as work:
        assert work.is_dir() and work.name.startswith(f"napari-unet-blocks-{os.getpid()}-")
    assert not work.exists() and not dead.exists()
    assert alive.exists() and foreign.exists() and victim.exists() and other_kind.exists()
