"""Open model files (``.safetensors``, or bioimage.io ``.zip`` packages napari-unet exported).

From File > Open or drag and drop.

The model becomes selectable in the Segment and Train widgets; no layer is
added. A file that is not a valid napari-unet model is left to other readers,
and the user is told in one line why napari-unet did not open it (otherwise
napari only says that no reader was found).
"""

from __future__ import annotations


def get_reader(path):
    """napari's reader hook: :func:`read_model` for a valid model file, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not str(path).endswith((".safetensors", ".zip")):
        return None
    from ..errors import UNetError
    from ..models.modelfile import read_model_config

    if str(path).endswith(".zip"):
        from ..models.package_files import is_package

        if not is_package(path):
            return None  # any other zip is left to other readers, without a word

    try:
        read_model_config(path)
    except UNetError as exc:
        from napari.utils.notifications import show_warning

        show_warning(f"napari-unet did not open it: {exc}")
        return None
    return read_model


def read_model(path):
    """Register the model file with the widgets; returns napari's "no layer" result."""
    from napari.utils.notifications import show_info

    from .model_registry import registry

    path = path[0] if isinstance(path, list) else path
    name = registry().add_file(path)
    show_info(f"model {name!r} is ready in the U-Net Segment and Train widgets")
    return [(None,)]
