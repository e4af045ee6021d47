"""Device choice and precision, with the hardware mocked."""

import pytest
import torch

from napari_unet import devices
from napari_unet.cli import main
from napari_unet.errors import UNetError


@pytest.fixture
def hardware(monkeypatch):
    """Set which GPUs this 'machine' has."""

    def set_(cuda: bool = False, mps: bool = False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: int(cuda))
        monkeypatch.setattr(devices, "mps_available", lambda: mps)

    return set_


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_apple_gpus_then_the_cpu(hardware, cuda, mps, expected):
    hardware(cuda=cuda, mps=mps)
    assert devices.resolve_device("auto").type == expected
    assert devices.resolve_device(None).type == expected


def test_the_choices_list_only_what_is_present(hardware):
    hardware(cuda=False, mps=True)
    assert devices.available_devices() == ["auto", "mps", "cpu"]
    hardware(cuda=True, mps=False)
    assert devices.available_devices() == ["auto", "cuda", "cpu"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("cuda", "no CUDA GPU"),
        ("mps", "Apple GPU"),
        ("gpu", "unknown device"),
        ("xpu", "not supported"),
    ],
)
def test_an_absent_or_unknown_device_is_one_clear_error(hardware, name, message):
    hardware(cuda=False, mps=False)
    with pytest.raises(UNetError, match=message):
        devices.resolve_device(name)


def test_a_gpu_index_beyond_the_count_is_refused(hardware):
    hardware(cuda=True)
    assert devices.resolve_device("cuda:0").index == 0
    with pytest.raises(UNetError, match="no cuda:3"):
        devices.resolve_device("cuda:3")


def test_bfloat16_only_where_native(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    cpu = torch.device("cpu")
    assert devices.resolve_precision("auto", cpu) is None  # AVX2 only: float32
    assert devices.resolve_precision("auto", torch.device("mps")) is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert devices.resolve_precision("auto", cpu) is torch.bfloat16
    assert devices.resolve_precision("float32", cpu) is None


@pytest.mark.parametrize("command", ["segment", "train"])
def test_the_cli_refuses_an_absent_device_before_any_work(hardware, tmp_path, capsys, command):
    hardware(cuda=False, mps=False)
    out = tmp_path / "out"
    args = {
        "segment": ["segment", str(tmp_path), "--out", str(out), "--device", "mps"],
        "train": [
            "train",
            "--images",
            str(tmp_path),
            "--masks",
            str(tmp_path),
            "--out",
            str(out / "m.safetensors"),
            "--device",
            "mps",
        ],
    }[command]
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Apple GPU" in err[0]
    assert not out.exists()
