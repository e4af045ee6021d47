"""Save a Labels layer as a compressed TIFF (atomic write)."""

from __future__ import annotations


def write_labels(path: str, data, meta: dict) -> list[str]:
    """napari's writer hook: the labels, with the layer's scale as their pixel size."""
    from ..io import write_tiff

    if not path.lower().endswith((".tif", ".tiff")):
        path = path + ".tif"
    scale = list(meta.get("scale") or [])
    axes = "ZYX"[-min(len(scale), 3) :] if scale else ""
    # The layer's scale is its pixel size (napari does not record the unit).
    pixel_size = {a: float(v) for a, v in zip(axes, scale[-len(axes) :]) if v != 1}
    write_tiff(path, data, pixel_size=pixel_size or None)
    return [path]
