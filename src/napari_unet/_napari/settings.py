"""User settings that persist across sessions (model, device, tile size, ...).

A small JSON file in the user's config folder (``NAPARI_UNET_CONFIG_DIR``
overrides it, e.g. in tests). Written atomically; a damaged file is ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..images.io import write_json


def config_dir() -> Path:
    """The per-user settings folder (``NAPARI_UNET_CONFIG_DIR`` overrides it)."""
    override = os.environ.get("NAPARI_UNET_CONFIG_DIR")
    if override:
        return Path(override)
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-unet", appauthor=False))


def settings_path() -> Path:
    """Path of the widgets' settings file."""
    return config_dir() / "settings.json"


def load_settings() -> dict:
    """The saved widget settings, or an empty dict when none or unreadable."""
    try:
        data = json.loads(settings_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def update_settings(**values) -> dict:
    """Merge ``values`` into the saved settings and write them back."""
    data = load_settings()
    data.update(values)
    try:
        write_json(settings_path(), data)
    except OSError:
        pass  # a read-only home must not break the widgets
    return data
