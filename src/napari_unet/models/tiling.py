"""Overlap-tile prediction for the valid-padding U-Net.

The image is mirror-padded by the network's halo. Each tile's input includes
that halo; its output covers exactly ``step`` pixels per axis and the outputs
of neighbouring tiles abut with no overlap and no blending. Tile origins are
multiples of ``2**depth`` so every max-pool window falls where it would in a
whole-image pass: the stitched result *equals* one forward pass over the
padded image (tested to 1e-5 in float32).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch

from ..devices import default_memory_budget, resolve_device, resolve_precision
from ..errors import UNetError
from ..progress import Progress, Stage, run_to_end
from .model import UNet, halo, input_size_for_output

MAX_TILE_OUTPUT = 1024  # beyond this, bigger tiles no longer cut the halo overhead much


@dataclass(frozen=True)
class AxisPlan:
    """Tiling along one axis of length ``size``."""

    size: int
    step: int  # output pixels written per tile (a multiple of 2**depth)
    tile: int  # input pixels read per tile (a valid network input size)
    count: int  # number of tiles
    pad_before: int
    pad_after: int

    @property
    def padded(self) -> int:
        """Length of the axis after padding."""
        return self.size + self.pad_before + self.pad_after


@dataclass(frozen=True)
class TilePlan:
    """How an image is cut into overlapping tiles along Y and X."""

    y: AxisPlan
    x: AxisPlan

    @property
    def n_tiles(self) -> int:
        """Number of tiles."""
        return self.y.count * self.x.count

    @property
    def tile_shape(self) -> tuple[int, int]:
        """(height, width) of each input tile."""
        return self.y.tile, self.x.tile

    def origins(self) -> list[tuple[int, int]]:
        """Top-left corner of every tile, in padded coordinates (= output coordinates)."""
        return [
            (i * self.y.step, j * self.x.step)
            for i in range(self.y.count)
            for j in range(self.x.count)
        ]


def plan_axis(size: int, depth: int, step: int) -> AxisPlan:
    """Tiles along one axis of ``size`` pixels for a network of ``depth``, ``step`` output pixels apart."""
    stride = 2**depth
    # Never tile wider than the image needs; keep the step a multiple of the stride.
    largest = max(stride, min(step // stride * stride, math.ceil(size / stride) * stride))
    count = math.ceil(size / largest)
    # As few tiles as the largest step needs, each only as large as covering the
    # axis takes: an axis just over a multiple of the largest step would
    # otherwise compute a nearly empty last tile (4352 px: 5120 px at 1024 a tile).
    step = math.ceil(size / count / stride) * stride
    tile = input_size_for_output(step, depth)
    padded = (count - 1) * step + tile
    before = halo(depth)
    return AxisPlan(size, step, tile, count, before, padded - size - before)


def plan_tiles(shape: tuple[int, int], depth: int, tile_output: int | tuple[int, int]) -> TilePlan:
    """Plan tiles for a (Y, X) image, writing about ``tile_output`` pixels per tile and axis."""
    ty, tx = (tile_output, tile_output) if np.isscalar(tile_output) else tile_output
    return TilePlan(plan_axis(shape[0], depth, int(ty)), plan_axis(shape[1], depth, int(tx)))


def mirror_pad(image: np.ndarray, plan: TilePlan) -> np.ndarray:
    """Mirror-extend a (C, Y, X) image as the plan requires (works at any size, even 1 px)."""
    pad = ((0, 0), (plan.y.pad_before, plan.y.pad_after), (plan.x.pad_before, plan.x.pad_after))
    return np.pad(image, pad, mode="reflect")


# --------------------------------------------------------------------------
# Devices, precision and tile size
# --------------------------------------------------------------------------


def choose_tile_output(model: UNet, budget_bytes: int, bytes_per_value: int = 4) -> int:
    """Largest tile output (multiple of the stride, <= MAX_TILE_OUTPUT) whose batch of one fits."""
    per_pixel = model.activation_bytes_per_pixel(bytes_per_value)
    stride = model.stride
    step = MAX_TILE_OUTPUT // stride * stride
    while (
        step > stride and per_pixel * input_size_for_output(step, model.depth) ** 2 > budget_bytes
    ):
        step -= stride
    return step


def prepare_model(model: UNet, device: torch.device, dtype: torch.dtype | None = None) -> UNet:
    """An eval-mode copy on ``device``, batch norm folded, channels_last (faster convolutions).

    With ``dtype`` (bfloat16) the weights are converted once, which is faster
    than autocast re-casting them for every batch.
    """
    fused = model.fused_for_inference().to(device)
    if dtype is not None:
        fused = fused.to(dtype)
    return fused.to(memory_format=torch.channels_last)


# --------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------


def iter_predict_tiled(
    model: UNet,
    image: np.ndarray,
    *,
    tile_size: int | tuple[int, int] | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    memory_budget: int | None = None,
    prepared: bool = False,
    encoder: EncoderMeans | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Generator form of :func:`predict_tiled`: yields a Progress per batch of tiles.

    ``encoder`` (an :class:`EncoderMeans`) gathers the contracting path's
    mean activations on the way.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise UNetError(f"predict_tiled expects a (C, Y, X) image, got shape {image.shape}")
    if image.shape[0] != model.config.in_channels:
        raise UNetError(
            f"the image has {image.shape[0]} channels but the model takes {model.config.in_channels}"
        )
    dev = resolve_device(device)
    net = model if prepared else prepare_model(model, dev, resolve_precision(precision, dev))
    padded, plan, batch_size = _plan_padded(net, image, dev, tile_size, batch_size, memory_budget)
    return (yield from iter_predict_padded(net, padded, plan, dev, batch_size, encoder=encoder))


def _plan_padded(
    net: UNet,
    image: np.ndarray,
    device: torch.device,
    tile_size: int | tuple[int, int] | None = None,
    batch_size: int | None = None,
    memory_budget: int | None = None,
) -> tuple[np.ndarray, TilePlan, int]:
    """The mirror-padded image, its tile plan and the tiles per batch, within the memory budget."""
    budget = memory_budget or default_memory_budget(device)
    bytes_per_value = next(net.parameters()).dtype.itemsize
    tile_output = tile_size or choose_tile_output(net, budget, bytes_per_value)
    plan = plan_tiles(image.shape[1:], net.depth, tile_output)
    padded = mirror_pad(image.astype(np.float32, copy=False), plan)
    return padded, plan, _batch_size(net, plan, batch_size, budget, device)


def _batch_size(
    net: UNet, plan: TilePlan, batch_size: int | None, budget: int | None, device: torch.device
) -> int:
    """``batch_size``, or as many tiles as the memory budget (default: the device's) holds."""
    if batch_size is not None:
        return batch_size
    budget = budget or default_memory_budget(device)
    bytes_per_value = next(net.parameters()).dtype.itemsize
    per_tile = net.activation_bytes_per_pixel(bytes_per_value) * plan.y.tile * plan.x.tile
    return int(max(1, min(plan.n_tiles, budget // max(per_tile, 1))))


def _tile_batches(padded: np.ndarray, plan: TilePlan, batch_size: int):
    """(tiles, output extents, origins) per batch: each tile's input and the output it writes."""
    origins = plan.origins()
    (ty, tx), (sy, sx) = plan.tile_shape, (plan.y.step, plan.x.step)
    for b in range(0, len(origins), batch_size):
        batch_origins = origins[b : b + batch_size]
        tiles = np.stack([padded[:, y : y + ty, x : x + tx] for y, x in batch_origins])
        extents = [(min(sy, plan.y.size - y), min(sx, plan.x.size - x)) for y, x in batch_origins]
        yield tiles, extents, batch_origins


def iter_predict_padded(
    net: UNet,
    padded: np.ndarray,
    plan: TilePlan,
    device: torch.device,
    batch_size: int | None = None,
    memory_budget: int | None = None,
    encoder: EncoderMeans | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Run a prepared network over an input already extended by the plan's padding.

    ``padded`` holds real or mirrored context around the region; block-wise
    processing passes neighbouring image data here, so that its result equals
    the whole-image probabilities. ``encoder``: see :func:`iter_predict_tiled`.
    """
    if padded.shape[1:] != (plan.y.padded, plan.x.padded):
        raise ValueError(f"padded input {padded.shape[1:]} does not fit the plan")
    batch_size = _batch_size(net, plan, batch_size, memory_budget, device)
    out = np.empty((net.config.n_classes, plan.y.size, plan.x.size), dtype=np.float32)
    n_batches = math.ceil(plan.n_tiles / batch_size)
    for b, (tiles, extents, origins) in enumerate(_tile_batches(padded, plan, batch_size)):
        if encoder is not None:
            encoder.expect(extents)
        probs = forward_probabilities(net, tiles, device, encoder)
        for k, ((y, x), (h, w)) in enumerate(zip(origins, extents)):
            out[:, y : y + h, x : x + w] = probs[k, :, :h, :w]
        yield Progress(
            Stage.PREDICT,
            b + 1,
            n_batches,
            {"tiles": plan.n_tiles, "tile_shape": plan.tile_shape},
        )
    return out


def predict_padded(
    net: UNet, padded: np.ndarray, plan: TilePlan, device: torch.device, **kwargs
) -> np.ndarray:
    """Blocking form of :func:`iter_predict_padded`."""
    return run_to_end(iter_predict_padded(net, padded, plan, device, **kwargs))


def _tiles_tensor(net: UNet, tiles: np.ndarray, device: torch.device) -> torch.Tensor:
    """A (N, C, Y, X) batch on ``device`` in the network's weight dtype, channels_last."""
    dtype = next(net.parameters()).dtype
    x = torch.from_numpy(np.ascontiguousarray(tiles)).to(device=device, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last)


def forward_probabilities(
    net: UNet, tiles: np.ndarray, device: torch.device, on_encoded=None
) -> np.ndarray:
    """Softmax class probabilities for a (N, C, Y, X) batch, as float32 numpy.

    The batch runs in the network's weight dtype; the softmax in float32.
    ``on_encoded`` is passed to the network (:meth:`UNet.forward`).
    """
    x = _tiles_tensor(net, tiles, device)
    with torch.inference_mode():
        probs = torch.softmax(net(x, on_encoded).float(), dim=1)
    return probs.cpu().numpy()


class EncoderMeans:
    """Mean activation of every encoder channel over a plane, gathered tile by tile.

    Each tile adds the part of its activations that lies over the output
    pixels it writes. Tile origins are multiples of ``2**depth``, so the
    tiles partition the plane's activation maps at every level: any tile
    plan gives the same means, those of one encoder pass over the whole
    mirror-padded plane restricted to the plane (tested). A size model reads
    them from the first pass at no extra network cost.
    """

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._parts: list[list[torch.Tensor]] = [[] for _ in range(depth + 1)]
        self._counts = [0] * (depth + 1)
        self._extents: list[tuple[int, int]] = []

    def expect(self, extents: list[tuple[int, int]]) -> None:
        """The output (rows, columns) each tile of the coming batch writes."""
        self._extents = list(extents)

    def __call__(self, levels: list[torch.Tensor]) -> None:
        """Add a batch's activations (the hook :meth:`UNet.forward` calls)."""
        for level, activation in enumerate(levels):
            scale = 2**level
            # Activation j of this level sits over input pixel scale*j + 2**(level+2) - 2
            # (two valid convolutions, then pooling); output pixel 0 over input pixel halo.
            start = (halo(self.depth) - (2 ** (level + 2) - 2)) // scale
            for k, (rows, cols) in enumerate(self._extents):
                h, w = -(-rows // scale), -(-cols // scale)
                part = activation[k, :, start : start + h, start : start + w].permute(1, 2, 0)
                # Rows, then columns: 25x faster than one sum over both on channels_last.
                # Kept on the device until the end: no synchronisation per tile.
                self._parts[level].append(part.float().sum(dim=1).sum(dim=0))
                self._counts[level] += h * w

    def means(self) -> np.ndarray:
        """Per-channel means, all levels concatenated (finest first), float64."""
        if not self._parts[0]:
            raise UNetError("no activations were gathered")
        return torch.cat(
            [
                torch.stack(parts).cpu().double().sum(dim=0) / max(count, 1)
                for parts, count in zip(self._parts, self._counts)
            ]
        ).numpy()


def encoder_means(
    model: UNet, image: np.ndarray, device: str | torch.device | None = None, **kwargs
) -> np.ndarray:
    """:class:`EncoderMeans` of a normalized (C, Y, X) image from a tiled contracting-path pass.

    What the first pass of :func:`iter_predict_tiled` gathers with
    ``encoder=``, without the expanding path's cost (for fitting size models).
    ``model`` is used as it is (prepare it with :func:`prepare_model` for speed).
    """
    dev = resolve_device(device)
    gathered = EncoderMeans(model.depth)
    padded, plan, batch_size = _plan_padded(model, np.asarray(image), dev, **kwargs)
    with torch.inference_mode():
        for tiles, extents, _ in _tile_batches(padded, plan, batch_size):
            gathered.expect(extents)
            gathered(model.encode(_tiles_tensor(model, tiles, dev)))
    return gathered.means()


def predict_tiled(model: UNet, image: np.ndarray, **kwargs) -> np.ndarray:
    """Per-pixel class probabilities (n_classes, Y, X) for a normalized (C, Y, X) image.

    Any size works, including images smaller than one tile and 1-pixel-thin
    ones: borders are mirror-extended. Output tiles abut exactly, so the result
    equals a whole-image forward pass over the padded image. ``tile_size`` is
    the output pixels per tile and axis (chosen from ``memory_budget`` when
    omitted); tiles run ``batch_size`` at a time; ``precision`` "auto" uses
    bfloat16 autocast where the hardware does it natively.
    """
    return run_to_end(iter_predict_tiled(model, image, **kwargs))


def predict_whole(model: UNet, image: np.ndarray, plan: TilePlan, device="cpu") -> np.ndarray:
    """One forward pass over the whole padded image (float32); the reference for tiling."""
    net = prepare_model(model, resolve_device(device))
    padded = mirror_pad(image.astype(np.float32), plan)
    probs = forward_probabilities(net, padded[None], resolve_device(device))[0]
    return probs[:, : image.shape[1], : image.shape[2]]
