"""Progress events yielded by the core's long-running generators.

Long work (tiled prediction, training, batch runs) is written once as a
generator that yields :class:`Progress` and returns its result. The CLI drives
it with a terminal progress bar, the napari widgets inside a thread worker,
and tests simply drain it with :func:`run_to_end`.
"""

from __future__ import annotations

import time
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
        (tuple), and from :func:`~napari_unet.segmenting.segmentation.iter_segment`
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


def minutes_seconds(seconds: float) -> str:
    """A duration as ``m:ss`` (``h:mm:ss`` from an hour), as progress bars show it."""
    minutes, secs = divmod(int(round(max(seconds, 0.0))), 60)
    if minutes >= 60:
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


class TimeLeft:
    """Seconds left of a long task, estimated from its events.

    An event's own ``eta_s`` (training, block-wise runs) is used as it is.
    Otherwise the pace of the current phase, from the first event with its
    stage and total (the tiles of one plane, the files of a batch) to this
    one; a new stage or total starts a new phase. None until a phase has
    made progress, or when the total is unknown.

    Parameters
    ----------
    clock
        Seconds as a float (``time.perf_counter``; tests pass their own).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._phase: tuple | None = None
        self._began = 0.0
        self._first_step = 0

    def update(self, event: Progress) -> float | None:
        """The estimate after ``event``."""
        now = self._clock()
        eta = event.info.get("eta_s")
        if eta is not None:
            return max(float(eta), 0.0)
        if not event.total:
            self._phase = None
            return None
        phase = (event.stage, event.total)
        if phase != self._phase:
            self._phase, self._began, self._first_step = phase, now, event.step
            return None
        done = event.step - self._first_step
        if done <= 0:
            return None
        return (now - self._began) / done * max(event.total - event.step, 0)
