"""Labels written into an OME-Zarr image, where OME-Zarr tools look for them (NGFF labels).

``write_labels_into_image`` puts the labels in the image's own
``labels/<name>`` group: a multiscale pyramid with the same levels as the
image (nearest-neighbour downsampling, the image's scale and translation per
level, channel axis dropped), ``image-label`` metadata with a colour per
label and ``source.image: ../../``, listed in ``labels/`` so viewers find it.
NGFF 0.4 for zarr v2 images, 0.5 (attributes under ``ome``) for zarr v3.
Levels are written band by band from the full-resolution labels, which may
be a zarr array on disk: the image is never held in memory whole.
"""

from __future__ import annotations

import colorsys
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UNetError
from .atomic import WRITTEN_BY, atomic_dir

DEFAULT_LABELS_NAME = "napari-unet"
MAX_COLOURED_LABELS = 10_000  # beyond this the colour list would dwarf the metadata
BAND_ROWS = 1024


@dataclass
class NgffImage:
    """What the labels need to know about their OME-Zarr image."""

    path: Path
    zarr_format: int
    axes: list[dict]
    datasets: list[dict]
    shapes: list[tuple[int, ...]]

    @property
    def version(self) -> str:
        """The NGFF version this image's zarr format calls for."""
        return "0.5" if self.zarr_format == 3 else "0.4"


def read_ngff_image(path: str | Path) -> NgffImage:
    """The multiscale layout of an OME-Zarr image.

    Raises
    ------
    UNetError
        When ``path`` is not an OME-Zarr image (no ``multiscales``).
    """
    import zarr

    path = Path(path)
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise UNetError(f"{path} is not an OME-Zarr image: {exc}") from exc
    attrs = dict(group.attrs)
    multiscales = attrs.get("ome", attrs).get("multiscales")
    if not multiscales:
        raise UNetError(f"{path} is not an OME-Zarr image (no 'multiscales' in its metadata)")
    ms = multiscales[0]
    axes = [a if isinstance(a, dict) else {"name": a} for a in ms.get("axes", [])]
    datasets = list(ms["datasets"])
    shapes = [tuple(group[d["path"]].shape) for d in datasets]
    return NgffImage(path, group.metadata.zarr_format, axes, datasets, shapes)


def write_labels_into_image(
    image_path: str | Path, labels, name: str = DEFAULT_LABELS_NAME
) -> Path:
    """Write ``labels`` (the image's shape without channels) into ``<image>/labels/<name>``.

    Written aside and renamed into place; an earlier ``<name>`` group is
    replaced (the caller decides whether it may be).

    Returns
    -------
    pathlib.Path
        The label group's path.
    """
    import zarr

    image = read_ngff_image(image_path)
    keep = [i for i, a in enumerate(image.axes) if a.get("type") != "channel"]
    level_shapes = [tuple(shape[i] for i in keep) for shape in image.shapes]
    if tuple(labels.shape) != level_shapes[0]:
        raise UNetError(
            f"labels of shape {tuple(labels.shape)} do not fit {image.path.name}, "
            f"whose full-resolution level without channels is {level_shapes[0]}"
        )
    check_writable_into(image.path, name)
    target = image.path / "labels" / name
    with atomic_dir(target) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=image.zarr_format)
        # The full-resolution level reads every label once: its largest id comes with it.
        n_labels = max(
            _write_level(group, dataset["path"], labels, shape)
            for dataset, shape in zip(image.datasets, level_shapes)
        )
        metadata = _label_metadata(image, keep, name, n_labels)
        if image.zarr_format == 3:
            group.attrs.update({"ome": {"version": "0.5", **metadata}})
        else:
            group.attrs.update(metadata)
        group.attrs["napari_unet"] = {"written_by": WRITTEN_BY}
    _list_in_labels_group(image, name)
    return target


def _write_level(group, path: str, labels, shape: tuple[int, ...]) -> int:
    """One pyramid level: nearest-neighbour picks from the full resolution, a band of rows at a time.

    Returns the largest label id written.
    """
    full = tuple(labels.shape)
    chunks = tuple([1] * (len(shape) - 2) + [min(1024, shape[-2]), min(1024, shape[-1])])
    out = group.create_array(path, shape=shape, dtype=labels.dtype, chunks=chunks, fill_value=0)
    picks = [_nearest(n_out, n_in) for n_out, n_in in zip(shape, full)]
    largest = 0
    for y0 in range(0, shape[-2], BAND_ROWS):
        rows = picks[-2][y0 : y0 + BAND_ROWS]
        lo, hi = int(rows.min()), int(rows.max()) + 1
        band = np.asarray(labels[..., lo:hi, :])[np.ix_(*picks[:-2], rows - lo, picks[-1])]
        out[..., y0 : y0 + len(rows), :] = band
        largest = max(largest, int(band.max(initial=0)))
    return largest


def _nearest(n_out: int, n_in: int) -> np.ndarray:
    """Input indices for ``n_out`` output samples: every (n_in / n_out)-th, from the first.

    NGFF puts pixel centres at index * scale, so level k's pixel j sits on
    full-resolution pixel j * n_in / n_out: the ``[::2]`` of a halved level.
    """
    return np.minimum((np.arange(n_out) * n_in // n_out).astype(np.int64), n_in - 1)


def label_colours(n_labels: int) -> list[dict]:
    """A distinct, reproducible colour for each label 1..n (golden-ratio hues)."""
    colours = []
    for k in range(1, n_labels + 1):
        r, g, b = colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.65, 0.95)
        colours.append({"label-value": k, "rgba": [int(r * 255), int(g * 255), int(b * 255), 255]})
    return colours


def _label_metadata(image: NgffImage, keep: list[int], name: str, n_labels: int) -> dict:
    def without_channel(transform: dict) -> dict:
        out = dict(transform)
        for key in ("scale", "translation"):
            if key in out:
                out[key] = [out[key][i] for i in keep]
        return out

    multiscale = {
        "name": name,
        "axes": [image.axes[i] for i in keep],
        "datasets": [
            {
                "path": d["path"],
                "coordinateTransformations": [
                    without_channel(t) for t in d.get("coordinateTransformations", [])
                ],
            }
            for d in image.datasets
        ],
    }
    label = {"source": {"image": "../../"}}
    if n_labels <= MAX_COLOURED_LABELS:
        label["colors"] = label_colours(n_labels)
    if image.version == "0.4":
        multiscale["version"] = "0.4"
        label["version"] = "0.4"
    return {"multiscales": [multiscale], "image-label": label}


# The metadata files a zarr group may hold (v2 and v3).
GROUP_FILES = (".zattrs", ".zgroup", "zarr.json")


def check_writable_into(image_path: str | Path, name: str = DEFAULT_LABELS_NAME) -> None:
    """Before any work: labels can go into this OME-Zarr image without following a link.

    Refuses a ``labels`` folder (or its metadata files) that is a symbolic
    link, which would send writes, and with --replace-others deletions, into
    a folder the link points at; and a store or ``labels`` folder this user
    cannot write (found before segmenting, not after).
    """
    image = Path(image_path)
    labels = image / "labels"
    for path in (labels, *(labels / f for f in GROUP_FILES)):
        if path.is_symlink():
            raise UNetError(
                f"{path} is a symbolic link: napari-unet does not write through links inside "
                "an image; replace it with a folder or write elsewhere with --out"
            )
    for folder in (image, labels) if labels.is_dir() else (image,):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UNetError(f"cannot write into {folder}: it is read-only for you (use --out)")
    for path in (labels / f for f in GROUP_FILES):
        if path.exists() and not os.access(path, os.W_OK):
            raise UNetError(f"cannot write {path}: it is read-only for you (use --out)")


def labels_listed(image_path: str | Path, name: str = DEFAULT_LABELS_NAME) -> bool:
    """True when the image's ``labels`` group lists ``name`` (what viewers read to find it)."""
    import zarr

    try:
        group = zarr.open_group(str(Path(image_path) / "labels"), mode="r")
        attrs = dict(group.attrs)
    except Exception:
        return False
    names = attrs.get("ome", {}).get("labels", []) if "ome" in attrs else attrs.get("labels", [])
    return name in names


def _list_in_labels_group(image: NgffImage, name: str) -> None:
    """Add ``name`` to the ``labels`` group's list, which viewers read to find label images."""
    import zarr

    group = zarr.open_group(str(image.path / "labels"), mode="a", zarr_format=image.zarr_format)
    attrs = dict(group.attrs)
    if image.zarr_format == 3:
        ome = dict(attrs.get("ome", {}))
        names = list(ome.get("labels", []))
        if name not in names:
            group.attrs["ome"] = {**ome, "version": "0.5", "labels": [*names, name]}
    else:
        names = list(attrs.get("labels", []))
        if name not in names:
            group.attrs["labels"] = [*names, name]
