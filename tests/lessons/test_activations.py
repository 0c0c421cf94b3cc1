"""Closed-form activation values and derivatives against torch and autograd; softmax; depth products."""

import numpy as np
import pytest
import torch

from core.lessons import activations as A

# includes exactly 0 (where ReLU-likes switch) and far tails (where sigmoid-likes saturate)
X = np.concatenate([np.linspace(-12, 12, 481), [0.0, -1e-9, 1e-9, 30.0, -30.0]])


def autograd_derivative(fn, x):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = fn(xt)
    (dx,) = torch.autograd.grad(y.sum(), xt)  # elementwise: d(sum f(x_i))/dx_i = f'(x_i)
    return y.detach().numpy(), dx.numpy()


@pytest.mark.parametrize("name", A.NAMES)
@pytest.mark.parametrize("params", [{}, {"alpha": 0.2, "elu_alpha": 0.5, "beta": 2.0}])
def test_values_and_derivatives_equal_autograd(name, params):
    act = A.activation(name, **params)
    y, dy = autograd_derivative(act.torch_fn, X)
    np.testing.assert_allclose(act.f(X), y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(act.df(X), dy, rtol=1e-9, atol=1e-12)


def test_relu_derivative_at_zero_follows_pytorch():
    _, relu = autograd_derivative(torch.relu, np.array([0.0]))
    _, leaky = autograd_derivative(lambda t: torch.nn.functional.leaky_relu(t, 0.1), np.array([0.0]))
    assert A.activation("ReLU").df(np.array([0.0]))[0] == relu[0] == 0.0
    assert A.activation("leaky ReLU", alpha=0.1).df(np.array([0.0]))[0] == leaky[0] == pytest.approx(0.1)


def test_sigmoid_slope_never_exceeds_a_quarter():
    assert A.activation("sigmoid").df(X).max() == pytest.approx(0.25)


def test_saturation_intervals():
    sig = A.saturation_intervals(A.activation("sigmoid"), threshold=0.05)
    assert len(sig) == 2 and sig[0][0] == -6 and sig[1][1] == 6
    edge = np.log((1 + np.sqrt(1 - 0.2)) / (1 - np.sqrt(1 - 0.2)))  # σ'(x) = 0.05 solved for x
    assert sig[1][0] == pytest.approx(edge, abs=0.01) and sig[0][1] == pytest.approx(-edge, abs=0.01)
    assert A.saturation_intervals(A.activation("ReLU")) == [(-6.0, 0.0)]
    assert A.saturation_intervals(A.activation("leaky ReLU", alpha=0.1)) == []
    assert A.saturation_intervals(A.activation("GELU"), threshold=1e-3)[0][0] == -6.0


@pytest.mark.parametrize("temperature", [0.25, 1.0, 3.0])
def test_softmax_and_jacobian_equal_torch(temperature):
    z = np.array([2.0, 1.0, 0.1, -1.5])
    zt = torch.tensor(z, requires_grad=True)
    ref = torch.softmax(zt / temperature, dim=0)
    np.testing.assert_allclose(A.softmax(z, temperature), ref.detach().numpy(), atol=1e-12)
    jac = torch.autograd.functional.jacobian(lambda t: torch.softmax(t / temperature, dim=0), zt)
    np.testing.assert_allclose(A.softmax_jacobian(z, temperature), jac.numpy(), atol=1e-12)


def test_temperature_limits_and_entropy():
    z = np.array([3.0, 1.0, 0.0])
    assert A.entropy_bits(A.softmax(z, 0.01)) < 1e-6 < A.entropy_bits(A.softmax(z, 1.0))
    assert A.entropy_bits(A.softmax(z, 1e4)) == pytest.approx(np.log2(3), abs=1e-3)
    with pytest.raises(ValueError, match="positive"):
        A.softmax(z, 0.0)


@pytest.mark.parametrize("name", A.NAMES)
def test_chain_product_equals_autograd_of_the_composed_chain(name):
    act = A.activation(name)
    weights, biases = A.chain_parameters(12, weight=1.3, bias_std=1.0, seed=4)
    result = A.scalar_chain(act, weights, biases, x0=0.7)
    a0 = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    a, grads = a0, []
    for w, b in zip(weights, biases, strict=True):
        a = act.torch_fn(w * a + b)
        grads.append(torch.autograd.grad(a, a0, retain_graph=True)[0].item())
    np.testing.assert_allclose(result.product, grads, rtol=1e-9, atol=1e-300)


def test_sigmoid_vanishes_where_relu_does_not():
    weights, biases = A.chain_parameters(20, weight=1.0, bias_std=0.0)
    sig = A.scalar_chain(A.activation("sigmoid"), weights, biases, x0=0.0)
    relu = A.scalar_chain(A.activation("ReLU"), weights, biases, x0=1.0)
    assert sig.product[-1] < 0.25**20 * 1.0001
    assert relu.product[-1] == 1.0


def test_layer_gradient_norms_match_init_story():
    sig = A.layer_gradient_norms(A.activation("sigmoid"), depth=12, gain=A.init_gain("sigmoid"))
    relu = A.layer_gradient_norms(A.activation("ReLU"), depth=12, gain=A.init_gain("ReLU"))
    assert sig[0] / sig[-1] < 1e-4  # sigmoid: first layer learns ten thousand times slower
    assert 0.05 < relu[0] / relu[-1] < 20  # He init + ReLU: same order of magnitude through depth
    state = torch.random.get_rng_state()
    again = A.layer_gradient_norms(A.activation("sigmoid"), depth=12, gain=A.init_gain("sigmoid"))
    np.testing.assert_array_equal(sig, again)  # seeded
    assert torch.equal(state, torch.random.get_rng_state())  # without touching the global stream
    assert A.init_gain("ReLU") == pytest.approx(np.sqrt(2)) and A.init_gain("tanh") == pytest.approx(5 / 3)


def test_unknown_activation():
    with pytest.raises(ValueError, match="Unknown activation"):
        A.activation("swishy")
