"""napari-unet: U-Net segmentation of cells and nuclei (library, CLI and napari plugin).

Importing this package loads neither Qt nor napari (nor torch): the public
functions below are imported on first use, and the widgets live in
``napari_unet._napari``, which napari imports on demand.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "UNet": "model",
    "UNetError": "errors",
    "predict_tiled": "tiling",
    "segment": "segmentation",
    "iter_segment": "segmentation",
    "load_model": "modelfile",
    "save_model": "modelfile",
    "new_model": "modelfile",
    "SegmentationModel": "modelfile",
    "train": "training",
    "iter_train": "training",
    "TrainConfig": "recipes",
    "FINE_TUNE": "recipes",
    "TrainingStopped": "training",
    "InputWarning": "notes",
    "make_training_image": "data",
    "load_training_folder": "data",
    "training_sets": "data",
    "AnnotatedStack": "data",
    "measure_objects": "measure",
    "evaluate_folders": "evaluation",
    "BatchOptions": "options",
    "SegmentOptions": "options",
    "THRESHOLD_OPTIONS": "instances",
    "border_weight_map": "weights",
    "class_targets": "weights",
    "instances_from_probabilities": "instances",
    "InstanceParams": "instances",
    "SizeRule": "sizes",
    "tune_instance_params": "instances",
    "matching": "metrics",
    "matching_dataset": "metrics",
    "segment_files": "batch",
    "iter_segment_files": "batch",
    "segment_large": "blockwise",
    "iter_segment_large": "blockwise",
    "synthetic_nuclei": "synthetic",
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
