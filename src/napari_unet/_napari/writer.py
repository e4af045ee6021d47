"""Save a Labels layer as a compressed TIFF (atomic write)."""

from __future__ import annotations


def write_labels(path: str, data, meta: dict) -> list[str]:
    from ..io import write_tiff

    if not path.lower().endswith((".tif", ".tiff")):
        path = path + ".tif"
    write_tiff(path, data)
    return [path]
