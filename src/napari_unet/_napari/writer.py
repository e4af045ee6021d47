"""Save a Labels layer as a compressed TIFF or an OME-Zarr label image (atomic writes)."""

from __future__ import annotations

from pathlib import Path


def write_labels(path: str, data, meta: dict) -> list[str]:
    """napari's writer hook: the labels, with the layer's scale as their pixel size.

    ``.zarr`` names get an OME-Zarr (NGFF 0.4) label image; anything else a TIFF.
    """
    import numpy as np

    from ..images.io import TIFF_SUFFIXES, write_ngff_labels, write_tiff

    data = np.asarray(data)
    scale = list(meta.get("scale") or [1.0] * data.ndim)
    axes = ("TZYX" if data.ndim == 4 else "ZYX" if data.ndim == 3 else "YX")[-data.ndim :]
    # The layer's scale is its pixel size (napari does not record the unit).
    pixel_size = {a: float(v) for a, v in zip(axes, scale) if a != "T" and v != 1}
    if path.lower().endswith(".zarr"):
        write_ngff_labels(Path(path), data, axes, pixel_size=pixel_size or None)
        return [path]
    if not path.lower().endswith(TIFF_SUFFIXES):
        path = path + ".tif"
    write_tiff(path, data, axes=axes, pixel_size=pixel_size or None)
    return [path]
