"""GUI tests drive a real napari viewer (``make_napari_viewer``); run them under Xvfb."""

import os

import pytest

if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    pytest.skip("GUI tests need a display: run them under xvfb-run", allow_module_level=True)


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    import napari_unet._napari.model_registry as models

    monkeypatch.setattr(models, "_REGISTRY", None)
    yield


@pytest.fixture
def errors(monkeypatch):
    """Notifications shown by the widgets, captured instead of displayed."""
    shown = []
    import napari_unet._napari._common as common

    monkeypatch.setattr(common, "show_error", lambda msg: shown.append(msg))
    return shown


@pytest.fixture
def registered_tiny(tiny_model):
    from napari_unet._napari.model_registry import registry

    tiny_model.name = "tiny"
    registry().add("tiny", tiny_model)
    return "tiny"
