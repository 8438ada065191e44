"""The compiled fast paths of pooling and the fused ReLU + max pooling equal the NumPy reference.

Each case runs with Numba on (when installed) and off, by monkeypatching ``cnnkit.ops._jit.numba_available``,
in float32 and float64, channels-last and NCHW memory; values and routed gradients must be identical.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.ops.policy as policy
from cnnkit.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from cnnkit.models import Sequential
from cnnkit.ops import _jit
from cnnkit.ops import pool as P
from cnnkit.utils.memory import keep_freed_memory

HAVE_NUMBA = _jit.numba_available()
REAL_AVAILABLE = _jit.numba_available


def _set_numba(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    monkeypatch.setattr(_jit, "numba_available", REAL_AVAILABLE if on else (lambda: False))


@pytest.fixture(autouse=True)
def _small_inputs_take_the_fast_path(monkeypatch):

    monkeypatch.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)


def _channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _reference(fn, monkeypatch, *args):
    _set_numba(monkeypatch, False)
    try:
        return fn(*args)
    finally:
        _set_numba(monkeypatch, True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw", [(8, 8), (9, 7)])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("numba_on", [False, True])
def test_max_pool_fast_path_equals_reference(monkeypatch, dtype, hw, fused, numba_on):
    if numba_on and not HAVE_NUMBA:
        pytest.skip("Numba not installed")
    rng = np.random.default_rng(1)
    x = _channels_last(rng.standard_normal((3, 20, *hw)).astype(dtype))
    x[0, :, :2, :2] = 0.5  # a tie in every channel of one window: the first tap wins
    x[1, :, :2, :2] = -0.5  # a window with a negative maximum: ReLU zeroes it
    fwd, bwd = (
        (P.relu_max_pool2d_forward, P.relu_max_pool2d_backward)
        if fused
        else (P.max_pool2d_forward, P.max_pool2d_backward)
    )
    _set_numba(monkeypatch, numba_on)
    out, cache = fwd(x, 2)
    assert isinstance(cache, P.FastMaxPoolCache) == numba_on
    assert out.dtype == dtype
    dy = rng.standard_normal(out.shape).astype(dtype)
    dx = bwd(dy, cache)
    dx_nchw_dout = bwd(np.ascontiguousarray(dy), cache)  # dout in the other memory layout
    # the unfused NumPy reference: relu, then max pooling
    x_in = np.maximum(x, 0) if fused else x
    ref_out, ref_cache = _reference(P.max_pool2d_forward, monkeypatch, x_in, 2)
    ref_dx = _reference(P.max_pool2d_backward, monkeypatch, dy, ref_cache)
    if fused:
        ref_dx = ref_dx * (x > 0)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(dx, ref_dx)
    np.testing.assert_array_equal(dx_nchw_dout, ref_dx)
    assert dx.shape == x.shape


@pytest.mark.skipif(not HAVE_NUMBA, reason="Numba not installed")
def test_fast_cache_backward_without_numba(monkeypatch):
    """A cache made by the compiled forward still works when Numba is switched off before backward."""
    rng = np.random.default_rng(2)
    x = _channels_last(rng.standard_normal((2, 16, 6, 6)).astype(np.float32))
    out, cache = P.relu_max_pool2d_forward(x, 2)
    dy = rng.standard_normal(out.shape).astype(np.float32)
    fast = P.relu_max_pool2d_backward(dy, cache)
    _set_numba(monkeypatch, False)
    np.testing.assert_array_equal(P.relu_max_pool2d_backward(dy, cache), fast)


@pytest.mark.parametrize("numba_on", [False, True])
def test_sequential_fuses_relu_and_max_pool_exactly(monkeypatch, numba_on):
    if numba_on and not HAVE_NUMBA:
        pytest.skip("Numba not installed")
    _set_numba(monkeypatch, numba_on)
    layers = [Conv2D(16, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(5)]
    model = Sequential(layers, input_shape=(3, 8, 8), seed=0, dtype=np.float64)
    x = np.random.default_rng(3).standard_normal((4, 3, 8, 8))
    dy = np.random.default_rng(4).standard_normal((4, 5))
    _assert_model_equals_unfused_layers(model, layers, x, dy)


def _assert_model_equals_unfused_layers(model, layers, x, dy, check=None) -> None:
    """The model's forward/backward (ReLU + max pooling fused) equal its layers run one by one.

    ``check(layers)`` runs right after the model's forward pass (to inspect the fused caches).
    """
    out = model.forward(x, True)
    if check is not None:
        check(layers)
    dx = model.backward(dy)
    grads = {k: v.copy() for k, v in layers[0].grads.items()}
    h = x
    for layer in layers:
        h = layer.forward(h, True)
    d = dy
    for layer in reversed(layers):
        d = layer.backward(d)
    np.testing.assert_allclose(out, h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, d, rtol=1e-12, atol=1e-12)
    for key, value in layers[0].grads.items():
        np.testing.assert_allclose(grads[key], value, rtol=1e-12, atol=1e-12)


def test_needs_input_grad_property_reaches_first_child():
    class Probe(ReLU):
        needs_input_grad = True

    probe = Probe()
    model = Sequential([probe, Flatten(), Dense(2)], input_shape=(4,), seed=0)
    assert probe.needs_input_grad is True  # default: nested Sequentials and gradcheck need dx
    model.needs_input_grad = False
    assert probe.needs_input_grad is False and model.needs_input_grad is False


def test_keep_freed_memory_is_idempotent():
    first = keep_freed_memory()
    assert isinstance(first, bool)
    assert keep_freed_memory() is first


def _planar(x: np.ndarray) -> np.ndarray:
    """``x`` with (C, N, H, W) memory: what a convolution of grey or RGB images returns."""
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw", [(8, 8), (9, 7), (28, 28), (6, 33), (4, 34), (32, 32), (7, 16)])
@pytest.mark.parametrize("fused", [False, True])
def test_planar_max_pool_kernel_equals_reference(monkeypatch, dtype, hw, fused):
    """Planar input: whole-vector rows (OW 16, 8: read in place), padded rows (OW 3, 14, 17), odd sizes,
    ties, infinities."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 6, *hw)).astype(dtype)
    x[0, :, :2, :2] = 0.5  # a tie in every channel of one window: the first tap wins
    x[1, :, :2, :2] = -0.5  # a negative maximum: ReLU zeroes it
    x[2, 1, 1, 1] = np.inf
    x[2, 2, 0, 0] = -np.inf
    x = _planar(x)
    fwd, bwd = (
        (P.relu_max_pool2d_forward, P.relu_max_pool2d_backward)
        if fused
        else (P.max_pool2d_forward, P.max_pool2d_backward)
    )
    out, cache = fwd(x, 2)
    assert isinstance(cache, P.FastMaxPoolCache) and cache.planar
    assert out.transpose(0, 2, 3, 1).flags.c_contiguous  # channels-last, for the next convolution
    dy = rng.standard_normal(out.shape).astype(dtype)
    dx = bwd(dy, cache)
    assert dx.transpose(1, 0, 2, 3).flags.c_contiguous  # planar, for the convolution's backward
    for other in (np.ascontiguousarray(dy), _channels_last(dy), _planar(dy)):
        np.testing.assert_array_equal(bwd(other, cache), dx)
    x_in = np.maximum(x, 0) if fused else x
    ref_out, ref_cache = _reference(P.max_pool2d_forward, monkeypatch, np.ascontiguousarray(x_in), 2)
    ref_dx = _reference(P.max_pool2d_backward, monkeypatch, dy, ref_cache)
    if fused:
        ref_dx = ref_dx * (x > 0)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(dx, ref_dx)
    _set_numba(monkeypatch, False)  # Numba switched off between forward and backward: same routing
    np.testing.assert_array_equal(bwd(dy, cache), dx)


def test_planar_convolution_feeds_the_planar_pooling_kernels():
    """conv (3 channels: planar) -> ReLU -> MaxPool2D in a model: same as the layers run unfused."""
    layers = [Conv2D(8, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(4)]
    model = Sequential(layers, input_shape=(3, 14, 14), seed=0, dtype=np.float64)
    x = np.random.default_rng(6).standard_normal((5, 3, 14, 14))
    dy = np.random.default_rng(7).standard_normal((5, 4))

    def planar_pooling(layers):
        fused = model.children()["0"]  # the fused layer owns the caches; the layers it wraps keep none
        assert type(fused).__name__ == "ConvReLUMaxPool2D" and layers[2]._cache is None
        _, pool_cache = fused._cache
        assert pool_cache.planar

    _assert_model_equals_unfused_layers(model, layers, x, dy, check=planar_pooling)


@pytest.mark.parametrize("layout", ["planar", "channels_last"])
@pytest.mark.parametrize("fused", [False, True])
def test_compiled_max_pool_kernels_nan(fused, layout):
    """A NaN propagates to the window's output (fused too, as relu then max pooling gives); the window's
    gradient goes to its first NaN, or nowhere after the fused ReLU (whose derivative there is 0)."""
    x = np.arange(2 * 16 * 4 * 6, dtype=np.float32).reshape(2, 16, 4, 6)
    x[1, 2, 0, 3] = np.nan  # window (0, 1): taps (0, 2) (0, 3) (1, 2) (1, 3) -> the second tap
    x[1, 2, 1, 2] = np.nan
    x = _planar(x) if layout == "planar" else _channels_last(x)
    fwd, bwd = (
        (P.relu_max_pool2d_forward, P.relu_max_pool2d_backward)
        if fused
        else (P.max_pool2d_forward, P.max_pool2d_backward)
    )
    out, cache = fwd(x, 2)
    assert cache.planar == (layout == "planar")
    assert np.isnan(out[1, 2, 0, 1]) and np.isnan(out).sum() == 1
    dx = bwd(np.ones_like(out), cache)
    assert dx[1, 2, 0, 3] == (0 if fused else 1) and dx[1, 2, 1, 2] == 0 and dx[1, 2, 1, 3] == 0
    assert dx.sum() == out.size - fused  # one gradient per window (positive maxima: ReLU passes them)
