"""Reading images with their axes, and writing results atomically.

TIFF / OME-TIFF, PNG/JPEG and zarr / OME-Zarr are read; big TIFF and zarr
inputs can stay lazy (memory-mapped or chunked) for block-wise processing.
Every write goes to a temporary name beside the target and is renamed into
place, so a crash never leaves a half-written file, and inputs are never
opened for writing.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UNetError
from .atomic import WRITTEN_BY, atomic_dir, atomic_path
from .ngff_labels import read_ngff_image

AXES_LETTERS = set("TZCYX")
# The one registry of image formats: read_image, batch runs, training folders
# and the napari writer all take their suffixes from here.
TIFF_SUFFIXES = (".tif", ".tiff")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
ZARR_SUFFIXES = (".zarr", ".ome.zarr")
# Image files (training folders pair these by name).
FILE_IMAGE_SUFFIXES = TIFF_SUFFIXES + PLAIN_SUFFIXES
# Everything read_image reads (zarr stores are folders).
READABLE_SUFFIXES = FILE_IMAGE_SUFFIXES + ZARR_SUFFIXES
# Longest first, so "a.ome.tif" loses ".ome.tif", not ".tif".
_STEM_SUFFIXES = tuple(sorted({*READABLE_SUFFIXES, ".ome.tif", ".ome.tiff"}, key=len, reverse=True))


def image_stem(path: str | Path) -> str:
    """A file's name without its image suffix: ``a.ome.zarr`` -> ``a``, ``b.TIF`` -> ``b``."""
    name = Path(path).name
    for suffix in _STEM_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


@dataclass
class ImageData:
    """An array (numpy, zarr or dask) and its axes, e.g. "YX", "YXC", "ZYX", "TCYX".

    ``pixel_size`` maps spatial axes ("X", "Y", "Z") to the size of a pixel
    in ``unit`` (e.g. "micrometer"), when the file says so.
    """

    data: object
    axes: str
    path: Path | None = None
    pixel_size: dict[str, float] = field(default_factory=dict)
    unit: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the image data."""
        return tuple(self.data.shape)


def infer_axes(shape: tuple[int, ...], rgb: bool | None = None) -> str:
    """Guess axes from a shape: trailing 3 or 4 is colour, leading dims are Z or T/Z.

    Pass explicit axes (``--axes``) where the guess is wrong, e.g. "CYX".
    """
    ndim = len(shape)
    if ndim < 2:
        raise UNetError(f"an image needs at least 2 dimensions (Y, X); got shape {tuple(shape)}")
    colour = shape[-1] in (3, 4) if rgb is None else rgb
    if colour and ndim >= 3:
        lead = {3: "", 4: "Z", 5: "TZ"}.get(ndim)
        if lead is None:
            raise UNetError(
                f"cannot guess the axes of a {ndim}D colour image; give them (e.g. TZYXC)"
            )
        return lead + "YXC"
    lead = {2: "", 3: "Z", 4: "TZ"}.get(ndim)
    if lead is None:
        raise UNetError(
            f"cannot guess the axes of a {ndim}D image {tuple(shape)}; give them (e.g. TZCYX)"
        )
    return lead + "YX"


def check_axes(axes: str, ndim: int) -> str:
    """Upper-case ``axes`` after checking they fit an array of ``ndim`` dimensions.

    Raises
    ------
    UNetError
        When letters repeat, are unknown, miss Y/X, or do not match ``ndim``.
    """
    axes = axes.upper()
    if (
        len(axes) != ndim
        or set(axes) - AXES_LETTERS
        or len(set(axes)) != len(axes)
        or not {"Y", "X"} <= set(axes)
    ):
        raise UNetError(
            f"axes {axes!r} do not fit an image with {ndim} dimensions; use each of T, Z, C, Y, X "
            "at most once and include Y and X"
        )
    return axes


def _ome_axes(tif) -> str | None:
    series = tif.series[0]
    axes = getattr(series, "axes", None)
    if not axes:
        return None
    axes = axes.upper().replace("S", "C").replace("Q", "Z").replace("I", "Z")
    return axes if set(axes) <= AXES_LETTERS and len(set(axes)) == len(axes) else None


def _squeeze_singletons(data, axes: str) -> tuple[object, str]:
    """Drop length-1 T, Z and C axes (a single plane stored as 1xYxX)."""
    keep = [i for i, a in enumerate(axes) if a in "YX" or data.shape[i] != 1]
    if len(keep) == len(axes):
        return data, axes
    index = tuple(slice(None) if i in keep else 0 for i in range(len(axes)))
    return data[index], "".join(axes[i] for i in keep)


def read_image(path: str | Path, axes: str | None = None, lazy: bool = False) -> ImageData:
    """Read an image file (TIFF/OME-TIFF, PNG/JPEG, zarr/OME-Zarr) with its axes.

    ``lazy`` keeps TIFF and zarr data on disk (a zarr array), for images
    bigger than memory. Errors name the file and what went wrong.
    """
    path = Path(path)
    if not path.exists():
        raise UNetError(f"{path} does not exist")
    name = path.name.lower()
    try:
        pixel_size, unit = {}, None
        if is_zarr(path):
            data, file_axes, pixel_size, unit = _read_zarr(path)
            if not lazy:
                data = np.asarray(data)
        elif name.endswith(TIFF_SUFFIXES):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                # OME/ImageJ axes, and colour samples (S, e.g. planar RGB "SYX"),
                # which a shape alone would take for a 3-plane stack.
                samples = "S" in (getattr(tif.series[0], "axes", "") or "")
                file_axes = _ome_axes(tif) if (tif.is_ome or tif.is_imagej or samples) else None
                pixel_size, unit = _tiff_pixel_size(tif)
                if not lazy:
                    data = tif.asarray()
            if lazy:
                import zarr

                store = tifffile.imread(path, aszarr=True)
                data = zarr.open(store, mode="r")
                if hasattr(data, "keys") and not hasattr(
                    data, "shape"
                ):  # pyramid: take full resolution
                    data = data["0"]
        elif name.endswith(PLAIN_SUFFIXES):
            import imageio.v3 as iio

            data, file_axes = iio.imread(path), None
        else:
            raise UNetError(f"{path.name}: unsupported file type (use TIFF, PNG, JPEG or zarr)")
    except UNetError:
        raise
    except Exception as exc:  # any reader failure is a problem with the user's file
        raise UNetError(f"cannot read {path}: {exc}") from exc
    if file_axes is not None and len(file_axes) != len(data.shape):
        file_axes = None
    chosen = check_axes(axes, len(data.shape)) if axes else file_axes or infer_axes(data.shape)
    if not axes:
        data, chosen = _squeeze_singletons(data, chosen)
    pixel_size = {a: v for a, v in pixel_size.items() if a in chosen}
    return ImageData(data, chosen, path, pixel_size, unit if pixel_size else None)


def _tiff_pixel_size(tif) -> tuple[dict[str, float], str | None]:
    """Pixel sizes a TIFF records: napari-unet's own, OME's PhysicalSize, or ImageJ's resolution."""
    import re

    page = tif.pages[0]
    try:
        own = json.loads(page.description) if tif.is_shaped else {}
    except (ValueError, TypeError):
        own = {}
    if isinstance(own, dict) and isinstance(own.get("pixel_size"), dict):
        sizes = {k: float(v) for k, v in own["pixel_size"].items() if _positive(v)}
        return sizes, own.get("unit")
    if tif.is_ome and tif.ome_metadata:
        sizes, unit = {}, None
        for axis in "XYZ":
            found = re.search(rf'PhysicalSize{axis}="([0-9.eE+-]+)"', tif.ome_metadata)
            if found and _positive(found.group(1)):
                sizes[axis] = float(found.group(1))
        found_unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
        unit = _unit_name(found_unit.group(1)) if found_unit else "micrometer"
        return sizes, unit if sizes else None
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        x_res, y_res = page.tags.get("XResolution"), page.tags.get("YResolution")
        sizes = {}
        for axis, tag in (("X", x_res), ("Y", y_res)):
            if tag is not None and tag.value[0] and tag.value[1]:
                sizes[axis] = tag.value[1] / tag.value[0]  # pixels per unit -> unit per pixel
        if _positive(meta.get("spacing")):
            sizes["Z"] = float(meta["spacing"])
        unit = _unit_name(meta.get("unit"))
        return (sizes, unit) if unit and sizes else ({}, None)
    return {}, None


def _positive(value) -> bool:
    try:
        return float(value) > 0 and np.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _unit_name(unit) -> str | None:
    """An NGFF unit name for the spellings microscopy files use."""
    if not unit:
        return None
    text = str(unit).strip()
    aliases = {
        "micron": "micrometer",
        "um": "micrometer",
        "µm": "micrometer",
        "nm": "nanometer",
        "mm": "millimeter",
        "pixel": None,
    }
    return aliases.get(text, aliases.get(text.lower(), text.lower()))


def is_zarr(path: Path) -> bool:
    """True when ``path`` is a zarr store: a ``.zarr`` name or a folder with zarr metadata."""
    markers = (".zattrs", ".zarray", ".zgroup", "zarr.json")
    return path.name.lower().endswith(ZARR_SUFFIXES) or (
        path.is_dir() and any((path / m).exists() for m in markers)
    )


def _read_zarr(path: Path):
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise UNetError(f"cannot open {path} as zarr: {exc}") from exc
    if hasattr(node, "shape"):
        return node, None, {}, None
    # OME-Zarr (NGFF): the first multiscale dataset is full resolution.
    image = read_ngff_image(path)
    first = image.datasets[0]
    array = node[first["path"]]
    axes, pixel_size, unit = None, {}, None
    if image.axes:
        axes = "".join(a["name"].upper() for a in image.axes)
        scale = next(
            (
                t.get("scale")
                for t in first.get("coordinateTransformations", [])
                if t.get("type") == "scale"
            ),
            None,
        )
        for k, a in enumerate(image.axes):
            if a.get("type") == "space" and scale and _positive(scale[k]):
                pixel_size[a["name"].upper()] = float(scale[k])
                unit = unit or a.get("unit")
    return array, axes, pixel_size, unit


def tiff_metadata(
    axes: str | None = None, pixel_size: dict | None = None, unit: str | None = None
) -> dict:
    """The metadata napari-unet writes into a TIFF: its mark, the axes, the pixel size."""
    meta: dict = {"written_by": WRITTEN_BY, **({"axes": axes} if axes else {})}
    if pixel_size:
        meta["pixel_size"], meta["unit"] = dict(pixel_size), unit
    return meta


def tiff_resolution(pixel_size: dict | None) -> dict:
    """``tifffile.imwrite`` arguments giving X/Y pixels per unit (the TIFF resolution tags)."""
    if not pixel_size or "X" not in pixel_size or "Y" not in pixel_size:
        return {}
    return {"resolution": (1.0 / pixel_size["X"], 1.0 / pixel_size["Y"]), "resolutionunit": 1}


def write_tiff(
    path: str | Path,
    array: np.ndarray,
    axes: str | None = None,
    pixel_size: dict | None = None,
    unit: str | None = None,
) -> Path:
    """Write a (compressed) TIFF atomically, with napari-unet's mark, the axes and the pixel size."""
    import tifffile

    path = Path(path)
    with atomic_path(path) as tmp:
        # Labels and probabilities are never colour: a leading 3 must not become RGB.
        tifffile.imwrite(
            tmp,
            np.asarray(array),
            compression="zlib",
            photometric="minisblack",
            metadata=tiff_metadata(axes, pixel_size, unit),
            **tiff_resolution(pixel_size),
        )
    return path


def output_owner(path: str | Path) -> str:
    """Who wrote an existing output: "napari-unet" (and it reads whole), "damaged", or "other".

    "damaged" is a file with napari-unet's mark that cannot be read to the
    end (a run killed while something else copied it, a truncated copy).
    """
    import tifffile

    path = Path(path)
    if path.is_symlink() or not path.exists():
        return "other"
    if path.suffix.lower() == ".png":
        return _png_owner(path)
    if path.is_dir():
        try:
            import zarr

            group = zarr.open_group(str(path), mode="r")
            ours = dict(group.attrs).get("napari_unet", {}).get("written_by") == WRITTEN_BY
            if ours:
                np.asarray(group["0"][...])
        except Exception:
            return "other" if not (path / ".zattrs").exists() else "damaged"
        return "napari-unet" if ours else "other"
    try:
        with tifffile.TiffFile(path) as tif:
            meta = tif.shaped_metadata[0] if tif.shaped_metadata else {}
            ours = isinstance(meta, dict) and meta.get("written_by") == WRITTEN_BY
            if ours:
                tif.asarray()
    except Exception:
        return "damaged" if _has_mark(path) else "other"
    return "napari-unet" if ours else "other"


def _png_owner(path: Path) -> str:
    from PIL import Image

    try:
        with Image.open(path) as picture:
            ours = picture.info.get("Software") == WRITTEN_BY
            if ours:
                picture.load()
    except Exception:
        return "damaged" if _has_mark(path) else "other"
    return "napari-unet" if ours else "other"


def _has_mark(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return WRITTEN_BY.encode() in f.read(1 << 16)
    except OSError:
        return False


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB image as PNG, atomically, with napari-unet's mark; returns the path."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    info = PngInfo()
    info.add_text("Software", WRITTEN_BY)  # so a later run knows the file is its own
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(tmp, format="PNG", pnginfo=info)
    return path


def write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    return path


def write_ngff_labels(
    out_path: Path,
    labels,
    axes: str,
    source: Path | None = None,
    pixel_size: dict | None = None,
    unit: str | None = None,
) -> Path:
    """Write labels as an OME-Zarr (NGFF 0.4) label image, atomically (temp folder + rename).

    ``pixel_size`` (axis -> size in ``unit``) becomes the dataset's scale, so
    the labels overlay their image in any NGFF viewer.
    """
    with atomic_dir(out_path) as tmp:
        _write_ngff_group(tmp, out_path.name, labels, axes, source, pixel_size or {}, unit)
    return out_path


def _write_ngff_group(
    tmp: Path, name: str, labels, axes: str, source: Path | None, pixel_size: dict, unit
) -> None:
    import zarr

    root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
    chunks = tuple(
        [1] * (len(axes) - 2) + [min(1024, labels.shape[-2]), min(1024, labels.shape[-1])]
    )
    arr = root.create_array(
        "0", shape=labels.shape, dtype=labels.dtype, chunks=chunks, fill_value=0
    )
    if isinstance(labels, np.ndarray):
        arr[...] = labels
    else:  # a zarr array: copy chunk by chunk
        step = chunks[-2] * 4
        for y in range(0, labels.shape[-2], step):
            arr[..., y : y + step, :] = np.asarray(labels[..., y : y + step, :])
    kind = {"T": "time", "Z": "space", "C": "channel", "Y": "space", "X": "space"}

    def axis(a: str) -> dict:
        entry = {"name": a.lower(), "type": kind[a]}
        if a in pixel_size and unit:
            entry["unit"] = unit
        return entry

    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": name,
            "axes": [axis(a) for a in axes],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [float(pixel_size.get(a, 1.0)) for a in axes]}
                    ],
                }
            ],
        }
    ]
    root.attrs["napari_unet"] = {"written_by": WRITTEN_BY}
    root.attrs["image-label"] = {
        "version": "0.4",
        # Relative, as NGFF asks: the pair can be moved together.
        "source": {"image": _relative_source(source, tmp, name)},
    }


def _relative_source(source: Path | None, tmp: Path, name: str) -> str | None:
    """The image's path relative to the label image that ``tmp`` becomes (``tmp.parent / name``)."""
    if source is None:
        return None
    return os.path.relpath(Path(source).absolute(), (tmp.parent / name).absolute())


def overlay_png(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """An RGB picture of a grey (or RGB) image with label outlines in colour."""
    from skimage.segmentation import find_boundaries

    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        img = img[..., :3].mean(axis=-1)
    lo, hi = np.percentile(img, [1, 99.8])
    grey = np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=-1)
    edges = find_boundaries(labels, mode="inner")
    rng = np.random.default_rng(1)
    palette = rng.integers(80, 256, size=(int(labels.max()) + 1, 3), dtype=np.uint8)
    rgb[edges] = palette[labels[edges]]
    return rgb


def files_by_stem(folder: Path, strip_suffixes: tuple[str, ...] = ()) -> dict[str, Path]:
    """Image files of a folder keyed by stem, with suffixes like ``_labels`` removed.

    Two files that end up with the same stem are an error (which one is meant?),
    and so is a pipe or device named like an image: reading it would hang.
    """
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in FILE_IMAGE_SUFFIXES or p.name.startswith("."):
            continue
        try:
            regular = stat.S_ISREG(os.stat(p).st_mode)
        except OSError as exc:
            raise UNetError(f"cannot read {p}: {exc.strerror or exc}") from exc
        if not regular:
            raise UNetError(f"{p} is not a regular file (a pipe or a device?): remove it")
        stem = p.stem
        for suffix in strip_suffixes:
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        if stem in found:
            raise UNetError(f"{found[stem].name} and {p.name} in {folder} both stand for {stem!r}")
        found[stem] = p
    return found


def match_stems(
    left: dict[str, Path], right: dict[str, Path], left_what: str, right_what: str
) -> list[tuple[Path, Path]]:
    """Pairs of files with equal stems; a clear error lists what has no partner."""
    missing = sorted(set(left) - set(right))
    extra = sorted(set(right) - set(left))
    if missing or extra:
        parts = []
        if missing:
            parts.append(
                f"no {right_what} for {len(missing)} {left_what}(s): {', '.join(missing[:5])}"
            )
        if extra:
            parts.append(f"no {left_what} for {len(extra)} {right_what}(s): {', '.join(extra[:5])}")
        raise UNetError("; ".join(parts) + " (files are paired by name)")
    return [(left[s], right[s]) for s in sorted(left)]
