"""The explainer interface: registry, parameter and input validation, scores and targets, seeds, baselines,
hooks that never outlive a call (even when it raises), concurrent calls on one model, and memory."""

import os
import threading

import numpy as np
import pytest
import torch
from torch import nn

from core.explain import METHODS, explain
from core.explain.base import Context, Explanation, Param, baseline, last_spatial_layer, resolve_params
from core.hooks import capture
from core.zoo import LoadedModel, ModelSpec, Preprocessing, denormalise
from tests.explain.nets import TinyGapNet, image, small_resnet
from tests.helpers import hooks_left

# Every method of this part, with parameters small enough for tiny inputs.
FAST = {
    "cam": {}, "grad_cam": {}, "grad_cam_pp": {}, "layer_cam": {}, "saliency": {}, "guided_backprop": {},
    "guided_grad_cam": {}, "smoothgrad": {"n_samples": 4}, "integrated_gradients": {"steps": 4},
    "occlusion": {"patch": 8, "stride": 8},
}


def loaded(net: nn.Module, side: int, channels: int = 1) -> LoadedModel:
    """A LoadedModel around a test network (spec with preprocessing and class names)."""
    spec = ModelSpec("test", "test net", "test", Preprocessing(side, channels, (0.5,) * channels, (0.25,) * channels),
                     ("A", "B", "C")[: net(torch.zeros(1, channels, side, side)).shape[1]], "", "", lambda: net,
                     lambda _m: None, "none")
    return LoadedModel(spec, net, torch.device("cpu"))


def leftovers(net: nn.Module) -> list[str]:
    """Hooks on any module, global module hooks and active torch-function modes."""
    return hooks_left(net) + (["torch function mode"] if torch._C._len_torch_function_stack() else [])


def assert_concurrent_maps_match(net: nn.Module, xs: list[torch.Tensor], jobs: list[tuple[str, int]],
                                 options: dict[str, dict], repeats: int, atol: float | None = None) -> None:
    """Run every (method, image index) job ``repeats`` times in its own thread, all started at once on ``net``: each
    map must equal the same call made alone (``atol``, or 1e-7 of the map's largest value), and no hook may stay on
    the model."""
    expected = [explain(net, xs[i], m, **options.get(m, {}))[0].heatmap for m, i in jobs]
    barrier = threading.Barrier(len(jobs))
    results: dict[int, list[np.ndarray]] = {k: [] for k in range(len(jobs))}
    errors: list[BaseException] = []

    def run(k: int) -> None:
        method, i = jobs[k]
        try:
            barrier.wait()
            for _ in range(repeats):
                results[k].append(explain(net, xs[i], method, **options.get(method, {}))[0].heatmap)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k, maps in results.items():
        assert len(maps) == repeats
        for m in maps:
            tolerance = 1e-7 * np.abs(expected[k]).max() if atol is None else atol
            np.testing.assert_allclose(m, expected[k], rtol=1e-5, atol=tolerance, err_msg=str(jobs[k]))
    assert leftovers(net) == []


def test_the_registry_describes_every_method_and_its_parameters():
    for name in FAST:
        info = METHODS[name]
        assert info.label and info.family and len(info.description) > 40
        for p in info.params:
            assert p.label and p.help, (name, p.name)
            assert p.validate(p.default) == p.default
            if p.kind in ("int", "float"):
                assert p.low <= p.default <= p.high and p.step
            if p.kind == "choice":
                assert p.default in p.choices
        assert resolve_params(info, {}) == info.defaults()
    assert METHODS["integrated_gradients"].signed and METHODS["occlusion"].signed
    assert not METHODS["grad_cam"].signed and METHODS["grad_cam"].uses_layer
    assert METHODS["smoothgrad"].stochastic


def test_parameters_and_inputs_are_validated_with_clear_messages():
    net, x = TinyGapNet(), image(1, 16)
    cases = [
        (dict(method="nope"), "Unknown method"),
        (dict(method="smoothgrad", n_sample=3), "no parameter"),
        (dict(method="smoothgrad", n_samples="many"), "n_samples must be a int"),
        (dict(method="smoothgrad", n_samples=2.5), "n_samples must be a int"),
        (dict(method="smoothgrad", n_samples=0), "between 1"),
        (dict(method="smoothgrad", noise=float("nan")), "noise must be a float"),
        (dict(method="integrated_gradients", baseline="grey"), "one of black"),
        (dict(method="grad_cam", target=3), r"class index in \[0, 2\]"),
        (dict(method="occlusion", target=-1), r"class index in \[0, 2\]"),
        (dict(method="grad_cam", target=[0, 1]), "2 entries for 1 images"),
        (dict(method="grad_cam", target="x"), "class index"),
        (dict(method="grad_cam", layer="features.7"), "no layer"),
        (dict(method="grad_cam", batch_size=0), "batch_size"),
        (dict(method="smoothgrad", seed=-1), "seed"),
    ]
    for kwargs, message in cases:
        method = kwargs.pop("method")
        with pytest.raises(ValueError, match=message):
            explain(net, x, method, **kwargs)
    for bad in (x[0], x[:0], x.numpy()):
        with pytest.raises(ValueError, match="N x C x H x W"):
            explain(net, bad, "grad_cam")
    assert Param("b", "B", "bool", False).validate("yes") is True
    assert leftovers(net) == []


@pytest.mark.parametrize("method", FAST)
def test_results_carry_target_score_params_and_time(method):
    net = TinyGapNet(seed=1)
    model, x = loaded(net, 16), image(1, 16, n=2, seed=1)
    out = explain(model, x, method, **FAST[method])
    with torch.no_grad():
        probs = torch.softmax(net(x), 1)
    for i, e in enumerate(out):
        assert isinstance(e, Explanation) and e.method == method and e.heatmap.shape == (16, 16)
        assert e.target == int(probs[i].argmax()) and e.target_name == "ABC"[e.target]
        assert e.score == pytest.approx(float(probs[i, e.target]), abs=1e-6)
        assert e.seconds > 0 and e.signed == METHODS[method].signed and np.isfinite(e.heatmap).all()
        assert ("layer" in e.params) == METHODS[method].uses_layer
        assert ("seed" in e.params) == METHODS[method].stochastic
        n = e.normalised
        assert n.min() >= 0 and n.max() <= 1
    forced = explain(model, x, method, [2, 0], **FAST[method])
    assert [e.target for e in forced] == [2, 0]
    assert forced[1].score == pytest.approx(float(probs[1, 0]), abs=1e-6)


def test_normalised_maps_keep_zero_at_the_centre_for_signed_methods():
    e = Explanation("m", np.array([[-2.0, 0.0], [1.0, 0.5]]), 0, "A", 0.5, {}, 0.1, signed=True)
    np.testing.assert_allclose(e.normalised, [[0.0, 0.5], [0.75, 0.625]])
    e.signed = False
    np.testing.assert_allclose(e.normalised, [[0.0, 2 / 3], [1.0, 2.5 / 3]])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("method", FAST)
def test_every_method_on_one_and_three_channels_batches_and_identical_seeds(method, channels):
    net, x = TinyGapNet(channels, seed=2), image(channels, 16, n=2, seed=2)
    a = explain(net, x, method, seed=3, **FAST[method])
    b = explain(net, x, method, seed=3, **FAST[method])
    for ea, eb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ea.heatmap, eb.heatmap)
    alone = explain(net, x[1:], method, seed=3, batch_size=1, **FAST[method])[0]  # the batch changes nothing
    np.testing.assert_allclose(alone.heatmap, a[1].heatmap, rtol=1e-4, atol=1e-6)
    assert leftovers(net) == []


class Exploding(TinyGapNet):
    """Raises during its ``fail_on``-th forward pass."""

    def __init__(self, fail_on: int) -> None:
        super().__init__(seed=3)
        self.calls, self.fail_on = 0, fail_on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        h = self.features(x)
        if self.calls == self.fail_on:
            raise RuntimeError("boom")
        return self.fc(self.pool(h).flatten(1))


@pytest.mark.parametrize("method", FAST)
def test_hooks_are_gone_after_calls_that_raise_or_are_cancelled(method):
    x = image(1, 16)
    counter = Exploding(fail_on=0)
    explain(counter, x, method, layer="features", **FAST[method])
    for fail_on in range(1, min(counter.calls, 3) + 1):  # in the prediction pass and inside the method
        net = Exploding(fail_on)
        with pytest.raises(RuntimeError, match="boom"):
            explain(net, x, method, layer="features", **FAST[method])
        assert leftovers(net) == []

    def cancel(_fraction: float) -> None:
        raise KeyboardInterrupt

    net = TinyGapNet()
    with pytest.raises(KeyboardInterrupt):
        explain(net, x, method, progress=cancel, **FAST[method])
    assert leftovers(net) == []
    explain(net, x, method, **FAST[method])
    assert leftovers(net) == []


def test_concurrent_explanations_on_one_model_get_their_own_maps():
    """Hooks of one thread must neither fire for nor alter another thread's forward pass (guided ReLUs, layer
    captures); every result must equal the same call made alone."""
    net = small_resnet(seed=4)
    xs = [image(1, 32, seed=s) for s in (1, 2)]
    jobs = [("grad_cam", 0), ("saliency", 1), ("guided_backprop", 0), ("layer_cam", 1), ("guided_grad_cam", 1),
            ("saliency", 0), ("smoothgrad", 1)]
    assert_concurrent_maps_match(net, xs, jobs, FAST, repeats=6, atol=1e-7)


def test_capture_only_sees_forward_passes_of_its_own_thread():
    net, x = TinyGapNet(), image(1, 16)
    with capture(net, "features") as record:
        other = threading.Thread(target=lambda: net(x))
        other.start()
        other.join()
        assert record.activations is None
        net(x)
    assert record.activations is not None and record.activations.shape == (1, 6, 16, 16)
    assert leftovers(net) == []


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_does_not_grow_over_100_explanations():
    net, x = small_resnet(seed=5), image(1, 48, seed=5)
    methods = ["grad_cam", "guided_grad_cam", "saliency", "smoothgrad", "occlusion"]
    for m in methods * 2:  # warm-up: allocator pools, lazy imports
        explain(net, x, m, **FAST[m])
    before = rss_mb()
    for k in range(100):
        m = methods[k % len(methods)]
        explain(net, x, m, **FAST[m])
    grown = rss_mb() - before
    # one leaked autograd graph of this net holds ~0.3 MB at 48 px (0.15 MB measured at 32 px): 100 leaked
    # calls would add ~30 MB
    assert grown < 8, f"RSS grew by {grown:.1f} MB"


def test_last_spatial_layer_is_found_and_cached_per_input_shape():
    net = small_resnet()
    assert last_spatial_layer(net, torch.zeros(1, 1, 64, 64)) == "layer4.1.relu"
    assert last_spatial_layer(net, torch.zeros(1, 1, 32, 32)) == "layer3.1.relu"  # layer4 is 1 x 1 at 32 px
    with pytest.raises(ValueError, match="no layer with a spatial"):
        last_spatial_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.zeros(1, 4))
    assert leftovers(net) == []


def test_baselines_in_pixel_terms_and_seeded_noise():
    prep = Preprocessing(16, 1, (0.4,), (0.2,))
    ctx = Context(TinyGapNet(), torch.device("cpu"), "", 7, 8, {}, prep=prep)
    x = image(1, 16, n=2, seed=3)
    np.testing.assert_allclose(denormalise(baseline(ctx, x, "black")[:1], prep), 0.0, atol=1e-6)
    assert torch.equal(baseline(ctx, x, "zero"), torch.zeros_like(x))
    mean = baseline(ctx, x, "mean")
    np.testing.assert_allclose(mean[:, :, 3, 5], x.mean(dim=(2, 3)), rtol=1e-5)
    blurred = baseline(ctx, x, "blur")
    assert blurred.shape == x.shape and not torch.allclose(blurred, x) and blurred.std() < x.std()
    uniform = baseline(ctx, x, "uniform")
    pixels = uniform * 0.2 + 0.4
    assert pixels.min() >= 0 and pixels.max() <= 1 and pixels.std() > 0.2
    assert torch.equal(uniform, baseline(ctx, x, "uniform"))
    assert torch.equal(uniform[0], uniform[1])  # each image as if explained alone
    other = Context(TinyGapNet(), torch.device("cpu"), "", 8, 8, {}, prep=prep)
    assert not torch.equal(uniform, baseline(other, x, "uniform"))
    with pytest.raises(ValueError, match="baseline must be one of"):
        baseline(ctx, x, "grey")


def test_explain_works_inside_inference_mode_and_refuses_integer_images():
    net, x = TinyGapNet(), image(1, 16)
    expected = explain(net, x, "grad_cam")[0].heatmap
    with torch.inference_mode():
        inner = torch.ones(1) + 0  # an inference tensor, like any created here
        assert inner.is_inference()
        np.testing.assert_array_equal(explain(net, x * inner, "grad_cam")[0].heatmap, expected)
        explain(net, x, "integrated_gradients", steps=2)
    with pytest.raises(ValueError, match="floating-point"):
        explain(net, (x * 100).to(torch.uint8), "saliency")
