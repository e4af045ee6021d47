"""Sample data: synthetic nuclei generated offline, and one real image cached on first use."""

from __future__ import annotations

from ..images.samples import human_mitosis
from ..images.synthetic import synthetic_nuclei


def synthetic_nuclei_sample():
    image, labels = synthetic_nuclei((512, 512), seed=0)
    return [
        (image, {"name": "synthetic nuclei"}, "image"),
        (labels, {"name": "synthetic nuclei ground truth", "visible": False}, "labels"),
    ]


def human_mitosis_sample():
    return [(human_mitosis(), {"name": "human mitosis"}, "image")]
