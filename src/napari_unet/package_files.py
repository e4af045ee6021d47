"""Reading the bioimage.io packages napari-unet exported: the model file they carry.

Its own module so that both the model loader (``modelfile``) and the
exporter (``bioimage_package``) import it, and neither imports the other
inside a function.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from .errors import UNetError

# The napari-unet model file inside a package.
NATIVE_ATTACHMENT = "napari_unet.safetensors"
MAX_NATIVE_BYTES = 2 << 30  # a napari-unet model attachment is far smaller

__all__ = ["MAX_NATIVE_BYTES", "NATIVE_ATTACHMENT", "is_package", "native_model_bytes"]


def is_package(path: str | Path) -> bool:
    """True when ``path`` is a zip file holding a bioimage.io description (``rdf.yaml``)."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(Path(n).name in ("rdf.yaml", "bioimageio.yaml") for n in archive.namelist())


def native_model_bytes(path: str | Path) -> bytes:
    """The napari-unet model file attached to a package that napari-unet exported.

    Raises
    ------
    UNetError
        When ``path`` is not such a package (another tool's package, a damaged
        zip, an attachment too large to be ours).
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = {Path(n).name: n for n in archive.namelist()}
            if NATIVE_ATTACHMENT not in names:
                raise UNetError(
                    f"{path.name} is a model package that napari-unet did not export; only "
                    "napari-unet's own bioimage.io packages can be read (run others with "
                    "bioimageio.core)"
                )
            info = archive.getinfo(names[NATIVE_ATTACHMENT])
            if info.file_size > MAX_NATIVE_BYTES:
                raise UNetError(
                    f"{path.name}: its model attachment is too large to be napari-unet's"
                )
            return archive.read(info)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UNetError(f"{path.name} is not a readable model package: {exc}") from exc
