"""Training data: image/mask pairs, and random valid-size patches with targets and weights.

Images are normalized once, whole, when loaded. Each patch is cut around a
random annotated pixel, deformed, and turned into a class target and a loss
weight map over the network's *output* region; the input keeps the halo of
real (or mirrored) context the valid convolutions need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import UNetError
from ..images.io import files_by_stem, match_stems, read_image
from ..images.normalize import (
    Normalization,
    check_finite_array,
    looks_unpolarised,
    normalize,
    prepare_plane,
    to_channels_first,
)
from ..models.modelfile import SegmentationModel, convert_for_segmenting
from ..models.sizes import (
    WORKING_CELL_DIAMETER,
    is_cell_size,
    median_object_area,
    resize_channels,
    resize_labels,
    resized_shape,
    training_scale,
)
from .augment import AugmentConfig, augment_pair, crop_padded
from .weights import class_targets, class_weights_from_counts, training_weights


@dataclass
class TrainingImage:
    """One annotated image: normalized (C, Y, X) float32, labels (Y, X), annotated region."""

    image: np.ndarray
    labels: np.ndarray
    valid: np.ndarray
    name: str = ""
    image_type: str = ""  # how it was read: "fluorescence" or "brightfield" (inverted)
    scale: float = 1.0  # resized by this, as the model's size rule will segment it
    object_area: float | None = None  # median area of its annotated objects, as given
    cells: bool = False  # objects of whole-cell size: resized to the working scale
    unpolarised: bool = False  # no bright or dark background (DIC, phase contrast)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return self.labels.shape


def hold_out_strips(
    images: Sequence[TrainingImage], fraction: float
) -> tuple[list[TrainingImage], list[TrainingImage]]:
    """Split a strip off each annotated image to validate on, when no validation images are given.

    The last ``fraction`` of each image's annotated area (the box around its
    valid pixels: the whole image when fully annotated, the region of a
    partial annotation) along that area's longer side becomes a validation
    image; training keeps the image up to the strip (what lies beyond it
    along that axis carries no annotation). Both are crops, so validation
    predicts only the strip and training never sees it. A strip taken from
    the whole image missed a corner region entirely, or held one or two of
    its nuclei. Images whose strip holds no annotated object stay whole in
    training.

    Returns
    -------
    train, validation
        Crops of the images (views, not copies).
    """
    train: list[TrainingImage] = []
    held: list[TrainingImage] = []
    for item in images:
        annotated = [np.flatnonzero(item.valid.any(axis=1 - axis)) for axis in (0, 1)]
        if not annotated[0].size:
            train.append(item)
            continue
        box = [(int(idx[0]), int(idx[-1]) + 1) for idx in annotated]  # (start, stop) per axis
        axis = 0 if box[0][1] - box[0][0] >= box[1][1] - box[1][0] else 1
        low, high = box[axis]
        cut = high - max(1, round((high - low) * fraction))
        rest, strip = [slice(None), slice(None)], [slice(*box[0]), slice(*box[1])]
        rest[axis], strip[axis] = slice(0, cut), slice(cut, high)
        rest, strip = tuple(rest), tuple(strip)
        if cut <= low or not (item.labels[strip][item.valid[strip]] > 0).any():
            train.append(item)
            continue
        train.append(_crop(item, rest, item.name))
        held.append(_crop(item, strip, f"{item.name or 'image'} (held-out strip)"))
    return train, held


def _crop(item: TrainingImage, window: tuple[slice, slice], name: str) -> TrainingImage:
    return replace(
        item,
        image=item.image[(slice(None), *window)],
        labels=item.labels[window],
        valid=item.valid[window],
        name=name,
    )


def adapt_channels(
    item: TrainingImage, in_channels: int, normalization: Normalization
) -> TrainingImage:
    """``item``, prepared for a network of another channel count, as one of ``in_channels`` sees it.

    Used when a training set mixes image types that a built-in model hands
    to networks of different channel counts. Exact when both networks
    convert alike: the channel mappings of
    :func:`~napari_unet.images.normalize.to_channels_first` are linear and the
    percentile normalization is an affine map of each image (no clipping),
    so normalizing again after the mapping gives what preparing the raw
    image for this network gives.
    """
    if item.image.shape[0] == in_channels:
        return item
    chw = to_channels_first(item.image, 0, in_channels)
    return replace(item, image=normalize(chw, normalization))


def make_training_image(
    image: np.ndarray,
    labels: np.ndarray,
    in_channels: int | None = None,
    normalization: Normalization = Normalization(),
    valid: np.ndarray | None = None,
    channel_axis: int | None = None,
    name: str = "",
    image_type: str | None = None,
    model: SegmentationModel | None = None,
    working_diameter: float = WORKING_CELL_DIAMETER,
) -> TrainingImage:
    """Check and prepare one image/labels pair (raises UNetError with the name on problems).

    The image is prepared as it will be when segmented: with ``model``, for
    the network that segments its image type (the built-in default hands
    brightfield images to its three-channel brightfield companion), and
    resized (with its labels and annotated region) as that network's size
    rule resizes a plane whose nuclei measure what the annotated ones do
    (:func:`napari_unet.models.sizes.factor_for_area`): a network fine-tuned on tiny
    nuclei learns them enlarged, as it will see them. Objects of whole-cell
    size (:func:`napari_unet.models.sizes.is_cell_size`) are brought to
    ``working_diameter`` pixels instead, with or without ``model``; the model
    trained records that scale and segments at it. Without ``model``, with
    ``in_channels`` and ``normalization``, nuclei stay at the image's own size.
    Brightfield and stained images are converted (``image_type`` overrides
    the automatic choice).
    """
    what = f" ({name})" if name else ""
    image = np.asarray(image)
    labels = np.asarray(labels)
    if channel_axis is None and image.ndim == 3 and image.shape[-1] in (3, 4):
        channel_axis = -1
    if labels.ndim != 2:
        raise UNetError(f"the mask{what} must be a 2D label image, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            raise UNetError(f"the mask{what} must hold integer instance ids, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise UNetError(
            f"the mask{what} has negative ids; instance ids must be 0 (background) or more"
        )
    if labels.size and int(labels.max()) > np.iinfo(np.int32).max:
        raise UNetError(
            f"the mask{what} has ids up to {int(labels.max())}; ids must stay below 2**31 "
            "(relabel it, e.g. skimage.segmentation.relabel_sequential)"
        )
    if model is not None:
        check_finite_array(image)
        chw, kind, chosen = convert_for_segmenting(image, channel_axis, model, image_type)
        chw = normalize(chw, chosen.normalization)
    elif in_channels is None:
        raise TypeError("make_training_image needs in_channels or model")
    else:
        chw, kind = prepare_plane(image, channel_axis, in_channels, normalization, image_type)
    if chw.shape[1:] != labels.shape:
        raise UNetError(
            f"image{what} is {chw.shape[1:]} but its mask is {labels.shape}; they must match"
        )
    if valid is None:
        valid = np.ones(labels.shape, dtype=bool)
    elif valid.shape != labels.shape:
        raise UNetError(f"the annotated region{what} is {valid.shape}, the mask {labels.shape}")
    if not valid.any():
        raise UNetError(f"the annotated region{what} is empty")
    labels, valid = labels.astype(np.int32), valid.astype(bool)
    unpolarised = looks_unpolarised(chw)
    area = median_object_area(labels)
    rule = None if model is None else chosen.size_rule
    cells = area is not None and is_cell_size(area, rule)
    scale = training_scale(area, rule, working_diameter)
    if scale != 1.0:
        shape = resized_shape(labels.shape, scale)
        chw = resize_channels(chw, shape)
        labels, valid = resize_labels(labels, shape), resize_labels(valid, shape)
    return TrainingImage(chw, labels, valid, name, kind, scale, area, cells, unpolarised)


def training_images_from_stack(
    image: np.ndarray,
    labels: np.ndarray,
    axes: str,
    in_channels: int | None = None,
    normalization: Normalization = Normalization(),
    valid: np.ndarray | None = None,
    name: str = "",
    model: SegmentationModel | None = None,
) -> list[TrainingImage]:
    """The annotated planes of an image (2D, or a Z/T stack with axes like "ZYX", "TZYXC").

    ``labels`` has the image's shape without C; planes with no labelled
    pixel inside ``valid`` (the annotated Y/X region, default all) are
    skipped. Raises UNetError when shapes differ or nothing is annotated.
    Planes are prepared as :func:`make_training_image` does.
    """
    image, labels = np.asarray(image), np.asarray(labels)
    expected = tuple(s for s, a in zip(image.shape, axes) if a != "C")
    if labels.shape != expected:
        raise UNetError(
            f"the labels of {name!r} are {labels.shape}, the image {expected}; they must match"
        )
    n_lead = sum(a not in "YXC" for a in axes)
    plane_axes = axes[n_lead:]
    channel_axis = plane_axes.index("C") if "C" in plane_axes else None
    region_given = valid is not None and not np.all(valid)
    if valid is None:
        valid = np.ones(labels.shape[-2:], dtype=bool)
    items = []
    for index in np.ndindex(*labels.shape[:n_lead]):
        plane_labels = labels[index]
        if not np.any(plane_labels[valid]):
            continue  # an unannotated plane
        items.append(
            make_training_image(
                image[index],
                plane_labels.astype(np.int64),
                in_channels,
                normalization,
                valid,
                channel_axis=channel_axis,
                name=f"{name}{list(index) if index else ''}",
                model=model,
            )
        )
    if not items:
        where = " inside the annotated region" if region_given else ""
        raise UNetError(f"the labels of {name!r} have no labelled object{where}: paint some first")
    return items


def pair_by_stem(images_dir: str | Path, masks_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair image and mask files by file stem (``a.tif`` with ``a.tif`` or ``a_labels.tif``)."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for d, what in ((images_dir, "images"), (masks_dir, "masks")):
        if not d.is_dir():
            raise UNetError(f"the {what} folder {d} does not exist")
    images = files_by_stem(images_dir)
    if not images:
        raise UNetError(f"no images (.tif, .png) found in {images_dir}")
    masks = files_by_stem(masks_dir, ("_labels", "_masks", "_mask"))
    return match_stems(images, masks, "image", "mask")


def load_training_folder(
    images_dir: str | Path,
    masks_dir: str | Path,
    in_channels: int | None = None,
    normalization: Normalization = Normalization(),
    limit: int | None = None,
    model: SegmentationModel | None = None,
) -> list[TrainingImage]:
    """Read, check and prepare every image/mask pair of two folders (see :func:`make_training_image`)."""
    pairs = pair_by_stem(images_dir, masks_dir)
    if limit is not None:
        pairs = pairs[:limit]
    out = []
    for img_path, mask_path in pairs:
        image = read_image(img_path).data
        mask = read_image(mask_path).data
        if not np.any(mask):
            raise UNetError(
                f"the mask {mask_path.name} is empty (no labelled cell); annotate it or remove the pair"
            )
        try:
            item = make_training_image(
                image, mask, in_channels, normalization, name=img_path.stem, model=model
            )
        except UNetError as exc:
            message = str(exc)
            # Every refusal names the file it is about (a CYX image among YX ones...).
            raise UNetError(
                message if img_path.name in message else f"{img_path.name}: {message}"
            ) from exc
        out.append(item)
    return out


@dataclass
class AnnotatedStack:
    """An image and its labels held in memory (a viewer's layers), for :func:`training_sets`."""

    image: np.ndarray
    labels: np.ndarray
    axes: str
    role: str = "train"  # or "validation"
    valid: np.ndarray | None = None  # the annotated Y/X region; None: all of it
    name: str = ""


def training_sets(
    stacks: Sequence[AnnotatedStack] = (),
    folders: dict[str, tuple[str | Path, str | Path]] | None = None,
    init: SegmentationModel | None = None,
    in_channels: int | None = None,
) -> tuple[list[TrainingImage], list[TrainingImage]]:
    """The training and validation images of a run, from layers and/or folders.

    The one preparation of training data, for the CLI (folders) and the Train
    widget (layers and folders). Fine-tuning prepares each image as ``init``
    will segment it (a built-in model's brightfield companion included); from
    scratch (``init`` None), with ``in_channels`` channels.

    Parameters
    ----------
    stacks
        Images with their labels in memory (planes of stacks are taken when annotated).
    folders
        ``{"train": (images, masks), "validation": (images, masks)}``; empty
        paths are skipped.
    """
    if init is not None:
        in_channels = None
    elif in_channels is None:
        raise UNetError("from scratch, say how many channels the network takes")
    sets: dict[str, list[TrainingImage]] = {"train": [], "validation": []}
    for stack in stacks:
        if stack.role not in sets:
            raise UNetError(f"a pair is for 'train' or 'validation', not {stack.role!r}")
        sets[stack.role] += training_images_from_stack(
            stack.image,
            stack.labels,
            stack.axes,
            in_channels,
            Normalization(),  # a new network's; a model's own comes with it
            stack.valid,
            stack.name,
            model=init,
        )
    for role, (images, masks) in (folders or {}).items():
        if images and masks:
            sets[role] += load_training_folder(images, masks, in_channels, model=init)
    return sets["train"], sets["validation"]


class PatchDataset(torch.utils.data.Dataset):
    """Random training patches: (image (C, P, P), target (O, O), weights (O, O)).

    ``len`` is the number of patches per epoch; each item is drawn at random
    (seeded by ``seed``, the epoch and the index, so runs are reproducible
    with any number of loader workers).
    """

    def __init__(
        self,
        images: list[TrainingImage],
        input_size: int,
        halo: int,
        scheme: str,
        class_weights: np.ndarray,
        patches_per_epoch: int,
        augment: AugmentConfig | None,
        w0: float = 10.0,
        sigma: float = 5.0,
        seed: int = 0,
    ) -> None:
        if not images:
            raise UNetError("no training images")
        self.images = images
        self.input_size = input_size
        self.output_size = input_size - 2 * halo
        self.scheme = scheme
        self.class_weights = class_weights
        self.patches_per_epoch = patches_per_epoch
        self.augment = augment
        self.w0, self.sigma = w0, sigma
        self.seed = seed
        self.epoch = 0
        # Larger images give more patches, as if each pixel were equally likely.
        areas = np.array([im.valid.sum() for im in images], dtype=np.float64)
        self.image_probability = np.sqrt(areas) / np.sqrt(areas).sum()
        self._valid_points = [np.flatnonzero(im.valid) for im in images]

    def __len__(self) -> int:
        return self.patches_per_epoch

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k = int(rng.choice(len(self.images), p=self.image_probability))
        item = self.images[k]
        flat = self._valid_points[k][rng.integers(len(self._valid_points[k]))]
        cy, cx = np.unravel_index(flat, item.shape)
        P = self.input_size
        if self.augment is None:
            y0, x0 = int(cy) - P // 2, int(cx) - P // 2
            image = crop_padded(item.image, y0, x0, P, P, "reflect")
            labels = crop_padded(item.labels, y0, x0, P, P, "constant")
            valid = crop_padded(item.valid, y0, x0, P, P, "constant")
        else:
            center = (cy + rng.uniform(-0.5, 0.5), cx + rng.uniform(-0.5, 0.5))
            image, labels, valid = augment_pair(
                item.image, item.labels, item.valid, (P, P), center, rng, self.augment
            )
        target = class_targets(labels, self.scheme)
        weights = training_weights(labels, target, self.class_weights, self.w0, self.sigma, valid)
        h = (P - self.output_size) // 2
        crop = (slice(h, h + self.output_size), slice(h, h + self.output_size))
        return (
            torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(target[crop])),
            torch.from_numpy(np.ascontiguousarray(weights[crop], dtype=np.float32)),
        )


def dataset_class_weights(
    images: list[TrainingImage], scheme: str, n_classes: int, balance: float = 0.5
) -> np.ndarray:
    """Class weights from the class frequencies of the whole training set.

    ``balance`` 1 weights each class inversely to its frequency (the paper's
    w_c); 0 weights all classes equally; the default 0.5 (square root) keeps
    rare classes important without skewing the probabilities so far that the
    post-processing thresholds lose their meaning.
    """
    counts = np.zeros(n_classes)
    for im in images:
        target = class_targets(im.labels, scheme)
        counts += np.bincount(target[im.valid], minlength=n_classes)[:n_classes]
    return class_weights_from_counts(counts, balance)
