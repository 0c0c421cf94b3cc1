"""CAM family: a hand computation on a network with set weights, CAM = Grad-CAM up to scale on a GAP + linear
net, any layer (including an in-place ReLU), batches, channels, and cross-checks with pytorch-grad-cam and Captum
on the bundled model."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.explain import explain
from tests.explain.nets import TinyFlatNet, TinyGapNet, image

CAMS = ("cam", "grad_cam", "grad_cam_pp", "layer_cam")
GRAD_CAMS = ("grad_cam", "grad_cam_pp", "layer_cam")


class HandNet(nn.Module):
    """x (1 x 1 x 4 x 4) -> conv 2x2 (2 kernels, set) -> A (2 x 3 x 3) -> flatten -> linear (set weights)."""

    KERNELS = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [-1.0, 0.0]]])
    HEAD = np.stack([np.linspace(1.0, -1.0, 18), np.arange(18) / 10.0 - 0.8])

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 2, bias=False)
        self.fc = nn.Linear(18, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(self.KERNELS[:, None], dtype=torch.float32))
            self.fc.weight.copy_(torch.tensor(self.HEAD, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


def hand_maps(x: np.ndarray, target: int) -> dict[str, np.ndarray]:
    """Grad-CAM, Grad-CAM++ and Layer-CAM at layer resolution, computed with loops from the definitions."""
    a = np.zeros((2, 3, 3))
    for k in range(2):
        for i in range(3):
            for j in range(3):
                a[k, i, j] = sum(HandNet.KERNELS[k, u, v] * x[i + u, j + v] for u in range(2) for v in range(2))
    g = HandNet.HEAD[target].reshape(2, 3, 3)  # d logit / dA: the head is linear in A
    gc = np.maximum(sum(g[k].mean() * a[k] for k in range(2)), 0)
    lc = np.maximum(sum(np.maximum(g[k], 0) * a[k] for k in range(2)), 0)
    pp_w = []
    for k in range(2):
        alpha = np.where(g[k] != 0, g[k] ** 2 / (2 * g[k] ** 2 + a[k].sum() * g[k] ** 3 + 1e-6), 0)
        pp_w.append((np.maximum(g[k], 0) * alpha).sum())
    pp = np.maximum(sum(pp_w[k] * a[k] for k in range(2)), 0)
    return {"grad_cam": gc, "layer_cam": lc, "grad_cam_pp": pp}


@pytest.mark.parametrize("target", [0, 1])
def test_grad_cams_equal_a_hand_computation(target):
    x_np = 2 * np.cos(0.9 * np.arange(16.0)).reshape(4, 4)  # mixed signs: some locations are clipped by ReLU
    x = torch.tensor(x_np, dtype=torch.float32)[None, None]
    expected = hand_maps(x_np, target)
    for method, coarse in expected.items():
        e = explain(HandNet(), x, method, target, layer="conv")[0]
        assert coarse.max() > 0 and coarse.min() == 0, "the hand example must have a non-trivial map"
        np.testing.assert_allclose(e.extras["layer_map"], coarse, rtol=1e-4, atol=1e-5, err_msg=method)
        up = F.interpolate(torch.tensor(coarse)[None, None], size=(4, 4), mode="bilinear", align_corners=False)
        np.testing.assert_allclose(e.heatmap, up[0, 0].numpy(), rtol=1e-4, atol=1e-5, err_msg=method)
        assert e.target == target and e.params["layer"] == "conv"


@pytest.mark.parametrize("channels", [1, 3])
def test_cam_equals_grad_cam_times_layer_area_on_a_gap_linear_net(channels):
    net, x = TinyGapNet(channels), image(channels, 16, n=2)
    for target in range(3):
        cam = explain(net, x, "cam", target, layer="features")
        grad = explain(net, x, "grad_cam", target, layer="features")
        for c, g in zip(cam, grad, strict=True):
            assert c.heatmap.max() > 0 or g.heatmap.max() == 0
            np.testing.assert_allclose(c.heatmap, g.heatmap * 16 * 16, rtol=1e-4, atol=1e-6)


def test_cam_uses_the_last_spatial_layer_by_default():
    e = explain(TinyGapNet(), image(1, 16), "cam")[0]
    assert e.params["layer"] == "features.3"


def test_cam_refuses_layers_and_networks_without_the_gap_linear_identity():
    with pytest.raises(ValueError, match="channels but the head"):
        explain(TinyFlatNet(side=8), image(1, 8), "cam", layer="relu")
    with pytest.raises(ValueError, match="global average pooling"):  # 6 channels like the head, but before ReLU
        explain(TinyGapNet(), image(1, 16), "cam", layer="features.2")


def test_grad_cam_at_an_in_place_relu_equals_autograd_at_that_activation():
    net, x = TinyGapNet(seed=4), image(1, 16, seed=4)
    with torch.no_grad():
        a = net.features[1](net.features[0](x))  # output of the in-place ReLU
    a = a.clone().requires_grad_(True)
    logits = net.fc(net.pool(net.features[3](net.features[2](a))).flatten(1))
    target = int(logits.argmax())
    (g,) = torch.autograd.grad(logits[0, target], a)
    expected = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))[0].detach().numpy()
    e = explain(net, x, "grad_cam", layer="features.1")[0]
    np.testing.assert_allclose(e.extras["layer_map"], expected, rtol=1e-5, atol=1e-6)


def test_every_conv_layer_is_selectable_and_maps_come_back_at_input_size():
    net, x = TinyGapNet(), image(1, 16)
    for layer in ("features.0", "features.1", "features.2", "features"):
        for method in GRAD_CAMS:
            e = explain(net, x, method, layer=layer)[0]
            assert e.heatmap.shape == (16, 16) and e.extras["layer_map"].shape == (16, 16)
            assert np.all(e.heatmap >= 0)
    with pytest.raises(ValueError, match="not a spatial map"):
        explain(net, x, "grad_cam", layer="fc")
    with pytest.raises(ValueError, match="no layer"):
        explain(net, x, "grad_cam", layer="features.9")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("method", CAMS)
def test_batches_equal_single_images_and_frozen_models_work(method, channels):
    net, x = TinyGapNet(channels, seed=2), image(channels, 16, n=3, seed=2)
    batch = explain(net, x, method, batch_size=2)
    for i in range(3):
        single = explain(net, x[i:i + 1], method)[0]
        np.testing.assert_allclose(batch[i].heatmap, single.heatmap, rtol=1e-5, atol=1e-6)
        assert batch[i].target == single.target and batch[i].score == pytest.approx(single.score, abs=1e-6)
    for p in net.parameters():
        p.requires_grad_(False)
    frozen = explain(net, x, method)
    np.testing.assert_allclose(frozen[0].heatmap, batch[0].heatmap, rtol=1e-5, atol=1e-6)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.mark.data
def test_grad_cams_match_pytorch_grad_cam_on_the_bundled_model(bundled, xray):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net, layer = bundled.model, bundled.model.layer4
    try:
        for method, peer in (("grad_cam", GradCAM), ("grad_cam_pp", GradCAMPlusPlus), ("layer_cam", LayerCAM)):
            ours = explain(bundled, xray, method)[0]
            with peer(model=net, target_layers=[layer]) as ref:
                theirs = ref(input_tensor=xray, targets=[ClassifierOutputTarget(ours.target)])[0]
            assert pearson(ours.heatmap, theirs) > 0.99, method
    finally:
        net.zero_grad(set_to_none=True)  # pytorch-grad-cam leaves parameter gradients on the shared model


@pytest.mark.data
def test_grad_cam_matches_captum_layer_grad_cam_on_the_bundled_model(bundled, xray):
    from captum.attr import LayerAttribution, LayerGradCam

    ours = explain(bundled, xray, "grad_cam")[0]
    coarse = LayerGradCam(bundled.model, bundled.model.layer4).attribute(xray, target=ours.target,
                                                                         relu_attributions=True)
    np.testing.assert_allclose(ours.extras["layer_map"], coarse[0, 0].detach().numpy(), rtol=1e-4, atol=1e-6)
    up = LayerAttribution.interpolate(coarse, xray.shape[-2:], interpolate_mode="bilinear")
    assert pearson(ours.heatmap, up[0, 0].detach().numpy()) > 0.99
