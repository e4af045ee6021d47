"""Shared fixtures: tiny models, synthetic data, and the shared real data (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import zarr

from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.models.modelfile import builtin_model_path, new_model

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_user_folders(tmp_path_factory, monkeypatch):
    """Settings and caches go to temporary folders, never the user's home."""
    base = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("NAPARI_UNET_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("NAPARI_UNET_CACHE_DIR", str(base / "cache"))


@pytest.fixture
def tiny_model():
    """A small, untrained 3-class model (depth 2, 4 channels): fast on any CPU."""
    torch.manual_seed(0)
    return new_model(depth=2, base_channels=4, scheme="3class", batch_norm=True, dropout=0.0)


@pytest.fixture
def nuclei():
    """A 128x128 synthetic nuclei image (uint16) and its labels."""
    return synthetic_nuclei((128, 128), n_nuclei=10, seed=1)


@pytest.fixture(scope="session")
def default_model_available():
    path = builtin_model_path("default")
    if path is None or not path.is_file():
        pytest.skip("the built-in default model file is not installed")
    return True


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "dsb2018-fluo" / "val").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared/data beside the repository)")
    return SHARED_DATA


def _ome_zarr_image(path, zarr_format=2, shape=(200, 240), channels=False):
    """A two-level OME-Zarr image (0.5 um pixels, the second level halved)."""
    image, _ = synthetic_nuclei(shape, n_nuclei=20, seed=1)
    data = image[None] if channels else image
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    group.create_array("0", data=data, chunks=data.shape)
    group.create_array("1", data=data[..., ::2, ::2], chunks=data.shape)
    axes = [
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    lead = [{"name": "c", "type": "channel"}] if channels else []
    ones = [1.0] if channels else []
    multiscale = {
        "axes": lead + axes,
        "datasets": [
            {
                "path": "0",
                "coordinateTransformations": [{"type": "scale", "scale": ones + [0.5, 0.5]}],
            },
            {
                "path": "1",
                "coordinateTransformations": [{"type": "scale", "scale": ones + [1.0, 1.0]}],
            },
        ],
    }
    if zarr_format == 3:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    else:
        group.attrs["multiscales"] = [{**multiscale, "version": "0.4"}]
    return path


@pytest.fixture
def ome_zarr_image():
    """Factory of small two-level OME-Zarr images (zarr v2 / NGFF 0.4 or v3 / 0.5)."""
    return _ome_zarr_image
