"""Occlusion: exact values against a naive loop on a synthetic model with a known sensitive region, Captum,
every fill, batching and progress."""

import numpy as np
import pytest
import torch
from torch import nn

from core.explain import explain
from core.explain.occlusion import starts
from tests.explain.nets import TinyGapNet, image, small_resnet

REGION = (slice(8, 14), slice(16, 20))  # rows 8-13, columns 16-19 of a 24 x 24 image


class RegionNet(nn.Module):
    """Class-1 logit = 2 * sum of the pixels in REGION (all channels); class-0 logit = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale * x[:, :, REGION[0], REGION[1]].sum(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(s), s], dim=1)


def naive_occlusion(net: nn.Module, x: torch.Tensor, target: int, patch: int, stride: int, fill: torch.Tensor
                    ) -> np.ndarray:
    """One forward per patch position with explicit loops; mean drop over the patches covering each pixel."""
    h, w = x.shape[-2:]
    total, count = np.zeros((h, w)), np.zeros((h, w))
    with torch.no_grad():
        clean = float(net(x)[0, target])
        for r in starts(h, patch, stride):
            for c in starts(w, patch, stride):
                hidden = x.clone()
                hidden[..., r:r + patch, c:c + patch] = fill[..., r:r + patch, c:c + patch]
                total[r:r + patch, c:c + patch] += clean - float(net(hidden)[0, target])
                count[r:r + patch, c:c + patch] += 1
    return total / count


def test_starts_cover_every_pixel_and_refuse_oversized_patches():
    assert starts(24, 8, 8) == [0, 8, 16]
    assert starts(24, 10, 8) == [0, 8, 14]  # the last patch is flush with the edge
    assert starts(10, 10, 3) == [0]
    with pytest.raises(ValueError, match="larger than the image"):
        starts(8, 9, 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_occlusion_finds_the_sensitive_region_and_equals_a_naive_loop(channels):
    x = torch.rand(1, channels, 24, 24, generator=torch.Generator().manual_seed(0)) + 0.5
    e = explain(RegionNet(), x, "occlusion", 1, patch=4, stride=2, baseline="zero")[0]
    expected = naive_occlusion(RegionNet(), x, 1, 4, 2, torch.zeros_like(x))
    np.testing.assert_allclose(e.heatmap, expected, rtol=1e-5, atol=1e-5)
    inside = np.zeros((24, 24), bool)
    inside[REGION] = True
    assert e.heatmap[inside].min() > 0  # every pixel of the region matters
    peak = np.unravel_index(np.argmax(e.heatmap), e.heatmap.shape)
    assert inside[peak]
    far = np.ones((24, 24), bool)
    far[5:17, 13:23] = False  # pixels no 4 x 4 patch covering them can reach the region
    assert np.all(e.heatmap[far] == 0)
    assert e.extras["patch_drops"].shape == (11, 11) and e.extras["positions"] == 121


@pytest.mark.parametrize("fill", ["zero", "mean", "blur"])
def test_occlusion_matches_captum_for_every_fill(fill):
    from captum.attr import Occlusion

    from core.explain.base import Context, baseline

    net, x = small_resnet(3), image(3, 32, seed=4)
    e = explain(net, x, "occlusion", patch=8, stride=4, baseline=fill, batch_size=20)[0]
    ctx = Context(net, torch.device("cpu"), "", 0, 1, {})
    ref = Occlusion(net).attribute(x, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4),
                                   baselines=baseline(ctx, x, fill), target=e.target, perturbations_per_eval=16)
    np.testing.assert_allclose(e.heatmap, ref[0, 0].numpy(), rtol=1e-4, atol=1e-5)  # same for every channel


def test_batches_are_independent_of_batch_size_and_progress_reaches_one():
    net, x = TinyGapNet(seed=5), image(1, 16, n=3, seed=5)
    seen: list[float] = []
    a = explain(net, x, "occlusion", patch=6, stride=3, batch_size=7, progress=seen.append)
    b = explain(net, x, "occlusion", patch=6, stride=3, batch_size=1000)
    for i in range(3):
        single = explain(net, x[i:i + 1], "occlusion", patch=6, stride=3)[0]
        np.testing.assert_allclose(a[i].heatmap, single.heatmap, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(b[i].heatmap, single.heatmap, rtol=1e-4, atol=1e-6)
    positions = len(starts(16, 6, 3)) ** 2
    assert len(seen) == -(-3 * positions // 7) and seen == sorted(seen) and seen[-1] == 1.0


def test_occlusion_refuses_a_patch_larger_than_the_image():
    with pytest.raises(ValueError, match="larger than the image"):
        explain(TinyGapNet(), image(1, 16), "occlusion", patch=20)
