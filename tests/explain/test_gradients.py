"""Gradient methods: saliency against autograd and Captum, SmoothGrad determinism and limits, Integrated Gradients
completeness and Captum, Guided Backprop against pytorch-grad-cam/Captum on the real architecture (reused in-place
ReLUs) and on functional ReLUs, Guided Grad-CAM against Captum."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.explain import explain
from core.explain.base import Context
from core.explain.base import baseline as qbaseline
from tests.explain.nets import TinyGapNet, image, small_resnet


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def input_gradient(net: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    xr = x.clone().requires_grad_(True)
    net(xr)[:, target].sum().backward()
    return xr.grad


@pytest.mark.parametrize("channels", [1, 3])
def test_saliency_is_the_absolute_gradient_max_over_channels(channels):
    net, x = TinyGapNet(channels, seed=1), image(channels, 16, n=2, seed=1)
    maps = explain(net, x, "saliency", 2)
    assert all(p.grad is None for p in net.parameters()), "explain must not compute parameter gradients"
    for i in range(2):
        expected = input_gradient(net, x[i:i + 1], 2).abs().amax(1)[0]
        np.testing.assert_allclose(maps[i].heatmap, expected.numpy(), rtol=1e-5, atol=1e-7)


def test_smoothgrad_without_noise_is_saliency_and_seeds_control_the_noise():
    net, x = TinyGapNet(seed=3), image(1, 16, n=2, seed=3)
    plain = explain(net, x, "saliency")
    flat = explain(net, x, "smoothgrad", n_samples=3, noise=0.0)
    for p, f in zip(plain, flat, strict=True):
        np.testing.assert_allclose(f.heatmap, p.heatmap, rtol=1e-5, atol=1e-8)
    a = explain(net, x, "smoothgrad", seed=7, n_samples=8)
    b = explain(net, x, "smoothgrad", seed=7, n_samples=8, batch_size=3)  # rows split differently
    c = explain(net, x[1:], "smoothgrad", seed=7, n_samples=8)  # the image alone
    d = explain(net, x, "smoothgrad", seed=8, n_samples=8)
    np.testing.assert_allclose(a[0].heatmap, b[0].heatmap, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(a[1].heatmap, c[0].heatmap, rtol=1e-5, atol=1e-8)
    assert not np.allclose(a[0].heatmap, d[0].heatmap)
    assert a[0].params["seed"] == 7


def test_smoothgrad_converges_to_captum_noise_tunnel():
    from captum.attr import NoiseTunnel, Saliency

    net, x = TinyGapNet(seed=1), image(1, 16, seed=1)
    ours = explain(net, x, "smoothgrad", 1, n_samples=500, noise=0.2, batch_size=250)[0].heatmap
    sigma = 0.2 * float(x.max() - x.min())
    torch.manual_seed(0)
    ref = NoiseTunnel(Saliency(net)).attribute(x, nt_type="smoothgrad", nt_samples=500, stdevs=sigma,
                                               nt_samples_batch_size=250, target=1, abs=False)
    plain = explain(net, x, "saliency", 1)[0].heatmap
    r = pearson(ours, ref.abs().amax(1)[0].numpy())
    assert r > 0.95 and r > pearson(plain, ours)  # closer to Captum's estimate than to the unsmoothed gradient


class SmoothNet(nn.Module):
    """A smooth (softplus) conv net, where a Gauss-Legendre rule converges fast."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.softplus(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("baseline", ["black", "zero", "blur", "uniform"])
@pytest.mark.parametrize("channels", [1, 3])
def test_integrated_gradients_completeness_on_a_smooth_net(baseline, channels):
    x = torch.randn(2, channels, 16, 16, generator=torch.Generator().manual_seed(6))  # rough: blur changes it
    for e in explain(SmoothNet(channels), x, "integrated_gradients", 1, steps=16, baseline=baseline):
        ex = e.extras
        assert ex["score_input"] != pytest.approx(ex["score_baseline"], abs=1e-3)
        assert ex["attribution_sum"] == pytest.approx(float(e.heatmap.sum()), rel=1e-4)
        assert abs(ex["completeness_gap"]) < 0.01 * abs(ex["score_input"] - ex["score_baseline"])


def captum_ig(net: nn.Module, x: torch.Tensor, base: torch.Tensor, target: int, steps: int,
              method: str = "gausslegendre") -> np.ndarray:
    """Captum's Integrated Gradients summed over channels (our maps' convention), 1 x H x W per image."""
    from captum.attr import IntegratedGradients

    ref = IntegratedGradients(net).attribute(x, baselines=base, target=target, n_steps=steps, method=method)
    return ref.sum(1).detach().numpy()


def assert_close_map(ours: np.ndarray, theirs: np.ndarray, rel: float = 1e-4) -> None:
    """allclose with an absolute tolerance of ``rel`` times the map's largest |value| (float32 sums of many terms)."""
    np.testing.assert_allclose(ours, theirs, rtol=rel, atol=rel * float(np.abs(theirs).max()))


@pytest.mark.parametrize("baseline", ["black", "blur", "uniform"])
@pytest.mark.parametrize("net_name", ["smooth", "relu_resnet"])
def test_integrated_gradients_equal_captum_with_the_same_gauss_legendre_rule(baseline, net_name):
    """Same nodes and weights (Gauss-Legendre on [0, 1]) and baseline: the same numbers, not just a correlation;
    a different rule (Captum's right Riemann sum) with the same steps is told apart at this tolerance."""
    net = SmoothNet(3) if net_name == "smooth" else small_resnet(3, seed=1)
    side, steps = (16, 8) if net_name == "smooth" else (32, 12)
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(3))
    base = qbaseline(Context(net, torch.device("cpu"), "", 4, 64, {}), x, baseline)
    ours = explain(net, x, "integrated_gradients", 1, steps=steps, baseline=baseline, seed=4, batch_size=5)
    for i, e in enumerate(ours):
        theirs = captum_ig(net, x[i:i + 1], base[i:i + 1], 1, steps)[0]
        assert_close_map(e.heatmap, theirs)
        riemann = captum_ig(net, x[i:i + 1], base[i:i + 1], 1, steps, "riemann_right")[0]
        assert not np.allclose(e.heatmap, riemann, rtol=1e-4, atol=1e-4 * float(np.abs(riemann).max()))


@pytest.mark.data
def test_integrated_gradients_completeness_and_captum_on_the_bundled_model(bundled, xray):
    e = explain(bundled, xray, "integrated_gradients", steps=64, baseline="black")[0]
    black = (0.0 - bundled.spec.preprocessing.mean[0]) / bundled.spec.preprocessing.std[0]
    with torch.no_grad():
        logits = bundled.model(torch.cat([xray, torch.full_like(xray, black)]))
    delta = float(logits[0, e.target] - logits[1, e.target])
    assert e.extras["score_baseline"] == pytest.approx(float(logits[1, e.target]), abs=1e-4)
    assert abs(float(e.heatmap.sum()) - delta) < 0.03 * abs(delta)  # a ReLU net: 0.4-2.1% at 64 steps on new films
    ref = captum_ig(bundled.model, xray, torch.full_like(xray, black), e.target, 64)[0]
    assert_close_map(e.heatmap, ref, rel=1e-3)


@pytest.mark.data
@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
def test_saliency_matches_captum_on_the_bundled_model(bundled, xray):
    from captum.attr import Saliency

    e = explain(bundled, xray, "saliency")[0]
    ref = Saliency(bundled.model).attribute(xray, target=e.target, abs=True).amax(1)[0].numpy()
    assert pearson(e.heatmap, ref) > 0.99
    np.testing.assert_allclose(e.heatmap, ref, rtol=1e-4, atol=1e-7)


@pytest.mark.data
def test_guided_backprop_matches_pytorch_grad_cam_on_the_bundled_architecture(bundled, xray):
    """torchvision BasicBlocks reuse one in-place ReLU module twice; pytorch-grad-cam swaps the modules of a copy."""
    from pytorch_grad_cam import GuidedBackpropReLUModel

    e = explain(bundled, xray, "guided_backprop")[0]
    ref = GuidedBackpropReLUModel(copy.deepcopy(bundled.model), device="cpu")(xray.cpu(), target_category=e.target)
    np.testing.assert_allclose(e.heatmap, np.abs(ref).max(-1), rtol=1e-4, atol=1e-7)
    plain = explain(bundled, xray, "saliency", e.target)[0]
    assert pearson(e.heatmap, plain.heatmap) < 0.9  # the guided rule really changed the gradient


class FunctionalNet(nn.Module):
    """ReLUs as F.relu / Tensor.relu calls (no modules to hook)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.c1, self.c2, self.fc = nn.Conv2d(3, 5, 3, padding=1), nn.Conv2d(5, 5, 3, padding=1), nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.c2(F.relu(self.c1(x))).relu().mean(dim=(2, 3)))


class _GuidedReLU(torch.autograd.Function):
    """Reference guided ReLU: forward ReLU, backward grad * (x > 0) * (grad > 0)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0) * (grad > 0)


def test_guided_backprop_handles_functional_relus():
    net, x = FunctionalNet(), image(3, 16, seed=2)
    e = explain(net, x, "guided_backprop", 1)[0]
    xr = x.clone().requires_grad_(True)
    h = _GuidedReLU.apply(net.c2(_GuidedReLU.apply(net.c1(xr))))
    net.fc(h.mean(dim=(2, 3)))[0, 1].backward()
    np.testing.assert_allclose(e.heatmap, xr.grad.abs().amax(1)[0].numpy(), rtol=1e-5, atol=1e-8)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_guided_grad_cam_matches_captum():
    from captum.attr import GuidedGradCam

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3), nn.ReLU(), nn.Linear(3, 2))
    torch.manual_seed(0)
    x = image(3, 16, n=2, seed=9)
    for e, xi in zip(explain(net, x, "guided_grad_cam", 1, layer="3"), x, strict=True):
        ref = GuidedGradCam(net, net[3]).attribute(xi[None], target=1, interpolate_mode="bilinear")
        np.testing.assert_allclose(e.heatmap, ref.abs().amax(1)[0].detach().numpy(), rtol=1e-4, atol=1e-8)
