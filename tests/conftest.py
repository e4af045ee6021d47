"""Shared fixtures: tiny models, synthetic data, and the shared real data (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from napari_unet.modelfile import builtin_model_path, new_model
from napari_unet.synthetic import synthetic_nuclei

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
