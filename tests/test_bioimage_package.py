"""bioimage.io packages: export, bioimageio's own test, and reading back what napari-unet wrote."""

import importlib.util
import zipfile

import numpy as np
import pytest

from napari_unet.cli import main
from napari_unet.errors import UNetError
from napari_unet.images.synthetic import synthetic_nuclei
from napari_unet.models.modelfile import save_model
from napari_unet.segmenting.segmentation import segment

needs_spec = pytest.mark.skipif(
    importlib.util.find_spec("bioimageio.spec") is None,
    reason="bioimageio.spec is not installed (pip install bioimageio.spec)",
)


@pytest.fixture(scope="module", params=[1, 3], ids=["grey", "rgb"])
def package(tmp_path_factory, request):
    """The tiny model exported once for the module: one grey channel, and R, G, B."""
    if importlib.util.find_spec("bioimageio.spec") is None:
        pytest.skip("bioimageio.spec is not installed (pip install bioimageio.spec)")
    import torch

    from napari_unet.models.bioimage_package import export_package
    from napari_unet.models.modelfile import new_model

    torch.manual_seed(0)
    model = new_model(
        depth=2,
        base_channels=4,
        in_channels=request.param,
        scheme="3class",
        batch_norm=True,
        dropout=0.0,
    )
    model.name = "tiny"
    out = tmp_path_factory.mktemp("export") / "tiny.zip"
    return model, export_package(model, out)


@needs_spec
def test_a_package_gives_the_same_labels_as_the_model_it_came_from(package):
    model, path = package
    image, _ = synthetic_nuclei((120, 100), n_nuclei=8, seed=4)
    params = {"foreground_threshold": 0.3}
    from dataclasses import replace

    tuned = replace(model.postprocessing, **params)
    np.testing.assert_array_equal(
        segment(image, path, params=tuned), segment(image, model, params=tuned)
    )


@needs_spec
def test_the_package_holds_every_weight_format_and_napari_units_config(package):
    _, path = package
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        rdf = archive.read("rdf.yaml").decode()
    assert {"weights.pt", "weights_torchscript.pt", "napari_unet.safetensors", "cover.png"} <= names
    if importlib.util.find_spec("onnx") is not None:
        assert "weights.onnx" in names and "opset_version" in rdf
    assert "scale_range" in rdf and "softmax" in rdf and "napari_unet" in rdf
    assert "10.1007/978-3-319-24574-4_28" in rdf  # Ronneberger et al. 2015


@pytest.mark.skipif(
    importlib.util.find_spec("bioimageio.core") is None,
    reason="bioimageio.core is not installed: `bioimageio test` cannot run",
)
def test_the_package_passes_bioimageio_test(package):
    from bioimageio.core import test_model

    _, path = package
    summary = test_model(path)
    assert summary.status == "passed", summary.format()


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="onnx and onnxruntime are not installed",
)
@pytest.mark.parametrize("size", [1, 3])
def test_onnx_weights_take_any_valid_size(package, tmp_path, size):
    import onnxruntime
    import torch

    model, path = package
    with zipfile.ZipFile(path) as archive:
        archive.extract("weights.onnx", tmp_path)
    session = onnxruntime.InferenceSession(str(tmp_path / "weights.onnx"))
    side = model.net.valid_input_size(40 * size)
    x = torch.randn(2, model.in_channels, side, side + 2**model.net.config.depth)
    (got,) = session.run(None, {"raw": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model.net.eval()(x).numpy(), atol=1e-4)


@needs_spec
def test_a_colour_package_names_its_channels_and_normalizes_them_together(package):
    model, path = package
    with zipfile.ZipFile(path) as archive:
        rdf = archive.read("rdf.yaml").decode()
        test_input = np.load(archive.open("test_input.npy"))
    assert test_input.shape[:2] == (1, model.in_channels)
    if model.in_channels == 3:
        assert all(name in rdf for name in ("red", "green", "blue"))
        assert "- channel" in rdf  # scale_range over channel, y and x: one range, as napari-unet
    else:
        assert "grey" in rdf


@needs_spec
def test_a_test_image_of_another_channel_count_is_one_clear_error(tmp_path):
    from napari_unet.models.bioimage_package import export_package
    from napari_unet.models.modelfile import new_model

    model = new_model(depth=2, base_channels=4, in_channels=3)
    with pytest.raises(UNetError, match=r"\(Y, X\) or \(3, Y, X\)"):
        export_package(model, tmp_path / "m.zip", test_image=np.zeros((2, 128, 128), np.float32))
    assert not (tmp_path / "m.zip").exists()


def test_another_tools_package_is_refused_in_one_line(tmp_path):
    foreign = tmp_path / "other.zip"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("rdf.yaml", "type: model\nformat_version: 0.5.4\n")
        archive.writestr("weights.pt", b"not ours")
    with pytest.raises(UNetError, match="napari-unet did not export"):
        segment(np.zeros((64, 64), np.float32), foreign)


def test_a_zip_that_is_not_a_package_is_refused(tmp_path):
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UNetError, match="not a readable model package"):
        segment(np.zeros((64, 64), np.float32), broken)


@needs_spec
def test_cli_export_writes_a_package_and_checks_its_arguments_first(tiny_model, tmp_path, capsys):
    model_file = str(save_model(tiny_model, tmp_path / "tiny.safetensors"))
    out = tmp_path / "pkg" / "tiny.zip"
    assert main(["export", model_file, "--out", str(out)]) == 0
    assert zipfile.is_zipfile(out)
    capsys.readouterr()
    for argv, message in [
        (["export", model_file, "--out", str(out)], "exists"),
        (["export", model_file, "--out", str(tmp_path / "tiny.tar")], ".zip"),
        (
            ["export", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "m.zip")],
            "does not exist",
        ),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "m.zip").exists()


def test_napari_reader_opens_our_packages_and_leaves_other_zips(package, tmp_path, monkeypatch):
    import napari.utils.notifications as notifications

    from napari_unet._napari.reader import get_reader, read_model

    shown = []
    monkeypatch.setattr(notifications, "show_warning", shown.append)
    _, path = package
    assert get_reader(str(path)) is read_model
    plain = tmp_path / "photos.zip"
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("a.txt", "hello")
    assert get_reader(str(plain)) is None and not shown  # not a model package: silent
    foreign = tmp_path / "other.zip"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("rdf.yaml", "type: model\n")
    assert get_reader(str(foreign)) is None
    assert len(shown) == 1 and "napari-unet did not export" in shown[0]


@pytest.mark.parametrize(
    "versions, refused",
    [
        ({"bioimageio.spec": "0.5.12.0", "pydantic": "2.14.4"}, True),
        ({"bioimageio.spec": "0.5.12.0", "pydantic": "2.13.5"}, False),
        ({"bioimageio.spec": "0.5.14.3", "pydantic": "2.14.4"}, False),
        ({"bioimageio.spec": "0.5.13.0", "pydantic": "3.0.0b1"}, False),
    ],
)
def test_the_broken_spec_and_pydantic_pair_is_refused_in_one_line_before_any_work(
    tiny_model, tmp_path, monkeypatch, capsys, versions, refused
):
    import importlib.metadata

    from napari_unet.models import bioimage_package

    monkeypatch.setattr(importlib.metadata, "version", lambda name: versions[name])
    if not refused:
        bioimage_package.check_exporter_versions()
        return
    with pytest.raises(UNetError, match="pydantic<2.14"):
        bioimage_package.check_exporter_versions()
    model_file = str(save_model(tiny_model, tmp_path / "tiny.safetensors"))
    capsys.readouterr()
    assert main(["export", model_file, "--out", str(tmp_path / "m.zip")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write packages" in err[0], err
    assert not (tmp_path / "m.zip").exists()


def test_release_reads_the_leading_numbers_of_a_version():
    from napari_unet.models.bioimage_package import _release

    assert _release("0.5.12.0") == (0, 5, 12, 0)
    assert _release("2.14.0rc1") == (2, 14, 0)
    assert _release("2.14") > _release("2.13.99")
