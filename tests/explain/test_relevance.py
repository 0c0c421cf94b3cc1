"""LRP with Zennit: relevance conservation on bias-free networks (through ResNet skip connections only with the
canonizer), LRP-0 = gradient x input, agreement with Zennit called directly for every composite, and the shared
model left untouched (private copies rebuilt when its weights change)."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from core.explain import explain
from core.explain.relevance import COMPOSITE_HELP, canonizers, make_composite
from tests.explain.devices import DEVICES, on
from tests.explain.nets import TinyGapNet, image, small_resnet
from tests.helpers import hooks_left

CONSERVATIVE = ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_plus", "epsilon")


class BiasFree(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> average pooling -> max pooling -> linear, no biases anywhere."""

    def __init__(self, channels: int = 1, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(channels, 5, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                                      nn.Conv2d(5, 6, 3, padding=1, bias=False), nn.ReLU(),
                                      nn.AvgPool2d(2), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(6, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def bias_free_resnet(seed: int = 0) -> nn.Module:
    """The bundled architecture with identity batch norms and a bias-free head: its only non-linearities are ReLUs
    and max pooling, its skip additions are plain sums."""
    net = small_resnet(seed=seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1.0)
            m.bias.data.zero_()
            m.running_mean.zero_()
            m.running_var.fill_(1.0 - m.eps)
    net.fc.bias.data.zero_()
    return net


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("composite", CONSERVATIVE)
def test_relevance_is_conserved_on_bias_free_networks(composite, device):
    """Sum of input relevance = the target logit, for epsilon-free conservative rules; on a ResNet only with the
    canonizer's Sum module at each skip addition. (z+ alone is not conservative there: a block's branch can end
    negative, and its relevance share from the Sum then has no positive contribution to go to.)"""
    cases = [(BiasFree(seed=1), image(1, 16, n=2, seed=1) + 0.3)]
    if composite in ("epsilon_gamma_box", "epsilon"):
        cases.append((bias_free_resnet(seed=2), image(1, 64)))
    for net, x in cases:
        net, x = on(device, net, 100 * x)  # activations far above the rules' 1e-6 stabiliser
        out = explain(net, x, "lrp", [0, 1][: len(x)], composite=composite, epsilon=0.0)
        with torch.no_grad():
            logits = net(x).cpu()
        for i, e in enumerate(out):
            assert e.extras["score_input"] == pytest.approx(float(logits[i, e.target]), rel=1e-4, abs=1e-6)
            assert e.heatmap.sum() == pytest.approx(e.extras["relevance_sum"], rel=1e-4, abs=1e-6)
            assert e.extras["relevance_sum"] == pytest.approx(e.extras["score_input"], rel=1e-3), composite


def test_without_the_resnet_canonizer_the_skip_connections_break_conservation():
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat

    net, x = bias_free_resnet(seed=2), image(1, 64)
    with torch.no_grad():
        logit = float(net(x)[0, 0])
    with Gradient(model=net, composite=EpsilonPlusFlat(epsilon=1e-9)) as attributor:  # no canonizer
        _, relevance = attributor(x, lambda out: torch.eye(2)[[0]] * out)
    assert abs(float(relevance.sum()) - logit) > 0.05 * abs(logit)
    assert [type(c).__name__ for c in canonizers(net)] == ["ResNetCanonizer"]
    assert [type(c).__name__ for c in canonizers(BiasFree())] == ["SequentialMergeBatchNorm"]


@pytest.mark.parametrize("device", DEVICES)
def test_lrp_zero_equals_gradient_times_input_on_a_bias_free_relu_net(device):
    net, x = on(device, BiasFree(3, seed=3), 100 * image(3, 16, n=2, seed=3))
    out = explain(net, x, "lrp", [2, 1], composite="epsilon", epsilon=0.0)
    xr = x.clone().requires_grad_(True)
    logits = net(xr)
    (grad,) = torch.autograd.grad(logits[0, 2] + logits[1, 1], xr)
    expected = (grad * x).sum(dim=1).cpu().numpy()
    for i, e in enumerate(out):
        np.testing.assert_allclose(e.heatmap, expected[i], rtol=1e-4, atol=1e-6 * np.abs(expected[i]).max())


def zennit_direct(net: nn.Module, x: torch.Tensor, targets: list[int], composite: str, epsilon: float,
                  gamma: float, low: float, high: float) -> np.ndarray:
    """Zennit's own call: composite with the canonizer, its Gradient attributor, relevance one-hot x logit."""
    from zennit.attribution import Gradient

    comp = make_composite(composite, net, epsilon, gamma, low, high)
    with Gradient(model=net, composite=comp) as attributor:
        index = torch.tensor(targets, device=x.device)[:, None]
        _out, relevance = attributor(x, lambda o: torch.zeros_like(o).scatter_(1, index, o.gather(1, index)))
    return relevance.sum(dim=1).detach().cpu().numpy()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("composite", tuple(COMPOSITE_HELP))
def test_lrp_matches_zennit_called_directly(composite, device):
    for net, x in ((small_resnet(seed=4), image(1, 64, n=2, seed=4)), (TinyGapNet(3, seed=5), image(3, 16, n=2))):
        net, x = on(device, net, x)
        before = copy.deepcopy(net.state_dict())
        ours = explain(net, x, "lrp", [1, 0], composite=composite, epsilon=0.01, gamma=0.5)
        theirs = zennit_direct(net, x, [1, 0], composite, 0.01, 0.5, 0.0, 1.0)
        for e, t in zip(ours, theirs, strict=True):
            assert np.abs(t).max() > 0
            np.testing.assert_allclose(e.heatmap, t, rtol=1e-4, atol=1e-5 * np.abs(t).max(), err_msg=composite)
        assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
        assert hooks_left(net) == []


def test_private_copies_follow_the_model_and_never_touch_it():
    net, x = small_resnet(seed=6), image(1, 64, seed=6)
    state = copy.deepcopy(net.state_dict())
    first = explain(net, x, "lrp", 0)[0].heatmap
    assert hooks_left(net) == [] and all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    with torch.no_grad():
        net.layer4[1].conv2.weight.mul_(-1.5)  # an in-place change: the private copy must be rebuilt
    changed = explain(net, x, "lrp", 0)[0].heatmap
    fresh = explain(copy.deepcopy(net), x, "lrp", 0)[0].heatmap
    np.testing.assert_allclose(changed, fresh, rtol=1e-5, atol=1e-7)
    assert np.abs(changed - first).max() > 0.05 * np.abs(first).max()
    net.load_state_dict(state)
    np.testing.assert_allclose(explain(net, x, "lrp", 0)[0].heatmap, first, rtol=1e-5, atol=1e-7)


@pytest.mark.data
def test_lrp_on_the_bundled_model_matches_zennit_through_its_skip_connections(bundled, xray):
    prep = bundled.spec.preprocessing
    low, high = (0 - prep.mean[0]) / prep.std[0], (1 - prep.mean[0]) / prep.std[0]
    for composite in ("epsilon_plus_flat", "epsilon_gamma_box"):
        ours = explain(bundled, xray, "lrp", composite=composite)[0]
        theirs = zennit_direct(bundled.model, xray, [ours.target], composite, 1e-6, 0.25, low, high)[0]
        np.testing.assert_allclose(ours.heatmap, theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())
    assert hooks_left(bundled.model) == []
