"""Persistent user settings: merged, atomic, and never fatal."""

import os

import pytest

from napari_unet._napari.settings import load_settings, settings_path, update_settings


def test_settings_merge_and_survive_damage():
    assert load_settings() == {}
    update_settings(model="default", tile_size=256)
    update_settings(tile_size=512)
    assert load_settings() == {"model": "default", "tile_size": 512}
    settings_path().write_text("{not json")
    assert load_settings() == {}
    settings_path().write_text("[1, 2]")
    assert load_settings() == {}


def test_a_read_only_config_folder_does_not_break(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    monkeypatch.setenv("NAPARI_UNET_CONFIG_DIR", str(folder))
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: folder permissions do not bind")
        assert update_settings(model="x") == {"model": "x"}
        assert load_settings() == {}
    finally:
        folder.chmod(0o700)
