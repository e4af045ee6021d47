"""napari-unet: U-Net segmentation of cells and nuclei (library, CLI and napari plugin).

Importing this package loads neither Qt nor napari (nor torch): the public
functions below are imported on first use, and the widgets live in
``napari_unet._napari``, which napari imports on demand.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (in the subpackage of its step)
_EXPORTS = {
    "UNet": "models.model",
    "UNetError": "errors",
    "predict_tiled": "models.tiling",
    "segment": "segmenting.segmentation",
    "iter_segment": "segmenting.segmentation",
    "load_model": "models.modelfile",
    "save_model": "models.modelfile",
    "new_model": "models.modelfile",
    "SegmentationModel": "models.modelfile",
    "train": "training.loop",
    "iter_train": "training.loop",
    "TrainConfig": "training.recipes",
    "FINE_TUNE": "training.recipes",
    "TrainingStopped": "training.loop",
    "InputWarning": "segmenting.notes",
    "make_training_image": "training.data",
    "load_training_folder": "training.data",
    "training_sets": "training.data",
    "AnnotatedStack": "training.data",
    "measure_objects": "labels.measure",
    "evaluate_folders": "labels.evaluation",
    "BatchOptions": "segmenting.options",
    "SegmentOptions": "segmenting.options",
    "THRESHOLD_OPTIONS": "labels.instances",
    "border_weight_map": "training.weights",
    "class_targets": "training.weights",
    "instances_from_probabilities": "labels.instances",
    "InstanceParams": "labels.instances",
    "SizeRule": "models.sizes",
    "tune_instance_params": "labels.instances",
    "matching": "labels.metrics",
    "matching_dataset": "labels.metrics",
    "segment_files": "segmenting.batch",
    "iter_segment_files": "segmenting.batch",
    "segment_large": "segmenting.blockwise",
    "iter_segment_large": "segmenting.blockwise",
    "synthetic_nuclei": "images.synthetic",
    "Progress": "progress",
    "Stage": "progress",
    "run_to_end": "progress",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'napari_unet' has no attribute {name!r}")


def __dir__():
    return __all__
