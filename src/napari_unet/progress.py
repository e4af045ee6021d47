"""Progress events yielded by the core's long-running generators.

Long work (tiled prediction, training, batch runs) is written once as a
generator that yields :class:`Progress` and returns its result. The CLI drives
it with a terminal progress bar, the napari widgets inside a thread worker,
and tests simply drain it with :func:`run_to_end`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Progress:
    """One step of a long task.

    ``stage`` names the task ("predict", "train", "validate", "batch", ...),
    ``step`` counts finished units out of ``total`` (None when unknown), and
    ``info`` carries task-specific numbers (loss, scores, ETA in seconds, file).
    """

    stage: str
    step: int
    total: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.step / self.total)


def run_to_end(
    gen: Generator[Progress, Any, T], callback: Callable[[Progress], Any] | None = None
) -> T:
    """Drive a progress generator to completion and return its result."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(event)
