"""core.zoo: specs build, layers exist, preprocessing is right, offline loading fails clearly."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from core import zoo
from core.io import LoadedImage
from tests.explain.devices import DEVICES


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


def test_one_registry_lists_the_digits_cnn_only_for_demos():
    from core.embed.digits import DIGITS_MODEL

    assert zoo.DIGITS == DIGITS_MODEL
    assert zoo.DIGITS not in zoo.model_names() and zoo.model_names(demos=True)[-1] == zoo.DIGITS
    assert zoo.model_names(demos=True)[:-1] == zoo.model_names() == [zoo.BUNDLED, *zoo.IMAGENET_MODELS]
    assert zoo.get_spec(zoo.DIGITS).name == zoo.DIGITS  # every registered name resolves through get_spec


def test_loaded_and_untrained_models_come_from_one_cache():
    cpu = torch.device("cpu")
    assert zoo.load_model(zoo.BUNDLED, cpu) is zoo.cached_only(("zoo", zoo.BUNDLED, "cpu"))
    first = zoo.load_untrained(zoo.BUNDLED, seed=5, device=cpu)
    assert zoo.load_untrained(zoo.BUNDLED, seed=5, device=cpu) is first
    assert zoo.load_untrained(zoo.BUNDLED, seed=6, device=cpu) is not first
    fresh = zoo.untrained_copy(zoo.get_spec(zoo.BUNDLED), cpu, seed=5)
    torch.testing.assert_close(first.model.conv1.weight, fresh.model.conv1.weight)


def test_the_cache_keeps_only_the_newest_of_a_bounded_kind():
    made = []

    def make(i: int) -> zoo.LoadedModel:
        made.append(i)
        return zoo.untrained_copy(zoo.get_spec(zoo.BUNDLED), torch.device("cpu"), seed=i)

    for i in range(3):
        zoo.cached(("test-bounded", str(i)), lambda i=i: make(i), keep=2)
    zoo.cached(("test-bounded", "1"), lambda: make(99), keep=2)  # a hit: not made again, now the newest
    zoo.cached(("test-bounded", "3"), lambda: make(3), keep=2)
    assert made == [0, 1, 2, 3]
    assert [zoo.cached_only(("test-bounded", str(i))) is not None for i in range(4)] == [False, True, False, True]


def test_untrained_has_one_meaning_every_batchnorm_scale_one():
    """The bundled model zero-initialises residual BatchNorm scales; an untrained copy (and an untrained
    architecture) switches them on, in every entry point."""
    assert any(float(m.weight.detach().min()) == 0.0 for m in zoo.get_spec(zoo.BUNDLED).build().modules()
               if isinstance(m, torch.nn.BatchNorm2d))
    cpu, spec = torch.device("cpu"), zoo.get_spec(zoo.BUNDLED)
    for model in (zoo.untrained_copy(spec, cpu).model, zoo.build_architecture(zoo.BUNDLED),
                  zoo.load_untrained(zoo.BUNDLED, device=cpu).model):
        scales = [m.weight for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert scales and all(bool((w == 1).all()) for w in scales)
    torch.testing.assert_close(zoo.build_architecture(zoo.BUNDLED, seed=2).conv1.weight,
                               zoo.untrained_copy(spec, cpu, seed=2).model.conv1.weight)


def test_architectures_are_listed_built_and_checked_in_one_place(tmp_path, monkeypatch):
    small = zoo.cnn_architectures(max_params=3_000_000)
    assert "mobilenet_v3_small" in small and "resnet18" not in small  # 2.5 M and 11.7 M parameters
    assert not any(n.startswith(("vit_", "swin_")) for n in zoo.cnn_architectures())
    assert set(zoo.LESSON_ARCHITECTURES) - {zoo.BUNDLED} <= set(zoo.cnn_architectures())
    assert zoo.new_architecture("googlenet", num_classes=3).fc.out_features == 3
    with pytest.raises(ValueError, match="Unknown architecture"):
        zoo.new_architecture("no-such-net")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert zoo.hub_cached(zoo.get_spec("resnet18-imagenet").weights_source) is None
    assert "not in the torch hub cache" in zoo.unavailable_reason("resnet18-imagenet")
    (tmp_path / "checkpoints").mkdir()
    name = Path(zoo.get_spec("resnet18-imagenet").weights_source).name
    (tmp_path / "checkpoints" / name).write_bytes(b"")
    assert zoo.hub_cached(zoo.get_spec("resnet18-imagenet").weights_source) == tmp_path / "checkpoints" / name
    assert zoo.unavailable_reason("resnet18-imagenet") is None


@pytest.mark.parametrize("device", DEVICES)
def test_models_load_preprocess_and_predict_on_every_device(device):
    """The bundled model, its untrained copy and preprocessing on each device agree with the CPU."""
    dev, cpu = torch.device(device), torch.device("cpu")
    spec = zoo.get_spec(zoo.BUNDLED)
    image = LoadedImage(np.random.default_rng(0).random((300, 250), dtype=np.float32))
    x = zoo.preprocess(image, spec.preprocessing, dev)
    assert x.device.type == device
    torch.testing.assert_close(x.cpu(), zoo.preprocess(image, spec.preprocessing))
    for on_device, on_cpu in ((zoo.load_model(zoo.BUNDLED, dev), zoo.load_model(zoo.BUNDLED, cpu)),
                              (zoo.load_untrained(zoo.BUNDLED, 0, dev), zoo.load_untrained(zoo.BUNDLED, 0, cpu))):
        assert on_device.device == dev and next(on_device.model.parameters()).device.type == device
        p = zoo.predict(on_device, x)
        assert p.device.type == device
        torch.testing.assert_close(p.cpu(), zoo.predict(on_cpu, x.cpu()), atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(zoo.denormalise(x, spec.preprocessing), zoo.denormalise(x.cpu(), spec.preprocessing),
                               atol=1e-6)


def test_missing_bundled_weights_say_how_an_installed_copy_finds_them(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "MODELS_DIR", tmp_path)
    monkeypatch.setattr(zoo, "BUNDLED_WEIGHTS", tmp_path / "cxr-resnet18.safetensors")
    with pytest.raises(zoo.ModelUnavailable, match=r"missing from .*CNNLENS_MODELS"):
        zoo.get_spec(zoo.BUNDLED)
    with pytest.raises(zoo.ModelUnavailable) as elsewhere:
        zoo.get_spec(str(tmp_path / "other" / "mine.safetensors"))
    assert "CNNLENS_MODELS" not in str(elsewhere.value)  # a user's own file is not looked for there
