import hashlib
import urllib.request

import numpy as np
import pytest
import tifffile

from napari_unet.errors import UNetError
from napari_unet.images import samples


def test_cached_sample_is_used_offline(monkeypatch, tmp_path):
    payload_path = tmp_path / "payload.tif"
    tifffile.imwrite(payload_path, np.arange(64, dtype=np.uint16).reshape(8, 8))
    payload = payload_path.read_bytes()
    entry = dict(samples.SAMPLES["human_mitosis"], sha256=hashlib.sha256(payload).hexdigest())
    monkeypatch.setitem(samples.SAMPLES, "human_mitosis", entry)
    cached = samples.cache_dir() / entry["filename"]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(payload)

    def no_network(*args, **kwargs):
        raise AssertionError("the network must not be used when the cache is valid")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    image = samples.human_mitosis()
    assert image.shape == (8, 8) and image[7, 7] == 63


def test_damaged_cache_without_network_is_a_clear_error(monkeypatch):
    cached = samples.cache_dir() / samples.SAMPLES["human_mitosis"]["filename"]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"damaged")

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(UNetError, match="synthetic nuclei sample"):
        samples.fetch_sample("human_mitosis")


def test_download_with_wrong_checksum_is_refused(monkeypatch):
    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return b"something else"

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Response())
    with pytest.raises(UNetError, match="checksum"):
        samples.fetch_sample("human_mitosis")
    assert not (samples.cache_dir() / "human_mitosis.tif").exists()
