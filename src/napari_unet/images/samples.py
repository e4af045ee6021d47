"""A real nuclei image, downloaded once and verified by its SHA-256, then used offline.

The human mitosis image (nuclei stained with DAPI; from the scikit-image
data repository) is fetched on first use into the user cache folder; later
calls read the cached copy without any network. A damaged cache is
re-fetched; without network a clear error names the file to place there.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

import numpy as np

from ..errors import UNetError
from .atomic import atomic_path

SAMPLES = {
    "human_mitosis": {
        "url": "https://gitlab.com/scikit-image/data/-/raw/2cdc5ce89b334d28f06a58c9f0ca21aa6992a5ba/AS_09125_050116030001_D03f00d0.tif",
        "sha256": "2751ba667c4067c5d30817cff004aa06f6f6287f1cdbb5b8c9c6a500308cb456",
        "filename": "human_mitosis.tif",
    }
}


def cache_dir() -> Path:
    """The per-user folder for downloaded samples (``NAPARI_UNET_CACHE_DIR`` overrides it)."""
    override = os.environ.get("NAPARI_UNET_CACHE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-unet", appauthor=False))


def _verified_bytes(path: Path, sha256: str) -> bytes | None:
    """The file's bytes if they hash to ``sha256`` (read once: what was checked is what is used)."""
    try:
        payload = path.read_bytes() if path.is_file() else None
    except OSError:
        return None
    if payload is None or hashlib.sha256(payload).hexdigest() != sha256:
        return None
    return payload


def fetch_sample_bytes(name: str, timeout: float = 30.0) -> bytes:
    """The verified bytes of a sample, downloading it only if the cached copy is missing or damaged."""
    entry = SAMPLES[name]
    path = cache_dir() / entry["filename"]
    payload = _verified_bytes(path, entry["sha256"])
    if payload is not None:
        return payload
    try:
        with urllib.request.urlopen(entry["url"], timeout=timeout) as response:
            payload = response.read()
    except Exception as exc:
        raise UNetError(
            f"cannot download the {name} sample ({exc}). Without network access, put the file "
            f"{entry['filename']} (sha256 {entry['sha256'][:12]}...) into {path.parent}, "
            "or use the synthetic nuclei sample, which needs no download"
        ) from exc
    if hashlib.sha256(payload).hexdigest() != entry["sha256"]:
        raise UNetError(
            f"the downloaded {name} sample does not match its known checksum; not using it"
        )
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return payload


def fetch_sample(name: str, timeout: float = 30.0) -> Path:
    """Path of a verified cached sample (downloaded only if missing or damaged)."""
    fetch_sample_bytes(name, timeout)
    return cache_dir() / SAMPLES[name]["filename"]


def human_mitosis() -> np.ndarray:
    """The human-mitosis nuclei sample (downloaded once, then read from the cache)."""
    import io

    import tifffile

    return tifffile.imread(io.BytesIO(fetch_sample_bytes("human_mitosis")))
