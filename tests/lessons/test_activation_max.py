"""Activation maximisation: raises its target on the bundled model, reports honest scores, is repeatable."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from core.lessons.activation_max import Settings, Target, maximise, total_variation
from core.nets import WideResNet18
from core.zoo import Preprocessing
from tests.helpers import hooks_left

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

PREP = Preprocessing(48, 1, (0.5,), (0.25,))
FAST = Settings(steps=12, frames=3)


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return WideResNet18(width=8, in_channels=1, num_classes=3).eval()


def logits_of(model: nn.Module, image: np.ndarray, prep: Preprocessing) -> torch.Tensor:
    """Independent forward pass on a displayed image (H x W in [0, 1])."""
    device = next(model.parameters()).device
    x = (torch.from_numpy(image)[None, None].float() - prep.mean[0]) / prep.std[0]
    with torch.no_grad():
        return model(x.to(device))[0].cpu()


@pytest.mark.parametrize("cls", [0, 1])
def test_default_settings_raise_the_class_score_tenfold_on_the_bundled_model(bundled, cls):
    prep = bundled.spec.preprocessing
    result = maximise(bundled.model, prep, Target("class", cls))
    assert len(result.history) == Settings().steps
    # score = exp(logit): tenfold <=> the logit rose by at least ln 10, checked on an independent forward pass
    start = logits_of(bundled.model, result.start_image, prep)[cls]
    final = logits_of(bundled.model, result.image, prep)[cls]
    assert result.start_score == pytest.approx(float(start), abs=1e-3)
    assert result.final_score == pytest.approx(float(final), abs=1e-3)
    assert math.exp(float(final - start)) >= 10
    assert result.gain == pytest.approx(math.exp(float(final - start)), rel=1e-2)
    assert result.final_probability > result.start_probability
    assert result.image.shape == (prep.size, prep.size)
    assert result.image.min() >= 0 and result.image.max() <= 1


def test_seeded_and_reproducible(net):
    a = maximise(net, PREP, Target("class", 1), FAST)
    b = maximise(net, PREP, Target("class", 1), FAST)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.history, b.history)
    c = maximise(net, PREP, Target("class", 1), replace(FAST, seed=1))
    assert not np.array_equal(a.start_image, c.start_image)


def test_channel_target_rises_and_matches_a_hook(net):
    target = Target("channel", 2, "layer2")
    result = maximise(net, PREP, target, replace(FAST, steps=30, lr=0.1, l2=0.0, tv=0.0))
    seen = []
    handle = net.layer2.register_forward_hook(lambda _m, _i, out: seen.append(out[0, 2].mean().item()))
    logits_of(net, result.start_image, PREP)
    logits_of(net, result.image, PREP)
    handle.remove()
    assert result.start_score == pytest.approx(seen[0], abs=1e-4)
    assert result.final_score == pytest.approx(seen[1], abs=1e-4)
    assert result.final_score > result.start_score
    assert not hooks_left(net)


def test_model_weights_untouched_and_get_no_gradients(net):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    maximise(net, PREP, Target("class", 0), FAST)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in net.parameters())


def test_total_variation_weight_smooths_the_image(net):
    base = replace(FAST, steps=20, lr=0.1, jitter=0, blur_every=0, l2=0.0)
    rough = maximise(net, PREP, Target("class", 2), replace(base, tv=0.0))
    smooth = maximise(net, PREP, Target("class", 2), replace(base, tv=20.0))

    def tv(img: np.ndarray) -> float:
        return float(total_variation(torch.from_numpy(img)))

    assert tv(smooth.image) < 0.7 * tv(rough.image)


def test_l2_weight_pulls_towards_grey(net):
    base = replace(FAST, steps=20, lr=0.1, jitter=0, blur_every=0, tv=0.0)
    free = maximise(net, PREP, Target("class", 0), replace(base, l2=0.0))
    tied = maximise(net, PREP, Target("class", 0), replace(base, l2=500.0))
    assert np.abs(tied.image - 0.5).mean() < 0.7 * np.abs(free.image - 0.5).mean()


def test_blur_every_step_smooths_the_image(net):
    base = replace(FAST, steps=10, lr=0.1, jitter=0, l2=0.0, tv=0.0)
    sharp = maximise(net, PREP, Target("class", 0), replace(base, blur_every=0))
    blurred = maximise(net, PREP, Target("class", 0), replace(base, blur_every=1, blur_sigma=1.0))
    tv = [float(total_variation(torch.from_numpy(r.image))) for r in (sharp, blurred)]
    assert tv[1] < 0.5 * tv[0]


def test_total_variation_by_hand():
    img = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    # vertical differences: |0-0|, |0-1| -> mean 0.5; horizontal: |1-0|, |0-0| -> mean 0.5
    assert float(total_variation(img)) == pytest.approx(1.0)


def test_progress_and_frames(net):
    fractions = []
    result = maximise(net, PREP, Target("class", 0), replace(FAST, steps=9, frames=3), progress=fractions.append)
    assert fractions == pytest.approx([i / 9 for i in range(1, 10)])
    assert [step for step, _ in result.frames] == [0, 3, 6, 9]
    np.testing.assert_array_equal(result.frames[-1][1], result.image)
    np.testing.assert_array_equal(result.frames[0][1], result.start_image)


def test_progress_callback_can_cancel(net):
    def cancel(fraction: float) -> None:
        if fraction > 0.2:
            raise InterruptedError

    with pytest.raises(InterruptedError):
        maximise(net, PREP, Target("class", 0), FAST, progress=cancel)


@pytest.mark.parametrize(("target", "message"), [
    (Target("class", 5), "Class index"),
    (Target("channel", 99, "layer1"), "Channel must be"),
    (Target("channel", 0, "layer7"), "no layer"),
    (Target("channel", 0, "fc"), "2-D maps"),
])
def test_bad_targets_say_what_is_wrong(net, target, message):
    with pytest.raises(ValueError, match=message):
        maximise(net, PREP, target, FAST)
    assert not hooks_left(net)


def test_target_descriptions():
    assert Target("class", 1).describe(("NORMAL", "PNEUMONIA")) == "class PNEUMONIA"
    assert Target("channel", 7, "layer3").describe() == "layer3 channel 7"
