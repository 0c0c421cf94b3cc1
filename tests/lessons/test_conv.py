"""Convolution lesson maths against torch: sizes, padding, filtering, the hand-computed cells, costs."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from core.lessons import conv


def torch_conv(x, w, stride=1, dilation=1, padding=0, fill="zeros", bias=None):
    """The reference: an nn.Conv2d-equivalent call with symmetric padding handled by torch itself."""
    xt = torch.as_tensor(np.asarray(x, np.float64)).reshape(1, -1, *np.shape(x)[-2:])
    wt = torch.as_tensor(np.asarray(w, np.float64))
    wt = wt.reshape(1, 1, *wt.shape) if wt.ndim == 2 else wt
    if fill != "zeros" and padding:
        xt = F.pad(xt, (padding,) * 4, mode=fill)
        padding = 0
    bt = None if bias is None else torch.as_tensor(np.asarray(bias, np.float64))
    return F.conv2d(xt, wt, bt, stride=stride, dilation=dilation, padding=padding)[0].numpy()


@pytest.mark.parametrize(("n", "k", "s", "p", "d"),
                         [c for c in itertools.product([5, 12], [1, 2, 3, 5], [1, 2, 3], [0, 1, 2], [1, 2, 3])
                          if c[0] + 2 * c[3] >= c[4] * (c[1] - 1) + 1])
def test_output_size_matches_torch_shape(n, k, s, p, d):
    out = F.conv2d(torch.zeros(1, 1, n, n + 1), torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d)
    formula = conv.output_size_formula(n, k, s, p, d)
    assert (formula.n_out, conv.output_size(n + 1, k, s, p, d)) == tuple(out.shape[-2:])
    assert formula.text.endswith(f"= {formula.n_out}")
    assert f"{n} + 2·{p}" in formula.text and f"/ {s}⌋" in formula.text


def test_output_size_rejects_kernel_larger_than_input():
    with pytest.raises(ValueError, match="no window fits"):
        conv.output_size(4, 3, 1, 0, 2)  # dilated span 5 > 4


def test_formula_text_substitutes_numbers():
    f = conv.output_size_formula(7, 3, 2, 1, 1)
    assert f.text == "n_out = ⌊(7 + 2·1 − 1·(3−1) − 1) / 2⌋ + 1 = ⌊6/2⌋ + 1 = 4"
    assert r"\frac{7 + 2\cdot 1 - 1\cdot(3-1) - 1}{2}" in f.latex


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize(("k", "d"), [(3, 1), (4, 1), (3, 2), (5, 1), (2, 3)])
def test_same_padding_matches_torch_same_for_stride_one(k, d):
    x = np.random.default_rng(k * 10 + d).normal(size=(9, 11))
    w = np.random.default_rng(1).normal(size=(k, k))
    ours = conv.convolve(x, w, conv.ConvSettings(padding="same", dilation=d))
    ref = F.conv2d(torch.tensor(x)[None, None], torch.tensor(w)[None, None], padding="same", dilation=d)[0, 0]
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-12)


@pytest.mark.parametrize("s", [2, 3])
def test_same_padding_with_stride_gives_ceil(s):
    x = np.ones((10, 7))
    out = conv.convolve(x, np.ones((3, 3)), conv.ConvSettings(stride=s, padding="same"))
    assert out.shape == (-(-10 // s), -(-7 // s))


def test_full_padding_gives_n_plus_k_minus_1():
    x, w = np.random.default_rng(0).normal(size=(6, 6)), np.random.default_rng(1).normal(size=(3, 3))
    out = conv.convolve(x, w, conv.ConvSettings(padding="full"))
    np.testing.assert_allclose(out, torch_conv(x, w, padding=2)[0], atol=1e-12)
    assert out.shape == (8, 8)


@pytest.mark.parametrize(("fill", "mode", "stride", "dilation", "p"),
                         [(f, m, s, d, p) for f in conv.PAD_FILLS for m in ("valid", "custom")
                          for s, d, p in [(1, 1, 1), (2, 1, 2), (1, 2, 2), (3, 2, 1)]])
def test_playground_filter_equals_conv2d(fill, mode, stride, dilation, p):
    x = np.random.default_rng(3).random((12, 10))
    w = conv.kernel_preset("Sobel x")
    settings = conv.ConvSettings(stride, dilation, mode, p, fill)
    ours = conv.convolve(x, w, settings)
    ref = torch_conv(x, w, stride, dilation, p if mode == "custom" else 0, fill)[0]
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_padding_fills_match_numpy_pad_semantics():
    x = np.arange(12, dtype=float).reshape(3, 4)
    p = conv.Padding(1, 2, 2, 1)
    for fill, np_mode in [("zeros", "constant"), ("reflect", "reflect"), ("replicate", "edge"), ("circular", "wrap")]:
        np.testing.assert_array_equal(conv.pad(x, p, fill), np.pad(x, ((1, 2), (2, 1)), mode=np_mode))


def test_reflect_padding_too_large_is_a_clear_error():
    with pytest.raises(ValueError, match="Reflect padding must be smaller"):
        conv.pad(np.ones((3, 3)), conv.Padding(3, 3, 3, 3), "reflect")
    with pytest.raises(ValueError, match="Circular padding cannot exceed"):
        conv.pad(np.ones((3, 3)), conv.Padding(4, 4, 4, 4), "circular")


@pytest.mark.parametrize("name", conv.PRESETS)
def test_presets_filter_like_conv2d(name):
    x = np.random.default_rng(5).random((16, 16))
    w = conv.kernel_preset(name, 5 if name in conv.SIZED_PRESETS else 3)
    out = conv.convolve(x, w, conv.ConvSettings(padding="custom", custom_padding=w.shape[0] // 2, fill="replicate"))
    np.testing.assert_allclose(out, torch_conv(x, w, padding=w.shape[0] // 2, fill="replicate")[0], atol=1e-12)


def test_preset_properties():
    x = np.random.default_rng(0).random((8, 8))
    same = conv.ConvSettings(padding="same", fill="replicate")
    np.testing.assert_allclose(conv.convolve(x, conv.kernel_preset("identity", 5), same), x)
    assert conv.kernel_preset("Gaussian", 3).tolist() == (np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16).tolist()
    for name in ("box blur", "Gaussian", "sharpen"):
        assert conv.kernel_preset(name, 3).sum() == pytest.approx(1.0)  # keep flat regions unchanged
    for name in ("Sobel x", "Sobel y", "Laplacian"):
        assert conv.kernel_preset(name).sum() == 0  # zero response on flat regions
    ramp = np.tile(np.arange(8.0), (8, 1))  # brightness rises left to right
    assert np.all(conv.convolve(ramp, conv.kernel_preset("Sobel x"), conv.ConvSettings()) == 8)
    assert np.all(conv.convolve(ramp, conv.kernel_preset("Sobel y"), conv.ConvSettings()) == 0)
    with pytest.raises(ValueError, match="odd"):
        conv.kernel_preset("box blur", 4)


@pytest.mark.parametrize(("stride", "dilation", "fill"), [(1, 1, "zeros"), (2, 1, "reflect"), (1, 2, "circular"),
                                                          (2, 2, "replicate"), (3, 1, "zeros")])
def test_every_step_through_cell_equals_conv2d(stride, dilation, fill):
    grid = conv.small_grid(7, seed=stride + dilation)
    w = np.random.default_rng(2).integers(-2, 3, size=(3, 3)).astype(float)
    settings = conv.ConvSettings(stride, dilation, "custom", 2, fill)
    padded = conv.pad(grid, settings.padding_for(grid.shape, 3), fill)
    by_hand = conv.conv_by_hand(padded, w, stride=stride, dilation=dilation)[0]
    np.testing.assert_array_equal(by_hand, torch_conv(grid, w, stride, dilation, 2, fill)[0])
    cell = conv.cell_arithmetic(padded, w, by_hand.shape[0] - 1, 1, stride, dilation)
    assert cell.value == by_hand[-1, 1]
    assert len(cell.terms) == 9 and len(cell.window) == 9
    rows = sorted({r for r, _ in cell.window})
    assert np.all(np.diff(rows) == dilation) and rows[0] == (by_hand.shape[0] - 1) * stride
    assert cell.text().endswith(f"= {conv.fmt(cell.value)}")


def test_cs231n_example_shapes_values_and_cells():
    ex = conv.cs231n_example(seed=0)
    assert ex.x.shape == (3, 5, 5) and ex.padded.shape == (3, 7, 7) and ex.weights.shape == (2, 3, 3, 3)
    assert set(np.unique(ex.x)) <= {0, 1, 2} and set(np.unique(ex.weights)) <= {-1, 0, 1}
    assert ex.biases.tolist() == [1.0, 0.0]
    out = ex.output()
    ref = F.conv2d(torch.tensor(ex.x)[None], torch.tensor(ex.weights), torch.tensor(ex.biases), stride=2, padding=1)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out, ref[0].numpy())
    cell = conv.cell_arithmetic(ex.padded, ex.weights[1], 2, 1, stride=2, bias=ex.biases[1])
    assert cell.value == ref[0, 1, 2, 1].item()
    assert len(cell.channel_sums()) == 3 and len(cell.terms) == 27
    assert sum(cell.channel_sums()) + cell.bias == cell.value
    assert not np.array_equal(conv.cs231n_example(seed=1).x, ex.x)


def test_cell_outside_output_is_refused():
    with pytest.raises(ValueError, match="outside"):
        conv.cell_arithmetic(np.zeros((5, 5)), np.zeros((3, 3)), 3, 0)


def test_fmt():
    assert [conv.fmt(v) for v in (3.0, -2.0, 0.0625, -0.5, -1e-13)] == ["3", "(-2)", "0.0625", "(-0.5)", "0"]


def macs_of(module, h, w, c_in):
    """Multiply-adds counted by torch's own FLOP counter (it reports 2 FLOPs per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, c_in, h, w))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize(("c_in", "c_out", "k", "size"), [(32, 64, 3, 14), (3, 16, 5, 8), (64, 128, 3, 7)])
def test_costs_match_torch_modules(c_in, c_out, k, size):
    standard = nn.Conv2d(c_in, c_out, k, padding=k // 2)
    separable = nn.Sequential(nn.Conv2d(c_in, c_in, k, padding=k // 2, groups=c_in), nn.Conv2d(c_in, c_out, 1))
    ours_std = conv.standard_conv_cost(c_in, c_out, k, size, size)
    ours_sep = conv.depthwise_separable_cost(c_in, c_out, k, size, size)
    assert ours_std.params == sum(p.numel() for p in standard.parameters())
    assert ours_sep.params == sum(p.numel() for p in separable.parameters())
    assert ours_std.macs == macs_of(standard, size, size, c_in)
    assert ours_sep.macs == macs_of(separable, size, size, c_in)
    assert ours_sep.macs / ours_std.macs == pytest.approx(1 / c_out + 1 / k**2)  # MobileNet's ratio


def test_inception_two_3x3_versus_one_5x5():
    c, size = 48, 10
    five = nn.Conv2d(c, c, 5, padding=2, bias=False)
    two = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.Conv2d(c, c, 3, padding=1, bias=False))
    one_cost = conv.stacked_conv_cost(c, 5, 1, size, size, bias=False)
    two_cost = conv.stacked_conv_cost(c, 3, 2, size, size, bias=False)
    assert one_cost.params == sum(p.numel() for p in five.parameters())
    assert two_cost.params == sum(p.numel() for p in two.parameters())
    assert (one_cost.macs, two_cost.macs) == (macs_of(five, size, size, c), macs_of(two, size, size, c))
    assert two_cost.params / one_cost.params == pytest.approx(18 / 25)
    assert "receptive field 5" in two_cost.name and "receptive field 5" in one_cost.name


def test_for_display_ranges():
    out = np.array([[-2.0, 0.0], [1.0, 2.0]])
    assert conv.for_display(out, "rescale").tolist() == [[0.0, 0.5], [0.75, 1.0]]
    assert conv.for_display(out, "clip").tolist() == [[0.0, 0.0], [1.0, 1.0]]
    assert conv.for_display(out, "abs").tolist() == [[1.0, 0.0], [0.5, 1.0]]
    assert conv.for_display(np.ones((2, 2))).tolist() == [[0.0, 0.0], [0.0, 0.0]]
