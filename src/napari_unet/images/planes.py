"""Where the planes, the channels and Y/X are in an image, and the axes of its labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .io import check_axes, infer_axes


@dataclass
class PlaneLayout:
    """Where the planes, the channels and Y/X are in an array with given axes."""

    axes: str

    @property
    def channel_axis(self) -> int | None:
        """Index of the channel axis, or None."""
        return self.axes.index("C") if "C" in self.axes else None

    @property
    def plane_axes(self) -> list[int]:
        """Indices of the axes that are looped over plane by plane (not C, Y, X)."""
        return [i for i, a in enumerate(self.axes) if a not in "CYX"]

    def plane_indices(self, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Index tuples of every 2-D plane of an array of ``shape``."""
        sizes = [shape[i] for i in self.plane_axes]
        return [tuple(ix) for ix in np.ndindex(*sizes)] if sizes else [()]

    def take_plane(self, array, index: tuple[int, ...]) -> tuple[np.ndarray, int | None]:
        """The plane at ``index`` as (array with Y, X and maybe C, its channel axis)."""
        sl = [slice(None)] * len(self.axes)
        for axis, i in zip(self.plane_axes, index):
            sl[axis] = i
        plane = np.asarray(array[tuple(sl)])
        rest = [a for a in self.axes if a in "CYX"]
        # Y and X must be in that order; move them last with C first for the model.
        channel = rest.index("C") if "C" in rest else None
        if rest.index("Y") > rest.index("X"):
            plane = np.swapaxes(plane, rest.index("Y"), rest.index("X"))
        return plane, channel

    @property
    def output_axes(self) -> str:
        """Axes of the labels: the stack axes in input order, then Y, X."""
        return "".join(a for a in self.axes if a not in "CYX") + "YX"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the labels for an input of ``shape``: the input's without C."""
        return tuple(shape[i] for i, a in enumerate(self.axes) if a != "C" and a not in "YX") + (
            shape[self.axes.index("Y")],
            shape[self.axes.index("X")],
        )


def resolve_axes(shape: tuple[int, ...], axes: str | None, rgb: bool | None = None) -> str:
    """Axes of an array of ``shape``: checked when given, inferred otherwise."""
    return check_axes(axes, len(shape)) if axes else infer_axes(tuple(shape), rgb)


def axes_with_channels(shape: tuple[int, ...], inferred: str) -> str:
    """Inferred axes of an image whose channels the user named: a short first axis is them.

    A (2, Y, X) array with no axes recorded is inferred as a Z stack; once
    the user names a cell and a nuclear channel, it is channels.
    """
    if inferred == "ZYX" and shape[0] <= 8:
        return "CYX"
    return inferred


def reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Map any integer index into [0, n) by mirroring at the ends (numpy's "reflect")."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.mod(index, period)
    return np.where(index >= n, period - index, index)
