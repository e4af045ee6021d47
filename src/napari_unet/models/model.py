"""The valid-padding U-Net of Ronneberger et al. (2015) and its geometry.

Every 3x3 convolution is unpadded ("valid"), so the output is smaller than the
input by a fixed margin, the *halo*, on each side. Inputs must have sizes for
which every pooled feature map is even; :func:`valid_input_size` finds the
nearest such size. Because the network only ever sees real (or mirrored)
context, tiles whose origins are multiples of ``2**depth`` reproduce a
whole-image pass exactly (see :mod:`napari_unet.models.tiling`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

try:
    from ..errors import UNetError
except ImportError:  # loaded as a single file, as bioimage.io tools load an architecture
    UNetError = ValueError


@dataclass(frozen=True)
class UNetConfig:
    """Architecture hyper-parameters; stored in every model file."""

    depth: int = 4
    base_channels: int = 64
    in_channels: int = 1
    n_classes: int = 2
    batch_norm: bool = False
    dropout: float = 0.5

    def to_dict(self) -> dict:
        """The architecture as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        """An architecture from a dict; unknown keys are ignored."""
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


# --------------------------------------------------------------------------
# Geometry (pure integer arithmetic; shared by tiling, training and the CLI)
# --------------------------------------------------------------------------


def output_size(n: int, depth: int) -> int | None:
    """Output size of the network for input size ``n``, or None if ``n`` is invalid.

    Each level loses 4 pixels to two valid convolutions; pooling needs an even
    size; on the way up each transposed convolution doubles the size.
    """
    s = int(n)
    for _ in range(depth):
        s -= 4
        if s <= 0 or s % 2:
            return None
        s //= 2
    s -= 4
    if s <= 0:
        return None
    for _ in range(depth):
        s = 2 * s - 4
        if s <= 0:
            return None
    return s


def is_valid_input(n: int, depth: int) -> bool:
    """True if an input of size ``n`` passes through the network (all pooled maps even)."""
    return output_size(n, depth) is not None


def halo(depth: int) -> int:
    """Pixels lost on each side between input and output: 6 * 2**depth - 4 (92 for depth 4)."""
    return 6 * 2**depth - 4


def valid_input_size(n: int, depth: int) -> int:
    """The smallest valid input size >= ``n``."""
    s = max(int(n), 1)
    while output_size(s, depth) is None:
        s += 1
    return s


def input_size_for_output(n_out: int, depth: int) -> int:
    """The smallest valid input whose output is at least ``n_out`` pixels."""
    return valid_input_size(max(int(n_out), 1) + 2 * halo(depth), depth)


# --------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------


class DoubleConv(nn.Sequential):
    """Two valid 3x3 convolutions, each followed by (batch norm and) ReLU."""

    def __init__(self, c_in: int, c_out: int, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for c in (c_in, c_out):
            layers.append(nn.Conv2d(c, c_out, kernel_size=3, padding=0, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool, stride 2, for even sizes.

    Same values as ``F.max_pool2d(x, 2)``, but two elementwise maxima of strided
    views run about twice as fast on channels_last CPU tensors.
    """
    rows = torch.maximum(x[:, :, 0::2], x[:, :, 1::2])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def center_crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The central ``h`` x ``w`` of ``x`` (the paper's crop of the skip connection)."""
    dy = (x.shape[-2] - h) // 2
    dx = (x.shape[-1] - w) // 2
    return x[..., dy : dy + h, dx : dx + w]


class UNet(nn.Module):
    """Valid-padding U-Net.

    Parameters
    ----------
    depth
        Number of 2x2 max-pool steps (4 in the paper).
    base_channels
        Feature channels of the first level; doubled at every level down.
    in_channels, n_classes
        Input channels and output classes (logits; softmax is applied by the caller).
    batch_norm
        Add batch normalization after every convolution (not in the paper).
    dropout
        Dropout probability at the end of the contracting path (the paper uses it).
    """

    def __init__(
        self,
        depth: int = 4,
        base_channels: int = 64,
        in_channels: int = 1,
        n_classes: int = 2,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if depth < 0 or base_channels < 1 or in_channels < 1 or n_classes < 2:
            raise UNetError(
                f"invalid U-Net architecture: depth={depth}, base_channels={base_channels}, "
                f"in_channels={in_channels}, n_classes={n_classes}"
            )
        self.config = UNetConfig(depth, base_channels, in_channels, n_classes, batch_norm, dropout)
        ch = [base_channels * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList([DoubleConv(in_channels, ch[0], batch_norm)])
        for level in range(1, depth + 1):
            self.down.append(DoubleConv(ch[level - 1], ch[level], batch_norm))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.upconv = nn.ModuleList()
        self.up = nn.ModuleList()
        for level in reversed(range(depth)):
            self.upconv.append(
                nn.ConvTranspose2d(ch[level + 1], ch[level], kernel_size=2, stride=2)
            )
            self.up.append(DoubleConv(2 * ch[level], ch[level], batch_norm))
        self.head = nn.Conv2d(ch[0], n_classes, kernel_size=1)
        self._he_init()

    def _he_init(self) -> None:
        # He et al.: std = sqrt(2 / fan_in) keeps ReLU activations at unit scale.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
                if isinstance(m, nn.ConvTranspose2d):
                    fan_in = m.weight.shape[0] * m.weight.shape[2] * m.weight.shape[3] // 4
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # geometry -------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Number of poolings."""
        return self.config.depth

    @property
    def halo(self) -> int:
        """Pixels lost on each side by the valid convolutions."""
        return halo(self.config.depth)

    @property
    def stride(self) -> int:
        """Tile origins must be multiples of this for tiled == whole-image results."""
        return 2**self.config.depth

    def output_size(self, n: int) -> int | None:
        """Output size for an input of ``n`` pixels, or None when ``n`` is not valid."""
        return output_size(n, self.config.depth)

    def is_valid_input(self, n: int) -> bool:
        """True when an input of ``n`` pixels pools evenly at every level."""
        return is_valid_input(n, self.config.depth)

    def valid_input_size(self, n: int) -> int:
        """The smallest valid input size of at least ``n`` pixels."""
        return valid_input_size(n, self.config.depth)

    # forward --------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The contracting path's activations, one per level (finest first)."""
        levels = []
        for level, block in enumerate(self.down):
            if level > 0:
                x = max_pool_2x2(x)
            x = block(x)
            levels.append(x)
        return levels

    def forward(
        self, x: torch.Tensor, on_encoded: Callable[[list[torch.Tensor]], None] | None = None
    ) -> torch.Tensor:
        """Class scores (N, classes, h, w) of a batch (N, channels, H, W), cropped by the halo.

        ``on_encoded`` is shown the contracting path's activations (see
        :meth:`encode`) as soon as they exist: a size model reads its features
        from them at no extra network cost.
        """
        skips = self.encode(x)
        if on_encoded is not None:
            on_encoded(skips)
        x = self.dropout(skips.pop())
        for upconv, block in zip(self.upconv, self.up):
            x = upconv(x)
            skip = center_crop(skips.pop(), x.shape[-2], x.shape[-1])
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)

    # cost model -----------------------------------------------------------
    def conv_flops(self, height: int, width: int) -> int:
        """Multiply-add FLOPs (2 per MAC) of convolutions for one (height, width) input."""
        total = 0
        h, w = height, width
        sizes = []
        for level, block in enumerate(self.down):
            if level > 0:
                h, w = h // 2, w // 2
            for m in block:
                if isinstance(m, nn.Conv2d):
                    h, w = h - 2, w - 2
                    total += 2 * 9 * m.in_channels * m.out_channels * h * w
            sizes.append((h, w))
        for upconv, block in zip(self.upconv, self.up):
            total += 2 * 4 * upconv.in_channels * upconv.out_channels * h * w
            h, w = 2 * h, 2 * w
            for m in block:
                if isinstance(m, nn.Conv2d):
                    h, w = h - 2, w - 2
                    total += 2 * 9 * m.in_channels * m.out_channels * h * w
        total += 2 * self.head.in_channels * self.head.out_channels * h * w
        return total

    def activation_bytes_per_pixel(self, bytes_per_value: int = 4) -> float:
        """Rough peak activation memory of inference per input pixel.

        Skip connections stay alive for the whole pass; at each level the
        concatenation, its convolution output and one temporary coexist.
        """
        c = self.config.base_channels
        skips = sum(c * 2**level / 4**level for level in range(self.config.depth))
        working = 5 * c + self.config.in_channels + self.config.n_classes
        return bytes_per_value * (skips + working)

    def fused_for_inference(self) -> UNet:
        """A copy in eval mode with batch norm folded into the preceding convolutions."""
        fused = copy.deepcopy(self).eval()
        if not self.config.batch_norm:
            return fused
        for blocks in (fused.down, fused.up):
            for i, block in enumerate(blocks):
                layers: list[nn.Module] = []
                mods = list(block)
                j = 0
                while j < len(mods):
                    m = mods[j]
                    if (
                        isinstance(m, nn.Conv2d)
                        and j + 1 < len(mods)
                        and isinstance(mods[j + 1], nn.BatchNorm2d)
                    ):
                        layers.append(torch.nn.utils.fusion.fuse_conv_bn_eval(m, mods[j + 1]))
                        j += 2
                    else:
                        layers.append(m)
                        j += 1
                blocks[i] = nn.Sequential(*layers)
        return fused

    def for_grey_input(self) -> UNet:
        """A one-channel copy for inputs whose channels are all the same plane.

        Exact: a convolution of C identical channels is the convolution of
        one with the weights summed over the channels. A colour model then
        segments a grey image as fast as a grey model does.
        """
        grey = copy.deepcopy(self)
        first = grey.down[0][0]
        folded = nn.Conv2d(1, first.out_channels, first.kernel_size, bias=first.bias is not None)
        with torch.no_grad():
            folded.weight.copy_(first.weight.sum(dim=1, keepdim=True))
            if first.bias is not None:
                folded.bias.copy_(first.bias)
        grey.down[0][0] = folded
        grey.config = replace(grey.config, in_channels=1)
        return grey
