"""Convolution -> ReLU -> 2x2 max pooling in one pass (cnnkit.ops.fused) against the three ops one by one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnkit.ops.policy as policy
from cnnkit.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from cnnkit.models import Sequential
from cnnkit.ops import conv2d_backward, conv2d_forward
from cnnkit.ops._conv_kernels import col2im_rows_kernel
from cnnkit.ops._jit import numba_available
from cnnkit.ops.fused import conv2d_relu_max_pool2d_forward
from cnnkit.ops.pool import relu_max_pool2d_backward, relu_max_pool2d_forward
from cnnkit.ops.reference import (
    conv2d_backward_reference,
    conv2d_reference,
    max_pool2d_backward_reference,
    max_pool2d_reference,
)
from finite_differences import numeric_grad

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
    mp.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)
    mp.setattr(policy, "WINOGRAD_CHANNELS_PER_TILE", 1 << 20)
    mp.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)  # the unfused pooling takes its compiled kernel too
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
        assert ref_conv.path == "winograd"
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
    monkeypatch.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)
    x = np.zeros((1, 16, 6, 6))
    w = np.zeros((16, 16, 3, 3))
    b = np.where(np.arange(16) % 2 == 0, 1.0, -1.0)  # constant outputs: every window a four-way tie
    out, _, pool_cache = conv2d_relu_max_pool2d_forward(x, w, b, 1, POOL)
    assert np.all(pool_cache.arg == 0)
    np.testing.assert_array_equal(out[0, :, 0, 0], np.maximum(b, 0))


def test_declines_where_it_does_not_apply(monkeypatch):
    monkeypatch.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 16, 8, 8))
    w = rng.standard_normal((16, 16, 3, 3))
    assert conv2d_relu_max_pool2d_forward(x, w, None, 1, ((3, 3), (2, 2), (0, 0), (1, 1))) is None
    assert conv2d_relu_max_pool2d_forward(x, w, None, 1, ((2, 2), (1, 1), (0, 0), (1, 1))) is None
    assert conv2d_relu_max_pool2d_forward(x[:, :8], w[:, :8], None, 1, POOL) is None  # few channels
    assert conv2d_relu_max_pool2d_forward(x[:, :, :3, :4], w, None, 0, POOL) is None  # a 1x2 output


def _block_model(seed=0, fuse=True):
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
        fuse=fuse,
    )
    model.layers[list(model.layers)[0]].params["weight"] /= 4
    return model


def test_a_model_fuses_and_matches_the_layers_one_by_one(monkeypatch):
    monkeypatch.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)
    monkeypatch.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 16, 12, 10)).astype(np.float32)
    fused_model, plain_model = _block_model(), _block_model(fuse=False)
    out = fused_model.forward(x, True)
    block = fused_model.children()["3"]  # Conv2D, ReLU, MaxPool2D fused when the model was built
    assert type(block).__name__ == "ConvReLUMaxPool2D" and block._cache[0].path == "winograd"
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
    monkeypatch.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)
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


# ----------------------------------------------------------------------------- a first layer: direct kernel
@pytest.fixture
def direct_everywhere(monkeypatch):
    """The direct first-layer kernel and the compiled pooling for inputs of any size."""
    monkeypatch.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)
    monkeypatch.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)


def _reference_block(x, w, b, padding):
    """The loop references: convolution, ReLU, 2x2 max pooling, and the pooling's backward."""
    conv = conv2d_reference(x, w, b, padding=padding)
    act = np.maximum(conv, 0)
    return conv, act, max_pool2d_reference(act, 2)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 3),
    f=st.integers(1, 9),
    h=st.integers(2, 11),
    w=st.integers(2, 11),
    k=st.sampled_from([3, 5]),
    padding=st.sampled_from([0, 1, 2, (0, 1, 2, 0), "same"]),
    bias=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_direct_first_layer_matches_the_loop_reference_exactly(n, c, f, h, w, k, padding, bias, seed):
    """3x3 and 5x5 filters. Small integers in float64 make every sum exact whatever its order, so the
    direct kernel must give the loop reference's values bit for bit, ties (frequent with integers) to
    the first tap, and the gradients of the unfused ops."""
    half = k // 2
    pad4 = (half,) * 4 if padding == "same" else padding if isinstance(padding, tuple) else (padding,) * 4
    if min(h + pad4[0] + pad4[1], w + pad4[2] + pad4[3]) < k + 1:
        return  # an output smaller than 2x2: the fused op declines (tested below)
    mp = pytest.MonkeyPatch()
    mp.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)
    mp.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)
    try:
        rng = np.random.default_rng(seed)
        x = rng.integers(-3, 4, (n, c, h, w)).astype(np.float64)
        wt = rng.integers(-2, 3, (f, c, k, k)).astype(np.float64)
        b = rng.integers(-2, 3, f).astype(np.float64) if bias else None
        result = conv2d_relu_max_pool2d_forward(x, wt, b, padding, POOL)
        assert result is not None
        out, conv_cache, pool_cache = result
        assert conv_cache.path == "planar" and pool_cache.planar
        _, act, ref = _reference_block(x, wt, b, padding)
        np.testing.assert_array_equal(out, ref)
        _, ref_conv, ref_pool = _unfused(x, wt, b, padding)
        dout = rng.integers(-3, 4, out.shape).astype(np.float64)
        got = _backward(dout, conv_cache, pool_cache)
        for g, e in zip(got, _backward(dout, ref_conv, ref_pool), strict=True):
            np.testing.assert_array_equal(g, e)
        d_act = max_pool2d_backward_reference(dout * (ref > 0), act, 2)  # ReLU mask on the pooled gradient
        dx_ref, dw_ref, db_ref = conv2d_backward_reference(d_act, x, wt, b, padding=padding)
        np.testing.assert_array_equal(got[0], dx_ref)
        np.testing.assert_array_equal(got[1], dw_ref)
        if bias:
            np.testing.assert_array_equal(got[2], db_ref)
    finally:
        mp.undo()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_first_layer_random_values(direct_everywhere, dtype):
    """Random values: within rounding of the float64 loop reference; a NaN wins its windows, as in the
    unfused ops (the loop reference's Python ``max`` does not propagate NaN, so it is not the judge)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 3, 13, 10)).astype(dtype)
    wt = rng.standard_normal((7, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(7).astype(dtype)
    out, _, pool_cache = conv2d_relu_max_pool2d_forward(x, wt, b, 1, POOL)
    assert out.dtype == dtype and pool_cache.arg.dtype == dtype
    _, _, ref = _reference_block(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64), 1)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * float(np.abs(ref).max()))
    x[0, 1, 4, 4] = np.nan
    out = conv2d_relu_max_pool2d_forward(x, wt, b, 1, POOL)[0]
    nan = np.isnan(out)
    assert nan.any() and np.array_equal(nan, np.isnan(_unfused(x, wt, b, 1)[0]))
    np.testing.assert_allclose(out[~nan], ref[~nan], rtol=tol, atol=tol * float(np.abs(ref).max()))


def test_direct_first_layer_finite_differences(direct_everywhere):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 6, 7))
    wt = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)

    def block(wv):
        return conv2d_relu_max_pool2d_forward(x, wv, b, 1, POOL)[0]

    out, conv_cache, pool_cache = conv2d_relu_max_pool2d_forward(x, wt, b, 1, POOL)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = _backward(dout, conv_cache, pool_cache)
    np.testing.assert_allclose(dw, numeric_grad(block, wt, dout), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        dx, numeric_grad(lambda xv: conv2d_relu_max_pool2d_forward(xv, wt, b, 1, POOL)[0], x, dout), atol=1e-6
    )


@pytest.mark.parametrize("seed", range(3))
def test_direct_first_layer_matches_pytorch(seed):
    """3x3 and 5x5 at the default threshold (shapes that take the path on their own), against
    PyTorch's max_pool2d(relu(conv2d(x))) and its weight gradient."""
    import torch

    rng = np.random.default_rng(20 + seed)
    c, f, k = int(rng.integers(1, 4)), int(rng.integers(4, 40)), (3, 5, 5)[seed]
    h, w = int(rng.integers(24, 40)), int(rng.integers(24, 40))
    n = -(-policy.COMPILED_MIN_ELEMENTS // (c * (h + k - 1) * (w + k - 1)))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((f, c, k, k)) / np.sqrt(k * k * c)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32) * 0.1
    result = conv2d_relu_max_pool2d_forward(x, wt, b, k // 2, POOL)
    assert result is not None and result[1].path == "planar"
    out, conv_cache, pool_cache = result
    dout = rng.standard_normal(out.shape).astype(np.float32)
    _, dw, db = conv2d_backward(relu_max_pool2d_backward(dout, pool_cache), conv_cache, need_dx=False)
    xt = torch.from_numpy(x)
    wtt, bt = (torch.from_numpy(a).requires_grad_() for a in (wt, b))
    ot = torch.nn.functional.max_pool2d(
        torch.relu(torch.nn.functional.conv2d(xt, wtt, bt, padding=k // 2)), 2
    )
    ot.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(out, ot.detach().numpy(), rtol=1e-5, atol=1e-5)
    for name, got, ref in (("dw", dw, wtt.grad), ("db", db, bt.grad)):
        ref = ref.numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()), err_msg=name)


def test_direct_first_layer_declines_where_it_does_not_apply(monkeypatch):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)  # big enough at the default threshold
    w3 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    assert conv2d_relu_max_pool2d_forward(x, w3, None, 1, POOL) is not None
    assert conv2d_relu_max_pool2d_forward(x[:1], w3, None, 1, POOL) is None  # one image: NumPy path
    w7 = rng.standard_normal((8, 3, 7, 7)).astype(np.float32)
    assert conv2d_relu_max_pool2d_forward(x, w7, None, 3, POOL) is None  # 7x7 filters
    w35 = rng.standard_normal((8, 3, 3, 5)).astype(np.float32)
    assert conv2d_relu_max_pool2d_forward(x, w35, None, 1, POOL) is None  # 3x5 filters
    x4 = rng.standard_normal((64, 4, 32, 32)).astype(np.float32)
    w4 = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    assert conv2d_relu_max_pool2d_forward(x4, w4, None, 1, POOL) is None  # 4 channels: not a first layer
    monkeypatch.setenv("CNNKIT_NO_NUMBA", "1")
    numba_available.cache_clear()
    try:
        assert conv2d_relu_max_pool2d_forward(x, w3, None, 1, POOL) is None
    finally:
        monkeypatch.delenv("CNNKIT_NO_NUMBA")
        numba_available.cache_clear()


def test_a_model_fuses_its_first_layer_and_matches_the_layers_one_by_one(direct_everywhere):
    """The first block runs direct and planar; outputs and every gradient agree with the layers run one
    by one (im2col's GEMM: the same sums in another order)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 3, 12, 10)).astype(np.float32)

    def model(fuse):
        return Sequential(
            [Conv2D(8, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(3)],
            input_shape=(3, 12, 10),
            seed=1,
            fuse=fuse,
        )

    fused_model, plain_model = model(True), model(False)
    out = fused_model.forward(x, True)
    block = fused_model.children()["0"]
    assert type(block).__name__ == "ConvReLUMaxPool2D" and block._cache[0].path == "planar"
    h = x
    for layer in plain_model.layers.values():
        h = layer.forward(h, True)
    np.testing.assert_allclose(out, h, rtol=1e-5, atol=1e-6)
    dy = rng.standard_normal(out.shape).astype(np.float32)
    fused_model.backward(dy)
    plain_model.backward(dy)
    for (key, a), b in zip(fused_model.layers.items(), plain_model.layers.values(), strict=True):
        for name, g in a.grads.items():
            np.testing.assert_allclose(g, b.grads[name], rtol=1e-4, atol=1e-5, err_msg=f"{key}.{name}")
