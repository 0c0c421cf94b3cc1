"""core.hooks: a layer's own output and gradient against plain torch, thread scoping, early stops, layer discovery,
and no hook left behind after use or an exception (as pytorch-grad-cam's tests/test_context_release.py checks)."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from core.hooks import capture, last_spatial_layer, spatial_layers
from tests.explain.nets import TinyGapNet, image, small_resnet
from tests.helpers import hooks_left


@pytest.fixture(scope="module")
def net() -> nn.Module:
    return small_resnet(seed=3)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return image(1, 32, n=2, seed=3)


def test_bn1_is_read_before_the_inplace_relu_and_the_model_output_is_unchanged(net, x):
    with torch.no_grad():
        expected = net.bn1(net.conv1(x))
        plain = net(x)
        with capture(net, "bn1") as record:
            out = net(x)
    assert float(expected.min()) < 0  # so a capture altered by the in-place ReLU could not pass
    torch.testing.assert_close(record.activations, expected)
    torch.testing.assert_close(out, plain)
    assert not hooks_left(net)


def test_a_module_called_twice_records_both_calls_and_activations_is_the_last(net, x):
    block = net.layer1[0]  # torchvision's BasicBlock reuses one ReLU: after bn1, then after the skip addition
    with torch.no_grad(), capture(net, "layer1.0.relu") as record:
        net(x)
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        first = torch.relu(block.bn1(block.conv1(h)))
        last = torch.relu(block.bn2(block.conv2(first)) + h)
    assert len(record.outputs) == 2
    torch.testing.assert_close(record.outputs[0], first)
    torch.testing.assert_close(record.activations, last)


def test_gradients_equal_autograd_through_plain_modules(net, x):
    xr = x.clone().requires_grad_(True)
    with capture(net, "layer2", gradient=True) as record:
        net(xr)[:, 1].sum().backward()
    layer2 = net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(xr)))))).detach().requires_grad_(True)
    logits = net.fc(torch.flatten(net.avgpool(net.layer4(net.layer3(layer2))), 1))
    (expected,) = torch.autograd.grad(logits[:, 1].sum(), layer2)
    torch.testing.assert_close(record.gradient, expected)
    # the same gradient taken after the block, with respect to the recorded output
    with capture(net, "layer2") as again:
        logits = net(xr)
    torch.testing.assert_close(torch.autograd.grad(logits[:, 1].sum(), again.activations)[0], expected)
    assert again.gradient is None and not hooks_left(net)


def test_stop_ends_the_forward_pass_at_the_layer(net, x):
    ran = []
    handle = net.layer3.register_forward_hook(lambda *_: ran.append("layer3"))
    try:
        with capture(net, "layer2", stop=True) as record:
            net(x)
            pytest.fail("the forward pass went on past the layer")
    finally:
        handle.remove()
    assert ran == [] and record.activations.shape[:2] == (2, 16)
    assert not hooks_left(net)


def test_an_outer_stop_is_not_swallowed_by_an_inner_capture(net, x):
    with capture(net, "layer1", stop=True) as outer, capture(net, "layer4") as inner:
        net(x)
    assert outer.activations is not None and inner.activations is None
    assert not hooks_left(net)


def test_other_threads_are_neither_recorded_nor_altered(net, x):
    with torch.no_grad():
        plain = net(x)
        seen: list[torch.Tensor] = []
        with capture(net, "layer3", stop=True) as record:
            other = threading.Thread(target=lambda: seen.append(net(x)))  # would stop at layer3 if it were hooked
            other.start()
            other.join()
            assert record.activations is None
            net(x)
    torch.testing.assert_close(seen[0], plain)
    assert len(record.outputs) == 1


def fail(*_: object) -> None:
    raise RuntimeError("boom")


@pytest.mark.parametrize("use", ["capture", "capture-gradient", "capture-stop", "spatial_layers",
                                 "last_spatial_layer"])
def test_no_hook_is_left_after_use_or_after_an_exception(use):
    """Like pytorch-grad-cam's test_context_release: the model holds no hook afterwards, whatever happened."""
    model = TinyGapNet()

    def go(x: torch.Tensor) -> None:
        if use.startswith("capture"):
            with capture(model, "features.2", gradient=use.endswith("gradient"), stop=use.endswith("stop")):
                model(x.requires_grad_(True)).sum().backward()
        elif use == "spatial_layers":
            spatial_layers(model, x)
        else:
            last_spatial_layer(model, x)

    go(image(1, 16))
    assert not hooks_left(model)
    boom = model.pool.register_forward_hook(fail)  # the forward pass raises after the captured layer
    try:
        if use == "capture-stop":  # that pass would stop before the failing module: fail inside the block instead
            with pytest.raises(RuntimeError, match="inside"), capture(model, "features.2", stop=True):
                raise RuntimeError("inside")
        else:
            with pytest.raises(RuntimeError, match="boom"):
                go(image(1, 20))  # another size: last_spatial_layer caches per model and input shape
    finally:
        boom.remove()
    assert not hooks_left(model)


class Pair(nn.Module):
    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return t, t


def test_bad_layers_raise_and_leave_nothing(net, x):
    with pytest.raises(ValueError, match="no layer"), capture(net, "layer9"):
        pytest.fail("entered a capture of a missing layer")
    with pytest.raises(ValueError, match="not a spatial map"), capture(net, "fc") as record:
        net(x)
        record.require()
    pair = nn.Sequential(Pair())
    with pytest.raises(ValueError, match="outputs a tuple"), capture(pair, "0"):
        pair(x)
    assert not hooks_left(net) and not hooks_left(pair)


def test_discovery_of_spatial_layers(net):
    sample = torch.zeros(1, 1, 64, 64)
    assert spatial_layers(net, sample) == ["conv1", "bn1", "relu", "maxpool", "layer1.0", "layer1", "layer2.0",
                                           "layer2", "layer3.0", "layer3", "layer4.0", "layer4", "avgpool"]
    assert last_spatial_layer(net, sample) == "layer4.1.relu"  # a leaf: the reused ReLU's second call
    assert not hooks_left(net)
