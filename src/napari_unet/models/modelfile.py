"""Model files: one ``.safetensors`` file, weights plus a JSON config in its metadata.

safetensors holds only tensors and strings, so opening a model file from a
colleague cannot run code (no pickle anywhere). The config records the
architecture, the classes, the normalization, the post-processing thresholds
and a training summary. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import UNetError
from ..images.atomic import atomic_path
from ..images.normalize import IMAGE_TYPES, Normalization, convert_plane
from ..labels.instances import CLASS_SCHEMES, InstanceParams, class_scheme_of
from .model import UNet, UNetConfig
from .package_files import native_model_bytes
from .size_model import SizeModel, feature_count
from .sizes import SizeRule, TrainedObjects

FORMAT = "napari-unet-model"
# 2: the size rule has its own section (format 1 kept it under postprocessing).
FORMAT_VERSION = 2
METADATA_KEY = "napari_unet"
CHECKPOINT_KEY = "napari_unet_checkpoint"  # training checkpoints (training.py)
BUILTIN_MODELS = {
    "default": "default.safetensors",
    "nuclei": "default.safetensors",
    "brightfield": "brightfield.safetensors",
}


@dataclass
class SegmentationModel:
    """A U-Net with everything needed to go from an image to labels."""

    net: UNet
    normalization: Normalization = field(default_factory=Normalization)
    postprocessing: InstanceParams = field(default_factory=InstanceParams)
    training: dict = field(default_factory=dict)
    name: str = "untitled"
    source: str | None = None  # file it was loaded from, or the built-in name
    # Image type -> built-in model that segments planes of that type instead
    # (the built-in default hands brightfield/stained planes to "brightfield").
    companions: dict[str, str] = field(default_factory=dict)
    # Reads the nucleus size from this network's features (None: sizes come from a first pass).
    size_model: SizeModel | None = None
    # What its training masks showed: kind, size, and the one working scale
    # whole cells were trained (and are segmented) at. None: not recorded.
    objects: TrainedObjects | None = None
    # When a plane is segmented resized (the post-processing thresholds do not say).
    size_rule: SizeRule = field(default_factory=SizeRule)

    @property
    def scheme(self) -> str:
        """The class scheme of the network's outputs ("2class", "3class", ...)."""
        return class_scheme_of(self.net.config.n_classes)

    @property
    def classes(self) -> tuple[str, ...]:
        """Names of the output classes."""
        return CLASS_SCHEMES[self.scheme]

    @property
    def in_channels(self) -> int:
        """Number of input channels the network takes."""
        return self.net.config.in_channels

    @property
    def trained_image_types(self) -> list[str]:
        """The image types its training record says it saw ([] when not recorded)."""
        recorded = self.training.get("image_types")
        if not isinstance(recorded, list):  # older files, or a record that is not ours
            return []
        return [kind for kind in recorded if kind in IMAGE_TYPES and kind != "auto"]

    def config_dict(self) -> dict:
        """Everything but the weights, as stored in the model file's metadata."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "architecture": self.net.config.to_dict(),
            "classes": list(self.classes),
            "normalization": self.normalization.to_dict(),
            "postprocessing": self.postprocessing.to_dict(),
            "size_rule": self.size_rule.to_dict(),
            "training": self.training,
            "companions": self.companions,
            **({"size_model": self.size_model.to_dict()} if self.size_model else {}),
            **({"objects": self.objects.to_dict()} if self.objects else {}),
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
    """The file of a built-in model (``"default"``, alias ``"nuclei"``), or None for other names."""
    filename = BUILTIN_MODELS.get(str(name).lower())
    if filename is None:
        return None
    return Path(str(resources.files("napari_unet") / "models" / filename))


def model_path(source: str | Path) -> Path:
    """Where the model ``source`` (a built-in name or a file path) lives: the one resolver.

    Raises UNetError naming ``source`` when it is neither.
    """
    text = str(source)
    builtin = builtin_model_path(text) if not Path(text).suffix else None
    if builtin is not None:
        if not builtin.is_file():
            raise UNetError(f"the built-in model {text!r} is not installed with this package")
        return builtin
    path = Path(text)
    if not path.suffix and not path.exists():
        raise UNetError(
            f"unknown model {text!r}; give a built-in name ({', '.join(BUILTIN_MODELS)}), "
            "a .safetensors file or a bioimage.io .zip exported by napari-unet"
        )
    if not path.exists():
        raise UNetError(f"model file {path} does not exist")
    if not path.is_file():
        raise UNetError(f"{path} is not a model file (it is a folder or a special file)")
    return path


def read_model_bytes(source: str | Path) -> tuple[bytes, str, str]:
    """The bytes of a model, the file name to show in messages, and its source label.

    The label is the built-in name for built-in models and the path otherwise.
    """
    path = model_path(source)
    if path.suffix.lower() == ".zip":
        return native_model_bytes(path), path.name, str(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise UNetError(f"cannot read the model file {path}: {exc.strerror or exc}") from exc
    text = str(source)
    label = text if not Path(text).suffix and builtin_model_path(text) is not None else str(path)
    return blob, path.name, label


def _header_metadata(blob: bytes, name: str) -> dict:
    """The ``__metadata__`` of a safetensors file held in memory (no parsing of tensors)."""
    metadata = _header(blob, name).get("__metadata__")
    return metadata if isinstance(metadata, dict) else {}


# Bounds on a declared architecture: far above any napari-unet model, far below
# one that would take a lab machine's memory (each level doubles the channels).
ARCHITECTURE_BOUNDS = {
    "depth": (0, 8),
    "base_channels": (1, 512),
    "in_channels": (1, 64),
    "n_classes": (2, 16),
}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


def check_declared_sizes(blob: bytes, arch: UNetConfig, name: str) -> None:
    """Refuse a file whose declared network is huge or does not match its tensors' shapes.

    Checked from the file's header and a network built on torch's "meta"
    device (no memory), before anything is allocated: a crafted file asking
    for depth 100 once took 19 GB. Weights must be floating point (the batch
    norm step counters aside).
    """
    for key, (low, high) in ARCHITECTURE_BOUNDS.items():
        value = getattr(arch, key)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise UNetError(
                f"{name} is not a valid model: architecture.{key} is {value!r}, "
                f"expected a whole number in [{low}, {high}]"
            )
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in UNet(**arch.to_dict()).state_dict().items()}
    header = {k: v for k, v in _header(blob, name).items() if k != "__metadata__"}
    declared = {}
    for key, info in header.items():
        if not isinstance(info, dict) or not isinstance(info.get("shape"), list):
            raise UNetError(f"{name} is not a readable model file: tensor {key!r} is malformed")
        declared[key] = tuple(info["shape"])
        integer_ok = key.endswith("num_batches_tracked")
        if info.get("dtype") not in FLOAT_DTYPES and not integer_ok:
            raise UNetError(
                f"{name} is not a valid model: its weights {key!r} are {info.get('dtype')}, "
                "not floating point"
            )
    if declared != expected:
        missing = sorted(set(expected) - set(declared))
        extra = sorted(set(declared) - set(expected))
        wrong = sorted(k for k in set(expected) & set(declared) if expected[k] != declared[k])
        detail = (
            f"missing {missing[0]!r}"
            if missing
            else f"unexpected {extra[0]!r}"
            if extra
            else f"{wrong[0]!r} is {declared[wrong[0]]}, expected {expected[wrong[0]]}"
        )
        raise UNetError(f"{name}: the weights do not fit the stored architecture ({detail})")


def _header(blob: bytes, name: str) -> dict:
    """The JSON header of a safetensors file held in memory (tensor names, shapes, dtypes)."""
    if len(blob) < 8:
        raise UNetError(f"{name} is not a readable model file (corrupted or not safetensors)")
    size = int.from_bytes(blob[:8], "little")
    if size <= 0 or 8 + size > len(blob):
        raise UNetError(f"{name} is not a readable model file (corrupted or not safetensors)")
    try:
        header = json.loads(blob[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UNetError(
            f"{name} is not a readable model file (corrupted or not safetensors): {exc}"
        ) from exc
    return header if isinstance(header, dict) else {}


def _check_fraction(config: dict, section: str, key: str, name: str, low=0.0, high=1.0) -> None:
    value = config.get(section, {}).get(key)
    if value is None:
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise UNetError(
            f"{name} is not a valid model: {section}.{key} is {value!r}, "
            f"expected a number in [{low}, {high}]"
        )


def config_from_metadata(metadata: dict, name: str) -> dict:
    """Check and return the model config stored in a file's metadata.

    Anything crafted or damaged (not JSON, not an object, a bad version or
    out-of-range thresholds) is a UNetError naming the file, never a traceback.
    """
    if METADATA_KEY not in metadata:
        if CHECKPOINT_KEY in metadata:
            raise UNetError(
                f"{name} is a training checkpoint, not a model: continue the run with "
                f"'napari-unet train ... --resume --checkpoint {name}' (the same --out), "
                "or use the model file that run wrote"
            )
        raise UNetError(
            f"{name} is a safetensors file but not a napari-unet model (no model config)"
        )
    try:
        config = json.loads(metadata[METADATA_KEY])
    except (TypeError, json.JSONDecodeError) as exc:
        raise UNetError(f"{name}: the model config is damaged ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise UNetError(f"{name} is not a napari-unet model file")
    version = config.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise UNetError(f"{name} is not a valid model: format_version is {version!r}")
    if version > FORMAT_VERSION:
        raise UNetError(f"{name} was written by a newer napari-unet; please upgrade")
    sections = (
        "architecture",
        "normalization",
        "postprocessing",
        "size_rule",
        "training",
        "companions",
    )
    for section in (*sections, "size_model", "objects"):
        if not isinstance(config.get(section, {}), dict):
            raise UNetError(f"{name} is not a valid model: its {section!r} is not a mapping")
    for kind, other in config.get("companions", {}).items():
        # Only built-in names: a model file must not point at other files.
        if kind not in IMAGE_TYPES or not isinstance(other, str) or other not in BUILTIN_MODELS:
            raise UNetError(
                f"{name} is not a valid model: companion {kind!r} -> {other!r} is not a "
                "built-in model for an image type"
            )
    for key in ("foreground_threshold", "seed_threshold"):
        _check_fraction(config, "postprocessing", key, name)
    for key in ("min_size", "seed_h", "seed_dynamic", "seed_distance_h"):
        _check_fraction(config, "postprocessing", key, name, 0.0, float("inf"))
    for key in SizeRule.__dataclass_fields__:
        _check_fraction(config, _size_rule_section(config), key, name, 0.0, float("inf"))
    for key in ("low", "high"):
        _check_fraction(config, "normalization", key, name, 0.0, 100.0)
    norm = config.get("normalization", {})
    if isinstance(norm.get("low"), int | float) and isinstance(norm.get("high"), int | float):
        if not norm["low"] < norm["high"]:
            raise UNetError(f"{name} is not a valid model: normalization low >= high")
    return config


def _size_rule_section(config: dict) -> str:
    """Where a config keeps its size rule: its own section, or (format 1) postprocessing."""
    return "size_rule" if "size_rule" in config else "postprocessing"


# safetensors' own limit on the JSON header.
MAX_HEADER_BYTES = 100_000_000


def read_model_config(source: str | Path) -> dict:
    """The JSON config of a model (built-in name or file), checked, without building the network.

    Only the file's header is read: napari asks this of every ``.safetensors``
    file a user opens, and a foreign one may be gigabytes.
    """
    path = model_path(source)
    if path.suffix.lower() == ".zip":
        blob = native_model_bytes(path)  # a napari-unet model file is small
        return config_from_metadata(_header_metadata(blob, path.name), path.name)
    try:
        with open(path, "rb") as f:
            start = f.read(8)
            size = int.from_bytes(start, "little") if len(start) == 8 else 0
            head = start + f.read(min(size, MAX_HEADER_BYTES))
    except OSError as exc:
        raise UNetError(f"cannot read the model file {path}: {exc.strerror or exc}") from exc
    return config_from_metadata(_header_metadata(head, path.name), path.name)


def model_from_bytes(blob: bytes, name: str = "model", source: str | None = None):
    """Build a model from the bytes of its file, in memory (nothing is written or cached on disk).

    Never unpickles. Raises UNetError naming ``name`` for anything that is not
    a valid napari-unet model.
    """
    from safetensors.torch import load as load_tensors

    config = config_from_metadata(_header_metadata(blob, name), name)
    try:
        arch = UNetConfig.from_dict(config.get("architecture", {}))
        check_declared_sizes(blob, arch, name)
        net = UNet(**arch.to_dict())
        state = load_tensors(blob)
    except UNetError:
        raise
    except Exception as exc:
        raise UNetError(f"{name} is not a valid model: {exc}") from exc
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise UNetError(f"{name} is not a valid model: its weights {key!r} hold NaN or inf")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        net.load_state_dict(state, strict=True)
        normalization = Normalization.from_dict(config.get("normalization", {}))
        postprocessing = InstanceParams.from_dict(config.get("postprocessing", {}))
        size_rule = SizeRule.from_dict(config.get(_size_rule_section(config), {}))
        stored_objects = config.get("objects")
        objects = None if stored_objects is None else TrainedObjects.from_dict(stored_objects, name)
        stored_size_model = config.get("size_model")
        size_model = (
            None
            if stored_size_model is None
            else SizeModel.from_dict(stored_size_model, feature_count(net), name)
        )
    except UNetError:
        raise
    except Exception as exc:
        # torch lists every mismatch on its own line; one line is enough here.
        first = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), "")
        detail = first or str(exc).splitlines()[0]
        raise UNetError(
            f"{name}: the weights do not fit the stored architecture ({detail.rstrip('.')})"
        ) from exc
    net.eval()
    return SegmentationModel(
        net,
        normalization,
        postprocessing,
        config.get("training", {}),
        str(config.get("name", Path(name).stem)),
        source,
        dict(config.get("companions", {})),
        size_model,
        objects,
        size_rule,
    )


def load_model(
    source: str | Path | SegmentationModel = "default", in_channels: int | None = None
) -> SegmentationModel:
    """Load a model file or a built-in model by name ("default", alias "nuclei"): a fresh copy.

    Never unpickles. Raises UNetError for a missing, corrupted or non-model
    file, and when ``in_channels`` is given and the model takes another count.
    """
    if isinstance(source, SegmentationModel):
        model = source
    else:
        model = model_from_bytes(*read_model_bytes(source))
    check_channels(model, in_channels)
    return model


def check_channels(model: SegmentationModel, in_channels: int | None) -> None:
    """Raise UNetError when data with ``in_channels`` channels cannot go into ``model``."""
    if (
        in_channels is not None
        and model.in_channels != in_channels
        and not (model.in_channels in (1, 3) and in_channels in (1, 3, 4))
    ):
        raise UNetError(
            f"the model {model.name!r} takes {model.in_channels} channel(s) but the data has {in_channels}"
        )


# One cache per process, keyed by the *content* of the file (its SHA-256), so a
# file replaced on disk is read again and two names for the same bytes share
# one network. Nothing is cached on disk: a shared temp folder is not trusted.
_LOADED: dict[str, SegmentationModel] = {}


def cached_model_from_bytes(blob: bytes, name: str = "model", source: str | None = None):
    """:func:`model_from_bytes`, built once per process for the same bytes (checked by hash)."""
    key = hashlib.sha256(blob).hexdigest()
    if key not in _LOADED:
        _LOADED[key] = model_from_bytes(blob, name, source)
    return _LOADED[key]


def model_for_image_type(model: SegmentationModel, image_type: str) -> SegmentationModel:
    """The model that segments planes of ``image_type``: a built-in companion, or ``model``."""
    companion = model.companions.get(image_type)
    if companion is None:
        return model
    return get_model(companion)


def model_for_image_types(model: SegmentationModel, image_types) -> SegmentationModel:
    """The model that segments the most common of ``image_types`` (ties: alphabetical first).

    Training and tuning on such images change that model: the built-in
    default's brightfield companion for mostly brightfield images.
    """
    kinds = [kind for kind in image_types if kind]
    if not kinds:
        return model
    majority = max(sorted(set(kinds)), key=kinds.count)
    return model_for_image_type(model, majority)


def convert_for_segmenting(
    plane: np.ndarray,
    channel_axis: int | None,
    model: SegmentationModel,
    image_type: str | None = None,
) -> tuple[np.ndarray, str, SegmentationModel]:
    """A plane converted, not yet normalized, for the model that segments its image type.

    Returns the (C, Y, X) plane, its image type, and that model: ``model``
    itself or the companion it hands such planes to, whose conversion and
    channel count the plane then gets.
    """
    chw, kind = convert_plane(
        plane, channel_axis, model.in_channels, model.normalization, image_type
    )
    chosen = model_for_image_type(model, kind)
    if chosen.normalization != model.normalization or chosen.in_channels != model.in_channels:
        chw, kind = convert_plane(
            plane, channel_axis, chosen.in_channels, chosen.normalization, kind
        )
    return chw, kind, chosen


def get_model(model: str | Path | SegmentationModel) -> SegmentationModel:
    """The model to segment with: objects pass through, names and files are loaded once.

    The returned object is shared: copy it (:func:`load_model`) before changing it.
    """
    if isinstance(model, SegmentationModel):
        return model
    return cached_model_from_bytes(*read_model_bytes(model))


def model_display_name(model: str | Path | SegmentationModel) -> str:
    """How to name ``model`` in a message: the user's own name or file, never a copy's."""
    if isinstance(model, SegmentationModel):
        return model.source or model.name
    return str(model)


def model_to_bytes(model: str | Path | SegmentationModel) -> bytes:
    """A model (name, path or object) as the bytes of its file, e.g. for dask workers."""
    from safetensors.torch import save

    if not isinstance(model, SegmentationModel):
        blob, name, _ = read_model_bytes(model)
        config_from_metadata(_header_metadata(blob, name), name)  # fail before sending
        return blob
    state = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    return save(state, metadata={METADATA_KEY: json.dumps(model.config_dict())})
