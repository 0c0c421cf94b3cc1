"""The array cache: hits, corrupt or mismatched files rebuilt, memory fallback, content hashes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from core.embed.cache import ArrayCache, cache_dir, default_cache, digest, weights_digest
from core.embed.digits import DigitsCNN


def counting(value: float):
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.full(3, value), "names": np.asarray(["x", "yz"])}

    return compute, calls


def test_second_fetch_reads_the_file(tmp_path):
    cache = ArrayCache(tmp_path)
    compute, calls = counting(1.5)
    first, hit1 = cache.fetch("kind", "k1", compute)
    second, hit2 = cache.fetch("kind", "k1", compute)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    np.testing.assert_array_equal(second["a"], first["a"])
    assert second["names"].tolist() == ["x", "yz"]
    assert [p.name for p in cache.entries("kind")] == ["k1.npz"]
    assert ArrayCache(tmp_path).load("kind", "k1") is not None  # another instance (process) sees it


@pytest.mark.parametrize("damage", [b"not a zip at all", b"PK\x03\x04truncated", b""])
def test_corrupt_file_is_rebuilt_not_trusted(tmp_path, damage):
    cache = ArrayCache(tmp_path)
    compute, calls = counting(2.0)
    cache.fetch("kind", "k", compute)
    cache.path("kind", "k").write_bytes(damage)
    arrays, hit = cache.fetch("kind", "k", compute)
    assert not hit and len(calls) == 2
    np.testing.assert_array_equal(arrays["a"], np.full(3, 2.0))
    assert cache.load("kind", "k") is not None  # the rebuilt file is valid


def test_file_stored_under_another_key_is_rejected(tmp_path):
    cache = ArrayCache(tmp_path)
    cache.save("kind", "right", {"a": np.ones(2)})
    cache.path("kind", "right").rename(cache.path("kind", "wrong"))
    assert cache.load("kind", "wrong") is None
    assert not cache.path("kind", "wrong").exists()


def test_unwritable_folder_falls_back_to_memory_with_a_warning(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.warns(UserWarning, match="not writable"):
        cache = ArrayCache(blocker / "cache")
    assert not cache.persistent
    compute, calls = counting(3.0)
    assert cache.fetch("kind", "k", compute)[1] is False
    assert cache.fetch("kind", "k", compute)[1] is True and len(calls) == 1


def test_default_cache_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLENS_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert default_cache() is default_cache() and default_cache().root == tmp_path / "c"


def test_digest_distinguishes_content_and_type():
    a = np.arange(6, dtype=np.float32)
    assert digest(a) == digest(a.copy())
    assert digest(a) != digest(a.astype(np.float64))
    assert digest(a) != digest(a.reshape(2, 3))
    assert digest("1") != digest(1)
    assert digest(("x", 1)) != digest(("x", 2))


def test_weights_digest_tracks_parameters():
    torch.manual_seed(0)
    a = DigitsCNN()
    b = DigitsCNN()
    b.load_state_dict(a.state_dict())
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        b.fc.bias[0] += 1e-6
    assert weights_digest(a) != weights_digest(b)
    before = weights_digest(a)
    a.features[1].running_mean += 1.0  # buffers count too: batch-norm statistics change the output
    assert weights_digest(a) != before
