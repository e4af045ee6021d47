"""Progress events yielded by the core's long-running generators.

Long work (tiled prediction, training, batch runs) is written once as a
generator that yields :class:`Progress` and returns its result. The CLI drives
it with a terminal progress bar, the napari widgets inside a thread worker,
and tests simply drain it with :func:`run_to_end`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

T = TypeVar("T")


class Stage(StrEnum):
    """The stages a long task reports, each with the keys of its ``info``.

    A ``Stage`` is a ``str``, so ``event.stage == "train"`` also holds; code
    should compare with the members so that a renamed stage fails loudly.

    Attributes
    ----------
    PREDICT
        One batch of tiles of one plane predicted. ``tiles`` (int), ``tile_shape``
        (tuple), and from :func:`~napari_unet.segmentation.iter_segment`
        ``plane`` / ``planes`` (int).
    SEGMENT
        One plane segmented. ``objects`` (labels so far), ``image_type``
        ("fluorescence" or "brightfield"), ``scale`` (resampling factor used),
        ``notes`` (list of one-line warnings about the input).
    BLOCKS
        Block-wise segmentation of an image bigger than memory. ``phase``
        ("plan", "label" or "write"); the plan event adds ``image_type``,
        ``scale`` and ``notes`` as in ``SEGMENT``.
    BATCH
        One file of a batch run finished. ``file`` (str), ``failed`` or
        ``skipped`` (counts).
    PREPARE
        Training data being prepared (no step count). ``what`` (str).
    TRAIN
        One optimizer step. ``epoch``, ``loss``, ``lr``, ``eta_s`` (seconds
        left), ``patches_per_s``.
    VALIDATE
        One validation pass. ``epoch``, ``ap50`` ... ``ap90``, ``score``, ``best``
        (bool: this epoch is the best so far).
    TUNE
        Post-processing tuned on the validation images: empty at the start; the
        final event (``total`` 1) carries the tuning summary (``mean_ap``, the
        chosen parameters).
    RELABEL
        The napari widget re-labels probabilities after a slider moved.
    """

    PREDICT = "predict"
    SEGMENT = "segment"
    BLOCKS = "blocks"
    BATCH = "batch"
    PREPARE = "prepare"
    TRAIN = "train"
    VALIDATE = "validate"
    TUNE = "tune"
    RELABEL = "relabel"


@dataclass
class Progress:
    """One step of a long task.

    Parameters
    ----------
    stage
        Which part of the task this is (see :class:`Stage` for each stage's
        ``info`` keys). A plain string is converted to a :class:`Stage`.
    step
        Finished units so far.
    total
        Units in all, or None when unknown.
    info
        Stage-specific numbers (loss, scores, ETA in seconds, file).
    """

    stage: Stage
    step: int
    total: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # An unknown stage name is a programming error: fail where it is made.
        self.stage = Stage(self.stage)

    @property
    def fraction(self) -> float | None:
        """Finished share of the task in [0, 1], or None when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, self.step / self.total)


def run_to_end(
    gen: Generator[Progress, Any, T], callback: Callable[[Progress], Any] | None = None
) -> T:
    """Drive a progress generator to completion and return its result.

    Parameters
    ----------
    gen
        A generator that yields :class:`Progress` and returns its result.
    callback
        Called with each event, e.g. to update a progress bar.

    Returns
    -------
    T
        The generator's return value.
    """
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(event)
