"""Batch norm's fast paths (notes §8.3): layouts, Numba on/off, precision, and the fused ReLU paths.

Batch norm works on ``(N*H*W, C)`` rows: a view of a channels-last input (what the convolutions return),
a channels-last copy of any other. So a channels-last and a C-ordered input must give the same values bit
for bit, with and without Numba (toggled through ``cnnkit.ops._jit.numba_available``), in float32 and
float64; both paths must match the float64 loop reference and each other.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnkit.layers import BatchNorm2D, ReLU
from cnnkit.models import BasicBlock, Bottleneck
from cnnkit.ops import _jit
from cnnkit.ops.activations import relu_backward, relu_forward
from cnnkit.ops.norm import batch_norm_backward, batch_norm_forward
from cnnkit.ops.reference.misc import batch_norm_backward_reference, batch_norm_reference

HAVE_NUMBA = _jit.numba_available()
REAL_AVAILABLE = _jit.numba_available
NUMBA_MODES = [False, True] if HAVE_NUMBA else [False]


def _set_numba(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    monkeypatch.setattr(_jit, "numba_available", REAL_AVAILABLE if on else (lambda: False))


def _channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _is_channels_last(a: np.ndarray) -> bool:
    return a.transpose(0, 2, 3, 1).flags.c_contiguous


def _run(x, dy, gamma, beta, training, momentum=0.1, eps=1e-5):
    c = x.shape[1]
    rng = np.random.default_rng(7)
    rm = rng.standard_normal(c).astype(x.dtype)
    rv = rng.uniform(0.5, 2.0, c).astype(x.dtype)
    y, cache = batch_norm_forward(x, gamma, beta, rm, rv, training, momentum, eps)
    dx, dg, db = batch_norm_backward(dy, cache)
    return y, rm, rv, dx, dg, db


def _params(c, dtype, rng):
    return rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("numba_on", NUMBA_MODES)
def test_channels_last_and_c_ordered_inputs_give_identical_results(monkeypatch, dtype, training, numba_on):
    _set_numba(monkeypatch, numba_on)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 6, 5, 3)) * 2 + 3).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    gamma, beta = _params(6, dtype, rng)
    c_ordered = _run(x, dy, gamma, beta, training)
    last = _run(_channels_last(x), _channels_last(dy), gamma, beta, training)
    mixed = _run(_channels_last(x), dy, gamma, beta, training)  # dy in the other layout
    for a, b, m in zip(c_ordered, last, mixed, strict=True):
        assert a.dtype == dtype
        assert np.array_equal(a, b) and np.array_equal(a, m)
    # outputs and input gradients keep (or take) channels-last memory: the next convolution copies nothing
    for out in (last[0], last[3], c_ordered[0], c_ordered[3]):
        assert _is_channels_last(out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_numba_and_numpy_paths_agree_with_the_reference(monkeypatch, dtype, training):
    rng = np.random.default_rng(1)
    x = _channels_last((rng.standard_normal((3, 4, 5, 6)) * 1.5 - 2).astype(dtype))
    dy = _channels_last(rng.standard_normal(x.shape).astype(dtype))
    gamma, beta = _params(4, dtype, rng)
    rm = rng.standard_normal(4).astype(dtype)
    rv = rng.uniform(0.5, 2.0, 4).astype(dtype)
    want_y, want_rm, want_rv = batch_norm_reference(x, gamma, beta, rm, rv, training, 0.1, 1e-5)
    want_dx, want_dg, want_db = batch_norm_backward_reference(dy, x, gamma, rm, rv, training, 1e-5)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    for on in NUMBA_MODES:
        _set_numba(monkeypatch, on)
        got_rm, got_rv = rm.copy(), rv.copy()
        y, cache = batch_norm_forward(x, gamma, beta, got_rm, got_rv, training)
        dx, dg, db = batch_norm_backward(dy, cache)
        np.testing.assert_allclose(y, want_y, **tol)
        np.testing.assert_allclose(dx, want_dx, **tol)
        np.testing.assert_allclose(dg, want_dg, **tol)
        np.testing.assert_allclose(db, want_db, **tol)
        if training:
            np.testing.assert_allclose(got_rm, want_rm, **tol)
            np.testing.assert_allclose(got_rv, want_rv, **tol)


@pytest.mark.parametrize("numba_on", NUMBA_MODES)
def test_float32_statistics_stay_accurate_with_a_large_mean_and_many_values(monkeypatch, numba_on):
    """A one-pass E[x^2] - E[x]^2 in float32 would lose every digit here; float64 accumulation does not."""
    _set_numba(monkeypatch, numba_on)
    rng = np.random.default_rng(2)
    x64 = 1000.0 + 0.01 * rng.standard_normal((64, 3, 16, 16))
    x = _channels_last(x64.astype(np.float32))
    xs = x.astype(np.float64)
    mean, var = xs.mean(axis=(0, 2, 3)), xs.var(axis=(0, 2, 3))
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    y, cache = batch_norm_forward(x, ones, zeros, None, None, True)
    want = (xs - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    # y = x a + b (PyTorch's CPU form): rounding of x * a at |x a| ~ 1e3 / 0.01 bounds the error
    np.testing.assert_allclose(y, want, atol=2e-2)
    assert abs(float(y.mean())) < 1e-2 and abs(float(y.std()) - np.sqrt(1e-4 / (1e-4 + 1e-5))) < 1e-2
    dy = _channels_last(rng.standard_normal(x.shape).astype(np.float32))
    dx, dg, db = batch_norm_backward(dy, cache)
    np.testing.assert_allclose(db, dy.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-5)
    xhat = (xs - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    want_dg = (dy * xhat).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(dg, want_dg, rtol=1e-3, atol=1e-1)
    m = x.size // 3
    inv_std = 1 / np.sqrt(var + 1e-5)
    want_db = dy.astype(np.float64).sum(axis=(0, 2, 3))
    want_dx = (inv_std / m)[None, :, None, None] * (
        m * dy - want_db[None, :, None, None] - xhat * want_dg[None, :, None, None]
    )
    np.testing.assert_allclose(dx, want_dx, rtol=1e-3, atol=1e-3 * np.abs(want_dx).max())


def test_forward_leaves_its_input_and_backward_its_gradient_unchanged():
    rng = np.random.default_rng(3)
    x = _channels_last(rng.standard_normal((2, 3, 4, 4)).astype(np.float32))
    dy = rng.standard_normal(x.shape).astype(np.float32)
    x0, dy0 = x.copy(), dy.copy()
    gamma, beta = _params(3, np.float32, rng)
    _, cache = batch_norm_forward(x, gamma, beta, None, None, True)
    batch_norm_backward(dy, cache)
    assert np.array_equal(x, x0) and np.array_equal(dy, dy0)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 4),
    c=st.integers(1, 5),
    h=st.integers(1, 4),
    w=st.integers(1, 4),
    four_d=st.booleans(),
    strided=st.booleans(),
)
def test_any_layout_equals_the_c_ordered_result(n, c, h, w, four_d, strided):
    shape = (n, c, h, w) if four_d else (n * h * w, c)
    if shape[0] * int(np.prod(shape[2:])) < 2:
        return
    rng = np.random.default_rng(n * 1000 + c * 100 + h * 10 + w)
    base = rng.standard_normal((shape[0], 2 * c, *shape[2:])).astype(np.float32)
    x = base[:, ::2] if strided else np.ascontiguousarray(base[:, :c])  # strided: neither layout
    dy = rng.standard_normal(x.shape).astype(np.float32)
    gamma, beta = _params(c, np.float32, rng)
    got = _run(x, dy, gamma, beta, True)
    want = _run(np.ascontiguousarray(x), np.ascontiguousarray(dy), gamma, beta, True)
    for a, b in zip(got, want, strict=True):
        assert np.array_equal(a, b)


def test_channels_last_batch_norm_matches_torch():
    import torch

    rng = np.random.default_rng(4)
    x = _channels_last((rng.standard_normal((8, 5, 6, 6)) * 3 + 1).astype(np.float32))
    dy = _channels_last(rng.standard_normal(x.shape).astype(np.float32))
    layer = BatchNorm2D()
    layer.build(x.shape[1:])
    layer.params["weight"][:] = rng.uniform(0.5, 1.5, 5)
    layer.params["bias"][:] = rng.standard_normal(5)
    y = layer(x, training=True)
    dx = layer.backward(dy)
    ref = torch.nn.BatchNorm2d(5)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(layer.params["weight"]))
        ref.bias.copy_(torch.from_numpy(layer.params["bias"]))
    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(True)
    yt = ref(xt)
    yt.backward(torch.from_numpy(np.ascontiguousarray(dy)))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.grads["weight"], ref.weight.grad.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(layer.grads["bias"], ref.bias.grad.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(layer.buffers["running_mean"], ref.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.buffers["running_var"], ref.running_var.numpy(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- ReLU
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_keeps_layout_and_masks_by_the_output(dtype):
    rng = np.random.default_rng(5)
    x = _channels_last(rng.standard_normal((2, 3, 4, 5)).astype(dtype))
    x[0, 0, 0, 0] = 0.0  # the gradient at 0 is 0 (PyTorch's choice)
    x0 = x.copy()
    y, cache = relu_forward(x)
    assert _is_channels_last(y) and y.dtype == dtype and np.array_equal(x, x0)
    assert np.array_equal(y, np.where(x > 0, x, 0))
    dy = _channels_last(rng.standard_normal(x.shape).astype(dtype))
    dx = relu_backward(dy, cache)
    assert _is_channels_last(dx) and dx.dtype == dtype
    assert np.array_equal(dx, np.where(x > 0, dy, 0)) and dx[0, 0, 0, 0] == 0
    layer = ReLU(dtype=dtype)
    assert np.array_equal(layer(x, training=True), y) and np.array_equal(layer.backward(dy), dx)


# ----------------------------------------------------------------------------- residual blocks
@pytest.mark.parametrize(
    "cls, planes, cin, stride", [(BasicBlock, 3, 3, 1), (BasicBlock, 4, 3, 2), (Bottleneck, 2, 8, 1)]
)
def test_residual_block_equals_its_children_composed(cls, planes, cin, stride):
    """The in-place ReLUs and sum give relu(F(x) + shortcut(x)) and its gradient, and spare x and dy."""
    rng = np.random.default_rng(6)
    block = cls(planes, stride=stride, seed=0)
    block.build((cin, 6, 6))
    x = _channels_last(rng.standard_normal((2, cin, 6, 6)).astype(np.float32))
    x0 = x.copy()
    y = block.forward(x, True)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dy0 = dy.copy()
    dx = block.backward(dy)
    assert np.array_equal(x, x0) and np.array_equal(dy, dy0)
    # the same computation from the children, one layer at a time, with explicit masks
    out, masks = x, []
    for _, layer, relu_after in block._main:
        out = layer.forward(out, True)
        if relu_after:
            masks.append(out > 0)
            out = out * masks[-1]
    short = block.downsample.forward(x, True) if block.downsample is not None else x
    total = out + short
    np.testing.assert_array_equal(y, total * (total > 0))
    d = dy * (total > 0)
    g = d
    for _, layer, relu_after in reversed(block._main):
        if relu_after:
            g = g * masks.pop()
        g = layer.backward(g)
    want_dx = g + (block.downsample.backward(d) if block.downsample is not None else d)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-6, atol=1e-6)
