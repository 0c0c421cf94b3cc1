"""The per-request work budget: its cost model bounds the passes an explainer really makes (counted on a small
network), hostile settings are refused before any work with a message naming a setting that fits, and the
methods' defaults fit with the trust checks at the bundled model's input size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.xray.limits import GRADIENT_PASS, Limits, passes
from core.explain.base import METHODS, explain, resolve_params
from tests.explain.nets import TinyGapNet

SMALL = {"score_cam": {"max_channels": 4}, "smoothgrad": {"n_samples": 6}, "integrated_gradients": {"steps": 8},
         "occlusion": {"patch": 8, "stride": 4}, "meaningful_perturbation": {"steps": 12},
         "gradient_shap": {"n_samples": 6}, "lime": {"n_samples": 60, "n_segments": 12},
         "kernel_shap": {"n_samples": 60, "n_segments": 12}}
BUNDLED_SIDE = (192, 192)


def _image(side: int = 32) -> torch.Tensor:
    yy, xx = np.mgrid[0:side, 0:side]
    return torch.tensor(np.sin(xx / 3.0) * np.cos(yy / 5.0), dtype=torch.float32)[None, None]


@pytest.mark.parametrize("method", list(METHODS))
def test_the_cost_model_bounds_the_images_an_explainer_sends_through_the_model(method):
    torch.manual_seed(0)
    net = TinyGapNet(channels=1).eval()
    seen = [0]
    net.register_forward_hook(lambda module, inputs, output: seen.__setitem__(0, seen[0] + inputs[0].shape[0]))
    params = resolve_params(METHODS[method], SMALL.get(method, {}))
    explain(net, _image(), method, 0, **params)
    estimate = passes(method, params, (32, 32), quality=False)
    assert seen[0] <= estimate <= GRADIENT_PASS * seen[0] + GRADIENT_PASS, (seen[0], estimate)


def test_occlusion_windows_are_counted_as_placed():
    net = TinyGapNet(channels=1).eval()
    seen = [0]
    net.register_forward_hook(lambda module, inputs, output: seen.__setitem__(0, seen[0] + inputs[0].shape[0]))
    params = resolve_params(METHODS["occlusion"], {"patch": 7, "stride": 5})  # 32 px: 0, 5, ..., 25 (flush end)
    explain(net, _image(), "occlusion", 0, **params)
    assert passes("occlusion", params, (32, 32), quality=False) == seen[0]


def test_trust_checks_multiply_the_method_by_its_sanity_copies():
    params = resolve_params(METHODS["lime"], {"n_samples": 300})
    alone, checked = passes("lime", params, BUNDLED_SIDE, False), passes("lime", params, BUNDLED_SIDE, True)
    assert checked > 6 * alone  # the method on itself and 5 randomised copies, plus the curves


@pytest.mark.parametrize("method", list(METHODS))
def test_every_methods_defaults_fit_with_the_trust_checks(method):
    Limits(1, 1).check_work(method, {}, BUNDLED_SIDE, quality=True)


@pytest.mark.parametrize(("method", "overrides", "quality", "knob", "words"), [
    ("lime", {"n_samples": 10000}, False, "n_samples", "n_samples up to"),
    ("lime", {"n_samples": 10000}, True, "n_samples", "n_samples up to"),
    ("occlusion", {"patch": 2, "stride": 1}, True, "stride", "stride of at least"),
    ("smoothgrad", {"n_samples": 500}, True, "n_samples", "n_samples up to"),
    ("score_cam", {"max_channels": 4096}, True, "max_channels", "max_channels up to"),
])
def test_hostile_settings_are_refused_with_a_setting_that_fits(method, overrides, quality, knob, words):
    limits = Limits(1, 1)
    with pytest.raises(ValueError, match="megapixel-passes, more than the 250 this server allows") as refused:
        limits.check_work(method, overrides, BUNDLED_SIDE, quality)
    message = str(refused.value)
    assert words in message
    best = int(message.split(words)[1].split()[0].replace(",", ""))
    limits.check_work(method, {**overrides, knob: best}, BUNDLED_SIDE, quality)  # fits, as the message says
    worse = best - 1 if knob == "stride" else best + 1
    with pytest.raises(ValueError, match="more than the"):
        limits.check_work(method, {**overrides, knob: worse}, BUNDLED_SIDE, quality)  # and it is the nearest


def test_a_method_that_only_fits_without_trust_checks_says_so():
    with pytest.raises(ValueError, match="fits without the trust checks"):
        Limits(1, 1, budget_mpx=10).check_work("meaningful_perturbation", {"steps": 10}, BUNDLED_SIDE, True)


def test_out_of_range_settings_get_the_methods_own_message_first():
    with pytest.raises(ValueError, match="n_samples must be between"):
        Limits(1, 1).check_work("lime", {"n_samples": 3}, BUNDLED_SIDE)


def test_a_bigger_budget_lets_the_same_request_through():
    Limits(1, 1, budget_mpx=400).check_work("lime", {"n_samples": 10000}, BUNDLED_SIDE, quality=False)


def test_test_time_augmentation_multiplies_the_method_not_the_trust_checks():
    params = resolve_params(METHODS["lime"], {"n_samples": 300})
    alone = passes("lime", params, BUNDLED_SIDE, False)
    assert passes("lime", params, BUNDLED_SIDE, False, copies=8) == 8 * alone
    # the sanity copies rerun the method once each, without augmentation; the curves do not change
    assert (passes("lime", params, BUNDLED_SIDE, True, copies=8) - passes("lime", params, BUNDLED_SIDE, True)
            == 7 * alone)


def test_augmented_copies_count_against_the_budget():
    limits = Limits(1, 1)
    limits.check_work("lime", {"n_samples": 500}, BUNDLED_SIDE, True)  # fits alone
    with pytest.raises(ValueError, match="on 32 augmented copies needs about") as refused:
        limits.check_work("lime", {"n_samples": 500}, BUNDLED_SIDE, True, copies=32)
    best = int(str(refused.value).split("n_samples up to")[1].split()[0].replace(",", ""))
    limits.check_work("lime", {"n_samples": best}, BUNDLED_SIDE, True, copies=32)


@pytest.mark.parametrize("budget", [250.0, 60.0])
def test_sliders_stop_exactly_where_the_budget_does(budget):
    limits = Limits(1, 1, budget_mpx=budget)
    bounds = limits.slider_bounds(BUNDLED_SIDE)
    assert ("lime", "n_samples") in bounds and ("occlusion", "stride") in bounds
    for (method, knob), (low, high) in bounds.items():
        defaults = METHODS[method].defaults()
        edge, beyond = (low, low - 1) if knob == "stride" else (high, high + 1)
        limits.check_work(method, {**defaults, knob: edge}, BUNDLED_SIDE, True)  # the slider's end is accepted
        with pytest.raises(ValueError, match="more than the"):
            limits.check_work(method, {**defaults, knob: beyond}, BUNDLED_SIDE, True)  # one step past is not


def test_a_budget_that_allows_everything_leaves_the_sliders_alone():
    assert Limits(1, 1, budget_mpx=1e9).slider_bounds(BUNDLED_SIDE) == {}
