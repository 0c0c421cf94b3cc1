"""Receptive-field lesson: closed forms checked against autograd, torch shapes and Araujo et al.'s published table.

The probe: a unit's receptive field is the set of input pixels it depends on. Gradients measure it honestly
only when no path is cut, so the probe copies the network with every weight positive, BatchNorm at its
identity statistics, positive inputs (every ReLU passes) and max pooling swapped for average pooling of the
same geometry (max pooling routes gradient to one argmax only, so its gradient covers part of its window).
The non-zero input gradient then has exactly the extent of the receptive field; an underflowing or cut path
can only shrink it, so a wrong formula cannot pass.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torchvision import models as tvm

from core import zoo
from core.lessons import receptive_field as rf
from core.zoo import ModelUnavailable
from tests.explain.devices import DEVICES

# ---------------------------------------------------------------- helpers


def positive_copy(model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Same geometry, every path open: positive weights, identity BatchNorm, max pool -> average pool."""
    m = copy.deepcopy(model).to(dtype).eval()
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.MaxPool2d):
                assert child.dilation == 1
                setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                # 1/3 per tap and input channel keeps activations below ReLU6's ceiling and gradients above underflow
                mod.weight.fill_(1.0 / (3 * mod.weight.shape[1]))
                if mod.bias is not None:
                    mod.bias.zero_()
            elif isinstance(mod, nn.BatchNorm2d):
                mod.reset_parameters()
    return m


def support(probe: nn.Module, x: torch.Tensor, unit: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Row and column extent (inclusive) of the non-zero input gradient of one output unit."""
    x = x.clone().requires_grad_(True)
    out = probe(x)
    (grad,) = torch.autograd.grad(out[0, :, unit[0], unit[1]].sum(), x)
    nz = grad[0].abs().sum(0) > 0
    rows, cols = np.flatnonzero(nz.any(1).numpy()), np.flatnonzero(nz.any(0).numpy())
    return (int(rows[0]), int(rows[-1])), (int(cols[0]), int(cols[-1]))


def torch_stack(layers: list[rf.LayerSpec], dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """The probe network of a stack, built from raw parameters (independently of rf.stack_module)."""
    mods: list[nn.Module] = []
    for la in layers:
        if la.kind == "conv":
            conv = nn.Conv2d(1, 1, la.kernel, la.stride, la.padding, la.dilation)
            mods += [conv, nn.ReLU()]
        elif la.kind == "maxpool" and la.dilation > 1:  # dilated pooling window = ones kernel of the same geometry
            mods.append(nn.Conv2d(1, 1, la.kernel, la.stride, la.padding, la.dilation, bias=False))
        else:
            mods.append(nn.AvgPool2d(la.kernel, la.stride, la.padding, la.ceil_mode))
    net = nn.Sequential(*mods).to(dtype)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0)
                if m.bias is not None:
                    m.bias.zero_()
    return net.eval()


def centred_input_size(analysis_for, start: int = 8, limit: int = 4096) -> tuple[int, rf.Analysis]:
    """Smallest tried size whose last row's centre unit has its whole field inside the image."""
    n = start
    while n <= limit:
        try:
            a = analysis_for(n)
        except ValueError:
            n += 4
            continue
        last = a.rows[-1]
        lo, hi = last.field.span(last.height // 2)
        if lo >= 0 and hi < a.input_size[0]:
            return n, a
        n += 4
    raise AssertionError("no input size puts the centre unit's field inside the image")


@st.composite
def layer_specs(draw: st.DrawFn) -> rf.LayerSpec:
    kind = draw(st.sampled_from(rf.LAYER_KINDS))
    kernel = draw(st.integers(1, 5))
    dilation = 1 if kind == "avgpool" else draw(st.integers(1, 3))
    ceil_mode = False if kind == "conv" or dilation > 1 else draw(st.booleans())
    padding = draw(st.integers(0, 2 if kind == "conv" else kernel // 2))
    return rf.LayerSpec(kind, kernel, draw(st.integers(1, 3)), padding, dilation, ceil_mode)


stacks = st.lists(layer_specs(), min_size=1, max_size=5)

# ---------------------------------------------------------------- single layers and stacks


@pytest.mark.parametrize("n", [5, 8, 13])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("s", [1, 2, 3])
@pytest.mark.parametrize("d", [1, 2])
def test_output_size_equals_torch_shapes(n, k, s, d):
    x = torch.zeros(1, 1, n, n)
    for p in range(3):
        if d * (k - 1) + 1 <= n + 2 * p:
            conv = F.conv2d(x, torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d)
            assert rf.output_size(n, rf.LayerSpec("conv", k, s, p, d)) == conv.shape[-1]
        if 2 * p <= k and d * (k - 1) + 1 <= n + 2 * p:
            for ceil in (False, True):
                pooled = F.max_pool2d(x, k, s, p, d, ceil_mode=ceil)
                assert rf.output_size(n, rf.LayerSpec("maxpool", k, s, p, d, ceil)) == pooled.shape[-1]
                if d == 1:
                    avg = F.avg_pool2d(x, k, s, p, ceil_mode=ceil)
                    assert rf.output_size(n, rf.LayerSpec("avgpool", k, s, p, 1, ceil)) == avg.shape[-1]


def test_too_small_input_and_bad_layers_raise_clear_errors():
    with pytest.raises(ValueError, match="smaller than the kernel span"):
        rf.output_size(3, rf.LayerSpec("conv", 3, dilation=2))
    with pytest.raises(ValueError, match="at least 1"):
        rf.LayerSpec("conv", 0)
    with pytest.raises(ValueError, match="at most half"):
        rf.LayerSpec("maxpool", 2, padding=2)
    with pytest.raises(ValueError, match="no dilation"):
        rf.LayerSpec("avgpool", 3, dilation=2)
    with pytest.raises(ValueError, match="Layer type"):
        rf.LayerSpec("upsample", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        rf.analyse_stack([], 32)


@settings(max_examples=60, deadline=None)
@given(stacks)
def test_closed_form_equals_layer_by_layer_recurrence(layers):
    field = rf.INPUT_FIELD
    for layer, closed in zip(layers, rf.stack_fields(layers), strict=True):
        field = field.after(layer)
        assert closed == field


@settings(max_examples=40, deadline=None)
@given(stacks)
def test_stack_fields_equal_autograd_support(layers):
    """Size, start and jump of the closed form equal the gradient support of two neighbouring units."""
    n, analysis = centred_input_size(lambda size: rf.analyse_stack(layers, size))
    net = torch_stack(layers)
    x = torch.ones(1, 1, n, n, dtype=torch.float64)
    shapes = []
    h = x
    for m in net:
        h = m(h)
        if not isinstance(m, nn.ReLU):
            shapes.append(tuple(h.shape[-2:]))
    assert shapes == [(r.height, r.width) for r in analysis.rows]
    last = analysis.rows[-1]
    i = last.height // 2
    rows, cols = support(net, x, (i, i))
    assert rows == cols == last.field.span(i)
    assert rows[1] - rows[0] + 1 == last.field.size
    if i + 1 < last.height and last.field.span(i + 1)[1] < n:
        rows_next, _ = support(net, x, (i + 1, i))
        assert rows_next[0] - rows[0] == last.field.jump


@settings(max_examples=25, deadline=None)
@given(stacks, st.integers(0, 2**31 - 1))
def test_max_pool_gradients_stay_inside_the_field(layers, seed):
    """With real max pooling and random weights the gradient covers part of the field, never more."""
    n, analysis = centred_input_size(lambda size: rf.analyse_stack(layers, size))
    torch.manual_seed(seed)
    net = rf.stack_module(layers, width=2, seed=seed).double()
    x = torch.rand(1, 1, n, n, dtype=torch.float64, requires_grad=True)
    out = net(x)
    i = analysis.rows[-1].height // 2
    (grad,) = torch.autograd.grad(out[0, :, i, i].sum(), x)
    lo, hi = analysis.rows[-1].field.span(i)
    outside = grad[0, 0].clone()
    outside[lo:hi + 1, lo:hi + 1] = 0
    assert torch.count_nonzero(outside) == 0


@settings(max_examples=30, deadline=None)
@given(stacks)
def test_stack_module_traces_to_the_closed_form(layers):
    try:
        expected = rf.analyse_stack(layers, 64)
    except ValueError:
        return
    traced = rf.analyse_module(rf.stack_module(layers), 64)
    assert [(r.height, r.width, r.field, r.layer) for r in traced.rows] == [
        (r.height, r.width, r.field, r.layer) for r in expected.rows]
    assert [r.name for r in traced.rows] == rf.stack_node_names(rf.stack_module(layers))


def test_unit_field_clips_to_the_image_and_reports_padding():
    layers = [rf.LayerSpec("conv", 3, 1, 1), rf.LayerSpec("conv", 3, 2, 1), rf.LayerSpec("conv", 3, 1, 1)]
    analysis = rf.analyse_stack(layers, 16)
    last = analysis.rows[-1].name
    corner = rf.unit_field(analysis, last, (0, 0))
    # by hand: sizes 3, 5, 9; starts -1, -2, -4; jump 2 -> unit 0 spans -4..4
    assert corner.rows == corner.cols == (-4, 4)
    assert corner.clipped_rows == (0, 4)
    assert corner.padding_fraction == pytest.approx(1 - 25 / 81)
    assert corner.centre == (0.0, 0.0)
    inner = rf.unit_field(analysis, last, (3, 4))
    assert inner.rows == (2, 10) and inner.cols == (4, 12) and inner.padding_fraction == 0
    with pytest.raises(ValueError, match="outside"):
        rf.unit_field(analysis, last, (8, 0))


# ---------------------------------------------------------------- real architectures


@pytest.fixture(scope="module")
def nets() -> dict[str, nn.Module]:
    return {name: zoo.build_architecture(name) for name in zoo.LESSON_ARCHITECTURES}


def slim_densenet121() -> nn.Module:
    """DenseNet-121's layers with 8x fewer channels: same graph geometry, an eighth of the probe's cost."""
    return tvm.DenseNet(growth_rate=4, block_config=(6, 12, 24, 16), num_init_features=8, bn_size=1).eval()


def geometry(analysis: rf.Analysis) -> list[tuple]:
    return [(r.name, r.layer, r.height, r.width, r.paths) for r in analysis.rows]


def test_slim_densenet_has_densenet121_geometry(nets):
    assert geometry(rf.analyse_module(slim_densenet121(), 224)) == geometry(rf.analyse_module(nets["densenet121"], 224))


# DenseNet-121's deepest path carries ~1e-120 of the gradient mass: float32 would underflow it to zero.
PROBE_DTYPE = {"densenet121": torch.float64}
EXPECTED_RF = {"cxr-resnet18": 435, "resnet18": 435, "vgg16": 212, "alexnet": 195, "mobilenet_v2": 491,
               "densenet121": 2071}


@pytest.mark.parametrize("name", list(zoo.LESSON_ARCHITECTURES))
def test_architecture_fields_equal_autograd_support(name, nets):
    """Centre unit of the last spatial node, on a tall thin input (rows hold the whole field, columns are clipped)."""
    model = slim_densenet121() if name == "densenet121" else nets[name]
    channels = zoo.architecture_preprocessing(name).channels
    width = 32 if name != "alexnet" else 64  # AlexNet needs 63 px to keep one column
    n, analysis = centred_input_size(lambda h: rf.analyse_module(model, (h, width)),
                                     start=EXPECTED_RF[name] + 64, limit=EXPECTED_RF[name] + 256)
    last = analysis.rows[-1]
    assert last.field.size == EXPECTED_RF[name] and last.field.jump == 32
    dtype = PROBE_DTYPE.get(name, torch.float32)
    probe = positive_copy(model, dtype)
    shapes: dict[str, tuple[int, ...]] = {}

    def record(key: str):
        def hook(module, args, out) -> None:
            shapes.setdefault(key, tuple(out.shape[-2:]))
        return hook

    hooks = [m.register_forward_hook(record(key)) for key, m in probe.named_modules()
             if isinstance(m, nn.Conv2d | nn.AvgPool2d)]
    x = torch.full((1, channels, n, width), 1e-3, dtype=dtype)
    unit = (last.height // 2, last.width // 2)
    rows, cols = support(rf.unit_probe(probe, last.name), x, unit)
    for h in hooks:
        h.remove()
    u = rf.unit_field(analysis, last.name, unit)
    assert rows == u.rows  # the whole field, first pixel included
    assert cols == u.clipped_cols
    layer_rows = {r.name: (r.height, r.width) for r in analysis.rows if r.layer is not None}
    assert shapes == layer_rows  # every conv/pool output size equals torch's


def test_resnet_shortcut_paths_alone_give_the_shortest_field(nets):
    """Zero every residual branch: only the shortcut paths remain, and their field is the table's shortest path."""
    model = positive_copy(nets["resnet18"])
    with torch.no_grad():
        for name, m in model.named_modules():
            if name.startswith("layer") and name.endswith(("conv1", "conv2")):
                m.weight.zero_()
    analysis = rf.analyse_module(nets["resnet18"], (256, 32))
    last = analysis.rows[-1]
    shortest = min(f.size for f, _ in last.paths)
    rows, _ = support(rf.unit_probe(model, last.name), torch.full((1, 3, 256, 32), 1e-3), (last.height // 2, 0))
    assert rows[1] - rows[0] + 1 == shortest == 11  # 7x7/2 conv then 3x3/2 pool: 7 + 2*2; 1x1/2 shortcuts add 0
    assert last.field.size == 435


class _TwoBranches(nn.Module):
    """1x1/2 and 2x2/2 branches added: same output size, centres half a pixel apart."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 1, 1, stride=2)
        self.b = nn.Conv2d(1, 1, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(x)


def test_misaligned_paths_are_reported_and_united():
    row = rf.analyse_module(_TwoBranches(), 16).row("add")
    assert {f.size for f, _ in row.paths} == {1, 2}
    assert not row.aligned and "misaligned" in row.note() and "0.5 px" in row.note()
    assert row.field == rf.Field(size=2, jump=2, start=0)
    rows, cols = support(positive_copy(_TwoBranches()), torch.ones(1, 1, 16, 16), (3, 3))
    assert rows == cols == row.field.span(3)


def test_densenet_concatenations_keep_every_path(nets):
    analysis = rf.analyse_module(nets["densenet121"], 224)
    names = {r.name for r in analysis.rows}
    assert "features.denseblock1.denselayer1.cat" not in names  # a concatenation of one tensor merges nothing
    assert [(f.size, n) for f, n in analysis.row("features.denseblock1.denselayer2.cat").paths] == [(19, 1), (11, 1)]
    cat = analysis.row("features.denseblock1.denselayer3.cat")
    # inputs: pool0 (11 px), layer1 (19), layer2 (on pool0 and layer1: 19, 27) -> 11, 19, 19, 27
    assert [(f.size, n) for f, n in cat.paths] == [(27, 1), (19, 2), (11, 1)]
    assert analysis.rows[-1].n_paths == 2 ** 58  # each of the 58 dense layers doubles the paths
    assert "paths disagree" in cat.note() and "same pixel" in cat.note()


# ---------------------------------------------------------------- published values (Araujo et al. 2019, TF-Slim)

# (torchvision node, RF, effective stride, effective padding) for vgg_16 end-points, Araujo et al.'s table
VGG16_TABLE = [("features.0", 3, 1, 1), ("features.4", 6, 2, 2), ("features.5", 10, 2, 4), ("features.9", 16, 4, 6),
               ("features.10", 24, 4, 10), ("features.12", 32, 4, 14), ("features.16", 44, 8, 18),
               ("features.17", 60, 8, 26), ("features.19", 76, 8, 34), ("features.23", 100, 16, 42),
               ("features.24", 132, 16, 58), ("features.26", 164, 16, 74), ("features.30", 212, 32, 90)]
# alexnet_v2: torchvision pads conv1 by 2 where TF-Slim uses VALID, so every effective padding is 2 larger
ALEXNET_TABLE = [("features.0", 11, 4, 0), ("features.2", 19, 8, 0), ("features.3", 51, 8, 16),
                 ("features.6", 99, 16, 32), ("features.8", 131, 16, 48), ("features.10", 163, 16, 64),
                 ("features.12", 195, 32, 64)]


@pytest.mark.parametrize(("name", "table", "extra_padding"), [("vgg16", VGG16_TABLE, 0), ("alexnet", ALEXNET_TABLE, 2)])
def test_published_values(name, table, extra_padding, nets):
    analysis = rf.analyse_module(nets[name], 224)
    got = [(node, analysis.row(node).field.size, analysis.row(node).field.jump, -analysis.row(node).field.start)
           for node, *_ in table]
    assert got == [(node, size, jump, pad + extra_padding) for node, size, jump, pad in table]


# ---------------------------------------------------------------- effective receptive field


@pytest.fixture(scope="module")
def resnet_inputs() -> torch.Tensor:
    return torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(0))


def test_erf_equals_a_hook_based_gradient(nets, resnet_inputs):
    model = nets["resnet18"]
    node, unit = "layer2.0.conv1", (5, 7)
    erf = rf.effective_receptive_field(rf.unit_probe(model, node), resnet_inputs, unit)
    captured = {}
    hook = model.get_submodule(node).register_forward_hook(lambda m, a, out: captured.setdefault("out", out))
    x = resnet_inputs.clone().requires_grad_(True)
    model(x)
    hook.remove()
    (grad,) = torch.autograd.grad(captured["out"][:, :, unit[0], unit[1]].sum(), x)
    maps = grad.abs().sum(1).double()
    expected = (maps / maps.sum((1, 2), keepdim=True)).mean(0).numpy()
    np.testing.assert_allclose(erf, expected, rtol=1e-5, atol=1e-12)
    assert erf.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("device", DEVICES)
def test_erf_on_every_device_matches_the_cpu(device, nets):
    """The probe and inputs on ``device``: same map as on the CPU, returned as a CPU array."""
    model, node, unit = nets[zoo.BUNDLED], "layer2.1.add", (3, 4)
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    on_cpu = rf.effective_receptive_field(rf.unit_probe(model, node), x, unit)
    on_device = rf.effective_receptive_field(rf.unit_probe(copy.deepcopy(model), node).to(device), x.to(device), unit)
    assert isinstance(on_device, np.ndarray) and on_device.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(on_device, on_cpu, atol=1e-6)


@pytest.mark.parametrize("name", list(zoo.LESSON_ARCHITECTURES))
def test_erf_never_leaves_the_theoretical_field(name, nets):
    prep = zoo.architecture_preprocessing(name)
    size = 64  # small: the check is exact at any size (AlexNet needs 63 px)
    analysis = rf.analyse_module(nets[name], size)
    node = analysis.rows[len(analysis.rows) * 2 // 3].name  # a middle-deep node, so the field fits partly inside
    row = analysis.row(node)
    unit = (row.height // 2, row.width // 3)
    x = torch.randn(2, prep.channels, size, size, generator=torch.Generator().manual_seed(1))
    erf = rf.effective_receptive_field(rf.unit_probe(nets[name], node), x, unit)
    summary = rf.summarise_erf(erf, rf.unit_field(analysis, node, unit), 0.9)
    assert summary.inside_box == pytest.approx(1.0, abs=1e-12)
    assert summary.radius > 0
    assert summary.size_ratio == pytest.approx(2 * summary.radius / analysis.row(node).field.size)


def test_trained_and_random_erf_of_the_bundled_model_differ():
    name = zoo.BUNDLED
    prep = zoo.architecture_preprocessing(name)
    trained = zoo.trained_architecture(name)
    random = zoo.build_architecture(name)
    analysis = rf.analyse_module(random, prep.size)
    node = "layer3.1.add"
    row = analysis.row(node)
    unit = (row.height // 2, row.width // 2)
    field = rf.unit_field(analysis, node, unit)
    x = torch.randn(2, 1, prep.size, prep.size, generator=torch.Generator().manual_seed(2))
    maps = {kind: rf.effective_receptive_field(rf.unit_probe(m, node), x, unit)
            for kind, m in (("trained", trained), ("random", random))}
    for erf in maps.values():
        assert rf.summarise_erf(erf, field).inside_box == pytest.approx(1.0, abs=1e-12)
    assert not np.allclose(maps["trained"], maps["random"])


def test_untrained_bundled_model_has_its_residual_branches_switched_on():
    model = zoo.build_architecture(zoo.BUNDLED)
    assert all(float(m.weight.detach().min()) == 1.0 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_imagenet_weights_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ModelUnavailable, match="never downloads"):
        zoo.trained_architecture("resnet18")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_mass_radius_matches_the_rayleigh_quantile_of_a_gaussian(fraction):
    sigma, n = 12.0, 201
    yy, xx = np.indices((n, n))
    gauss = np.exp(-((yy - 100) ** 2 + (xx - 100) ** 2) / (2 * sigma ** 2))
    expected = sigma * math.sqrt(-2 * math.log(1 - fraction))
    assert rf.mass_radius(gauss, (100.0, 100.0), fraction) == pytest.approx(expected, abs=1.0)


def test_mass_radius_of_a_delta_is_zero_and_bad_fractions_raise():
    delta = np.zeros((9, 9))
    delta[4, 4] = 1
    assert rf.mass_radius(delta, (4.0, 4.0), 0.99) == 0.0
    with pytest.raises(ValueError, match="fraction"):
        rf.mass_radius(delta, (4.0, 4.0), 1.5)


# ---------------------------------------------------------------- 1-D view and dilation


def polynomial_counts(layers: list[rf.LayerSpec]) -> np.ndarray:
    """Paths from each input position: coefficients of the product of dilated all-ones kernels (stride 1)."""
    counts = np.ones(1, dtype=np.int64)
    for la in layers:
        taps = np.zeros(la.effective_kernel, dtype=np.int64)
        taps[::la.dilation] = 1
        counts = np.convolve(counts, taps)
    return counts


@pytest.mark.parametrize("schedule", rf.SCHEDULES)
@pytest.mark.parametrize("kernel", [2, 3])
def test_contributions_equal_polynomial_coefficients(schedule, kernel):
    layers = rf.dilation_stack(schedule, 4, kernel)
    contrib = rf.contributions_1d(layers)
    np.testing.assert_array_equal(contrib.counts[0], polynomial_counts(layers))
    assert contrib.counts[-1].tolist() == [1]
    assert len(contrib.counts[0]) == rf.stack_fields(layers)[-1].size
    assert contrib.centres[-1].tolist() == [(len(contrib.counts[0]) - 1) / 2]


def test_contributions_show_gridding_holes_for_constant_dilation():
    counts = rf.contributions_1d(rf.dilation_stack("constant", 3, 3, rate=2)).counts[0]
    assert (counts[1::2] == 0).all() and (counts[::2] > 0).all()  # odd pixels never reach the unit


def test_contributions_with_strides_count_paths():
    layers = [rf.LayerSpec("conv", 3, 2), rf.LayerSpec("conv", 3, 1)]
    # output unit sees layer-1 units 0,1,2, each seeing input 2u..2u+2: counts 1,1,2,1,2,1,1
    assert rf.contributions_1d(layers).counts[0].tolist() == [1, 1, 2, 1, 2, 1, 1]


def test_growth_of_dilated_stacks_matches_yu_and_koltun():
    growth = rf.growth_table(5)
    assert growth["none"] == [2 * depth + 1 for depth in range(1, 6)]
    assert growth["constant"] == [4 * depth + 1 for depth in range(1, 6)]
    assert growth["exponential"] == [2 ** (depth + 1) - 1 for depth in range(1, 6)]  # (2^(i+2) - 1) in their indexing
