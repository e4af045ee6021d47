"""Headless segmentation at scale: many files, images bigger than memory, dask clusters.

* :func:`iter_segment_files` segments every input file into
  ``<out>/<stem>_labels.tif`` (or an NGFF label image for zarr inputs),
  skipping finished outputs (resumable), writing atomically, never touching
  inputs, and carrying on past a failing file. With a dask ``Client`` (or
  ``workers=N`` for a LocalCluster) files are segmented on the cluster; the
  model weights are sent to each worker once.
* :func:`iter_segment_large` segments one image block by block from a lazy
  source (zarr, tiled TIFF). Each block reads its core plus a margin for
  objects plus the network halo; its probabilities therefore equal the
  whole-image ones. Blocks label their core + margin; labels of neighbouring
  blocks that cover the same object in their shared region are merged
  (union-find), so each cell ends with exactly one label.
"""

from __future__ import annotations

import glob
import math
import os
import tempfile
import time
import traceback
from collections.abc import Generator, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import UNetError
from .modelfile import cached_model_from_bytes, model_display_name, model_to_bytes
from .progress import Progress

LABEL_SUFFIX = "_labels"
INPUT_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".zarr")


@dataclass
class BatchOptions:
    model: str = "default"
    tile_size: int | None = None
    device: str = "auto"
    axes: str | None = None
    overwrite: bool = False
    allow_input_folder: bool = False
    block_size: int = 4096  # images with a side above this go block by block
    object_margin: int = 64  # pixels around a block in which objects are completed
    precision: str = "auto"
    save_probabilities: bool = False
    overlay: bool = False


@dataclass
class BatchReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"{len(self.done)} segmented, {len(self.skipped)} skipped (output exists), "
            f"{len(self.failed)} failed in {self.seconds:.1f}s"
        ]
        for name, why in self.failed.items():
            lines.append(f"  FAILED {name}: {why}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------
# Inputs and outputs
# --------------------------------------------------------------------------


def is_zarr_path(path: Path) -> bool:
    from .io import is_zarr

    return is_zarr(path)


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files, folders (their images, not recursive) and globs; zarr folders count as one image."""
    found: list[Path] = []
    for item in inputs:
        item = str(item)
        matches = (
            [Path(m) for m in sorted(glob.glob(item))]
            if any(c in item for c in "*?[")
            else [Path(item)]
        )
        if not matches:
            raise UNetError(f"no file matches {item}")
        for path in matches:
            if not path.exists():
                raise UNetError(f"{path} does not exist")
            if path.is_dir() and not is_zarr_path(path):
                for child in sorted(path.iterdir()):
                    if child.name.startswith("."):
                        continue
                    if is_zarr_path(child) or child.suffix.lower() in INPUT_SUFFIXES:
                        if not _stem(child).endswith(LABEL_SUFFIX):
                            found.append(child)
            else:
                found.append(path)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise UNetError("no input images found (TIFF, PNG, JPEG or zarr)")
    return unique


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (
        ".ome.zarr",
        ".ome.tiff",
        ".ome.tif",
        ".zarr",
        ".tiff",
        ".tif",
        ".png",
        ".jpeg",
        ".jpg",
    ):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def output_path(path: Path, out_dir: Path) -> Path:
    if is_zarr_path(path):
        return out_dir / f"{_stem(path)}{LABEL_SUFFIX}.ome.zarr"
    return out_dir / f"{_stem(path)}{LABEL_SUFFIX}.tif"


def check_output_folder(inputs: list[Path], out_dir: Path, allow_input_folder: bool) -> None:
    out = out_dir.resolve()
    folders = {p.parent.resolve() for p in inputs}
    if out in folders and not allow_input_folder:
        raise UNetError(
            f"the output folder {out_dir} holds input images; choose another --out "
            "(or pass --allow-input-folder)"
        )
    stems: dict[str, Path] = {}
    for p in inputs:
        target = output_path(p, out).name
        if target in stems:
            raise UNetError(
                f"{p} and {stems[target]} would both write {target}; segment them into different folders"
            )
        stems[target] = p


# --------------------------------------------------------------------------
# One file
# --------------------------------------------------------------------------


def segment_one_file(
    path: str, out_path: str, options: BatchOptions, blob: bytes, model_name: str = "model"
) -> dict:
    """Segment one file into ``out_path`` (runs in-process or on a dask worker)."""
    from .io import read_image

    path, out_path = Path(path), Path(out_path)
    model = cached_model_from_bytes(blob, model_name)
    image = read_image(path, axes=options.axes, lazy=True)
    axes = image.axes
    ny, nx = image.shape[axes.index("Y")], image.shape[axes.index("X")]
    large = max(ny, nx) > options.block_size
    t0 = time.perf_counter()
    if large:
        from .progress import run_to_end

        run_to_end(iter_segment_large(image.data, out_path, model, axes=axes, options=options))
    else:
        _segment_in_memory(np.asarray(image.data), axes, out_path, model, options, path)
    return {
        "file": str(path),
        "output": str(out_path),
        "seconds": time.perf_counter() - t0,
        "blocks": large,
    }


def _segment_in_memory(
    data, axes, out_path: Path, model, options: BatchOptions, source: Path
) -> None:
    from .io import overlay_png, write_png, write_tiff
    from .segmentation import segment

    result = segment(
        data,
        model,
        axes=axes,
        tile_size=options.tile_size,
        device=options.device,
        precision=options.precision,
        return_probabilities=options.save_probabilities,
    )
    labels, probs = result if options.save_probabilities else (result, None)
    out_axes = "".join(a for a in axes if a != "C" and a not in "YX") + "YX"
    if out_path.name.endswith(".zarr"):
        write_ngff_labels(out_path, labels, out_axes, source)
    else:
        write_tiff(out_path, labels, axes=out_axes)
    if probs is not None:
        write_tiff(
            out_path.with_name(out_path.name.split(LABEL_SUFFIX)[0] + "_probabilities.tif"),
            probs,
            axes="C" + out_axes,
        )
    if options.overlay and labels.ndim == 2:
        write_png(
            out_path.with_name(out_path.name.split(LABEL_SUFFIX)[0] + "_overlay.png"),
            overlay_png(np.squeeze(data) if data.ndim == 2 else data, labels),
        )


def write_ngff_labels(out_path: Path, labels, axes: str, source: Path | None = None) -> Path:
    """Write labels as an OME-Zarr (NGFF 0.4) label image, atomically (temp folder + rename)."""
    from .io import atomic_dir

    with atomic_dir(out_path) as tmp:
        _write_ngff_group(tmp, out_path.name, labels, axes, source)
    return out_path


def _write_ngff_group(tmp: Path, name: str, labels, axes: str, source: Path | None) -> None:
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
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": name,
            "axes": [{"name": a.lower(), "type": kind[a]} for a in axes],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": [1.0] * len(axes)}],
                }
            ],
        }
    ]
    root.attrs["image-label"] = {
        "version": "0.4",
        "source": {"image": str(source) if source else None},
    }


# --------------------------------------------------------------------------
# Many files
# --------------------------------------------------------------------------


def iter_segment_files(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    options: BatchOptions | None = None,
    *,
    client=None,
    workers: int | None = None,
    scheduler: str | None = None,
) -> Generator[Progress, None, BatchReport]:
    """Segment many files; yields a Progress per finished file and returns a report.

    ``client`` (a ``dask.distributed.Client``), ``scheduler`` (its address) or
    ``workers`` (start a LocalCluster with that many workers) run files on a
    cluster; otherwise they run one after another in this process.
    """
    options = options or BatchOptions()
    out_dir = Path(out_dir)
    files = expand_inputs(inputs)
    check_output_folder(files, out_dir, options.allow_input_folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    blob = model_to_bytes(options.model)
    model_name = model_display_name(options.model)
    # Build the network once here: a file whose weights do not fit its config
    # is one clear error before any work, not one failure per image.
    cached_model_from_bytes(blob, model_name)
    report = BatchReport()
    t0 = time.perf_counter()
    todo = []
    for f in files:
        target = output_path(f, out_dir)
        if target.exists() and not options.overwrite:
            report.skipped.append(str(f))
        else:
            todo.append((f, target))
    total = len(files)
    done = len(report.skipped)
    if report.skipped:
        yield Progress("batch", done, total, {"file": "", "skipped": len(report.skipped)})

    own_cluster = None
    if client is None and (workers or scheduler):
        client, own_cluster = _make_client(workers, scheduler)
    try:
        if client is None:
            for f, target in todo:
                try:
                    segment_one_file(str(f), str(target), options, blob, model_name)
                    report.done.append(str(f))
                except Exception as exc:  # one bad file must not stop the batch
                    report.failed[str(f)] = _describe(exc)
                done += 1
                yield Progress("batch", done, total, {"file": str(f), "failed": len(report.failed)})
        else:
            from dask.distributed import as_completed

            blob_future = client.scatter(blob, broadcast=True)
            futures = {
                client.submit(
                    segment_one_file, str(f), str(t), options, blob_future, model_name, pure=False
                ): f
                for f, t in todo
            }
            for future in as_completed(futures):
                f = futures[future]
                try:
                    future.result()
                    report.done.append(str(f))
                except Exception as exc:
                    report.failed[str(f)] = _describe(exc)
                done += 1
                yield Progress("batch", done, total, {"file": str(f), "failed": len(report.failed)})
    finally:
        if own_cluster is not None:
            client.close()
            own_cluster.close()
    report.seconds = time.perf_counter() - t0
    return report


def segment_files(inputs, out_dir, options: BatchOptions | None = None, **kwargs) -> BatchReport:
    """Blocking form of :func:`iter_segment_files`."""
    from .progress import run_to_end

    return run_to_end(iter_segment_files(inputs, out_dir, options, **kwargs))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UNetError):
        return str(exc)
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last


def _make_client(workers: int | None, scheduler: str | None):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except Exception as exc:
            raise UNetError(f"cannot connect to the dask scheduler at {scheduler}: {exc}") from exc
    n = max(1, int(workers))
    threads = max(1, (os.cpu_count() or 1) // n)
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=threads, processes=True, dashboard_address=None
    )
    return Client(cluster), cluster


# --------------------------------------------------------------------------
# One image bigger than memory, block by block
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    index: tuple[int, int]
    core: tuple[slice, slice]  # what this block finally writes
    region: tuple[slice, slice]  # core + object margin: where it computes labels


def plan_blocks(shape: tuple[int, int], block_size: int, margin: int, stride: int) -> list[Block]:
    """Blocks whose cores tile the image; core origins and margins are multiples of ``stride``."""
    size = max(stride, block_size // stride * stride)
    margin = math.ceil(margin / stride) * stride
    blocks = []
    ny, nx = math.ceil(shape[0] / size), math.ceil(shape[1] / size)
    for i in range(ny):
        for j in range(nx):
            y0, x0 = i * size, j * size
            y1, x1 = min(y0 + size, shape[0]), min(x0 + size, shape[1])
            region = (
                slice(max(y0 - margin, 0), min(y1 + margin, shape[0])),
                slice(max(x0 - margin, 0), min(x1 + margin, shape[1])),
            )
            blocks.append(Block((i, j), (slice(y0, y1), slice(x0, x1)), region))
    return blocks


def sampled_value_range(data, axes: str, norm) -> tuple[float, float]:
    """Normalization percentiles of a lazy array from the same Y/X grid as in-memory images."""
    import dask.array as da

    from .normalize import subsample_step

    arr = da.from_array(data, chunks=getattr(data, "chunks", "auto"))
    n_pixels = int(np.prod(arr.shape))
    step = subsample_step(n_pixels)
    # Channels last, like the planes segment() normalizes (channel-first arrays are (C, Y, X)).
    order = [i for i, a in enumerate(axes) if a not in "YX"] + [axes.index("Y"), axes.index("X")]
    sample = np.asarray(arr.transpose(order)[..., ::step, ::step].compute(), dtype=np.float32)
    lo, hi = np.percentile(sample, [norm.low, norm.high])
    return float(lo), float(hi)


def read_window(data, axes: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """data at (possibly mirrored, out-of-range) row/column indices, as a (Y, X[, C]) plane."""
    from .augment import reflect_index

    H, W = data.shape[axes.index("Y")], data.shape[axes.index("X")]
    ry, rx = reflect_index(rows, H), reflect_index(cols, W)
    y0, y1, x0, x1 = int(ry.min()), int(ry.max()) + 1, int(rx.min()), int(rx.max()) + 1
    index = tuple(
        slice(y0, y1) if a == "Y" else slice(x0, x1) if a == "X" else slice(None) for a in axes
    )
    window = np.asarray(data[index])
    # Put Y, X first (then C), as the plane readers expect.
    order = [axes.index("Y"), axes.index("X")] + [i for i, a in enumerate(axes) if a not in "YX"]
    window = np.transpose(window, order)
    return window[(ry - y0)[:, None], (rx - x0)[None, :]]


def _block_labels(
    data, axes: str, block: Block, model, value_range, options: BatchOptions
) -> np.ndarray:
    """Labels of a block's region, from probabilities that equal the whole-image ones."""
    from .instances import instances_from_probabilities
    from .normalize import normalize, to_channels_first
    from .tiling import (
        choose_tile_output,
        default_memory_budget,
        plan_tiles,
        predict_padded,
        prepare_model,
        resolve_device,
        resolve_precision,
    )

    dev = resolve_device(options.device)
    dtype = resolve_precision(options.precision, dev)
    net = prepare_model(model.net, dev, dtype)
    ry, rx = block.region
    shape = (ry.stop - ry.start, rx.stop - rx.start)
    tile = options.tile_size or choose_tile_output(
        net, default_memory_budget(dev), 2 if dtype else 4
    )
    plan = plan_tiles(shape, net.depth, tile)
    rows = np.arange(ry.start - plan.y.pad_before, ry.start - plan.y.pad_before + plan.y.padded)
    cols = np.arange(rx.start - plan.x.pad_before, rx.start - plan.x.pad_before + plan.x.padded)
    window = read_window(data, axes, rows, cols)
    chw = to_channels_first(window, 2 if window.ndim == 3 else None, model.in_channels)
    chw = normalize(chw, model.normalization, value_range)
    probs = predict_padded(net, chw, plan, dev)
    return instances_from_probabilities(probs, model.postprocessing, model.scheme).astype(np.uint32)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, a: int) -> int:
        root = a
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(a, a) != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _shared_pairs(
    region_a: np.ndarray, a_offset, region_b: np.ndarray, b_offset, min_iou: float
) -> list[tuple[int, int]]:
    """Label pairs of two blocks that cover the same object in their shared pixels."""
    a = region_a.reshape(-1).astype(np.int64)
    b = region_b.reshape(-1).astype(np.int64)
    both = (a > 0) & (b > 0)
    if not both.any():
        return []
    ids_a, size_a = np.unique(a[a > 0], return_counts=True)
    ids_b, size_b = np.unique(b[b > 0], return_counts=True)
    codes, inter = np.unique(a[both] * (int(b.max()) + 1) + b[both], return_counts=True)
    pa, pb = np.divmod(codes, int(b.max()) + 1)
    union = size_a[np.searchsorted(ids_a, pa)] + size_b[np.searchsorted(ids_b, pb)] - inter
    keep = inter / union >= min_iou
    return [(int(x) + a_offset, int(y) + b_offset) for x, y in zip(pa[keep], pb[keep])]


def iter_segment_large(
    data,
    output: str | Path,
    model="default",
    *,
    axes: str | None = None,
    options: BatchOptions | None = None,
    client=None,
    min_merge_iou: float = 0.5,
) -> Generator[Progress, None, dict]:
    """Segment one 2D image (optionally with channels) block by block with bounded memory.

    ``data`` is any array-like with numpy slicing (zarr, tifffile's zarr
    store, dask, numpy). Writes ``output`` (``.tif``: a tiled TIFF written
    block row by block row; ``.zarr``: an NGFF label image). Yields progress
    per block; returns a summary dict.
    """
    from .io import atomic_path, infer_axes
    from .modelfile import get_model

    options = options or BatchOptions()
    seg_model = get_model(model) if not isinstance(model, bytes) else cached_model_from_bytes(model)
    axes = axes or infer_axes(tuple(data.shape))
    if set(axes) - set("YXC"):
        raise UNetError(
            f"block-wise segmentation takes one 2D plane (axes YX, YXC or CYX), got {axes}"
        )
    shape = (data.shape[axes.index("Y")], data.shape[axes.index("X")])
    output = Path(output)
    value_range = sampled_value_range(data, axes, seg_model.normalization)
    blocks = plan_blocks(shape, options.block_size, options.object_margin, seg_model.net.stride)
    index_of = {b.index: k for k, b in enumerate(blocks)}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="napari-unet-blocks-", dir=output.parent) as tmpdir:
        tmp = Path(tmpdir)
        # Phase 1: labels of every block region (core + margin), kept on disk.
        offsets = np.zeros(len(blocks) + 1, dtype=np.int64)
        if client is not None:
            blob = client.scatter(model_to_bytes(seg_model), broadcast=True)
            data_ref = (
                client.scatter(data, broadcast=True) if isinstance(data, np.ndarray) else data
            )
            futures = [
                client.submit(
                    _block_task,
                    data_ref,
                    axes,
                    k,
                    b,
                    blob,
                    value_range,
                    options,
                    str(tmp),
                    pure=False,
                )
                for k, b in enumerate(blocks)
            ]
            from dask.distributed import as_completed

            for n, fut in enumerate(as_completed(futures), start=1):
                k, count = fut.result()
                offsets[k + 1] = count
                yield Progress("blocks", n, 2 * len(blocks), {"phase": "label"})
        else:
            for n, b in enumerate(blocks, start=1):
                labels = _block_labels(data, axes, b, seg_model, value_range, options)
                np.save(tmp / f"{index_of[b.index]}.npy", labels)
                offsets[index_of[b.index] + 1] = int(labels.max())
                yield Progress("blocks", n, 2 * len(blocks), {"phase": "label"})
        offsets = np.cumsum(offsets)

        def region_labels(k: int) -> np.ndarray:
            return np.load(tmp / f"{k}.npy", mmap_mode="r")

        # Phase 2: merge labels that cover the same object where regions overlap.
        uf = _UnionFind()
        for k, b in enumerate(blocks):
            i, j = b.index
            for di, dj in ((0, 1), (1, -1), (1, 0), (1, 1)):
                other = index_of.get((i + di, j + dj))
                if other is None:
                    continue
                ob = blocks[other]
                # Compare both blocks' labels on the overlap of their regions.
                ys = slice(
                    max(b.region[0].start, ob.region[0].start),
                    min(b.region[0].stop, ob.region[0].stop),
                )
                xs = slice(
                    max(b.region[1].start, ob.region[1].start),
                    min(b.region[1].stop, ob.region[1].stop),
                )
                if ys.start >= ys.stop or xs.start >= xs.stop:
                    continue
                mine = region_labels(k)[
                    ys.start - b.region[0].start : ys.stop - b.region[0].start,
                    xs.start - b.region[1].start : xs.stop - b.region[1].start,
                ]
                theirs = region_labels(other)[
                    ys.start - ob.region[0].start : ys.stop - ob.region[0].start,
                    xs.start - ob.region[1].start : xs.stop - ob.region[1].start,
                ]
                for x, y in _shared_pairs(
                    np.asarray(mine), offsets[k], np.asarray(theirs), offsets[other], min_merge_iou
                ):
                    uf.union(x, y)
        # Final ids: sequential over the merged objects that appear in some core.
        core_ids = []
        for k, b in enumerate(blocks):
            lab = region_labels(k)[_core_in_region(b)]
            ids = np.unique(lab)
            core_ids.append(ids[ids > 0].astype(np.int64) + offsets[k])
        all_ids = np.concatenate(core_ids) if core_ids else np.zeros(0, np.int64)
        roots = np.array([uf.find(int(x)) for x in all_ids], dtype=np.int64)
        unique_roots = np.unique(roots)
        final_of_root = {int(r): n + 1 for n, r in enumerate(unique_roots)}
        n_objects = len(unique_roots)
        dtype = np.uint16 if n_objects <= np.iinfo(np.uint16).max else np.uint32
        # Phase 3: write each core with its final ids.
        luts = []
        for k in range(len(blocks)):
            top = int(offsets[k + 1] - offsets[k])
            lut = np.zeros(top + 1, dtype=dtype)
            ids = core_ids[k]
            if len(ids):
                lut[ids - offsets[k]] = [final_of_root[uf.find(int(x))] for x in ids]
            luts.append(lut)

        def core_labels(k: int) -> np.ndarray:
            return luts[k][np.asarray(region_labels(k)[_core_in_region(blocks[k])])]

        done = len(blocks)
        if output.name.endswith(".zarr"):
            import zarr

            store = tmp / "labels.zarr"
            arr = zarr.open_array(
                str(store),
                mode="w",
                shape=shape,
                dtype=dtype,
                chunks=(min(1024, shape[0]), min(1024, shape[1])),
                zarr_format=2,
                fill_value=0,
            )
            for k, b in enumerate(blocks):
                arr[b.core] = core_labels(k)
                done += 1
                yield Progress("blocks", done, 2 * len(blocks), {"phase": "write"})
            write_ngff_labels(output, arr, "YX")
        else:
            import tifffile

            rows_of_blocks = sorted({b.index[0] for b in blocks})

            def strips():
                for i in rows_of_blocks:
                    row = [k for k, b in enumerate(blocks) if b.index[0] == i]
                    yield np.concatenate([core_labels(k) for k in row], axis=1)

            def tiles(tile=256):
                # tifffile wants tiles in row-major order; build them strip by strip.
                for strip in strips():
                    for y in range(0, strip.shape[0], tile):
                        band = strip[y : y + tile]
                        for x in range(0, shape[1], tile):
                            t = np.zeros((tile, tile), dtype=dtype)
                            part = band[:, x : x + tile]
                            t[: part.shape[0], : part.shape[1]] = part
                            yield t

            block_rows = blocks[0].core[0].stop - blocks[0].core[0].start
            if block_rows % 256:
                raise UNetError("block size must be a multiple of 256 for TIFF output")
            with atomic_path(output) as part:
                tifffile.imwrite(
                    part,
                    tiles(),
                    shape=shape,
                    dtype=dtype,
                    tile=(256, 256),
                    compression="zlib",
                    bigtiff=True,
                    metadata={"axes": "YX"},
                )
            done = 2 * len(blocks)
            yield Progress("blocks", done, 2 * len(blocks), {"phase": "write"})
    return {
        "objects": n_objects,
        "blocks": len(blocks),
        "seconds": time.perf_counter() - t0,
        "output": str(output),
    }


def _core_in_region(b: Block) -> tuple[slice, slice]:
    return tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(b.core, b.region))


def _block_task(
    data, axes, k: int, block: Block, blob, value_range, options, tmpdir
) -> tuple[int, int]:
    """Dask task: label block number ``k``'s region and store it in the shared temporary folder."""
    model = cached_model_from_bytes(blob)
    labels = _block_labels(data, axes, block, model, value_range, options)
    np.save(Path(tmpdir) / f"{k}.npy", labels)
    return k, int(labels.max())


def segment_large(data, output, model="default", **kwargs) -> dict:
    """Blocking form of :func:`iter_segment_large`."""
    from .progress import run_to_end

    return run_to_end(iter_segment_large(data, output, model, **kwargs))
