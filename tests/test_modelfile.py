import json

import pytest
import torch
from safetensors.torch import save_file

from napari_unet.errors import UNetError
from napari_unet.labels.instances import InstanceParams
from napari_unet.models.modelfile import load_model, read_model_config, save_model


def test_roundtrip_keeps_weights_and_config(tiny_model, tmp_path):
    tiny_model.postprocessing = InstanceParams(foreground_threshold=0.42, min_size=7)
    tiny_model.training = {"epochs": 3, "note": "unit test"}
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    for (k, a), (_, b) in zip(tiny_model.net.state_dict().items(), loaded.net.state_dict().items()):
        assert torch.equal(a, b), k
    assert loaded.postprocessing == tiny_model.postprocessing
    assert loaded.training == {"epochs": 3, "note": "unit test"}
    config = read_model_config(path)
    assert config["architecture"]["depth"] == 2 and config["classes"] == [
        "background",
        "interior",
        "boundary",
    ]
    assert config["normalization"]["method"] == "percentile"
    assert "package_version" in config


def test_the_size_rule_has_its_own_section_and_older_files_keep_theirs(tiny_model, tmp_path):
    from safetensors.torch import load_file

    from napari_unet.models.sizes import SizeRule

    rule = SizeRule(upscale_to_area=450, upscale_from_area=120, object_area=333)
    tiny_model.size_rule = rule
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    config = read_model_config(path)
    assert config["format_version"] == 2 and config["size_rule"] == rule.to_dict()
    assert not set(rule.to_dict()) & set(config["postprocessing"])  # one home each
    assert load_model(path).size_rule == rule
    # Format 1 kept the rule among the post-processing settings: read it from there.
    old = {**config, "format_version": 1}
    old["postprocessing"] = {**old["postprocessing"], **old.pop("size_rule")}
    old_path = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old_path), metadata={"napari_unet": json.dumps(old)})
    loaded = load_model(old_path)
    assert loaded.size_rule == rule and loaded.postprocessing == tiny_model.postprocessing
    old["postprocessing"]["object_area"] = -1.0  # still checked where it is
    save_file(load_file(str(path)), str(old_path), metadata={"napari_unet": json.dumps(old)})
    with pytest.raises(UNetError, match="postprocessing.object_area"):
        load_model(old_path)


def test_half_precision_storage(tiny_model, tmp_path):
    full = save_model(tiny_model, tmp_path / "full.safetensors")
    half = save_model(tiny_model, tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.7 * full.stat().st_size
    loaded = load_model(half)
    w = tiny_model.net.head.weight
    assert loaded.net.head.weight.dtype == torch.float32
    assert torch.allclose(loaded.net.head.weight, w, atol=1e-3)


def test_file_is_plain_safetensors_not_pickle(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert "__metadata__" in header
    assert b"\x80\x04" not in raw[:2]  # no pickle protocol marker at the start


def test_corrupted_and_foreign_files_are_clear_errors(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(UNetError, match="broken.safetensors"):
        load_model(broken)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(UNetError, match="not a readable model"):
        load_model(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(UNetError, match="not a napari-unet model"):
        load_model(foreign)
    with pytest.raises(UNetError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(UNetError, match="safetensors"):
        save_model(tiny_model, tmp_path / "model.pt")


def test_weights_that_do_not_fit_the_architecture(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    config = read_model_config(path)
    config["architecture"]["base_channels"] = 8
    from safetensors.torch import load_file

    save_file(
        load_file(str(path)),
        str(tmp_path / "bad.safetensors"),
        metadata={"napari_unet": json.dumps(config)},
    )
    with pytest.raises(UNetError, match="do not fit"):
        load_model(tmp_path / "bad.safetensors")


def test_channel_count_check(tiny_model):
    assert load_model(tiny_model, in_channels=1) is tiny_model
    with pytest.raises(UNetError, match="channel"):
        load_model(tiny_model, in_channels=2)


def test_atomic_write_leaves_no_partial_file(tiny_model, tmp_path, monkeypatch):
    import napari_unet.models.modelfile as mf

    target = tmp_path / "m.safetensors"
    save_model(tiny_model, target)
    before = target.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", fail)
    with pytest.raises(OSError):
        mf.save_model(tiny_model, target)
    assert target.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_builtin_default_model_loads_offline(default_model_available):
    model = load_model("default")
    assert load_model("nuclei").net.config == model.net.config
    assert model.training.get("data")
    assert model.source == "default"
    assert all(torch.isfinite(p.detach()).all() for p in model.net.parameters())
