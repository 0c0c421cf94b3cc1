"""core.zoo: specs build, layers exist, preprocessing is right, offline loading fails clearly."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from core import zoo
from core.io import LoadedImage


@pytest.mark.parametrize("name", sorted(zoo.list_specs()))
def test_every_spec_builds_and_its_layers_exist(name):
    spec = zoo.get_spec(name)
    model = spec.build().eval()
    zoo.get_layer(model, spec.cam_layer)
    zoo.get_layer(model, spec.embedding_layer)
    x = torch.zeros(1, spec.preprocessing.channels, spec.preprocessing.size, spec.preprocessing.size)
    with torch.no_grad():
        assert model(x).shape == (1, len(spec.class_names))


def test_bundled_model_is_listed_and_described():
    spec = zoo.get_spec("cxr-resnet18")
    assert spec.class_names == ("NORMAL", "PNEUMONIA")
    assert spec.preprocessing.channels == 1
    assert zoo.BUNDLED_WEIGHTS.stat().st_size < 50 * 2**20


def test_bundled_model_loads_once_and_is_cached():
    first = zoo.load_model("cxr-resnet18")
    assert zoo.load_model("cxr-resnet18") is first
    assert not first.model.training
    assert first.device == zoo.default_device()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty torch hub cache."""
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (simulated)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    yield
    torch.hub.set_dir(previous)


@pytest.mark.parametrize("name", ["resnet18-imagenet", "densenet121-imagenet"])
def test_imagenet_weights_offline_fail_with_a_clear_message(offline, name):
    with pytest.raises(zoo.ModelUnavailable, match="downloaded on first use") as err:
        zoo.instantiate(zoo.get_spec(name))
    assert "connect to the internet" in str(err.value)


def test_missing_and_corrupt_weights_raise_model_unavailable(tmp_path):
    with pytest.raises(zoo.ModelUnavailable, match="missing"):
        zoo.spec_from_checkpoint(tmp_path / "absent.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(zoo.ModelUnavailable, match="corrupt"):
        zoo.spec_from_checkpoint(bad)
    with pytest.raises(zoo.ModelUnavailable, match="Unknown model"):
        zoo.get_spec("no-such-model")


def test_a_broken_bundled_model_is_still_named_and_says_why(tmp_path, monkeypatch):
    bad = tmp_path / "cxr-resnet18.safetensors"
    bad.write_bytes(b"\x00" * 100)
    monkeypatch.setattr(zoo, "BUNDLED_WEIGHTS", bad)
    assert zoo.BUNDLED not in zoo.list_specs()  # no spec can be built from it...
    assert zoo.model_names()[0] == zoo.BUNDLED  # ...but pickers still offer it, so the reason can be shown
    with pytest.raises(zoo.ModelUnavailable, match="corrupt"):
        zoo.get_spec(zoo.BUNDLED)


def test_a_mismatched_checkpoint_is_reported_in_one_short_line(tmp_path):
    from core.nets import WideResNet18

    path = tmp_path / "narrow.safetensors"
    cfg = {"width": 16, "channels": 1, "input_size": 64, "mean": [0.5], "std": [0.25], "class_names": ["a", "b"]}
    zoo.save_checkpoint(WideResNet18(width=8, in_channels=1, num_classes=2), path, cfg)  # says 16, holds 8
    with pytest.raises(zoo.ModelUnavailable, match="does not match its architecture") as caught:
        zoo.instantiate(zoo.get_spec(str(path)), torch.device("cpu"))
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400, str(caught.value)


def test_checkpoint_round_trip(tmp_path):
    from core.nets import WideResNet18

    model = WideResNet18(width=8, in_channels=1, num_classes=2).eval()
    path = tmp_path / "tiny.safetensors"
    cfg = {"width": 8, "channels": 1, "input_size": 64, "mean": [0.5], "std": [0.25], "class_names": ["a", "b"]}
    zoo.save_checkpoint(model, path, cfg)
    loaded = zoo.instantiate(zoo.get_spec(str(path)))
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))
    assert loaded.spec.class_names == ("a", "b")


def test_preprocess_resizes_converts_channels_and_normalises():
    prep = zoo.Preprocessing(size=32, channels=3, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    gray = np.full((64, 48), 0.75, np.float32)
    x = zoo.preprocess(LoadedImage(gray), prep)
    assert x.shape == (1, 3, 32, 32)
    torch.testing.assert_close(x[0, :, 5, 5], torch.tensor([0.5, 1.0, 0.25]))
    np.testing.assert_allclose(zoo.denormalise(x, prep)[..., 0], 0.75, atol=1e-6)
    rgb = np.zeros((40, 40, 3), np.float32)
    rgb[..., 0] = 1.0
    one = zoo.preprocess(rgb, zoo.Preprocessing(40, 1, (0.0,), (1.0,)))
    torch.testing.assert_close(one, torch.full((1, 1, 40, 40), 0.299))  # ITU-R 601 luminance of pure red


def test_untrained_copy_is_seeded_differs_from_the_trained_model_and_claims_no_split():
    spec = zoo.get_spec(zoo.BUNDLED)
    before = torch.random.get_rng_state()
    a, b = zoo.untrained_copy(spec, seed=3), zoo.untrained_copy(spec, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)  # caller's random stream untouched
    torch.testing.assert_close(a.model.conv1.weight, b.model.conv1.weight)
    assert not torch.equal(a.model.conv1.weight, zoo.untrained_copy(spec, seed=4).model.conv1.weight)
    assert not torch.equal(a.model.conv1.weight.cpu(), zoo.load_model(zoo.BUNDLED).model.conv1.weight.cpu())
    assert not a.model.training
    assert spec.training_split is not None and a.spec.training_split is None  # it never trained on anything
