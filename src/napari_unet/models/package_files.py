"""Reading the bioimage.io packages napari-unet exported: the model file they carry.

Its own module so that both the model loader (``modelfile``) and the
exporter (``bioimage_package``) import it, and neither imports the other
inside a function.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from ..errors import UNetError

# The napari-unet model file inside a package.
NATIVE_ATTACHMENT = "napari_unet.safetensors"
MAX_NATIVE_BYTES = 256 << 20  # napari-unet models are a few MB; 256 MB is far above any
# Deflate at most shrinks ~1000x; a member claiming more is a zip bomb, not a model.
MAX_COMPRESSION_RATIO = 1000
# What a damaged, encrypted or exotic zip raises while it is read.
ZIP_ERRORS = (
    zipfile.BadZipFile,
    OSError,
    RuntimeError,
    NotImplementedError,
    EOFError,
    ValueError,
    zlib.error,
)

__all__ = ["MAX_NATIVE_BYTES", "NATIVE_ATTACHMENT", "is_package", "native_model_bytes"]


def is_package(path: str | Path) -> bool:
    """True when ``path`` is a zip file holding a bioimage.io description (``rdf.yaml``)."""
    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except ZIP_ERRORS:
        return False  # unreadable: not a package anyone can open
    return any(Path(n).name in ("rdf.yaml", "bioimageio.yaml") for n in names)


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
            # Sizes from the zip's directory, checked before anything is unpacked.
            if info.file_size > MAX_NATIVE_BYTES:
                raise UNetError(
                    f"{path.name}: its model attachment is too large to be napari-unet's"
                )
            if info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
                raise UNetError(
                    f"{path.name}: its model attachment claims to unpack {info.file_size} bytes "
                    f"from {info.compress_size}: not a model file"
                )
            blob = archive.read(info)
    except UNetError:
        raise
    except ZIP_ERRORS as exc:
        raise UNetError(f"{path.name} is not a readable model package: {exc}") from exc
    if len(blob) != info.file_size:
        raise UNetError(f"{path.name}: its model attachment is not the size its zip says")
    return blob
