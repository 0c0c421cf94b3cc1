"""CAM family: a hand computation on a network with set weights, CAM = Grad-CAM up to scale on a GAP + linear
net, any layer (including an in-place ReLU), batches, channels, and cross-checks with pytorch-grad-cam and Captum
on the bundled model; HiResCAM, XGrad-CAM, Score-CAM and Eigen-CAM against a hand computation and against
pytorch-grad-cam (min-max normalised maps at the layer's resolution) on CPU and CUDA."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.explain import explain
from core.zoo import get_layer
from tests.explain.devices import DEVICES, minmax, on, peer_scaled
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


# ------------------------------------------------------------------------------------------ HiResCAM, XGrad-CAM,
# ------------------------------------------------------------------------------------------ Score-CAM, Eigen-CAM

VARIANTS = ("hires_cam", "xgrad_cam", "score_cam", "eigen_cam")


def _bilinear_aligned(a: np.ndarray, side: int) -> np.ndarray:
    """Bilinear upsampling with aligned corners (torch's UpsamplingBilinear2d), by separable interpolation."""
    pos = np.arange(side) * (a.shape[0] - 1) / (side - 1)
    rows = np.stack([np.interp(pos, np.arange(a.shape[0]), a[:, j]) for j in range(a.shape[1])], axis=1)
    return np.stack([np.interp(pos, np.arange(a.shape[1]), rows[i]) for i in range(side)])


def hand_variants(x: np.ndarray, target: int) -> dict[str, np.ndarray]:
    """HiResCAM, XGrad-CAM, Score-CAM and Eigen-CAM of HandNet at layer resolution, from the definitions."""
    def conv(img: np.ndarray) -> np.ndarray:
        return np.array([[[sum(HandNet.KERNELS[k, u, v] * img[i + u, j + v] for u in range(2) for v in range(2))
                           for j in range(3)] for i in range(3)] for k in range(2)])

    a = conv(x)
    g = HandNet.HEAD[target].reshape(2, 3, 3)
    hires = np.maximum((g * a).sum(0), 0)
    xw = [(g[k] * a[k] / (a[k].sum() + 1e-7)).sum() for k in range(2)]
    xgrad = np.maximum(sum(xw[k] * a[k] for k in range(2)), 0)
    scores = []
    for k in range(2):
        m = _bilinear_aligned(a[k], 4)
        m = (m - m.min()) / (m.max() - m.min() + 1e-8)
        scores.append(HandNet.HEAD[target] @ conv(x * m).ravel())
    alpha = np.exp(scores - np.max(scores)) / np.exp(scores - np.max(scores)).sum()
    score = np.maximum(sum(alpha[k] * a[k] for k in range(2)), 0)
    flat = a.reshape(2, -1).T
    centred = flat - flat.mean(0)
    projection = centred @ np.linalg.svd(centred)[2][0]
    projection = -projection if abs(projection.min()) > abs(projection.max()) else projection
    eigen = np.maximum(projection.reshape(3, 3), 0)
    return {"hires_cam": hires, "xgrad_cam": xgrad, "score_cam": score, "eigen_cam": eigen}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("target", [0, 1])
def test_cam_variants_equal_a_hand_computation_and_really_differ(device, target):
    x_np = 2 * np.cos(0.9 * np.arange(16.0)).reshape(4, 4)
    (net, x) = on(device, HandNet(), torch.tensor(x_np, dtype=torch.float32)[None, None])
    expected = hand_variants(x_np, target)
    maps = {}
    for method, coarse in expected.items():
        e = explain(net, x, method, target, layer="conv")[0]
        assert coarse.max() > 0, method
        np.testing.assert_allclose(e.extras["layer_map"], coarse, rtol=1e-4, atol=1e-5, err_msg=method)
        up = F.interpolate(torch.tensor(coarse)[None, None], size=(4, 4), mode="bilinear", align_corners=False)
        np.testing.assert_allclose(e.heatmap, up[0, 0].numpy(), rtol=1e-4, atol=1e-5, err_msg=method)
        maps[method] = minmax(e.extras["layer_map"])
    maps["grad_cam"] = minmax(explain(net, x, "grad_cam", target, layer="conv")[0].extras["layer_map"])
    names = sorted(maps)
    for i, a in enumerate(names):  # on this net (gradients that vary over space) no two variants coincide
        for b in names[i + 1:]:
            assert np.abs(maps[a] - maps[b]).max() > 0.05, (a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_hires_cam_equals_grad_cam_when_the_layer_feeds_gap_and_a_linear_head(device):
    """The gradient of GAP + linear is w_k / (h w) at every location, so sum_k g_k A_k = sum_k mean(g_k) A_k: the
    maps are equal (CAM is Grad-CAM times h w, tested above); before the last ReLU they are not."""
    net, x = on(device, TinyGapNet(3, seed=5), image(3, 16, n=2, seed=5))
    for target in range(3):
        hires = explain(net, x, "hires_cam", target, layer="features")
        grad = explain(net, x, "grad_cam", target, layer="features")
        for h, g in zip(hires, grad, strict=True):
            np.testing.assert_allclose(h.heatmap, g.heatmap, rtol=1e-4, atol=1e-6)
    early = [explain(net, x, m, 0, layer="features.1")[0].heatmap for m in ("hires_cam", "grad_cam")]
    assert np.abs(minmax(early[0]) - minmax(early[1])).max() > 0.05


def _peer_layer_maps(peer_cls: type, net: nn.Module, layer: nn.Module, x: torch.Tensor, targets: list[int],
                     side: tuple[int, int], **kw: object) -> np.ndarray:
    """pytorch-grad-cam's min-max normalised maps at the layer's resolution (its resize becomes the identity)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    try:
        with peer_cls(model=net, target_layers=[layer]) as ref:
            for name, value in kw.items():
                setattr(ref, name, value)
            ref.get_target_width_height = lambda _t: (side[1], side[0])
            return ref(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    finally:
        net.zero_grad(set_to_none=True)  # pytorch-grad-cam leaves parameter gradients on the model


PEERS = {"hires_cam": "HiResCAM", "xgrad_cam": "XGradCAM", "score_cam": "ScoreCAM", "eigen_cam": "EigenCAM"}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", VARIANTS)
def test_cam_variants_match_pytorch_grad_cam_on_tiny_nets(method, device):
    import pytorch_grad_cam

    from tests.explain.nets import small_resnet

    peer = getattr(pytorch_grad_cam, PEERS[method])
    cases = [(TinyGapNet(1, seed=6), image(1, 16, n=2, seed=6), "features.1", 16),
             (TinyGapNet(3, seed=7), image(3, 16, n=2, seed=7), "features", 16),
             (small_resnet(seed=8), image(1, 64, n=2, seed=8), "layer3", 4)]
    for net, x, layer, side in cases:
        net, x = on(device, net, x)
        ours = explain(net, x, method, [1, 0], layer=layer)
        mine = np.stack([peer_scaled(e.extras["layer_map"]) for e in ours])
        assert mine.shape[-1] == side and any(e.extras["layer_map"].max() > 0 for e in ours)
        if method == "eigen_cam":  # the peer leaves the SVD's sign as LAPACK returns it: compare up to the sign
            from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

            from core.hooks import capture
            with capture(net, layer) as record, torch.no_grad():
                net(x)
            projection = get_2d_projection_with_sign_correction(record.activations.cpu().numpy())
            np.testing.assert_allclose(mine, [peer_scaled(np.maximum(p, 0)) for p in projection], atol=1e-4)
            theirs = _peer_layer_maps(peer, net, get_layer(net, layer), x, [1, 0], (side, side))
            for t, p in zip(theirs, projection, strict=True):  # EigenCAM itself: the same map, or its other sign
                assert any(np.allclose(t, peer_scaled(np.maximum(sign * p, 0)), atol=1e-4) for sign in (1, -1))
            continue
        theirs = _peer_layer_maps(peer, net, get_layer(net, layer), x, [1, 0], (side, side), batch_size=5)
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4, err_msg=f"{method} on {layer}")


@pytest.mark.parametrize("device", DEVICES)
def test_score_cam_batches_equal_single_rows(device):
    from tests.explain.nets import small_resnet

    net, x = on(device, small_resnet(seed=9), image(1, 64, n=2, seed=9))
    full = explain(net, x, "score_cam", layer="layer3", max_channels=4096, batch=64)
    for kw in ({"batch": 1}, {"batch": 7}, {"max_channels": 32}):  # 32 = all of layer3's channels
        other = explain(net, x, "score_cam", layer="layer3", batch_size=2, **kw)
        for a, b in zip(full, other, strict=True):
            np.testing.assert_allclose(a.heatmap, b.heatmap, rtol=1e-4, atol=1e-6)
    single = explain(net, x[1:], "score_cam", layer="layer3")[0]
    np.testing.assert_allclose(single.heatmap, full[1].heatmap, rtol=1e-4, atol=1e-6)
    one = explain(net, x, "score_cam", layer="layer3", max_channels=1)
    assert all(e.heatmap.max() > 0 for e in one)


@pytest.mark.parametrize("device", DEVICES)
def test_score_cam_channel_cap_keeps_the_strongest_channels(device):
    net = TinyGapNet(seed=11)
    with torch.no_grad():  # channels 0 and 3 of features.3 are dead (zero everywhere)
        net.features[2].weight[[0, 3]] = 0.0
        net.features[2].bias[[0, 3]] = -1.0
    net, x = on(device, net, image(1, 16, n=2, seed=11))
    with torch.no_grad():
        acts = net.features(x).cpu()
    full = explain(net, x, "score_cam", layer="features")
    live = explain(net, x, "score_cam", layer="features", max_channels=4)
    for a, b in zip(full, live, strict=True):  # dropping only dead channels rescales the map, no more
        assert a.heatmap.max() > 0
        np.testing.assert_allclose(minmax(a.heatmap), minmax(b.heatmap), rtol=1e-4, atol=1e-5)
    strongest = acts.abs().mean(dim=(2, 3)).argmax(dim=1)
    for i, e in enumerate(explain(net, x, "score_cam", layer="features", max_channels=1)):
        np.testing.assert_allclose(e.extras["layer_map"], acts[i, strongest[i]].numpy(), rtol=1e-5, atol=1e-7)
    seen: list[float] = []
    explain(net, x, "score_cam", layer="features", batch=3, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 3


@pytest.mark.parametrize("device", DEVICES)
def test_eigen_cam_is_class_agnostic_and_needs_no_gradient(device):
    net, x = on(device, TinyGapNet(seed=10), image(1, 16, n=2, seed=10))
    for p in net.parameters():
        p.requires_grad_(False)
    maps = [explain(net, x, "eigen_cam", t, layer="features.2") for t in range(3)]
    for t in (1, 2):
        for a, b in zip(maps[0], maps[t], strict=True):
            np.testing.assert_array_equal(a.heatmap, b.heatmap)
            assert a.target != b.target


@pytest.mark.data
def test_cam_variants_match_pytorch_grad_cam_on_the_bundled_model(bundled, xray):
    import pytorch_grad_cam

    for method in VARIANTS:
        ours = explain(bundled, xray, method)[0]
        side = ours.extras["layer_map"].shape
        theirs = _peer_layer_maps(getattr(pytorch_grad_cam, PEERS[method]), bundled.model, bundled.model.layer4,
                                  xray, [ours.target], side, batch_size=64)[0]
        mine = peer_scaled(ours.extras["layer_map"])
        if method == "eigen_cam" and not np.allclose(mine, theirs, atol=1e-4):
            from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

            from core.hooks import capture
            with capture(bundled.model, "layer4") as record, torch.no_grad():
                bundled.model(xray)
            theirs = peer_scaled(np.maximum(-get_2d_projection(record.activations.cpu().numpy())[0], 0))
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4, err_msg=method)
