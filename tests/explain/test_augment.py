"""Test-time augmentation: identity settings change nothing, maps are mapped back onto the original pixels (a
method whose map is the image itself gets the image back), every copy explains the clean target, seeds."""

import numpy as np
import pytest
import torch

from core.explain import METHODS, explain
from core.explain.augment import _inverse, _theta, _warp, explain_augmented
from core.explain.base import register
from tests.explain.devices import DEVICES, on
from tests.explain.nets import TinyGapNet, image, small_resnet


def smooth(n: int, side: int, seed: int) -> torch.Tensor:
    """A very smooth batch (features ~ a quarter of the side): interpolating it twice costs little."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 1, 5, 5, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=True)


@pytest.fixture
def image_method():
    """A registered method whose map is the image (summed over channels): what TTA returns must be the image."""
    register("image_itself", "Image", "test", "The image itself, to test where maps are mapped back to.",
             signed=True)(lambda _ctx, x, _targets: x.sum(dim=1))
    try:
        yield "image_itself"
    finally:
        del METHODS["image_itself"]


@pytest.mark.parametrize("device", DEVICES)
def test_identity_settings_and_one_augmentation_change_nothing(device):
    net, x = on(device, TinyGapNet(seed=1), image(1, 16, n=2, seed=1))
    plain = explain(net, x, "grad_cam")
    for kw in ({"augmentations": 1}, {"augmentations": 4, "shift": 0.0, "rotate": 0.0, "intensity": 0.0}):
        for p, a in zip(plain, explain_augmented(net, x, "grad_cam", **kw), strict=True):
            np.testing.assert_allclose(a.heatmap, p.heatmap, rtol=1e-5, atol=1e-7)
            assert a.target == p.target and a.score == pytest.approx(p.score)


def test_the_inverse_warp_undoes_the_warp():
    theta = _theta(0.07, -0.04, 9.0, 24, 32)
    back = _inverse(theta)
    composed = torch.cat([theta[:, :2] @ back[:, :2], (theta[:, :2] @ back[:, 2] + theta[:, 2])[:, None]], dim=1)
    torch.testing.assert_close(composed, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64))
    x = smooth(1, 32, seed=2)[:, :, :24]
    there_and_back = _warp(_warp(x, theta, "reflection"), back, "zeros")
    inner = (slice(None), slice(None), slice(8, 16), slice(11, 21))  # never sampled from the padding
    torch.testing.assert_close(there_and_back[inner], x[inner], atol=0.02 * float(x.abs().max()), rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_maps_come_back_to_the_original_pixels(image_method, device):
    net, x = on(device, TinyGapNet(seed=3), smooth(2, 48, seed=3))
    out = explain_augmented(net, x, image_method, augmentations=6, shift=0.08, rotate=10.0, intensity=0.0)
    truth = x.sum(dim=1).cpu().numpy()
    inner = (slice(8, 40), slice(8, 40))
    for i, e in enumerate(out):
        assert np.abs(e.heatmap - e.extras["unaugmented"]).max() > 0  # the copies were really moved
        err = np.abs(e.heatmap[inner] - truth[i][inner]).max()
        assert err < 0.02 * np.abs(truth[i]).max(), err
        assert e.extras["augment"]["augmentations"] == 6 and "augment" not in e.params


def test_every_copy_explains_the_clean_target_and_seeds_reproduce():
    net, x = small_resnet(seed=4), image(1, 32, n=2, seed=4)
    forced = explain_augmented(net, x, "lrp", [1, 0], augmentations=3)
    assert [e.target for e in forced] == [1, 0]
    a = explain_augmented(net, x, "grad_cam", augmentations=4, seed=5)
    b = explain_augmented(net, x, "grad_cam", augmentations=4, seed=5)
    c = explain_augmented(net, x, "grad_cam", augmentations=4, seed=6)
    for ea, eb, ec in zip(a, b, c, strict=True):
        np.testing.assert_array_equal(ea.heatmap, eb.heatmap)
        assert np.abs(ea.heatmap - ec.heatmap).max() > 0 and np.isfinite(ea.heatmap).all()
    with pytest.raises(ValueError, match="augmentations"):
        explain_augmented(net, x, "grad_cam", augmentations=0)
    with pytest.raises(ValueError, match="rotate"):
        explain_augmented(net, x, "grad_cam", rotate=90)


def test_a_flat_map_stays_flat_up_to_the_borders(image_method):
    """Pixels whose pre-image left the frame count with their partial weight only: a constant map stays exact."""
    net, x = TinyGapNet(seed=7), torch.ones(1, 1, 24, 24)
    e = explain_augmented(net, x, image_method, augmentations=6, shift=0.2, rotate=20.0, intensity=0.0)[0]
    np.testing.assert_allclose(e.heatmap, 1.0, rtol=1e-6)


def test_rotations_are_rigid_in_pixels_on_non_square_images():
    h, w, degrees = 24, 40, 12.0
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    sampled = _warp(torch.stack([xs, ys])[None], _theta(0.0, 0.0, degrees, h, w), "border")[0]
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64).view(2, 1, 1)
    before = torch.stack([xs, ys]) - centre
    after = sampled - centre
    inner = (slice(None), slice(6, 18), slice(10, 30))
    torch.testing.assert_close(after.norm(dim=0)[inner[1:]], before.norm(dim=0)[inner[1:]], atol=1e-6, rtol=0)
    angle = torch.atan2(after[1], after[0]) - torch.atan2(before[1], before[0])
    angle = (torch.remainder(angle + torch.pi, 2 * torch.pi) - torch.pi)[inner[1:]]
    far = before.norm(dim=0)[inner[1:]] > 4
    assert torch.allclose(angle[far].abs(), torch.full_like(angle[far], np.radians(degrees)), atol=1e-6)


def test_meaningful_perturbations_own_jitter_reaches_the_method():
    """TTA's intensity setting must not capture the method's ``jitter`` (pixels, up to 16)."""
    net, x = TinyGapNet(seed=1), image(1, 16, n=1, seed=1)
    out = explain_augmented(net, x, "meaningful_perturbation", augmentations=2, jitter=8, steps=10, mask_size=4)
    assert out[0].params["jitter"] == 8
