"""The interface contract for LRP, DeepLIFT, GradientSHAP, Score-CAM, HiResCAM, Eigen-CAM and XGrad-CAM (as
test_base checks it for the first methods): registry entries, results, seeds and batches, every parameter at
its bounds and choices, hooks gone after errors and cancels, and concurrent calls on one shared model."""

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch

import core.explain.reference
from core.explain import METHODS, explain, quality, replicas, warm_up
from core.explain.base import resolve_params
from tests.explain.devices import DEVICES, on
from tests.explain.nets import TinyGapNet, image, small_resnet
from tests.explain.test_base import Exploding, assert_concurrent_maps_match, leftovers, loaded

NEW = {"lrp": {}, "deeplift": {}, "gradient_shap": {"n_samples": 3}, "score_cam": {"batch": 8},
       "hires_cam": {}, "eigen_cam": {}, "xgrad_cam": {}}


def test_the_registry_describes_the_new_methods():
    for name in NEW:
        info = METHODS[name]
        assert info.label and info.family and len(info.description) > 40 and "?" in info.description
        for p in info.params:
            assert p.label and p.help, (name, p.name)
            assert p.validate(p.default) == p.default
            if p.kind in ("int", "float"):
                assert p.low <= p.default <= p.high and p.step
            if p.kind == "choice":
                assert p.default in p.choices
        assert resolve_params(info, {}) == info.defaults()
    assert all(METHODS[m].signed for m in ("lrp", "deeplift", "gradient_shap"))
    assert all(METHODS[m].uses_layer and not METHODS[m].signed for m in NEW if m.endswith("_cam"))
    assert [m for m in NEW if METHODS[m].stochastic] == ["gradient_shap"]


@pytest.mark.parametrize("method", NEW)
def test_results_carry_target_score_params_and_time(method):
    net = TinyGapNet(seed=1)
    model, x = loaded(net, 16), image(1, 16, n=2, seed=1)
    out = explain(model, x, method, **NEW[method])
    with torch.no_grad():
        probs = torch.softmax(net(x), 1)
    for i, e in enumerate(out):
        assert e.method == method and e.heatmap.shape == (16, 16) and np.isfinite(e.heatmap).all()
        assert e.target == int(probs[i].argmax()) and e.target_name == "ABC"[e.target]
        assert e.score == pytest.approx(float(probs[i, e.target]), abs=1e-5)
        assert e.seconds > 0 and e.signed == METHODS[method].signed
        assert ("layer" in e.params) == METHODS[method].uses_layer
        assert ("seed" in e.params) == METHODS[method].stochastic
        assert np.abs(e.heatmap).max() > 0 or method.endswith("_cam")
    forced = explain(model, x, method, [2, 0], **NEW[method])
    assert [e.target for e in forced] == [2, 0]
    assert forced[1].score == pytest.approx(float(probs[1, 0]), abs=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("method", NEW)
def test_channels_batches_and_identical_seeds(method, channels, device):
    net, x = on(device, TinyGapNet(channels, seed=2), image(channels, 16, n=2, seed=2))
    a = explain(net, x, method, seed=3, **NEW[method])
    b = explain(net, x, method, seed=3, **NEW[method])
    for ea, eb in zip(a, b, strict=True):
        np.testing.assert_allclose(ea.heatmap, eb.heatmap, rtol=1e-6, atol=1e-9)
    alone = explain(net, x[1:], method, seed=3, batch_size=1, **NEW[method])[0]
    scale = max(np.abs(a[1].heatmap).max(), 1e-12)
    np.testing.assert_allclose(alone.heatmap, a[1].heatmap, rtol=1e-4, atol=1e-5 * scale)
    assert leftovers(net) == []


def _settings(method: str) -> list[dict]:
    """Every parameter at its lower and upper bound, and every choice, one change at a time."""
    out = [{}]
    for p in METHODS[method].params:
        if p.kind in ("int", "float"):
            out += [{p.name: p.low}, {p.name: p.high if p.name not in ("n_samples", "max_channels") else p.low + 1}]
        elif p.kind == "choice":
            out += [{p.name: c} for c in p.choices]
    return out


@pytest.mark.parametrize("method", NEW)
def test_every_parameter_at_its_bounds_and_choices(method):
    net, x = small_resnet(seed=3), image(1, 32, n=2, seed=3)
    model = loaded(net, 32)
    for settings in _settings(method):
        for e in explain(model, x, method, **{**NEW[method], **settings}):
            assert np.isfinite(e.heatmap).all() and e.heatmap.shape == (32, 32), settings
            for name, value in settings.items():
                assert e.params[name] == value
    assert leftovers(net) == []


@pytest.mark.parametrize("method", NEW)
def test_hooks_are_gone_after_calls_that_raise_or_are_cancelled(method):
    x = image(1, 16)
    for fail_on in (1, 2):
        net = Exploding(fail_on)
        try:
            explain(net, x, method, layer="features", **NEW[method])
        except RuntimeError as err:
            assert "boom" in str(err)
        assert leftovers(net) == []

    def cancel(_fraction: float) -> None:
        raise KeyboardInterrupt

    net = TinyGapNet()
    with pytest.raises(KeyboardInterrupt):
        explain(net, x, method, progress=cancel, **NEW[method])
    assert leftovers(net) == []
    after = explain(net, x, method, **NEW[method])[0].heatmap
    np.testing.assert_allclose(after, explain(TinyGapNet(), x, method, **NEW[method])[0].heatmap, rtol=1e-5,
                               atol=1e-8)


def test_concurrent_explanations_on_one_model_get_their_own_maps():
    """Zennit and Captum modify the model they explain: on private copies, another thread's forward passes (and
    its own explanations) must neither see nor cause any change."""
    net = small_resnet(seed=4)
    xs = [image(1, 32, seed=s) for s in (1, 2)]
    jobs = [("lrp", 0), ("deeplift", 1), ("grad_cam", 0), ("lrp", 1), ("score_cam", 1), ("saliency", 0),
            ("deeplift", 0), ("gradient_shap", 1), ("eigen_cam", 0)]
    assert_concurrent_maps_match(net, xs, jobs, NEW, repeats=4)


def test_warm_up_traces_once_and_models_of_the_same_architecture_never_trace_again(monkeypatch):
    """torch.fx tracing patches nn.Module.__call__ process-wide, so a trace beside another request's forward breaks
    it: after warm_up, DeepLIFT on the model, on the model after an in-place update and on the sanity check's
    randomised copies runs no trace, and gives the maps a fresh trace gives."""
    net = small_resnet(seed=6)
    x = image(1, 32, seed=3)
    randomised, _ = quality.randomised_copy(net, seed=1)
    updated = copy.deepcopy(net)
    with torch.no_grad():
        updated.fc.weight.mul_(-1)
    expected = [explain(m, x, "deeplift")[0].heatmap for m in (net, randomised, updated)]
    monkeypatch.setattr(replicas, "_PREPARED", OrderedDict())  # forget the traces made above
    traces = []
    real = core.explain.reference.fx.symbolic_trace
    monkeypatch.setattr(core.explain.reference.fx, "symbolic_trace", lambda m: traces.append(m) or real(m))
    served = copy.deepcopy(net)  # a model object no pool knows yet
    warm_up(served)
    assert len(traces) == 1
    got = [explain(served, x, "deeplift")[0].heatmap]
    got.append(explain(quality.randomised_copy(served, seed=1)[0], x, "deeplift")[0].heatmap)
    with torch.no_grad():
        served.fc.weight.mul_(-1)
    got.append(explain(served, x, "deeplift")[0].heatmap)
    assert len(traces) == 1
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6 * np.abs(e).max())
    assert not np.allclose(got[0], got[1])  # the copies really hold the other models' weights


def test_a_copy_is_not_reused_for_another_architecture(monkeypatch):
    """Models that differ in a tensor's shape are traced each on their own."""
    monkeypatch.setattr(replicas, "_PREPARED", OrderedDict())
    x = image(1, 32, seed=3)
    wide, narrow = small_resnet(seed=1), small_resnet(seed=1)
    narrow.fc = torch.nn.Linear(narrow.fc.in_features, 3)
    explain(wide, x, "deeplift")
    explain(narrow, x, "deeplift", target=2)
    explain(small_resnet(channels=3), image(3, 32), "deeplift")
    assert len(replicas._PREPARED) == 3
