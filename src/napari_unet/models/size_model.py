"""A size model: the typical nucleus size of a plane, read from what the network sees.

The first-pass rule (:mod:`napari_unet.models.sizes`) measures the objects the
network finds, and cannot tell a 3x image of small nuclei, which the network
breaks into normal-looking pieces, from a 1x image of large ones. The
texture can: an enlarged image is smooth at the network's scale. As in
cellpose's size model (Stringer et al. 2021), a linear (ridge) regression
reads the log median nucleus area from the network's own features: the mean
activation of every encoder level over the plane (gathered by the first pass
at no extra network cost; older files read four crops) and on crops of the
plane seen at a third of its size. It is fitted per network
(``scripts/train_size_model.py``), so a fine-tuned network, whose features
moved, does not keep it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import UNetError
from .sizes import block_means
from .tiling import encoder_means

# Features are read on up to four crops of CROP pixels, on held-out train
# images (scripts/train_size_model.py, mean AP@0.5 over 0.5-3x): the four
# corners 0.769 (four 512 corners 0.773 but 1.45x the time of a 2048^2 plane,
# one 512 centre crop 0.760); the four brightest squares 0.772, at the
# corners' cost, with a smaller cross-validated size error at 1-3x.
CROP = 256
COARSE_STEP = 3  # the second view: 3x3 pixel means, nuclei a third as wide
MIN_SIDE = 100  # smaller views are mirrored up to this: depth-3 valid convolutions need room


def feature_count(net) -> int:
    """How many features :func:`size_features` reads from ``net``."""
    cfg = net.config
    return 2 * sum(cfg.base_channels * 2**level for level in range(cfg.depth + 1))


# "first_pass": the plane's features are its mean activations over the whole
# plane, gathered by the first pass at no extra network cost
# (tiling.EncoderMeans); its 3x3 means' are read on the four brightest squares.
CROP_CHOICES = ("corners", "brightest", "first_pass")


def _crop_origins(chw: np.ndarray, choice: str) -> list[tuple[int, int]]:
    """Top-left corners of the crops: the plane's four corners, or its four brightest CROP squares.

    "brightest" scores the squares of a CROP grid (the last row and column
    flush with the far edges) by their mean over channels, nuclei being
    bright in a normalized plane, so empty margins do not speak for the size.
    """
    _, h, w = chw.shape
    last_row, last_col = max(h - CROP, 0), max(w - CROP, 0)
    if choice == "corners":
        return [(y, x) for y in sorted({0, last_row}) for x in sorted({0, last_col})]
    rows = sorted({*range(0, last_row, CROP), last_row})
    cols = sorted({*range(0, last_col, CROP), last_col})
    sample = chw[:, ::4, ::4].mean(axis=0)  # every 16th pixel ranks the squares well enough
    score = {
        (y, x): float(sample[y // 4 : (y + CROP) // 4, x // 4 : (x + CROP) // 4].mean())
        for y in rows
        for x in cols
    }
    return sorted(score, key=lambda origin: -score[origin])[:4]


def _crops(chw: np.ndarray, choice: str = "corners") -> list[np.ndarray]:
    """Crops of at most CROP pixels a side (see :func:`_crop_origins`), mirrored up to MIN_SIDE."""
    crops = []
    for y, x in _crop_origins(chw, choice):
        crop = chw[:, y : y + CROP, x : x + CROP]
        pad_y, pad_x = max(0, MIN_SIDE - crop.shape[1]), max(0, MIN_SIDE - crop.shape[2])
        if pad_y or pad_x:
            crop = np.pad(crop, ((0, 0), (0, pad_y), (0, pad_x)), mode="symmetric")
        crops.append(np.ascontiguousarray(crop, dtype=np.float32))
    return crops


def _encoder_means(net, chw: np.ndarray, crops: str) -> np.ndarray:
    """Mean activation per encoder channel, averaged over the crops of ``chw``.

    The crops go through as one batch (fewer, larger convolutions), on the
    network's own device and in its own precision; the means are taken in
    float32.
    """
    param = next(net.parameters())
    x = torch.from_numpy(np.stack(_crops(chw, crops))).to(param.device, param.dtype)
    means = []
    with torch.no_grad():
        for level, block in enumerate(net.down):
            if level > 0:
                x = torch.nn.functional.max_pool2d(x, 2)  # floor: any crop size pools
            x = block(x)
            means.append(x.float().mean(dim=(2, 3)))
    return torch.cat(means, dim=1).mean(dim=0).cpu().numpy()


def size_features(
    net, chw: np.ndarray, crops: str = "corners", first_pass: np.ndarray | None = None
) -> np.ndarray:
    """The features a size model reads from a normalized (C, Y, X) plane, float64.

    ``net`` is a network in eval mode whose input channels match ``chw``, as
    fitted (float32) or as a run prepared it (batch norm folded, maybe
    bfloat16: log areas within 0.03 of float32's on train images). Log of
    the mean activations of each encoder level, averaged over the crops of
    the plane and of its 3x3 pixel means (``crops``: which squares, one of
    :data:`CROP_CHOICES`). With "first_pass" the plane's own part is its
    whole-plane means: ``first_pass``, as the first pass gathered them
    (:class:`~napari_unet.models.tiling.EncoderMeans`), or computed here.
    """
    coarse = block_means(chw, COARSE_STEP)
    coarse = chw if coarse is None else coarse
    if crops == "first_pass":
        if first_pass is None:
            first_pass = encoder_means(net, chw, device=next(net.parameters()).device)
        fine, coarse_crops = np.asarray(first_pass), "brightest"
    else:
        fine, coarse_crops = _encoder_means(net, chw, crops), crops
    raw = np.concatenate([fine, _encoder_means(net, coarse, coarse_crops)])
    return np.log(np.abs(raw.astype(np.float64)) + 1e-3)


@dataclass
class SizeModel:
    """A ridge regression from :func:`size_features` to the log median nucleus area.

    ``shrink_below``: a predicted resize factor under this shrinks the plane
    (the first-pass rule keeps deciding enlargements, where it does well).
    """

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    shrink_below: float = 1 / 1.5
    record: dict = field(default_factory=dict)
    crops: str = "corners"  # where its features were read (size_features)

    def predict_area(self, features: np.ndarray) -> float:
        """The median nucleus area, in pixels, that ``features`` speak for."""
        z = (features - self.mean) / self.scale
        return float(np.exp(np.clip(z @ self.weights + self.bias, -10.0, 20.0)))

    def to_dict(self) -> dict:
        """JSON-ready form stored in the model file's config."""
        return {
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "weights": [float(v) for v in self.weights],
            "bias": float(self.bias),
            "shrink_below": float(self.shrink_below),
            "record": self.record,
            "crops": self.crops,
        }

    @classmethod
    def from_dict(cls, d: dict, n_features: int, name: str = "model") -> SizeModel:
        """Read back a stored size model; UNetError naming ``name`` when it does not fit."""
        try:
            arrays = [np.asarray(d[k], dtype=np.float64) for k in ("mean", "scale", "weights")]
            bias, shrink = float(d["bias"]), float(d.get("shrink_below", cls.shrink_below))
            crops = d.get("crops", cls.crops)  # files before the choice read the corners
            if crops not in CROP_CHOICES:
                raise ValueError(f"unknown crops {crops!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise UNetError(f"{name} is not a valid model: its size model is damaged") from exc
        if any(a.shape != (n_features,) for a in arrays):
            raise UNetError(
                f"{name} is not a valid model: its size model does not fit the network "
                f"({n_features} features expected)"
            )
        finite = all(np.isfinite(a).all() for a in arrays) and np.isfinite(bias)
        if not finite or not (arrays[1] > 0).all() or not 0 < shrink <= 1:
            raise UNetError(f"{name} is not a valid model: its size model holds bad numbers")
        record = d.get("record", {})
        return cls(*arrays, bias, shrink, record if isinstance(record, dict) else {}, crops)


def fit_size_model(
    features: np.ndarray, areas: np.ndarray, alpha: float = 10.0, **kwargs
) -> SizeModel:
    """Ridge regression of log ``areas`` on standardized ``features`` (rows: samples)."""
    features = np.asarray(features, dtype=np.float64)
    target = np.log(np.asarray(areas, dtype=np.float64))
    if features.ndim != 2 or len(features) != len(target) or len(target) < 2:
        raise UNetError("a size model needs two or more samples, one area per feature row")
    mean, scale = features.mean(0), features.std(0) + 1e-6
    z = np.c_[(features - mean) / scale, np.ones(len(features))]
    penalty = alpha * np.diag([1.0] * features.shape[1] + [0.0])  # the intercept is free
    solution = np.linalg.solve(z.T @ z + penalty, z.T @ target)
    return SizeModel(mean, scale, solution[:-1], float(solution[-1]), **kwargs)


def predicted_factor(
    size_model: SizeModel,
    net,
    chw: np.ndarray,
    object_area: float,
    first_pass: np.ndarray | None = None,
) -> float:
    """Resize factor that brings the predicted nuclei of ``chw`` to ``object_area``.

    ``first_pass``: the plane's encoder means if the first pass gathered them
    (used when the size model reads them, see :func:`size_features`).
    """
    area = size_model.predict_area(size_features(net, chw, size_model.crops, first_pass))
    return float(np.sqrt(object_area / area))


def reads_first_pass(size_model: SizeModel | None) -> bool:
    """True when ``size_model`` reads the whole-plane means the first pass can gather."""
    return size_model is not None and size_model.crops == "first_pass"
