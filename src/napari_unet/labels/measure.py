"""A table of measurements of labelled objects: what a biologist does next with the labels.

Built on :func:`skimage.measure.regionprops_table`; written as CSV atomically.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from skimage.measure import regionprops_table

from ..errors import UNetError
from ..images.atomic import atomic_path

# The columns every table has; mean and max intensity when an image is given.
SHAPE_PROPERTIES = ("label", "area", "centroid", "equivalent_diameter_area", "eccentricity")
INTENSITY_PROPERTIES = ("intensity_mean", "intensity_max")


def measure_objects(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
) -> dict[str, np.ndarray]:
    """One row per object: label, area, centroid, diameter (and intensities with ``image``).

    Parameters
    ----------
    labels
        Instance labels, 2-D (Y, X) or 3-D (Z, Y, X); 0 is background.
    image
        The image the labels were made from, of the same shape (one channel);
        adds the mean and maximum intensity of each object.
    spacing
        Pixel size per axis (e.g. µm): areas, centroids and diameters are then
        in those units; default pixels. Eccentricity is measured on 2-D labels only.

    Returns
    -------
    dict of str to numpy.ndarray
        Columns of equal length: ``label``, ``area``, ``centroid-0`` ...,
        ``equivalent_diameter_area``, ``eccentricity`` (2-D),
        ``intensity_mean``, ``intensity_max`` (with an image).
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise UNetError(f"measurements need 2-D or 3-D labels, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise UNetError(f"labels must hold integer ids, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise UNetError("labels must not be negative")
    if image is not None:
        image = np.asarray(image)
        if image.shape != labels.shape:
            raise UNetError(
                f"the image {image.shape} and the labels {labels.shape} must have one shape "
                "(one channel)"
            )
    properties = [p for p in SHAPE_PROPERTIES if labels.ndim == 2 or p != "eccentricity"]
    if image is not None:
        properties += INTENSITY_PROPERTIES
    return regionprops_table(
        labels,
        intensity_image=image,
        properties=properties,
        spacing=tuple(spacing) if spacing is not None else None,
    )


def write_csv(table: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write a measurements table as CSV (atomically: a reader never sees half a file)."""
    path = Path(path)
    columns = list(table)
    n = len(table[columns[0]]) if columns else 0
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for i in range(n):
            writer.writerow([_cell(table[c][i]) for c in columns])
    return path


def _cell(value) -> str:
    if isinstance(value, np.integer | int):
        return str(int(value))
    return f"{float(value):.6g}"
