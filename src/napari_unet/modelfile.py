"""Model files: one ``.safetensors`` file, weights plus a JSON config in its metadata.

safetensors holds only tensors and strings, so opening a model file from a
colleague cannot run code (no pickle anywhere). The config records the
architecture, the classes, the normalization, the post-processing thresholds
and a training summary. Writes are atomic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .errors import UNetError
from .instances import CLASS_SCHEMES, InstanceParams, class_scheme_of
from .io import atomic_path
from .model import UNet, UNetConfig
from .normalize import Normalization

FORMAT = "napari-unet-model"
FORMAT_VERSION = 1
METADATA_KEY = "napari_unet"
BUILTIN_MODELS = {"default": "default.safetensors", "nuclei": "default.safetensors"}


@dataclass
class SegmentationModel:
    """A U-Net with everything needed to go from an image to labels."""

    net: UNet
    normalization: Normalization = field(default_factory=Normalization)
    postprocessing: InstanceParams = field(default_factory=InstanceParams)
    training: dict = field(default_factory=dict)
    name: str = "untitled"
    source: str | None = None  # file it was loaded from, or the built-in name

    @property
    def scheme(self) -> str:
        return class_scheme_of(self.net.config.n_classes)

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASS_SCHEMES[self.scheme]

    @property
    def in_channels(self) -> int:
        return self.net.config.in_channels

    def config_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "architecture": self.net.config.to_dict(),
            "classes": list(self.classes),
            "normalization": self.normalization.to_dict(),
            "postprocessing": self.postprocessing.to_dict(),
            "training": self.training,
            "package_version": __version__,
        }


def new_model(
    *,
    depth: int = 3,
    base_channels: int = 16,
    in_channels: int = 1,
    scheme: str = "3class",
    batch_norm: bool = True,
    dropout: float = 0.1,
    name: str = "untitled",
) -> SegmentationModel:
    """A freshly initialized model (He initialization)."""
    if scheme not in CLASS_SCHEMES:
        raise UNetError(f"unknown class scheme {scheme!r}; choose one of {sorted(CLASS_SCHEMES)}")
    net = UNet(depth, base_channels, in_channels, len(CLASS_SCHEMES[scheme]), batch_norm, dropout)
    return SegmentationModel(net, name=name)


def save_model(model: SegmentationModel, path: str | Path, half: bool = False) -> Path:
    """Write ``model`` to a ``.safetensors`` file atomically.

    ``half`` stores float16 weights (half the size); they are loaded back as float32.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise UNetError(f"model files end in .safetensors, got {path.name}")
    state = {}
    for k, v in model.net.state_dict().items():
        v = v.detach().cpu()
        if half and v.is_floating_point():
            v = v.to(torch.float16)
        state[k] = v.contiguous()
    metadata = {METADATA_KEY: json.dumps(model.config_dict())}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def builtin_model_path(name: str) -> Path | None:
    filename = BUILTIN_MODELS.get(name.lower())
    if filename is None:
        return None
    return Path(str(resources.files("napari_unet") / "models" / filename))


def read_model_config(path: str | Path) -> dict:
    """The JSON config of a model file, without loading the weights."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UNetError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:
        raise UNetError(
            f"{path.name} is not a readable model file (corrupted or not safetensors): {exc}"
        ) from exc
    if METADATA_KEY not in metadata:
        raise UNetError(
            f"{path.name} is a safetensors file but not a napari-unet model (no model config)"
        )
    try:
        config = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise UNetError(f"{path.name}: the model config is damaged ({exc})") from exc
    if config.get("format") != FORMAT:
        raise UNetError(f"{path.name} is not a napari-unet model file")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise UNetError(f"{path.name} was written by a newer napari-unet; please upgrade")
    return config


def load_model(
    source: str | Path | SegmentationModel = "default", in_channels: int | None = None
) -> SegmentationModel:
    """Load a model file or a built-in model by name ("default", alias "nuclei").

    Never unpickles. Raises UNetError for a missing, corrupted or non-model
    file, and when ``in_channels`` is given and the model takes another count.
    """
    if isinstance(source, SegmentationModel):
        model = source
    else:
        from safetensors.torch import load_file

        builtin = builtin_model_path(str(source)) if not Path(str(source)).suffix else None
        path = builtin if builtin is not None else Path(source)
        if builtin is not None and not builtin.is_file():
            raise UNetError(f"the built-in model {source!r} is not installed with this package")
        config = read_model_config(path)
        try:
            arch = UNetConfig.from_dict(config["architecture"])
            net = UNet(**arch.to_dict())
            state = load_file(str(path))
            state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
            net.load_state_dict(state, strict=True)
        except UNetError:
            raise
        except Exception as exc:
            raise UNetError(
                f"{path.name}: the weights do not fit the stored architecture ({exc})"
            ) from exc
        net.eval()
        model = SegmentationModel(
            net,
            Normalization.from_dict(config.get("normalization", {})),
            InstanceParams.from_dict(config.get("postprocessing", {})),
            config.get("training", {}),
            config.get("name", path.stem),
            str(source) if builtin is not None else str(path),
        )
    if (
        in_channels is not None
        and model.in_channels != in_channels
        and not (model.in_channels in (1, 3) and in_channels in (1, 3, 4))
    ):
        raise UNetError(
            f"the model {model.name!r} takes {model.in_channels} channel(s) but the data has {in_channels}"
        )
    return model


def model_size_bytes(model: SegmentationModel) -> int:
    return int(sum(np.prod(p.shape) * p.element_size() for p in model.net.state_dict().values()))
