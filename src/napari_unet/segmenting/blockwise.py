"""One image bigger than memory, segmented block by block with bounded memory.

Each block reads its core, a margin for objects, and enough context for the
network (its halo, more when the image is shrunk), and goes through the same
per-plane pipeline as whole images
(:func:`~napari_unet.segmenting.segmentation.iter_segment_plane`). Image type and
intensity percentiles are decided once for the whole image from a regular
subsample (the grid in-memory images use), and the resize factor once from
the middle block, so every block sees the same input conversion; at scale 1
a block's probabilities equal the whole-image ones. Blocks label their core
and margin; labels of neighbouring blocks that cover the same object in
their shared region are merged (union-find), so each cell ends with exactly
one label.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Generator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import UNetError
from ..heap import release_freed_memory, reuse_freed_memory, reusing_freed_memory
from ..images.atomic import resumable_blocks
from ..images.io import tiff_metadata, tiff_resolution, write_ngff_labels
from ..labels.instances import label_dtype
from ..models.modelfile import SegmentationModel, cached_model_from_bytes, get_model, model_to_bytes
from ..progress import Progress, Stage, run_to_end
from .options import BatchOptions

TIFF_TILE = 256


@dataclass(frozen=True)
class Block:
    """One block of an image bigger than memory: what it reads (with context) and what it writes."""

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


@dataclass(frozen=True)
class InputStats:
    """Decided once per image: its type and the percentiles of its converted input."""

    value_range: tuple[float, float]
    image_type: str


def sampled_input_stats(
    data, axes: str, model: SegmentationModel, image_type: str | None = None
) -> InputStats:
    """Image type and normalization percentiles of a lazy image, from a regular subsample.

    The subsample is the Y/X grid :func:`~napari_unet.images.normalize.percentile_range`
    uses for an in-memory plane of the same size, taken after the same
    channel mapping and conversion (those of the model that will segment the
    plane's image type), so both paths normalize alike.
    """
    from ..images.normalize import percentile_range, subsample_step
    from ..models.modelfile import convert_for_segmenting

    ny, nx = data.shape[axes.index("Y")], data.shape[axes.index("X")]
    step = subsample_step(model.in_channels * ny * nx)
    grid = tuple(slice(None, None, step) if a in "YX" else slice(None) for a in axes)
    try:
        sample = np.asarray(data[grid])  # numpy, zarr and dask slice with a step themselves
    except (TypeError, ValueError, IndexError, NotImplementedError):
        import dask.array as da

        sample = np.asarray(da.from_array(data, chunks=getattr(data, "chunks", "auto"))[grid])
    order = [axes.index("Y"), axes.index("X")] + [i for i, a in enumerate(axes) if a not in "YX"]
    sample = np.transpose(sample, order)
    chw, kind, chosen = convert_for_segmenting(
        sample, 2 if sample.ndim == 3 else None, model, image_type
    )
    norm = chosen.normalization
    return InputStats(percentile_range(chw, norm.low, norm.high), kind)


def context_margin(depth: int, scale: float) -> int:
    """Pixels of real context a block needs around its region (a multiple of the pooling stride).

    The network sees ``halo`` pixels of the plane it runs on; on a plane
    shrunk by ``scale`` that is ``halo / scale`` pixels of the image.
    """
    from ..models.model import halo

    stride = 2**depth
    return math.ceil(halo(depth) / min(scale, 1.0) / stride) * stride


def _segment_block(
    data, axes: str, block: Block, model: SegmentationModel, stats: InputStats, scale, options
):
    """The per-plane pipeline on a block's region with its context; returns the region's result."""
    from ..devices import resolve_device, resolve_precision
    from .segmentation import PreparedNets, iter_segment_plane

    dev = resolve_device(options.device)
    nets = PreparedNets(dev, resolve_precision(options.precision, dev))
    depth = model.net.config.depth
    # Scale still undecided: context for an unshrunk plane (a shrinking decision
    # makes the caller redo the block with the wider context it needs).
    margin = context_margin(depth, scale if scale is not None else 1.0)
    ry, rx = block.region
    rows = np.arange(ry.start - margin, ry.stop + margin)
    cols = np.arange(rx.start - margin, rx.stop + margin)
    window = read_window(data, axes, rows, cols)
    tiling = dict(tile_size=options.tile_size, device=dev, prepared=True)
    result = run_to_end(
        iter_segment_plane(
            window,
            2 if window.ndim == 3 else None,
            model,
            nets,
            options.params_for(model.postprocessing),
            tiling,
            size_rule=options.rule_for(model.size_rule),
            image_type=stats.image_type,
            value_range=stats.value_range,
            scale=scale,
            region=(
                slice(margin, margin + len(rows) - 2 * margin),
                slice(margin, margin + len(cols) - 2 * margin),
            ),
        )
    )
    return result


def read_window(data, axes: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """data at (possibly mirrored, out-of-range) row/column indices, as a (Y, X[, C]) plane."""
    from ..images.planes import reflect_index

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


@reusing_freed_memory
def iter_segment_large(
    data,
    output: str | Path,
    model="default",
    *,
    axes: str | None = None,
    options: BatchOptions | None = None,
    client=None,
    min_merge_iou: float = 0.5,
    pixel_size: dict | None = None,
    unit: str | None = None,
    into_image: Path | None = None,
) -> Generator[Progress, None, dict]:
    """Segment one 2D image (optionally with channels) block by block with bounded memory.

    ``data`` is any array-like with numpy slicing (zarr, tifffile's zarr
    store, dask, numpy). Writes ``output`` (``.tif``: a tiled TIFF written
    block row by block row; ``.zarr``: an NGFF label image). Yields progress
    per block; returns a summary dict. ``pixel_size`` (axis -> size in
    ``unit``) is written into the output, so the labels keep the image's scale.
    With ``into_image`` (an OME-Zarr image), the labels go into its own
    ``labels/<output's name>`` group instead, pyramid levels included.
    """
    from ..images.io import infer_axes
    from ..models.sizes import segmenting_scale

    options = options or BatchOptions()
    options.check()
    seg_model = get_model(model) if not isinstance(model, bytes) else cached_model_from_bytes(model)
    axes = axes or infer_axes(tuple(data.shape))
    if set(axes) - set("YXC"):
        raise UNetError(
            f"block-wise segmentation takes one 2D plane (axes YX, YXC or CYX), got {axes}"
        )
    shape = (data.shape[axes.index("Y")], data.shape[axes.index("X")])
    output = Path(output)
    stats = sampled_input_stats(data, axes, seg_model, options.image_type)
    blocks = plan_blocks(shape, options.block_size, options.object_margin, seg_model.net.stride)
    t0 = time.perf_counter()
    rule = options.rule_for(seg_model.size_rule) or seg_model.size_rule
    done: dict[int, np.ndarray] = {}
    scale = segmenting_scale(seg_model.objects, rule, options.diameter)
    if scale is not None:  # a given diameter, or the working scale cells were trained at
        notes = []
    else:
        # One resize factor for all blocks (decided on the middle one), so
        # neighbouring blocks see the same input and their labels merge.
        # Prediction is exact whatever the context around a region, so the
        # middle block's labels are already its final ones unless the plane
        # was shrunk (it then needs more context than the block was given).
        middle = len(blocks) // 2
        first = _segment_block(data, axes, blocks[middle], seg_model, stats, None, options)
        scale, notes = first.scale, first.notes
        if scale >= 1.0:
            done[middle] = first.labels
    yield Progress(
        Stage.BLOCKS,
        0,
        2 * len(blocks),
        {"phase": "plan", "image_type": stats.image_type, "scale": scale, "notes": notes},
    )
    # Blocks are kept beside the output (beside the image when writing into it),
    # in a folder named by everything that decides them: a run killed part-way
    # leaves its finished blocks there, and a rerun of the same job takes them up.
    work_dir = into_image.parent if into_image is not None else output.parent
    plan = _plan_key(data, axes, blocks, seg_model, stats, scale, options)
    with resumable_blocks(work_dir, output.name, plan) as store:
        # Phase 1: labels of every block region (core + margin), kept on disk.
        offsets = yield from _label_blocks(
            data, axes, blocks, seg_model, stats, scale, options, store, client, done
        )
        # Phase 2: merge labels that cover the same object where regions overlap.
        luts, n_objects = _merge_across_blocks(blocks, store, offsets, min_merge_iou)

        def core_labels(k: int) -> np.ndarray:
            region = np.load(store / f"{k}.npy", mmap_mode="r")
            return luts[k][np.asarray(region[_core_in_region(blocks[k])])]

        # Phase 3: write each core with its final ids.
        dtype = luts[0].dtype if luts else np.uint16
        spacing = {"pixel_size": pixel_size, "unit": unit, "into_image": into_image}
        if into_image is not None or output.name.endswith(".zarr"):
            yield from _write_zarr(output, blocks, core_labels, shape, dtype, store, spacing)
        else:
            _write_tiled_tiff(output, blocks, core_labels, shape, dtype, spacing)
            yield Progress(Stage.BLOCKS, 2 * len(blocks), 2 * len(blocks), {"phase": "write"})
    return {
        "image_type": stats.image_type,
        "scale": scale,
        "notes": notes,
        "objects": n_objects,
        "blocks": len(blocks),
        "seconds": time.perf_counter() - t0,
        "output": str(output),
    }


def _plan_key(data, axes, blocks, model, stats, scale, options) -> str:
    """A digest of everything that decides the blocks' labels (a resumed run must match it)."""
    parts = {
        "shape": list(data.shape),
        "dtype": str(getattr(data, "dtype", "")),
        "axes": axes,
        "blocks": [[b.index, [[s.start, s.stop] for s in b.region]] for b in blocks],
        "model": hashlib.sha256(model_to_bytes(model)).hexdigest(),
        "stats": repr(stats),
        "scale": scale,
        # The model is hashed above; an object's repr would hold its memory address.
        "options": repr(
            {f.name: getattr(options, f.name) for f in fields(options) if f.name != "model"}
        ),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _finished_block(store: Path, k: int, block: Block) -> int | None:
    """The largest id of block ``k`` when an earlier run stored it whole, else None."""
    path = store / f"{k}.npy"
    if path.is_symlink() or not path.is_file():
        return None
    try:
        labels = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    expected = tuple(s.stop - s.start for s in block.region)
    if labels.shape != expected or not np.issubdtype(labels.dtype, np.integer):
        return None
    return int(labels.max(initial=0))


def _store_block(store: Path, k: int, labels: np.ndarray) -> None:
    """Save block ``k`` atomically: a file named ``<k>.npy`` is always whole."""
    tmp = store / f".{k}.{os.getpid()}.tmp.npy"
    np.save(tmp, labels)
    os.replace(tmp, store / f"{k}.npy")


def _label_blocks(data, axes, blocks, model, stats, scale, options, store: Path, client, done=None):
    """Label every block's region into ``store/<k>.npy``; returns the cumulative id offsets.

    ``done`` holds labels already made for some blocks (index -> labels);
    blocks an earlier, killed run stored whole are taken up, not redone.
    """
    done = done or {}
    offsets = np.zeros(len(blocks) + 1, dtype=np.int64)
    finished = {
        k: n for k, b in enumerate(blocks) if (n := _finished_block(store, k, b)) is not None
    }
    for k, n in finished.items():
        offsets[k + 1] = n
        done.pop(k, None)
    if finished:
        yield Progress(
            Stage.BLOCKS,
            len(finished),
            2 * len(blocks),
            {"phase": "label", "resumed": len(finished)},
        )
    if client is not None:
        from dask.distributed import as_completed

        blob = client.scatter(model_to_bytes(model), broadcast=True)
        data_ref = client.scatter(data, broadcast=True) if isinstance(data, np.ndarray) else data
        futures = [
            client.submit(
                _block_task,
                data_ref,
                axes,
                k,
                b,
                blob,
                stats,
                scale,
                options,
                str(store),
                pure=False,
            )
            for k, b in enumerate(blocks)
            if k not in finished
        ]
        for n, fut in enumerate(as_completed(futures), start=len(finished) + 1):
            k, count = fut.result()
            offsets[k + 1] = count
            yield Progress(Stage.BLOCKS, n, 2 * len(blocks), {"phase": "label"})
    else:
        for k, b in enumerate(blocks):
            if k in finished:
                continue
            labels = done.pop(k, None)
            if labels is None:
                labels = _segment_block(data, axes, b, model, stats, scale, options).labels
            _store_block(store, k, labels)
            offsets[k + 1] = int(labels.max())
            del labels
            release_freed_memory()  # memory bounded by one block's, not by all blocks' leftovers
            yield Progress(Stage.BLOCKS, k + 1, 2 * len(blocks), {"phase": "label"})
    return np.cumsum(offsets)


def _overlap(a: Block, b: Block) -> tuple[slice, slice] | None:
    """The part of the image both blocks' regions cover (None when they do not meet)."""
    ys = slice(max(a.region[0].start, b.region[0].start), min(a.region[0].stop, b.region[0].stop))
    xs = slice(max(a.region[1].start, b.region[1].start), min(a.region[1].stop, b.region[1].stop))
    return None if ys.start >= ys.stop or xs.start >= xs.stop else (ys, xs)


def _within(block: Block, window: tuple[slice, slice]) -> tuple[slice, slice]:
    """``window`` (image coordinates) in the coordinates of ``block``'s region."""
    return tuple(slice(w.start - r.start, w.stop - r.start) for w, r in zip(window, block.region))


def _merge_across_blocks(blocks, store: Path, offsets, min_iou: float):
    """One look-up table per block from its labels to final ids, and the number of objects.

    Labels of neighbouring blocks that cover the same object on their shared
    pixels are joined (union-find); final ids are sequential over the joined
    objects that appear in some block's core.
    """
    index_of = {b.index: k for k, b in enumerate(blocks)}

    def region_labels(k: int) -> np.ndarray:
        return np.load(store / f"{k}.npy", mmap_mode="r")

    uf = _UnionFind()
    for k, b in enumerate(blocks):
        i, j = b.index
        for di, dj in ((0, 1), (1, -1), (1, 0), (1, 1)):
            other = index_of.get((i + di, j + dj))
            window = None if other is None else _overlap(b, blocks[other])
            if window is None:
                continue
            mine = np.asarray(region_labels(k)[_within(b, window)])
            theirs = np.asarray(region_labels(other)[_within(blocks[other], window)])
            for x, y in _shared_pairs(mine, offsets[k], theirs, offsets[other], min_iou):
                uf.union(x, y)
    core_ids = []
    for k, b in enumerate(blocks):
        # Ids present in the core: a count per id is linear in the pixels (a sort is not).
        present = np.bincount(np.asarray(region_labels(k)[_core_in_region(b)]).ravel())
        ids = np.flatnonzero(present[1:]) + 1
        core_ids.append(ids.astype(np.int64) + offsets[k])
    all_ids = np.concatenate(core_ids) if core_ids else np.zeros(0, np.int64)
    unique_roots = np.unique(np.array([uf.find(int(x)) for x in all_ids], dtype=np.int64))
    final_of_root = {int(r): n + 1 for n, r in enumerate(unique_roots)}
    n_objects = len(unique_roots)
    dtype = label_dtype(n_objects)
    luts = []
    for k in range(len(blocks)):
        lut = np.zeros(int(offsets[k + 1] - offsets[k]) + 1, dtype=dtype)
        ids = core_ids[k]
        if len(ids):
            lut[ids - offsets[k]] = [final_of_root[uf.find(int(x))] for x in ids]
        luts.append(lut)
    return luts, n_objects


def _write_zarr(output: Path, blocks, core_labels, shape, dtype, store: Path, spacing: dict):
    """Cores into a zarr array beside the blocks, then an NGFF label image at ``output``."""
    import zarr

    arr = zarr.open_array(
        str(store / "labels.zarr"),
        mode="w",
        shape=shape,
        dtype=dtype,
        chunks=(min(1024, shape[0]), min(1024, shape[1])),
        zarr_format=2,
        fill_value=0,
    )
    for k, b in enumerate(blocks):
        arr[b.core] = core_labels(k)
        yield Progress(Stage.BLOCKS, len(blocks) + k + 1, 2 * len(blocks), {"phase": "write"})
    if spacing["into_image"] is not None:
        from ..images.ngff_labels import write_labels_into_image

        # The levels are read back from this array band by band: never whole in memory.
        write_labels_into_image(spacing["into_image"], arr, output.name)
    else:
        write_ngff_labels(output, arr, "YX", pixel_size=spacing["pixel_size"], unit=spacing["unit"])


def _write_tiled_tiff(output: Path, blocks, core_labels, shape, dtype, spacing: dict) -> None:
    """Cores into a tiled BigTIFF, one row of blocks in memory at a time, atomically."""
    import tifffile

    from ..images.atomic import atomic_path

    rows_of_blocks = sorted({b.index[0] for b in blocks})

    def strips():
        for i in rows_of_blocks:
            row = [k for k, b in enumerate(blocks) if b.index[0] == i]
            yield np.concatenate([core_labels(k) for k in row], axis=1)

    def bands():
        # Rows of TIFF_TILE from strips of any height (the last may be shorter).
        carry = np.zeros((0, shape[1]), dtype=dtype)
        for strip in strips():
            carry = np.concatenate([carry, strip])
            while len(carry) >= TIFF_TILE:
                yield carry[:TIFF_TILE]
                carry = carry[TIFF_TILE:]
        if len(carry):
            yield carry

    def tiles():
        # tifffile wants tiles in row-major order.
        for band in bands():
            for x in range(0, shape[1], TIFF_TILE):
                t = np.zeros((TIFF_TILE, TIFF_TILE), dtype=dtype)
                part = band[:, x : x + TIFF_TILE]
                t[: part.shape[0], : part.shape[1]] = part
                yield t

    with atomic_path(output) as part:
        tifffile.imwrite(
            part,
            tiles(),
            shape=shape,
            dtype=dtype,
            tile=(TIFF_TILE, TIFF_TILE),
            compression="zlib",
            bigtiff=True,
            metadata=tiff_metadata("YX", spacing["pixel_size"], spacing["unit"]),
            **tiff_resolution(spacing["pixel_size"]),
        )


def _core_in_region(b: Block) -> tuple[slice, slice]:
    return tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(b.core, b.region))


def _block_task(
    data, axes, k: int, block: Block, blob, stats, scale, options, tmpdir
) -> tuple[int, int]:
    """Dask task: label block number ``k``'s region and store it in the shared temporary folder."""
    model = cached_model_from_bytes(blob)
    with reuse_freed_memory():  # a worker process of its own: the caller's setting is not here
        labels = _segment_block(data, axes, block, model, stats, scale, options).labels
        _store_block(Path(tmpdir), k, labels)
        count = int(labels.max())
        del labels
        release_freed_memory()
    return k, count


def segment_large(data, output, model="default", **kwargs) -> dict:
    """Blocking form of :func:`iter_segment_large`."""
    return run_to_end(iter_segment_large(data, output, model, **kwargs))
