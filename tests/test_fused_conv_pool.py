"""Convolution -> ReLU -> 2x2 max pooling in one pass (cnnkit.ops.fused) against the three ops one by one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnkit.ops._pool_kernels as pool_kernels
import cnnkit.ops.winograd as winograd
from cnnkit.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from cnnkit.models import Sequential
from cnnkit.ops import conv2d_backward, conv2d_forward
from cnnkit.ops._conv_kernels import col2im_rows_kernel
from cnnkit.ops._jit import numba_available
from cnnkit.ops.fused import conv2d_relu_max_pool2d_forward
from cnnkit.ops.pool import relu_max_pool2d_backward, relu_max_pool2d_forward

POOL = ((2, 2), (2, 2), (0, 0), (1, 1))


def _unfused(x, w, b, padding):
    out, conv_cache = conv2d_forward(x, w, b, padding=padding)
    pooled, pool_cache = relu_max_pool2d_forward(out, 2)
    return pooled, conv_cache, pool_cache


def _backward(dout, conv_cache, pool_cache):
    return conv2d_backward(relu_max_pool2d_backward(dout, pool_cache), conv_cache)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(16, 18),
    f=st.integers(16, 18),
    h=st.integers(2, 13),
    w=st.integers(2, 13),
    padding=st.sampled_from([0, 1, 2, (0, 1, 2, 0)]),
    bias=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**31),
)
def test_equals_the_three_ops_bit_for_bit(n, c, f, h, w, padding, bias, dtype, seed):
    """Odd sizes (the floor rule, half-used tiles), every padding, both dtypes: the same values, taps
    and gradients as the unfused Winograd convolution followed by the compiled pooling."""
    pad4 = padding if isinstance(padding, tuple) else (padding,) * 4
    if min(h + pad4[0] + pad4[1], w + pad4[2] + pad4[3]) < 4:
        return  # an output smaller than 2x2: the fused op declines (tested below)
    mp = pytest.MonkeyPatch()
    mp.setattr(winograd, "MIN_ELEMENTS", 0)
    mp.setattr(winograd, "CHANNELS_PER_TILE", 1 << 20)
    mp.setattr(pool_kernels, "MIN_ELEMENTS", 0)  # the unfused pooling takes its compiled kernel too
    try:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        x[x > 2.5] = np.nan  # NaNs too: they win their window and stay NaN
        wt = rng.standard_normal((f, c, 3, 3)).astype(dtype)
        b = rng.standard_normal(f).astype(dtype) if bias else None
        fused = conv2d_relu_max_pool2d_forward(x, wt, b, padding, POOL)
        assert fused is not None
        out, conv_cache, pool_cache = fused
        ref_out, ref_conv, ref_pool = _unfused(x, wt, b, padding)
        assert ref_conv.winograd
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_array_equal(pool_cache.arg, ref_pool.arg)
        dout = rng.standard_normal(out.shape).astype(dtype)
        for got, exp in zip(
            _backward(dout, conv_cache, pool_cache), _backward(dout, ref_conv, ref_pool), strict=True
        ):
            np.testing.assert_array_equal(got, exp)
    finally:
        mp.undo()


def test_ties_go_to_the_first_tap_and_relu_clips(monkeypatch):
    monkeypatch.setattr(winograd, "MIN_ELEMENTS", 0)
    x = np.zeros((1, 16, 6, 6))
    w = np.zeros((16, 16, 3, 3))
    b = np.where(np.arange(16) % 2 == 0, 1.0, -1.0)  # constant outputs: every window a four-way tie
    out, _, pool_cache = conv2d_relu_max_pool2d_forward(x, w, b, 1, POOL)
    assert np.all(pool_cache.arg == 0)
    np.testing.assert_array_equal(out[0, :, 0, 0], np.maximum(b, 0))


def test_declines_where_it_does_not_apply(monkeypatch):
    monkeypatch.setattr(winograd, "MIN_ELEMENTS", 0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 16, 8, 8))
    w = rng.standard_normal((16, 16, 3, 3))
    assert conv2d_relu_max_pool2d_forward(x, w, None, 1, ((3, 3), (2, 2), (0, 0), (1, 1))) is None
    assert conv2d_relu_max_pool2d_forward(x, w, None, 1, ((2, 2), (1, 1), (0, 0), (1, 1))) is None
    assert conv2d_relu_max_pool2d_forward(x[:, :8], w[:, :8], None, 1, POOL) is None  # few channels
    assert conv2d_relu_max_pool2d_forward(x[:, :, :3, :4], w, None, 0, POOL) is None  # a 1x2 output


def _block_model(seed=0):
    model = Sequential(
        [
            Conv2D(16, 3, padding=1),
            ReLU(),
            MaxPool2D(2),
            Conv2D(16, 3, padding=1),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(3),
        ],
        input_shape=(16, 12, 10),
        seed=seed,
    )
    model.layers[list(model.layers)[0]].params["weight"] /= 4
    return model


def test_a_model_fuses_and_matches_the_layers_one_by_one(monkeypatch):
    monkeypatch.setattr(winograd, "MIN_ELEMENTS", 0)
    monkeypatch.setattr(pool_kernels, "MIN_ELEMENTS", 0)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 16, 12, 10)).astype(np.float32)
    fused_model, plain_model = _block_model(), _block_model()
    out = fused_model.forward(x, True)
    conv = fused_model.layers[list(fused_model.layers)[3]]
    assert conv._cache.winograd
    h = x
    for layer in plain_model.layers.values():
        h = layer.forward(h, True)
    np.testing.assert_array_equal(out, h)
    dy = rng.standard_normal(out.shape).astype(np.float32)
    fused_model.backward(dy)
    plain_model.backward(dy)
    for (key, a), b in zip(fused_model.layers.items(), plain_model.layers.values(), strict=True):
        for name, g in a.grads.items():
            np.testing.assert_array_equal(g, b.grads[name], err_msg=f"{key}.{name}")


def test_numba_switched_off_before_backward(monkeypatch):
    monkeypatch.setattr(winograd, "MIN_ELEMENTS", 0)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 16, 8, 6))
    w = rng.standard_normal((16, 16, 3, 3))
    b = rng.standard_normal(16)
    out, conv_cache, pool_cache = conv2d_relu_max_pool2d_forward(x, w, b, 1, POOL)
    dout = rng.standard_normal(out.shape)
    expected = _backward(dout, conv_cache, pool_cache)
    monkeypatch.setenv("CNNKIT_NO_NUMBA", "1")
    numba_available.cache_clear()
    col2im_rows_kernel.cache_clear()
    try:
        got = _backward(dout, conv_cache, pool_cache)
    finally:
        monkeypatch.delenv("CNNKIT_NO_NUMBA")
        numba_available.cache_clear()
        col2im_rows_kernel.cache_clear()  # it remembered None while Numba was off
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-10)
