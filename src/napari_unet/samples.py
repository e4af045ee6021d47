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

from .errors import UNetError
from .io import atomic_path

SAMPLES = {
    "human_mitosis": {
        "url": "https://gitlab.com/scikit-image/data/-/raw/2cdc5ce89b334d28f06a58c9f0ca21aa6992a5ba/AS_09125_050116030001_D03f00d0.tif",
        "sha256": "2751ba667c4067c5d30817cff004aa06f6f6287f1cdbb5b8c9c6a500308cb456",
        "filename": "human_mitosis.tif",
    }
}


def cache_dir() -> Path:
    override = os.environ.get("NAPARI_UNET_CACHE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-unet", appauthor=False))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_sample(name: str, timeout: float = 30.0) -> Path:
    """Path of a verified cached sample, downloading it only if missing or damaged."""
    entry = SAMPLES[name]
    path = cache_dir() / entry["filename"]
    if path.is_file() and sha256_of(path) == entry["sha256"]:
        return path
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
    return path


def human_mitosis() -> np.ndarray:
    import tifffile

    return tifffile.imread(fetch_sample("human_mitosis"))
