"""Embeddings: shapes, independence from batching, an independent forward pass, and caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core import embed as E
from core.embed import features
from core.embed.cache import ArrayCache
from core.zoo import preprocess
from tests.explain.devices import DEVICES


@pytest.fixture(scope="module")
def small(digits) -> E.ImageSet:
    return E.subsample(digits, 60, seed=0)


def reference(loaded, images, upto: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and probabilities computed without the hook machinery: explicit module calls."""
    net = loaded.model
    x = torch.cat([preprocess(images.image(i), loaded.spec.preprocessing) for i in range(len(images))])
    with torch.no_grad():
        maps = net.features(x)
        feats = {"features": maps.mean(dim=(2, 3)), "avgpool": net.avgpool(maps).flatten(1),
                 "features.0": net.features[0](x).mean(dim=(2, 3))}[upto]
        probs = torch.softmax(net(x), dim=1)
    return feats.numpy(), probs.numpy()


@pytest.mark.parametrize(("layer", "dims"), [("avgpool", 64), ("features", 64), ("features.0", 16)])
def test_embeddings_match_an_explicit_forward_pass(digits_model, small, tmp_path, layer, dims):
    emb = E.embed(digits_model, small, layer, cache=ArrayCache(tmp_path), batch_size=16)
    feats, probs = reference(digits_model, small, layer)
    assert emb.vectors.shape == (60, dims) and emb.vectors.dtype == np.float32
    np.testing.assert_allclose(emb.vectors, feats, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(emb.predictions, probs.argmax(1))
    np.testing.assert_allclose(emb.confidences, probs.max(1), rtol=1e-5)
    assert emb.kept.tolist() == list(range(60)) and emb.skipped == ()


def test_batched_preprocessing_equals_the_apps_per_image_preprocessing(digits_model, pattern_folder, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(5)
    for i in range(3):  # other sizes and colour, so batches mix shapes and channel counts
        Image.fromarray(rng.integers(0, 256, (36 + 8 * i, 48, 3), dtype=np.uint8)).save(
            pattern_folder / "light" / f"rgb{i}.png")
    images = E.folder_source(pattern_folder)
    emb = E.embed(digits_model, images, "features", cache=ArrayCache(tmp_path), batch_size=4)
    feats, probs = reference(digits_model, images, "features")
    np.testing.assert_allclose(emb.vectors, feats, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(emb.confidences, probs.max(1), rtol=1e-5)


def test_batch_size_and_loader_workers_do_not_change_the_result(digits_model, small, tmp_path):
    a = E.embed(digits_model, small, batch_size=1, cache=ArrayCache(tmp_path / "a"))
    b = E.embed(digits_model, small, batch_size=64, cache=ArrayCache(tmp_path / "b"))
    c = E.embed(digits_model, small, batch_size=16, num_workers=1, cache=ArrayCache(tmp_path / "c"))
    np.testing.assert_allclose(a.vectors, b.vectors, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.vectors, c.vectors, rtol=1e-4, atol=1e-5)


def test_second_run_reads_the_cache(digits_model, small, tmp_path, monkeypatch):
    cache = ArrayCache(tmp_path)
    fractions = []
    first = E.embed(digits_model, small, cache=cache, progress=fractions.append)
    assert not first.from_cache and fractions[-1] == 1.0 and fractions == sorted(fractions)
    monkeypatch.setattr(features, "_compute", lambda *a, **k: pytest.fail("recomputed despite the cache"))
    second = E.embed(digits_model, small, cache=cache)
    assert second.from_cache and second.key == first.key
    np.testing.assert_array_equal(second.vectors, first.vectors)
    np.testing.assert_array_equal(second.predictions, first.predictions)


def test_layer_data_and_weights_are_part_of_the_key(digits_model, small, tmp_path):
    cache = ArrayCache(tmp_path)
    base = E.embed(digits_model, small, cache=cache)
    other_layer = E.embed(digits_model, small, "features", cache=cache)
    other_data = E.embed(digits_model, small.subset(range(59)), cache=cache)
    other_weights = E.embed(E.untrained_copy("digits-cnn"), small, cache=cache)
    assert not (other_layer.from_cache or other_data.from_cache or other_weights.from_cache)
    assert len({base.key, other_layer.key, other_data.key, other_weights.key}) == 4
    assert len(list(cache.entries("embeddings"))) == 4


def test_corrupt_embedding_file_is_rebuilt(digits_model, small, tmp_path):
    cache = ArrayCache(tmp_path)
    first = E.embed(digits_model, small, cache=cache)
    cache.path("embeddings", first.key).write_bytes(b"garbage")
    again = E.embed(digits_model, small, cache=cache)
    assert not again.from_cache
    np.testing.assert_allclose(again.vectors, first.vectors)


def test_unreadable_files_are_skipped_and_reported(digits_model, pattern_folder, tmp_path):
    (pattern_folder / "light" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    images = E.folder_source(pattern_folder)
    emb = E.embed(digits_model, images, cache=ArrayCache(tmp_path))
    broken = images.items.index("light/broken.png")
    assert len(emb) == 12 and broken not in emb.kept.tolist()
    assert len(emb.skipped) == 1 and emb.skipped[0].startswith("light/broken.png:")


def test_bad_layer_name_fails_before_any_work(digits_model, small, tmp_path):
    with pytest.raises(ValueError, match="no layer 'nope'"):
        E.embed(digits_model, small, "nope", cache=ArrayCache(tmp_path))


def test_untrained_copy_is_seeded_and_shares_the_architecture(digits_model):
    a, b = E.untrained_copy("digits-cnn", seed=0), E.untrained_copy("digits-cnn", seed=1)
    assert E.untrained_copy("digits-cnn", seed=0) is a
    assert a.spec is not None and a.spec.architecture == digits_model.spec.architecture
    assert not torch.equal(a.model.fc.weight, b.model.fc.weight)
    assert not torch.equal(a.model.fc.weight, digits_model.model.fc.weight)


def test_layer_names_in_definition_order(digits_model):
    names = E.layer_names(digits_model.model)
    assert names[:3] == ["features", "features.0", "features.1"] and names[-2:] == ["avgpool", "fc"]


def test_embed_array_matches_the_batch_result(digits_model, small, tmp_path):
    emb = E.embed(digits_model, small, cache=ArrayCache(tmp_path))
    vector, probs = E.embed_array(digits_model, small.image(5))
    np.testing.assert_allclose(vector, emb.vectors[5], rtol=1e-4, atol=1e-5)
    assert probs.argmax() == emb.predictions[5]


def test_bn1_embeds_bn1_itself_not_the_inplace_relu_after_it(bundled, digits, tmp_path):
    """The bundled ResNet applies ReLU(inplace=True) to bn1's output: the embedding must be taken before it."""
    images = E.subsample(digits, 8, seed=1)
    emb = E.embed(bundled, images, "bn1", cache=ArrayCache(tmp_path))
    net = bundled.model
    assert not net.training
    x = torch.cat([preprocess(images.image(i), bundled.spec.preprocessing) for i in range(len(images))])
    with torch.no_grad():
        expected = net.bn1(net.conv1(x.to(bundled.device))).mean(dim=(2, 3)).cpu().numpy()
    assert (expected < 0).any()  # relu(bn1) could not match
    np.testing.assert_allclose(emb.vectors, expected, rtol=1e-4, atol=1e-5)
    vector, _ = E.embed_array(bundled, images.image(3), "bn1")
    np.testing.assert_allclose(vector, expected[3], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_embeddings_on_every_device_match_the_cpu_forward_pass(digits_model, small, tmp_path, device):
    """The registry's model loaded on ``device`` (one cache entry per device) embeds as the CPU reference does."""
    on_device = E.load("digits-cnn", torch.device(device))
    assert on_device.device.type == device and E.load("digits-cnn", torch.device(device)) is on_device
    emb = E.embed(on_device, small, "avgpool", cache=ArrayCache(tmp_path), batch_size=16)
    feats, probs = reference(E.load("digits-cnn", torch.device("cpu")), small, "avgpool")
    np.testing.assert_allclose(emb.vectors, feats, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(emb.confidences, probs.max(1), rtol=1e-4, atol=1e-6)
