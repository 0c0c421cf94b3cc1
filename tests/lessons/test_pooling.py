"""Pooling and strided-convolution backward passes against max_pool2d / avg_pool2d / conv2d and autograd."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.lessons import pooling

CASES = [(2, 2), (3, 1), (3, 2), (2, 1), (4, 1), (5, 1)]


def torch_pool(x, k, s, mode, upstream):
    """Forward output, flat argmax indices (max only) and the autograd input gradient."""
    xt = torch.tensor(x, dtype=torch.float64)[None, None].requires_grad_()
    if mode == "max":
        out, idx = F.max_pool2d(xt, k, s, return_indices=True)
    else:
        out, idx = F.avg_pool2d(xt, k, s), None
    (out * torch.tensor(upstream)[None, None]).sum().backward()
    return out[0, 0].detach().numpy(), idx, xt.grad[0, 0].numpy()


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize(("k", "s"), CASES)
def test_pooling_forward_and_backward_match_torch(mode, k, s):
    x = pooling.DEFAULT_GRID
    fwd = pooling.pool_forward(x, k, s, mode)
    upstream = np.arange(1.0, fwd.output.size + 1).reshape(fwd.output.shape)
    out, idx, grad = torch_pool(x, k, s, mode, upstream)
    np.testing.assert_allclose(fwd.output, out, atol=1e-12)
    if mode == "max":
        flat = [r * x.shape[1] + c for r, c in (w.argmax for w in fwd.windows)]
        assert flat == idx.flatten().tolist()
    steps = pooling.pool_backward(fwd, upstream)
    assert len(steps) == fwd.output.size
    np.testing.assert_allclose(steps[-1].grad_after, grad, atol=1e-12)


def test_default_grid_3x3_stride_1_accumulates_on_shared_maxima():
    fwd = pooling.pool_forward(pooling.DEFAULT_GRID, 3, 1, "max")
    assert fwd.output.tolist() == [[9, 8, 8], [9, 6, 6], [7, 7, 7]]
    steps = pooling.pool_backward(fwd, np.ones((3, 3)))
    grad = steps[-1].grad_after
    assert grad[1, 0] == 2 and grad[0, 2] == 2 and grad[2, 2] == 2 and grad[4, 1] == 2  # 9, 8, 6, 7 shared
    assert grad.sum() == 9  # every upstream unit lands somewhere
    np.testing.assert_array_equal(fwd.argmax_counts(), grad)
    # running sums are monotone snapshots: each step adds exactly its upstream value
    totals = [s.grad_after.sum() for s in steps]
    assert totals == list(range(1, 10))
    second_hit = next(i for i, s in enumerate(steps) if s.window.argmax == (1, 0) and i > 0)
    assert "1 + 1 = 2" in steps[second_hit].text(steps[second_hit - 1].grad_after)


def test_ties_route_to_first_max_in_row_major_order_like_torch():
    x = pooling.TIES_GRID
    fwd = pooling.pool_forward(x, 2, 2, "max")
    tied = pooling.tied_windows(fwd)
    assert [(w.out_row, w.out_col) for w in tied] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [w.argmax for w in tied] == [(0, 1), (0, 2), (3, 0), (2, 2)]
    _, _, grad = torch_pool(x, 2, 2, "max", np.ones((2, 2)))
    assert grad[0, 1] == 1 and grad[1, 0] == 0  # torch: first max (top row) wins, the tied one gets nothing
    np.testing.assert_array_equal(pooling.pool_backward(fwd, np.ones((2, 2)))[-1].grad_after, grad)
    assert "first maximum" in pooling.TIE_RULE


def test_constant_grid_all_ties_overlapping():
    x = np.full((4, 4), 7.0)
    fwd = pooling.pool_forward(x, 3, 1, "max")
    _, idx, grad = torch_pool(x, 3, 1, "max", np.ones((2, 2)))
    assert idx.flatten().tolist() == [0, 1, 4, 5]  # torch picks each window's top-left entry
    np.testing.assert_array_equal(pooling.pool_backward(fwd, np.ones((2, 2)))[-1].grad_after, grad)
    assert all(len(w.ties) == 9 for w in fwd.windows)


def test_avg_shares_are_equal_parts():
    fwd = pooling.pool_forward(pooling.DEFAULT_GRID, 2, 2, "avg")
    step = pooling.pool_backward(fwd, np.full((2, 2), 4.0))[0]
    assert [a for *_, a in step.shares] == [1.0, 1.0, 1.0, 1.0]
    assert "4 cells each += 1" in step.text(np.zeros((5, 5)))


def test_bad_upstream_shape_is_a_clear_error():
    fwd = pooling.pool_forward(pooling.DEFAULT_GRID, 2, 2, "max")
    with pytest.raises(ValueError, match="must match the pooled output: 2 x 2"):
        pooling.pool_backward(fwd, np.ones((3, 3)))


def autograd_conv(x, w, g, s):
    xt = torch.tensor(x)[None, None].requires_grad_()
    wt = torch.tensor(w)[None, None].requires_grad_()
    y = F.conv2d(xt, wt, stride=s)
    (y * torch.tensor(g)[None, None]).sum().backward()
    return y[0, 0].detach().numpy(), xt.grad[0, 0].numpy(), wt.grad[0, 0].numpy()


@pytest.mark.parametrize(("n", "k", "s"), [(5, 3, 2), (6, 3, 2), (7, 3, 3), (8, 2, 2), (7, 4, 1), (9, 3, 4)])
def test_strided_conv_backward_equals_autograd_and_finite_differences(n, k, s):
    x, w, g = pooling.strided_example(n, k, s, seed=n + k + s)
    result = pooling.strided_conv_backward(x, w, g, s)
    y, gx, gw = autograd_conv(x, w, g, s)
    np.testing.assert_allclose(result.output, y, atol=1e-12)
    np.testing.assert_allclose(result.grad_input, gx, atol=1e-12)
    np.testing.assert_allclose(result.grad_weight, gw, atol=1e-12)
    assert result.padded_upstream.shape == (n + k - 1, n + k - 1)
    assert result.uncovered == (n - k) % s
    if result.uncovered:
        assert not result.grad_input[-result.uncovered:].any()  # rows no window reached get no gradient
    check = pooling.finite_difference_check(result)
    assert check.max_error_input < 1e-8 and check.max_error_weight < 1e-8
    np.testing.assert_allclose(check.grad_input, gx, atol=1e-8)


def test_dilate_inserts_zeros():
    assert pooling.dilate(np.array([[1, 2], [3, 4]]), 3).tolist() == [[1, 0, 0, 2], [0, 0, 0, 0], [0, 0, 0, 0],
                                                                        [3, 0, 0, 4]]
