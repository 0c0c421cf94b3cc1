"""DeepLIFT and GradientSHAP against Captum called directly with the same settings, DeepLIFT's summation to
delta (also through ResNet blocks that reuse one ReLU, functional ReLUs and overlapping max-pool windows, where
Captum's own rule loses part of it), and GradientSHAP's sampling (seeds, batches, images independent)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.explain import explain
from core.explain.base import Context, baseline
from core.explain.reference import DEEPLIFT_BASELINES, SHAP_BASELINES, shap_draw
from tests.explain.devices import DEVICES, on
from tests.explain.nets import TinyGapNet, image, small_resnet
from tests.helpers import hooks_left


class Residual(nn.Module):
    """conv -> ReLU -> conv (+ skip) -> ReLU -> average pool -> GAP -> linear; ``shared``: one ReLU module for both
    calls (as torchvision's BasicBlock), ``functional``: F.relu calls, otherwise two ReLU modules."""

    def __init__(self, mode: str = "distinct", seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.mode = mode
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu1, self.relu2 = nn.ReLU(inplace=True), nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.relu1 if self.mode != "functional" else F.relu
        second = {"distinct": self.relu2, "shared": self.relu1, "functional": F.relu}[self.mode]
        h = first(self.conv1(x))
        h = second(self.conv2(h) + h)
        return self.fc(self.pool(h).mean(dim=(2, 3)))


def captum_deeplift(net: nn.Module, x: torch.Tensor, base: torch.Tensor, targets: list[int]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Captum's DeepLift called directly: maps summed over channels, and its convergence deltas."""
    from captum.attr import DeepLift

    attr, delta = DeepLift(net).attribute(x.clone().requires_grad_(True), base, target=targets,
                                          return_convergence_delta=True)
    return attr.detach().sum(dim=1).cpu().numpy(), delta.detach().cpu().numpy()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", DEEPLIFT_BASELINES)
def test_deeplift_matches_captum_and_sums_to_delta(kind, device):
    net, x = on(device, TinyGapNet(3, seed=1), image(3, 16, n=2, seed=1))
    ours = explain(net, x, "deeplift", [2, 0], baseline=kind, seed=3)
    base = baseline(Context(net, x.device, "", 3, 8, {}), x, kind)
    theirs, delta = captum_deeplift(net, x, base, [2, 0])
    with torch.no_grad():
        f_x, f_b = net(x).cpu(), net(base).cpu()
    assert np.abs(delta).max() < 1e-4
    for i, e in enumerate(ours):
        scale = np.abs(theirs[i]).max()
        assert scale > 0
        np.testing.assert_allclose(e.heatmap, theirs[i], rtol=1e-4, atol=1e-5 * scale)
        assert e.extras["score_input"] == pytest.approx(float(f_x[i, e.target]), rel=1e-4, abs=1e-6)
        assert e.extras["score_baseline"] == pytest.approx(float(f_b[i, e.target]), rel=1e-4, abs=1e-6)
        assert e.heatmap.sum() == pytest.approx(e.extras["attribution_sum"], rel=1e-4, abs=1e-6)
        gap = e.extras["score_input"] - e.extras["score_baseline"]
        assert abs(e.extras["completeness_gap"]) < 1e-4 * max(1.0, abs(gap))
    assert hooks_left(net) == []


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["shared", "functional"])
def test_deeplift_through_a_reused_or_functional_relu_equals_captum_on_the_distinct_twin(mode, device):
    """Captum refuses a ReLU module called twice and treats F.relu as linear; ours equals Captum on the same
    network written with one ReLU module per call."""
    from captum.attr import DeepLift

    twin, net = Residual("distinct", seed=2), Residual(mode, seed=2)
    twin, net, x = on(device, twin, net, image(1, 16, n=2, seed=2))
    base = torch.zeros_like(x)
    expected, _delta = captum_deeplift(twin, x, base, [1, 2])
    ours = explain(net, x, "deeplift", [1, 2], baseline="zero")
    for e, t in zip(ours, expected, strict=True):
        np.testing.assert_allclose(e.heatmap, t, rtol=1e-4, atol=1e-5 * np.abs(t).max())
    if mode == "shared":
        with pytest.raises(RuntimeError, match="used more than once"):
            DeepLift(net).attribute(x.clone().requires_grad_(True), base, target=[1, 2])
    else:
        direct = DeepLift(net).attribute(x.clone().requires_grad_(True), base, target=[1, 2]).sum(dim=1)
        assert not np.allclose(direct.detach().cpu().numpy(), expected, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("device", DEVICES)
def test_deeplift_sums_to_delta_through_resnet_blocks(device):
    net, x = on(device, small_resnet(seed=3), image(1, 64, n=2, seed=3))
    with torch.no_grad():
        logits = net(x).cpu()
    for kind in DEEPLIFT_BASELINES:
        for i, e in enumerate(explain(net, x, "deeplift", [0, 1], baseline=kind)):
            gap = e.extras["score_input"] - e.extras["score_baseline"]
            assert abs(gap) > 1e-3 and e.extras["score_input"] == pytest.approx(float(logits[i, i]), abs=1e-5)
            assert e.extras["completeness_gap"] == pytest.approx(e.extras["attribution_sum"] - gap, abs=1e-6)
            assert abs(e.extras["completeness_gap"]) < 1e-4 * max(1.0, abs(gap)), kind
    assert hooks_left(net) == []


class OverlappingPool(nn.Module):
    """conv -> ReLU -> max pool 3 x 3 / 2 (overlapping windows, as the ResNet stem) -> conv -> GAP -> linear."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                                 nn.Conv2d(4, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.mark.parametrize("device", DEVICES)
def test_overlapping_max_pool_windows_keep_the_delta(device):
    """Captum's max-pool rule unpools with overwrites, losing the share of every input that wins two windows;
    ours adds them up (and equals Captum where no input wins twice: the tests above)."""
    net, x = on(device, OverlappingPool(seed=8), image(1, 32, n=2, seed=8))
    base = baseline(Context(net, x.device, "", 0, 8, {}), x, "uniform")
    _theirs, delta = captum_deeplift(net, x, base, [0, 1])
    for i, e in enumerate(explain(net, x, "deeplift", [0, 1], baseline="uniform")):
        gap = e.extras["score_input"] - e.extras["score_baseline"]
        assert abs(delta[i]) > 0.1 * abs(gap)  # Captum's own convergence delta: a large share of the gap
        assert abs(e.extras["completeness_gap"]) < 1e-5 * max(1.0, abs(gap))


def test_deeplift_on_a_torchvision_model_matches_captum():
    """SqueezeNet (one ReLU module per call, max pooling with ceil mode, concatenations): Captum works on it."""
    from torchvision.models import squeezenet1_1

    torch.manual_seed(4)
    net = squeezenet1_1(num_classes=3).eval()
    x = image(3, 48, n=1, seed=4)
    ours = explain(net, x, "deeplift", 1, baseline="blur")[0]
    expected, delta = captum_deeplift(net, x, baseline(Context(net, x.device, "", 0, 8, {}), x, "blur"), [1])
    np.testing.assert_allclose(ours.heatmap, expected[0], rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert abs(ours.extras["completeness_gap"]) < 1e-4 and np.abs(delta).max() < 1e-4


# ------------------------------------------------------------------------------------------ GradientSHAP


def captum_gradient_shap(monkeypatch: pytest.MonkeyPatch, net: nn.Module, x: torch.Tensor, target: int,
                         kind: str, n: int, stdevs: float, seed: int) -> np.ndarray:
    """Captum's GradientShap on one image, its random draws (baseline indices, path points, noise) replaced by the
    draws our method makes for ``seed``, so both must agree to float precision."""
    from captum.attr import GradientShap

    ctx = Context(net, x.device, "", seed, 8, {"baseline": kind})
    draws = [shap_draw(ctx, x, j) for j in range(n)]
    noise = torch.stack([d[0] for d in draws])
    alphas = np.array([float(d[1]) for d in draws])
    if kind == "black_white":
        baselines = torch.cat([torch.zeros_like(x), torch.ones_like(x)])  # bare net: black 0, white 1
        indices = [int(d[2]) for d in draws]
    elif kind == "uniform":
        baselines = torch.stack([d[2] for d in draws])
        indices = list(range(n))
    else:
        baselines, indices = baseline(ctx, x, kind), [0] * n
    monkeypatch.setattr(np.random, "choice", lambda _k, size: np.array(indices[:size]))
    monkeypatch.setattr(np.random, "uniform", lambda _lo, _hi, size: alphas[:size])
    monkeypatch.setattr(torch, "normal", lambda _mean, std: std * noise.reshape(std.shape))
    attr = GradientShap(net).attribute(x, baselines, n_samples=n, stdevs=stdevs, target=target)
    monkeypatch.undo()
    return attr.detach().sum(dim=1).cpu().numpy()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", SHAP_BASELINES)
def test_gradient_shap_matches_captum_fed_the_same_draws(kind, device, monkeypatch):
    net, x = on(device, small_resnet(seed=5), image(1, 32, n=2, seed=5))
    ours = explain(net, x, "gradient_shap", [1, 0], n_samples=6, baseline=kind, stdevs=0.2, seed=7, batch_size=5)
    for i, e in enumerate(ours):
        theirs = captum_gradient_shap(monkeypatch, net, x[i:i + 1], e.target, kind, 6, 0.2, 7)[0]
        np.testing.assert_allclose(e.heatmap, theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max(), err_msg=kind)
        assert e.params == {"n_samples": 6, "baseline": kind, "stdevs": 0.2, "seed": 7}


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_shap_seeds_batches_and_its_expectation(device):
    net, x = on(device, small_resnet(seed=6), image(1, 32, n=3, seed=6))
    a = explain(net, x, "gradient_shap", n_samples=8, seed=1, batch_size=64)
    for batch_size in (1, 5):
        b = explain(net, x, "gradient_shap", n_samples=8, seed=1, batch_size=batch_size)
        for ea, eb in zip(a, b, strict=True):
            np.testing.assert_allclose(ea.heatmap, eb.heatmap, rtol=1e-4, atol=1e-6 * np.abs(ea.heatmap).max())
    alone = explain(net, x[1:2], "gradient_shap", n_samples=8, seed=1)[0]
    np.testing.assert_allclose(alone.heatmap, a[1].heatmap, rtol=1e-4, atol=1e-6 * np.abs(alone.heatmap).max())
    other = explain(net, x[:1], "gradient_shap", n_samples=8, seed=2)[0]
    assert np.abs(other.heatmap - a[0].heatmap).max() > 1e-3 * np.abs(a[0].heatmap).max()
    # one black baseline, no noise: the expectation over the path is Integrated Gradients; many samples approach it
    shap = explain(net, x[:1], "gradient_shap", 0, n_samples=400, baseline="black", seed=3)[0].heatmap
    ig = explain(net, x[:1], "integrated_gradients", 0, steps=64, baseline="black")[0].heatmap
    assert float(np.corrcoef(shap.ravel(), ig.ravel())[0, 1]) > 0.95


@pytest.mark.data
def test_deeplift_and_gradient_shap_on_the_bundled_model(bundled, xray):
    for kind in ("black", "blur", "uniform"):
        e = explain(bundled, xray, "deeplift", baseline=kind)[0]
        gap = e.extras["score_input"] - e.extras["score_baseline"]
        assert abs(e.extras["completeness_gap"]) < 1e-4 * max(1.0, abs(gap)), kind
    shap = explain(bundled, xray, "gradient_shap", n_samples=4, stdevs=0.1)[0]
    assert np.isfinite(shap.heatmap).all() and np.abs(shap.heatmap).max() > 0
    assert hooks_left(bundled.model) == []
