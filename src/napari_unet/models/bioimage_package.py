"""bioimage.io model packages: export a napari-unet model, read back the packages it wrote.

A package (format 0.5, written with ``bioimageio.spec``) holds the network
as bioimage.io tools run it: ``pytorch_state_dict`` weights with the
architecture's source file and keyword arguments, ``torchscript``, and
``onnx`` when the ``onnx`` package is installed.
Inputs are the network's channels (one grey, or R, G, B for a model of
stained images), nuclei bright on dark, with a parameterized size (the valid sizes of the
valid-padding U-Net: ``min + n * 2**depth``), normalized by ``scale_range``
at the model's percentiles (over all channels jointly, as napari-unet
normalizes); outputs are the class probabilities (softmax),
their size the input's less the halo on each side. The watershed step cannot
be expressed in the format: the post-processing parameters go into the
package's ``config``, and the napari-unet model file itself is attached, so
napari-unet rebuilds the whole model from a package it exported, without
unpickling anything. Other packages are refused with one line.

``bioimageio.spec`` (a dependency of the core install) is needed only to
export, ``onnx`` only for the ONNX weights (``pip install "napari-unet[onnx]"``);
reading a package back needs nothing beyond the standard library.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import warnings
from pathlib import Path

import numpy as np

from ..errors import UNetError
from ..images.normalize import HEMATOXYLIN_FROM_RGB
from .modelfile import model_to_bytes
from .package_files import NATIVE_ATTACHMENT

# The config section naming the napari-unet model file inside a package.
CONFIG_KEY = "napari_unet"
ONNX_OPSET = 17  # onnxruntime 1.14 and later run it

CITATION = (
    "Ronneberger O., Fischer P., Brox T. U-Net: Convolutional Networks for Biomedical "
    "Image Segmentation. MICCAI 2015, LNCS 9351, 234-241."
)
CITATION_DOI = "10.1007/978-3-319-24574-4_28"


def export_package(model, out: str | Path, test_image: np.ndarray | None = None) -> Path:
    """Write ``model`` as a bioimage.io model package (a ``.zip``).

    Parameters
    ----------
    model
        A :class:`~napari_unet.models.modelfile.SegmentationModel`.
    out
        The ``.zip`` to write (atomically).
    test_image
        An image for the package's test tensors and cover, nuclei bright
        on dark: (Y, X), repeated over the network's channels, or (C, Y, X);
        by default synthetic nuclei.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    check_exporter_versions()
    from bioimageio.spec import save_bioimageio_package

    from ..images.atomic import atomic_path, scratch_dir

    out = Path(out)
    if out.suffix != ".zip":
        raise UNetError(f"a bioimage.io package is a .zip file, got {out.name}")
    net = copy.deepcopy(model.net).float().eval().cpu()
    raw, probabilities = _test_tensors(model, net, test_image)
    with scratch_dir("export") as tmp:
        folder = Path(tmp)
        _write_files(folder, model, net, raw, probabilities)
        description = _describe(folder, model, net)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as target:
            save_bioimageio_package(description, output_path=Path(target))
    return out


def check_exporter_versions() -> None:
    """Refuse, in one line, a bioimage.io toolchain known not to write packages.

    bioimageio.spec before 0.5.13 calls pydantic's serializer handler with two
    arguments; pydantic 2.14 reads the second as an index key, so every export
    fails deep inside validation with a traceback. bioimageio.core 0.11.0 pins
    such a spec, so installing it beside pydantic 2.14 gives this combination.

    Raises
    ------
    UNetError
        When bioimageio.spec is missing or the pair is the broken one.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        spec = version("bioimageio.spec")
    except PackageNotFoundError as exc:
        raise UNetError(
            "exporting a bioimage.io package needs bioimageio.spec: pip install bioimageio.spec"
        ) from exc
    pydantic = version("pydantic")
    if _release(spec) < (0, 5, 13) and _release(pydantic) >= (2, 14):
        raise UNetError(
            f"bioimageio.spec {spec} cannot write packages with pydantic {pydantic}: "
            'pip install "pydantic<2.14" (or bioimageio.spec>=0.5.13)'
        )


def _release(text: str) -> tuple[int, ...]:
    """The leading numbers of a version string: '0.5.12.0' -> (0, 5, 12, 0)."""
    numbers = []
    for part in text.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, part))
        if not digits:
            break
        numbers.append(int(digits))
        if len(digits) < len(part):
            break
    return tuple(numbers)


def _test_tensors(model, net, test_image) -> tuple[np.ndarray, np.ndarray]:
    """A raw (C, Y, X) test input of a valid size, and the probabilities the package must give."""
    import torch

    from ..images.normalize import normalize
    from ..images.synthetic import synthetic_nuclei

    size = net.valid_input_size(256)
    if test_image is None:
        test_image, _ = synthetic_nuclei((size, size), n_nuclei=12, seed=0)
    raw = np.asarray(test_image, dtype=np.float32)
    channels = net.config.in_channels
    if raw.ndim == 2:
        raw = np.repeat(raw[None], channels, axis=0)
    if raw.ndim != 3 or raw.shape[0] != channels:
        raise UNetError(
            f"the test image must be (Y, X) or ({channels}, Y, X) for this model, got {raw.shape}"
        )
    raw = raw[:, :size, :size]
    if raw.shape[1:] != (size, size):
        raise UNetError(f"the test image must be at least {size}x{size}")
    with torch.no_grad():
        x = torch.from_numpy(normalize(raw, model.normalization))[None]
        probabilities = torch.softmax(net(x), dim=1).numpy()
    return raw, probabilities


def _write_files(folder: Path, model, net, raw: np.ndarray, probabilities: np.ndarray) -> None:
    """Everything the package holds besides its description, written into ``folder``."""
    import tifffile
    import torch

    from ..images.io import overlay_png, write_png
    from .model import halo

    np.save(folder / "test_input.npy", raw[None])
    np.save(folder / "test_output.npy", probabilities)
    tifffile.imwrite(folder / "sample_input.tif", raw[None], photometric="minisblack")
    tifffile.imwrite(folder / "sample_output.tif", probabilities, photometric="minisblack")
    torch.save(net.state_dict(), folder / "weights.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated but still the format's
        example = torch.zeros(1, *raw.shape)
        torch.jit.trace(net, example).save(str(folder / "weights_torchscript.pt"))
        if importlib.util.find_spec("onnx") is not None:
            _write_onnx(net, example, folder / "weights.onnx")
    (folder / NATIVE_ATTACHMENT).write_bytes(model_to_bytes(model))
    (folder / "unet_architecture.py").write_bytes((Path(__file__).parent / "model.py").read_bytes())
    _write_cover(folder / "cover.png", raw, probabilities, model, overlay_png, write_png)
    depth = net.config.depth
    readme = _readme(model, net.valid_input_size(1), depth, halo(depth))
    (folder / "README.md").write_text(readme)


def _write_onnx(net, example, path: Path) -> None:
    """ONNX weights with batch, Y and X free (torch's TorchScript-based exporter).

    torch's newer exporter (``dynamo=True``) cannot yet express the valid
    U-Net's crop sizes for free input sizes; the older one traces them as
    shape arithmetic, which onnxruntime evaluates for every valid size.
    """
    import torch

    free = {0: "batch", 2: "y", 3: "x"}
    torch.onnx.export(
        net,
        (example,),
        str(path),
        dynamo=False,
        opset_version=ONNX_OPSET,
        input_names=["raw"],
        output_names=["logits"],
        dynamic_axes={"raw": free, "logits": free},
    )


def _describe(folder: Path, model, net):
    """The bioimage.io description (format 0.5) of the files in ``folder``."""
    import torch
    from bioimageio.spec.model import v0_5 as v

    from .. import __version__
    from .model import halo

    depth, lost, norm = net.config.depth, halo(net.config.depth), model.normalization
    spatial = v.ParameterizedSize(min=net.valid_input_size(1), step=2**depth)
    names = _channel_names(net.config.in_channels)
    # One range for all channels, as napari-unet normalizes (colour kept).
    jointly = [v.AxisId("y"), v.AxisId("x")] + ([v.AxisId("channel")] if len(names) > 1 else [])
    inputs = v.InputTensorDescr(
        id=v.TensorId("raw"),
        description=_input_text(model, names),
        axes=[
            v.BatchAxis(),
            v.ChannelAxis(channel_names=[v.Identifier(c) for c in names]),
            v.SpaceInputAxis(id=v.AxisId("y"), size=spatial),
            v.SpaceInputAxis(id=v.AxisId("x"), size=spatial),
        ],
        test_tensor=v.FileDescr(source=folder / "test_input.npy"),
        sample_tensor=v.FileDescr(source=folder / "sample_input.tif"),
        preprocessing=[
            v.ScaleRangeDescr(
                kwargs=v.ScaleRangeKwargs(
                    axes=jointly,
                    min_percentile=norm.low,
                    max_percentile=norm.high,
                )
            )
        ],
    )

    def output_axis(name: str):
        # Valid convolutions: the output is the input less the halo on each side.
        reference = v.SizeReference(
            tensor_id=v.TensorId("raw"), axis_id=v.AxisId(name), offset=-2 * lost
        )
        return v.SpaceOutputAxis(id=v.AxisId(name), size=reference)

    outputs = v.OutputTensorDescr(
        id=v.TensorId("probabilities"),
        description="class probabilities; napari-unet's watershed turns them into instances",
        axes=[
            v.BatchAxis(),
            v.ChannelAxis(channel_names=[v.Identifier(c) for c in model.classes]),
            output_axis("y"),
            output_axis("x"),
        ],
        test_tensor=v.FileDescr(source=folder / "test_output.npy"),
        sample_tensor=v.FileDescr(source=folder / "sample_output.tif"),
        postprocessing=[v.SoftmaxDescr(kwargs=v.SoftmaxKwargs(axis=v.AxisId("channel")))],
    )
    torch_version = v.Version(torch.__version__.split("+")[0])
    weights = v.WeightsDescr(
        pytorch_state_dict=v.PytorchStateDictWeightsDescr(
            source=folder / "weights.pt",
            architecture=v.ArchitectureFromFileDescr(
                source=folder / "unet_architecture.py",
                callable=v.Identifier("UNet"),
                kwargs=net.config.to_dict(),
            ),
            pytorch_version=torch_version,
        ),
        torchscript=v.TorchscriptWeightsDescr(
            source=folder / "weights_torchscript.pt",
            pytorch_version=torch_version,
            parent="pytorch_state_dict",
        ),
        onnx=v.OnnxWeightsDescr(
            source=folder / "weights.onnx", opset_version=ONNX_OPSET, parent="pytorch_state_dict"
        )
        if (folder / "weights.onnx").exists()
        else None,
    )
    return v.ModelDescr(
        name=f"napari-unet {model.name or 'model'}"[:128],
        description=(
            f"U-Net (Ronneberger et al. 2015, valid padding, depth {depth}) segmenting "
            f"nuclei, exported from napari-unet {__version__}."
        ),
        authors=[v.Author(name="napari-unet developers")],
        cite=[v.CiteEntry(text=CITATION, doi=v.Doi(CITATION_DOI))],
        license=v.LicenseId("BSD-3-Clause"),
        documentation=v.FileDescr(source=folder / "README.md"),
        covers=[v.FileDescr(source=folder / "cover.png")],
        tags=["unet", "nuclei", "segmentation", "napari-unet"],
        inputs=[inputs],
        outputs=[outputs],
        weights=weights,
        attachments=[v.FileDescr(source=folder / NATIVE_ATTACHMENT)],
        config={
            CONFIG_KEY: {
                "version": __version__,
                "model_file": NATIVE_ATTACHMENT,
                "scheme": model.scheme,
                "normalization": norm.to_dict(),
                "postprocessing": model.postprocessing.to_dict(),
                "size_rule": model.size_rule.to_dict(),
            }
        },
    )


def _write_cover(path: Path, raw, probabilities, model, overlay_png, write_png) -> None:
    """Input and its segmentation side by side (the 2:1 cover bioimage.io shows)."""
    from ..labels.instances import instances_from_probabilities

    lost = (raw.shape[1] - probabilities.shape[2]) // 2
    labels = instances_from_probabilities(probabilities[0], model.postprocessing, model.scheme)
    crop = raw.mean(axis=0)[lost : lost + labels.shape[0], lost : lost + labels.shape[1]]
    grey = np.clip((crop - crop.min()) / (np.ptp(crop) or 1.0) * 255, 0, 255).astype(np.uint8)
    left = np.repeat(grey[..., None], 3, axis=-1)
    write_png(path, np.concatenate([left, overlay_png(crop, labels)], axis=1))


def _readme(model, minimum: int, depth: int, lost: int) -> str:
    classes = ", ".join(model.classes)
    params = json.dumps(model.postprocessing.to_dict(), indent=2)
    return f"""# {model.name or "napari-unet model"}

A U-Net (Ronneberger et al. 2015) with valid convolutions, exported by
[napari-unet](https://pypi.org/project/napari-unet/).

- **Input** `raw`: {_input_text(model, _channel_names(model.in_channels))}.
  Brightfield and stained (H&E) images must be {_brightfield_text(model)}
  first (napari-unet does this itself). Valid sizes along Y and X:
  {minimum} + n * {2**depth}; normalized by the {model.normalization.low} and
  {model.normalization.high} percentiles of all channels together.
- **Output** `probabilities`: {classes}; {lost} pixels smaller than the
  input on each side (valid padding). Tile with overlaps of {lost} pixels
  for exact results on large images.
- **Instances**: napari-unet splits touching nuclei with a watershed on these
  probabilities; its parameters are in the package's `config.napari_unet`
  (`postprocessing`; `size_rule` says when an image is segmented resized):

```json
{params}
```

`napari-unet segment --model THIS.zip` runs the whole model, labels included.

## Validation

{_validation_text(model)}
"""


def _channel_names(channels: int) -> list[str]:
    """The input's channel names: grey, R/G/B, or numbered."""
    if channels == 1:
        return ["grey"]
    if channels == 3:
        return ["red", "green", "blue"]
    return [f"channel{i}" for i in range(channels)]


def _input_text(model, names: list[str]) -> str:
    channels = "one grey channel" if names == ["grey"] else f"channels {', '.join(names)}"
    return f"{channels}, nuclei bright on a dark background"


def _brightfield_text(model) -> str:
    """How this model's brightfield input is made, for the package README."""
    if model.normalization.brightfield == "hematoxylin":
        return (
            "converted to the optical density of hematoxylin (colour deconvolution with "
            "scikit-image's H&E-DAB vectors: `-log(I + 1)` per channel, weights "
            + ", ".join(f"{w:.3f}" for w in HEMATOXYLIN_FROM_RGB)
            + " for R, G, B; grey images as R = G = B)"
        )
    if model.in_channels == 3:
        return "inverted (each colour channel negated; grey images as R = G = B)"
    return "converted to grey and inverted"


def _validation_text(model) -> str:
    """What the model file records about how it was scored (napari-unet's shipped models do)."""
    training = model.training or {}
    final = training.get("validation_final")
    if final:
        lines = [f"- {name}: {json.dumps(scores)}" for name, scores in final.items()]
        return "Scores recorded when the model was made (AP at IoU thresholds):\n\n" + "\n".join(
            lines
        )
    best = training.get("validation")
    if best:
        return f"Best validation during training: {json.dumps(best)}"
    return "No validation scores are recorded in this model."
