"""Feature maps, filter images and layer statistics against independent torch computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.hooks import spatial_layers
from core.lessons import features as f
from core.nets import WideResNet18
from tests.helpers import hooks_left

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def net() -> nn.Module:
    """A small untrained ResNet-18 (width 8, grey input) with non-trivial batch-norm statistics."""
    torch.manual_seed(0)
    model = WideResNet18(width=8, in_channels=1, num_classes=2)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # random affine and running stats so every layer does something
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))


def manual_outputs(model: WideResNet18, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every stage computed by calling the modules by hand (no hooks), ReLU out of place."""
    with torch.no_grad():
        out = {"conv1": model.conv1(x)}
        out["bn1"] = model.bn1(out["conv1"])
        out["relu"] = F.relu(out["bn1"])
        out["maxpool"] = model.maxpool(out["relu"])
        h = out["maxpool"]
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            seq = getattr(model, stage)
            out[f"{stage}.0"] = seq[0](h.clone())
            h = out[stage] = seq[1](out[f"{stage}.0"].clone())
        out["avgpool"] = model.avgpool(h)
    return out


def test_spatial_layers_lists_resnet_stages_in_order(net, x):
    assert spatial_layers(net, x) == [
        "conv1", "bn1", "relu", "maxpool", "layer1.0", "layer1", "layer2.0", "layer2", "layer3.0", "layer3",
        "layer4.0", "layer4", "avgpool"]
    assert not hooks_left(net)


@pytest.mark.parametrize("layer", ["conv1", "bn1", "relu", "layer1.0", "layer2", "layer4"])
def test_feature_maps_equal_manual_forward(net, x, layer):
    expected = manual_outputs(net, x)[layer][0].numpy()
    fm = f.feature_maps(net, x, layer)
    np.testing.assert_allclose(fm.maps, expected, rtol=1e-5, atol=1e-5)
    assert not hooks_left(net)


def test_feature_maps_equal_a_forward_hooks_output(net, x):
    seen = {}

    def hook(_m, _i, out) -> None:  # returns None, so the model's own output is not replaced
        seen["out"] = out.detach().clone()

    handle = net.layer3.register_forward_hook(hook)
    with torch.no_grad():
        net(x)
    handle.remove()
    np.testing.assert_array_equal(f.feature_maps(net, x, "layer3").maps, seen["out"][0].numpy())


def test_bn1_keeps_its_negatives_despite_the_inplace_relu(net, x):
    maps = f.activations(net, x, ["bn1", "relu"])
    assert float(maps["bn1"].min()) < 0
    torch.testing.assert_close(maps["relu"], maps["bn1"].clamp(min=0))


def test_channels_ranked_by_mean_activation(net, x):
    fm = f.feature_maps(net, x, "layer2")
    means = fm.maps.mean(axis=(1, 2))
    np.testing.assert_allclose(fm.means, means, rtol=1e-6)
    assert sorted(fm.order.tolist()) == list(range(len(means)))
    assert np.all(np.diff(means[fm.order]) <= 0)
    np.testing.assert_array_equal(fm.sorted_maps[0], fm.maps[int(np.argmax(means))])


def test_hooks_removed_even_when_the_layer_does_not_exist(net, x):
    with pytest.raises(ValueError, match="no layer"):
        f.feature_maps(net, x, "layer9")
    assert not hooks_left(net)


def test_mosaic_tiles_hold_each_scaled_map_and_centres_find_them(net, x):
    maps = f.feature_maps(net, x, "layer1").sorted_maps
    mo = f.mosaic(maps, per_channel=True, pad=1)
    h, w = maps.shape[1:]
    for k in (0, 5, len(maps) - 1):
        r, c = mo.centre(k)
        top, left = int(r - (h - 1) / 2), int(c - (w - 1) / 2)
        tile = mo.image[top:top + h, left:left + w]
        m = maps[k]
        np.testing.assert_allclose(tile, (m - m.min()) / (m.max() - m.min()), atol=1e-6)
    assert np.isnan(mo.image[0]).all()  # padding row
    assert mo.grid[0] * mo.grid[1] >= len(maps)


def test_mosaic_shared_scale_keeps_relative_strength():
    maps = np.stack([np.zeros((4, 4)), np.full((4, 4), 2.0), np.full((4, 4), 4.0)]).astype(np.float32)
    shared = f.mosaic(maps, per_channel=False, pad=0)
    assert sorted(np.unique(shared.image[~np.isnan(shared.image)]).tolist()) == [0.0, 0.5, 1.0]
    per = f.mosaic(maps, per_channel=True, pad=0)
    assert np.nanmax(per.image) == 0.0  # constant maps carry no pattern: shown as 0


def test_tile_places_colour_images_row_major_with_nan_gaps():
    images = np.random.default_rng(0).random((5, 3, 4, 3))
    mo = f.tile(images, pad=1)
    assert mo.grid == (2, 3) and mo.image.shape == (2 * 4 + 1, 3 * 5 + 1, 3)
    np.testing.assert_array_equal(mo.image[1:4, 1:5], images[0])
    np.testing.assert_array_equal(mo.image[5:8, 6:10], images[4])  # row 1, column 1
    assert np.isnan(mo.image[5:8, 11:15]).all()  # the sixth slot is empty
    assert mo.centre(4) == (6.0, 7.5)


def test_upsample_matches_bilinear_interpolation():
    m = np.arange(16, dtype=np.float32).reshape(4, 4)
    up = f.upsample(m, (16, 16))
    assert up.shape == (16, 16)
    assert up.min() >= m.min() and up.max() <= m.max()
    np.testing.assert_allclose(f.upsample(np.ones((3, 3)), (10, 7)), 1.0)


def test_layer_statistics_match_torch(net, x):
    layers = ["bn1", "layer3"]
    stats = f.layer_statistics(net, x, layers)
    out = manual_outputs(net, x)
    for s, name in zip(stats, layers, strict=True):
        a = out[name][0]
        assert s.layer == name and s.shape == tuple(a.shape)
        assert s.mean == pytest.approx(float(a.mean()), rel=1e-5, abs=1e-6)
        assert s.std == pytest.approx(float(a.std()), rel=1e-5)
        assert s.sparsity == pytest.approx(float((torch.relu(a) == 0).float().mean()))
        dead = [(torch.relu(a[c]) == 0).all().item() for c in range(a.shape[0])]
        assert s.dead_channels == pytest.approx(np.mean(dead))
    assert 0.2 < stats[0].sparsity < 0.8  # a BN output is about half negative
    assert not hooks_left(net)


@pytest.mark.parametrize("symmetric", [False, True])
def test_filter_images_equal_the_weights_after_undoing_the_scaling(net, symmetric):
    fi = f.filter_images(net, symmetric=symmetric)
    w = net.conv1.weight.detach().numpy()
    assert fi.layer == "conv1" and fi.images.shape == (w.shape[0], 7, 7)
    assert fi.images.min() >= 0 and fi.images.max() <= 1
    np.testing.assert_array_equal(fi.weights().astype(np.float32), w)
    if symmetric:  # zero weight is mid-grey; the largest |weight| of each filter touches 0 or 1
        np.testing.assert_allclose(fi.images[w[:, 0] == 0], 0.5)
        extreme = np.abs(fi.images - 0.5).reshape(len(w), -1).max(axis=1)
        np.testing.assert_allclose(extreme, 0.5)
    else:
        flat = fi.images.reshape(len(w), -1)
        np.testing.assert_allclose(flat.min(axis=1), 0)
        np.testing.assert_allclose(flat.max(axis=1), 1)


def test_rgb_filters_are_height_width_channel_images():
    conv = nn.Sequential(nn.Conv2d(3, 4, 5), nn.ReLU())
    fi = f.filter_images(conv)
    assert fi.layer == "0" and fi.images.shape == (4, 5, 5, 3)
    w = conv[0].weight.detach().numpy()
    np.testing.assert_array_equal(fi.weights().astype(np.float32), w)
    lo, hi = w[2].min(), w[2].max()
    np.testing.assert_allclose(fi.images[2, 1, 4], (w[2, :, 1, 4] - lo) / (hi - lo), rtol=1e-6)


def test_filter_images_refuse_layers_that_are_not_images():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3))
    with pytest.raises(ValueError, match="4 input channels"):
        f.filter_images(model, "1")
    with pytest.raises(ValueError, match="not a Conv2d"):
        f.filter_images(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), "1")


def test_bundled_model_feature_maps_and_filters(bundled):
    x = torch.randn(1, 1, 160, 160, generator=torch.Generator().manual_seed(0)).to(bundled.device)
    seen = {}

    def hook(_m, _i, out) -> None:
        seen["o"] = out.detach().clone()

    handle = bundled.model.layer4.register_forward_hook(hook)
    with torch.no_grad():
        bundled.model(x)
    handle.remove()
    fm = f.feature_maps(bundled.model, x, "layer4")
    np.testing.assert_array_equal(fm.maps, seen["o"][0].cpu().numpy())
    fi = f.filter_images(bundled.model)
    np.testing.assert_array_equal(fi.weights().astype(np.float32), bundled.model.conv1.weight.detach().cpu().numpy())
    assert not hooks_left(bundled.model)
