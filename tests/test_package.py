"""Packaging: import hygiene, the npe2 manifest, and the console script."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_loads_neither_qt_nor_napari():
    code = (
        "import sys, napari_unet\n"
        "napari_unet.segment; napari_unet.train; napari_unet.segment_files\n"
        "bad = [m for m in ('napari', 'qtpy', 'PyQt6', 'PyQt5', 'PySide6', 'vispy', 'magicgui') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == ""


def test_core_modules_do_not_import_qt():
    import pkgutil

    import napari_unet

    # Every module of the package and its subpackages except the napari one, found, not listed.
    root = Path(napari_unet.__file__).parent
    core = []
    for m in pkgutil.iter_modules([str(root)]):
        if m.name.startswith("_napari"):
            continue
        core.append(m.name)
        if m.ispkg:
            subs = pkgutil.iter_modules([str(root / m.name)])
            core += [f"{m.name}.{s.name}" for s in subs if s.name != "__main__"]
    assert {"segmenting.segmentation", "segmenting.blockwise", "devices", "cli"} <= set(core)
    code = (
        "import sys\n"
        + "".join(f"import napari_unet.{m}\n" for m in core)
        + ("print([m for m in ('napari', 'qtpy', 'PyQt6') if m in sys.modules])")
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_manifest_is_one_file_shipped_in_the_package():
    import napari_unet

    packaged = Path(napari_unet.__file__).parent / "napari.yaml"
    assert packaged.read_text() == (ROOT / "napari.yaml").read_text()


def test_manifest_validates_and_is_discovered():
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-unet")
    assert {w.display_name for w in manifest.contributions.widgets} == {
        "Segment",
        "Annotate",
        "Train / fine-tune",
        "Show weight map",
    }
    assert "napari/layers/segment" in manifest.contributions.menus
    result = subprocess.run(
        # --imports: every python_name in the manifest must import and exist.
        [sys.executable, "-m", "npe2", "validate", "--imports", "napari-unet"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _requirement_names(requirements: list[str]) -> set[str]:
    import re

    return {re.split(r"[<>=!~;\[\s]", d, maxsplit=1)[0].lower() for d in requirements}


def test_the_core_install_brings_no_qt_and_no_napari_and_the_napari_extra_brings_the_viewer():
    # A headless user or a dask worker installs the core; the viewer comes with
    # the `napari` extra (as cellpose's `gui` extra), a Qt binding included so
    # that the one-line user install opens a window.
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _requirement_names(project["dependencies"])
    viewer = {"napari", "magicgui", "qtpy", "superqt", "psygnal"}
    qt_bindings = {"pyqt5", "pyqt6", "pyside2", "pyside6"}
    assert not (viewer | qt_bindings) & core
    assert {"torch", "dask", "distributed", "bioimageio.spec"} <= core
    extra = _requirement_names(project["optional-dependencies"]["napari"])
    assert viewer <= extra and qt_bindings & extra
    # the test extra installs the viewer through the napari extra, not a second list
    assert any(
        r.startswith("napari-unet[") and "napari" in r
        for r in project["optional-dependencies"]["test"]
    )


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "napari_unet.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "segment" in result.stdout and "train" in result.stdout
