"""The last segmentation's probabilities of an image layer, lent to the Annotate widget.

The Segment widget keeps the probabilities of its last run to re-label them
when a slider moves; it lends them here under the image layer's id, so
"Cells from points" grows cells on the model's probabilities without the
probability layers being shown. One entry, the Segment widget's own array
(no copy): segmenting another image replaces it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_latest: tuple[str, np.ndarray, tuple[str, ...]] | None = None


def lend(layer_id: str, probabilities: np.ndarray, classes: Sequence[str]) -> None:
    """Keep one 2-D plane's (C, Y, X) probabilities for ``layer_id`` (others: forget)."""
    global _latest
    probabilities = np.asarray(probabilities)
    ok = probabilities.ndim == 3 and probabilities.shape[0] == len(classes)
    _latest = (layer_id, probabilities, tuple(classes)) if ok else None


def borrow(layer_id: str, shape: tuple[int, ...]) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """The probabilities lent for ``layer_id`` if they match ``shape`` (Y, X), else (None, ())."""
    if _latest is None or _latest[0] != layer_id or _latest[1].shape[1:] != tuple(shape):
        return None, ()
    return _latest[1], _latest[2]


def forget() -> None:
    """Drop what was lent (the image was segmented in a way the probabilities do not describe)."""
    global _latest
    _latest = None
