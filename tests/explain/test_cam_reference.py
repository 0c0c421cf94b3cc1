"""Grad-CAM++ and Layer-CAM against pytorch-grad-cam, number for number (min-max normalised maps at layer
resolution), on a hand-built net on which the CAM variants really differ: where the gradient varies over the
layer and sum(A) * g is of order 1, so that two wrong Grad-CAM++ variants (alpha = 1; 2 g^2 written as g^2)
give other maps. On a GAP network the gradient is flat over the layer and the variants nearly coincide
(r >= 0.9998 on the bundled model), so such a net cannot tell them apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.explain import explain

SIDE = 8
TOL = {"rtol": 1e-4, "atol": 1e-5}  # float32 on any CPU; the wrong variants differ by > 0.05


class VariantNet(nn.Module):
    """x (N x 1 x 8 x 8) -> conv 3 x 3 (3 kernels, padding 1) -> ReLU = A (3 x 8 x 8, the explained layer)
    -> flatten -> linear (2 classes). d logit / dA is the head's weight: it changes sign and size over the layer,
    and the channels' typical |sum(A) * g| range from about 1 to 10, where alpha's denominator matters most."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3 * SIDE * SIDE, 2)
        with torch.no_grad():
            scale = torch.tensor([3.0, 1.0, 0.2]).view(3, 1, 1, 1)  # channels of very different activity
            self.conv.weight.copy_((torch.rand(3, 1, 3, 3, generator=g) - 0.3) * scale)
            self.conv.bias.copy_(torch.tensor([0.1, -0.1, 0.0]))
            self.fc.weight.copy_(0.6 * (torch.rand(2, 3 * SIDE * SIDE, generator=g) - 0.4))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).flatten(1))


def inputs(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def minmax(cam: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's scale_cam_image without resizing: (cam - min) / (max - min + 1e-7)."""
    cam = cam - cam.min()
    return cam / (cam.max() + 1e-7)


def reference(net: nn.Module, x: torch.Tensor, target: int, kind: str) -> np.ndarray:
    """pytorch-grad-cam's normalised maps (N x 8 x 8): the layer's resolution is the input's, so no resizing."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = getattr(pytorch_grad_cam, kind)(model=net, target_layers=[net.relu])
    return cam(input_tensor=x, targets=[ClassifierOutputTarget(target)] * len(x))


def by_hand(net: VariantNet, x: torch.Tensor, target: int, variant: str) -> np.ndarray:
    """Grad-CAM++ from its definition with numpy, right or with a known mistake, normalised (N x 8 x 8)."""
    with torch.no_grad():
        a = net.relu(net.conv(x)).numpy().astype(np.float64)
    g = np.broadcast_to(net.fc.weight[target].detach().numpy().reshape(1, 3, SIDE, SIDE), a.shape)
    s = a.sum(axis=(2, 3), keepdims=True)
    alpha = {"right": g**2 / (2 * g**2 + s * g**3 + 1e-6),
             "alpha = 1": np.ones_like(g),
             "g^2 for 2 g^2": g**2 / (g**2 + s * g**3 + 1e-6)}[variant]
    alpha = np.where(g != 0, alpha, 0)
    weights = (np.maximum(g, 0) * alpha).sum(axis=(2, 3))
    cams = np.maximum((weights[:, :, None, None] * a).sum(1), 0)
    return np.stack([minmax(c) for c in cams])


def ours(net: nn.Module, x: torch.Tensor, target: int, method: str) -> np.ndarray:
    return np.stack([minmax(e.extras["layer_map"]) for e in explain(net, x, method, target, layer="relu")])


def test_the_net_makes_the_variants_differ():
    net, x = VariantNet(), inputs()
    for target in (0, 1):
        with torch.no_grad():
            s = net.relu(net.conv(x)).sum(dim=(2, 3), keepdim=True)
            sg = (s * net.fc.weight[target].view(1, 3, SIDE, SIDE)).abs()
        per_channel = sg.transpose(0, 1).flatten(1).median(1).values
        assert per_channel.min() < 1.5 and per_channel.max() > 5  # 1 / (2 + sg) vs 1 / (1 + sg) vs 1 differ
        right = by_hand(net, x, target, "right")
        for wrong in ("alpha = 1", "g^2 for 2 g^2"):
            assert np.abs(by_hand(net, x, target, wrong) - right).max() > 0.05, wrong
        grad_cam, layer_cam = ours(net, x, target, "grad_cam"), ours(net, x, target, "layer_cam")
        assert min(np.abs(right - grad_cam).max(), np.abs(right - layer_cam).max(),
                   np.abs(grad_cam - layer_cam).max()) > 0.05


@pytest.mark.parametrize("target", [0, 1])
def test_grad_cam_pp_equals_pytorch_grad_cam_and_the_definition(target):
    net, x = VariantNet(), inputs()
    theirs = reference(net, x, target, "GradCAMPlusPlus")
    np.testing.assert_allclose(ours(net, x, target, "grad_cam_pp"), theirs, **TOL)
    np.testing.assert_allclose(by_hand(net, x, target, "right"), theirs, **TOL)
    for wrong in ("alpha = 1", "g^2 for 2 g^2"):  # what a wrong implementation would be measured against
        assert not np.allclose(by_hand(net, x, target, wrong), theirs, **TOL), wrong


@pytest.mark.parametrize("target", [0, 1])
def test_layer_cam_equals_pytorch_grad_cam(target):
    net, x = VariantNet(), inputs()
    theirs = reference(net, x, target, "LayerCAM")
    np.testing.assert_allclose(ours(net, x, target, "layer_cam"), theirs, **TOL)
    a = net.relu(net.conv(x)).detach().numpy()
    g = net.fc.weight[target].detach().numpy().reshape(1, 3, SIDE, SIDE)
    by_definition = np.stack([minmax(c) for c in np.maximum((np.maximum(g, 0) * a).sum(1), 0)])
    np.testing.assert_allclose(by_definition, theirs, **TOL)


@pytest.mark.parametrize("target", [0, 1])
def test_grad_cam_equals_pytorch_grad_cam(target):
    net, x = VariantNet(), inputs()
    np.testing.assert_allclose(ours(net, x, target, "grad_cam"), reference(net, x, target, "GradCAM"), **TOL)
