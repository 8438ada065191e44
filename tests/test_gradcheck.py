"""gradcheck: central differences against hand-written gradients, layers and op pairs."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnkit import ConfigError, GradcheckError
from cnnkit.gradcheck import gradcheck, numerical_gradient
from cnnkit.layers.base import Layer

# --------------------------------------------------------------------------- plain functions


def test_numerical_gradient_of_cubic_matches_hand_derivative():
    # d/dx sum(x^3) = 3 x^2
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    grad = numerical_gradient(lambda: np.sum(x**3), x, eps=1e-5)
    np.testing.assert_allclose(grad, 3 * x**2, rtol=1e-8)
    np.testing.assert_array_equal(x, [[1.0, -2.0], [0.5, 3.0]])  # restored


def test_numerical_gradient_central_difference_is_second_order():
    # for f = sum(x^3) the central difference is exactly 3x^2 + h^2 (the h^2/6 * f''' term, f''' = 6)
    x = np.array([2.0])
    h = 1e-2
    grad = numerical_gradient(lambda: np.sum(x**3), x, eps=h)
    assert grad[0] == pytest.approx(12.0 + h**2, rel=1e-10)


def test_numerical_gradient_subset_leaves_others_zero():
    x = np.arange(6.0).reshape(2, 3)
    grad = numerical_gradient(lambda: np.sum(x**2), x, indices=[1, 4])
    expected = np.zeros_like(x)
    expected.flat[[1, 4]] = 2 * x.flat[[1, 4]]
    np.testing.assert_allclose(grad, expected, atol=1e-8)


def _matmul_forward(a, b):
    return a @ b, (a, b)


def _matmul_backward(dout, cache):
    a, b = cache
    return dout @ b.T, a.T @ dout


def _matmul_backward_wrong_db(dout, cache):
    a, b = cache
    return dout @ b.T, 2 * (a.T @ dout)


def test_pair_form_passes_for_correct_backward():
    rng = np.random.default_rng(1)
    assert gradcheck((_matmul_forward, _matmul_backward), rng.normal(size=(3, 4)), rng.normal(size=(4, 2)))


@settings(deadline=None, max_examples=20)
@given(m=st.integers(1, 4), k=st.integers(1, 4), n=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_pair_form_random_shapes(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(m, k)), rng.normal(size=(k, n))
    assert gradcheck((_matmul_forward, _matmul_backward), a, b, seed=seed)
    with pytest.raises(GradcheckError):
        gradcheck((_matmul_forward, _matmul_backward_wrong_db), a, b, seed=seed)


def test_pair_form_accepts_float32_inputs_and_checks_in_float64():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 4)).astype(np.float32)
    b = rng.normal(size=(4, 2)).astype(np.float32)
    assert gradcheck((_matmul_forward, _matmul_backward), a, b)
    assert a.dtype == np.float32  # the caller's arrays are not converted


def test_pair_form_names_the_broken_input_and_values():
    rng = np.random.default_rng(3)
    with pytest.raises(GradcheckError) as info:
        gradcheck(
            (_matmul_forward, _matmul_backward_wrong_db), rng.normal(size=(3, 4)), rng.normal(size=(4, 2))
        )
    message = str(info.value)
    assert "input 1" in message
    assert "worst at index" in message and "analytic" in message and "numerical" in message


def test_pair_form_reports_worst_element_exactly():
    # forward: y = x * c; the broken backward is wrong only at flat index 4, by +1
    c = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])

    def fwd(x):
        return x * c, None

    def bwd(dout, cache):
        g = dout * c
        g[4] += 1.0
        return g

    # R is drawn with seed 0 from a standard normal of the output's shape
    r = np.random.default_rng(0).standard_normal(6)
    with pytest.raises(GradcheckError) as info:
        gradcheck((fwd, bwd), np.ones(6))
    message = str(info.value)
    assert "1 of 6" in message
    assert "index (4,)" in message
    assert f"analytic {r[4] * 5 + 1:.10g}" in message


def test_pair_form_with_none_gradient_and_non_array_argument():
    def fwd(x, w, scale):
        return scale * np.tanh(x) * w, (x, w, scale)

    def bwd(dout, cache):
        x, w, scale = cache
        return dout * scale * (1 - np.tanh(x) ** 2) * w, None  # no gradient for w, none for scale

    rng = np.random.default_rng(4)
    assert gradcheck((fwd, bwd), rng.normal(size=5), rng.normal(size=5), 3.0)


def test_pair_form_with_keyword_arguments_bound_by_partial():
    def fwd(x, power=2):
        return x**power, (x, power)

    def bwd(dout, cache):
        x, power = cache
        return dout * power * x ** (power - 1)

    x = np.random.default_rng(5).uniform(0.5, 2.0, size=(2, 3))
    assert gradcheck((functools.partial(fwd, power=3), bwd), x)


def test_wrong_gradient_shape_is_reported():
    with pytest.raises(GradcheckError, match="shape"):
        gradcheck((lambda x: (2 * x, None), lambda d, c: 2 * d[:1]), np.ones(3))


def test_sampling_checks_only_the_requested_number_of_elements():
    calls = []

    def fwd(x):
        calls.append(1)
        return x**2, x

    assert gradcheck((fwd, lambda d, x: 2 * x * d), np.linspace(-1, 1, 1000), max_elements_per_tensor=7)
    assert len(calls) == 1 + 2 * 7


def test_sampling_is_seeded():
    def fwd(x):
        return x.copy(), None

    def bwd(dout, cache):
        g = dout.copy()
        g[::2] *= 3  # wrong at every even index
        return g

    outcomes = []
    for _ in range(2):
        with pytest.raises(GradcheckError) as info:
            gradcheck((fwd, bwd), np.ones(100), max_elements_per_tensor=5, seed=7)
        outcomes.append(str(info.value))
    assert outcomes[0] == outcomes[1]


def test_plain_function_is_rejected_with_explanation():
    with pytest.raises(ConfigError, match="no analytic gradient"):
        gradcheck(np.tanh, np.ones(3))


def test_bad_options_rejected():
    with pytest.raises(ConfigError):
        gradcheck((_matmul_forward, _matmul_backward), np.ones((2, 2)), np.ones((2, 2)), eps=0)
    with pytest.raises(ConfigError):
        gradcheck(
            (_matmul_forward, _matmul_backward), np.ones((2, 2)), np.ones((2, 2)), max_elements_per_tensor=0
        )


# --------------------------------------------------------------------------- layers (toy layers defined here)


class _GcAffine(Layer):
    """y = tanh(x * weight + bias), per-sample weight and bias: a toy layer with parameters."""

    def __init__(self, broken: str = "", **kwargs):
        super().__init__(**kwargs)
        self.broken = broken

    def build(self, input_shape):
        super().build(input_shape)
        rng = np.random.default_rng(0)
        self.params["weight"] = rng.normal(size=self.input_shape).astype(self.dtype)
        self.params["bias"] = rng.normal(size=self.input_shape).astype(self.dtype)

    def forward(self, x, training):
        y = np.tanh(x * self.params["weight"] + self.params["bias"])
        self._cache = (x, y)
        return y

    def backward(self, dy):
        x, y = self._cache
        dz = dy * (1 - y**2)
        self.grads["weight"] = (dz * x).sum(axis=0)
        self.grads["bias"] = dz.sum(axis=0) * (2.0 if self.broken == "bias" else 1.0)
        dx = dz * self.params["weight"]
        return 2 * dx if self.broken == "x" else dx


class _GcNoise(Layer):
    """y = x * m for a random mask m drawn in training: needs the rng state restored every pass."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._gen = np.random.default_rng(123)

    def rng_state(self):
        return self._gen.bit_generator.state

    def set_rng_state(self, state):
        self._gen.bit_generator.state = state

    def forward(self, x, training):
        mask = self._gen.uniform(0.5, 1.5, size=x.shape)
        self._cache = mask
        return x * mask

    def backward(self, dy):
        return dy * self._cache


def test_layer_form_passes_and_leaves_the_layer_untouched():
    layer = _GcAffine()
    x = np.random.default_rng(0).normal(size=(3, 2, 4)).astype(np.float32)
    assert gradcheck(layer, x)
    assert not layer.built  # checked on a copy
    layer.build((2, 4))
    weight = layer.params["weight"].copy()
    assert gradcheck(layer, x)
    assert layer.params["weight"].dtype == np.float32
    np.testing.assert_array_equal(layer.params["weight"], weight)


@pytest.mark.parametrize(("broken", "name"), [("x", "input x"), ("bias", "parameter 'bias'")])
def test_layer_form_names_the_broken_gradient(broken, name):
    x = np.random.default_rng(0).normal(size=(3, 5))
    with pytest.raises(GradcheckError) as info:
        gradcheck(_GcAffine(broken=broken), x)
    assert name in str(info.value)


def test_layer_form_can_skip_parameters():
    x = np.random.default_rng(0).normal(size=(3, 5))
    assert gradcheck(_GcAffine(broken="bias"), x, params=False)


def test_layer_form_freezes_training_randomness():
    x = np.random.default_rng(0).normal(size=(4, 6))
    layer = _GcNoise()
    state = layer.rng_state()
    assert gradcheck(layer, x)
    assert layer.rng_state() == state  # the caller's generator did not advance


def test_layer_form_needs_a_single_float_input():
    with pytest.raises(ConfigError):
        gradcheck(_GcAffine(), np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(TypeError):
        gradcheck(_GcAffine(), np.ones((2, 2), dtype=np.int64))


# --------------------------------------------------------------------------- the library's ops


def test_conv2d_op_pair():
    import cnnkit.ops.conv as ops

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 6, 5))
    w = rng.normal(size=(4, 3, 3, 3))
    b = rng.normal(size=4)
    fwd = functools.partial(ops.conv2d_forward, stride=2, padding=1)
    assert gradcheck((fwd, ops.conv2d_backward), x, w, b)


def test_conv2d_op_pair_broken_backward_detected():
    import cnnkit.ops.conv as ops

    rng = np.random.default_rng(0)

    def broken(dout, cache):
        dx, dw, db = ops.conv2d_backward(dout, cache)
        return dx, dw[:, :, ::-1, ::-1], db  # kernel gradient flipped: the classic convolution bug

    with pytest.raises(GradcheckError, match="input 1"):
        gradcheck(
            (ops.conv2d_forward, broken), rng.normal(size=(1, 2, 5, 5)), rng.normal(size=(3, 2, 3, 3)), None
        )
