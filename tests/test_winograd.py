"""Winograd F(4x4, 3x3) (cnnkit.ops.winograd): against the loop reference, finite differences and PyTorch.

The path needs Numba and an input of at least ``MIN_ELEMENTS`` numbers; the tests lower that bound
(``small_inputs_too``) so small random shapes take it, and assert that they did.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnkit.ops.policy as policy
import cnnkit.ops.winograd as winograd
from cnnkit.ops import conv2d_backward, conv2d_forward
from cnnkit.ops._conv_kernels import col2im_rows_kernel
from cnnkit.ops._jit import numba_available
from cnnkit.ops._winograd_kernels import winograd_input_kernel, winograd_output_kernel
from cnnkit.ops.reference import conv2d_backward_reference, conv2d_reference
from finite_differences import numeric_grad


@pytest.fixture
def small_inputs_too(monkeypatch):
    monkeypatch.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)
    monkeypatch.setattr(policy, "WINOGRAD_CHANNELS_PER_TILE", 1 << 20)


def _tol(dtype, ref: np.ndarray) -> dict:
    """float64: near machine precision. float32: the transforms add and subtract values up to ~10x the
    inputs, so the error scales with the largest output (see the module docstring), not each one."""
    if dtype == np.float64:
        return {"rtol": 1e-10, "atol": 1e-10 * max(1.0, float(np.abs(ref).max()))}
    return {"rtol": 1e-5, "atol": 2e-5 * max(1.0, float(np.abs(ref).max()))}


def test_filter_transform_is_g_w_g_transposed():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 4, 3, 3))
    u = winograd.transform_weights(w)
    assert u.shape == (36, 4, 5)
    for f in range(5):
        for c in range(4):
            expected = winograd._G @ w[f, c] @ winograd._G.T
            np.testing.assert_allclose(u[:, c, f].reshape(6, 6), expected, rtol=1e-14, atol=1e-14)
    assert winograd.transform_weights(w.astype(np.float32)).dtype == winograd.product_dtype(np.float32)


def test_one_tile_by_hand():
    """A 6x6 input and one 3x3 kernel: the 4x4 output equals the sliding-window sums."""
    rng = np.random.default_rng(1)
    d = rng.standard_normal((1, 6, 6, 1))
    g = rng.standard_normal((1, 1, 3, 3))
    out = winograd.winograd_conv(d, winograd.transform_weights(g), None, (4, 4))
    expected = np.array(
        [[np.sum(d[0, i : i + 3, j : j + 3, 0] * g[0, 0]) for j in range(4)] for i in range(4)]
    )
    np.testing.assert_allclose(out[0, :, :, 0], expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(16, 19),
    f=st.integers(16, 18),
    h=st.integers(3, 14),
    w=st.integers(3, 14),
    padding=st.sampled_from([0, 1, 2, (0, 2, 1, 0), (2, 0, 0, 1)]),
    bias=st.booleans(),
    flip=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**31),
)
def test_matches_the_loop_reference(n, c, f, h, w, padding, bias, flip, dtype, seed):
    """Odd sizes (partial tiles), every padding up to 2, no bias, flipped kernels, both dtypes."""
    pad4 = padding if isinstance(padding, tuple) else (padding,) * 4
    if h + pad4[0] + pad4[1] < 3 or w + pad4[2] + pad4[3] < 3:
        return  # no output: the geometry error is tested elsewhere
    mp = pytest.MonkeyPatch()
    mp.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)
    mp.setattr(policy, "WINOGRAD_CHANNELS_PER_TILE", 1 << 20)
    try:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        wt = rng.standard_normal((f, c, 3, 3)).astype(dtype)
        b = rng.standard_normal(f).astype(dtype) if bias else None
        out, cache = conv2d_forward(x, wt, b, padding=padding, flip_kernel=flip)
        assert cache.path == "winograd"
        ref = conv2d_reference(x, wt, b, padding=padding, flip_kernel=flip)
        np.testing.assert_allclose(out, ref, **_tol(dtype, ref))
        assert out.dtype == dtype
        dout = rng.standard_normal(out.shape).astype(dtype)
        got = conv2d_backward(dout, cache)
        expected = conv2d_backward_reference(dout, x, wt, b, padding=padding, flip_kernel=flip)
        for name, g, e in zip(("dx", "dw", "db"), got, expected, strict=True):
            if e is None:
                assert g is None, name
                continue
            assert g.dtype == dtype, name
            np.testing.assert_allclose(g, e, err_msg=name, **_tol(dtype, e))
    finally:
        mp.undo()


def test_padding_beyond_two_keeps_winograd_forward_and_col2im_backward(small_inputs_too):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 16, 5, 6))
    w = rng.standard_normal((16, 16, 3, 3))
    out, cache = conv2d_forward(x, w, None, padding=3)
    assert cache.path == "winograd"
    np.testing.assert_allclose(out, conv2d_reference(x, w, None, padding=3), rtol=1e-10, atol=1e-10)
    dout = rng.standard_normal(out.shape)
    dx, dw, _ = conv2d_backward(dout, cache)
    edx, edw, _ = conv2d_backward_reference(dout, x, w, None, padding=3)
    np.testing.assert_allclose(dx, edx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, edw, rtol=1e-10, atol=1e-10)


def test_finite_differences_float64(small_inputs_too):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 16, 5, 6))
    w = rng.standard_normal((16, 16, 3, 3)) / 4
    b = rng.standard_normal(16)
    out, cache = conv2d_forward(x, w, b, padding=1)
    assert cache.path == "winograd"
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, cache)
    np.testing.assert_allclose(
        dx, numeric_grad(lambda v: conv2d_forward(v, w, b, padding=1)[0], x, dout), atol=1e-7
    )
    sub = (slice(0, 2),)  # two filters' weights: the full weight check is the reference test's
    np.testing.assert_allclose(
        dw[sub],
        numeric_grad(lambda v: conv2d_forward(x, np.concatenate([v, w[2:]]), b, padding=1)[0], w[sub], dout),
        atol=1e-7,
    )
    np.testing.assert_allclose(
        db, numeric_grad(lambda v: conv2d_forward(x, w, v, padding=1)[0], b, dout), atol=1e-7
    )


@pytest.mark.parametrize("seed", range(4))
def test_matches_pytorch_on_random_shapes(seed):
    """At the default threshold: shapes big enough to take the path on their own."""
    import torch

    rng = np.random.default_rng(10 + seed)
    n, c, f = int(rng.integers(2, 9)), int(rng.integers(16, 48)), int(rng.integers(16, 40))
    h, w = int(rng.integers(24, 40)), int(rng.integers(24, 40))
    padding = int(rng.integers(0, 3))
    n = max(n, -(-policy.COMPILED_MIN_ELEMENTS // (c * h * w)))  # enough images to take the path
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((f, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    out, cache = conv2d_forward(x, wt, b, padding=padding)
    assert cache.path == "winograd"
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, dw, db = conv2d_backward(dout, cache)
    xt, wtt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, wt, b))
    ot = torch.nn.functional.conv2d(xt, wtt, bt, padding=padding)
    ot.backward(torch.from_numpy(dout))
    for name, got, ref in (("out", out, ot), ("dx", dx, xt.grad), ("dw", dw, wtt.grad), ("db", db, bt.grad)):
        ref = ref.detach().numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=2e-5 * float(np.abs(ref).max()), err_msg=name)


def test_small_inputs_and_no_numba_take_the_im2col_path(monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)  # one small image: below MIN_ELEMENTS
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    assert conv2d_forward(x, w, None, padding=1)[1].path != "winograd"
    monkeypatch.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)
    assert conv2d_forward(x, w, None, padding=1)[1].path == "winograd"
    assert conv2d_forward(x[:, :8], w[:8, :8], None, padding=1)[1].path != "winograd"  # too few channels
    assert conv2d_forward(x, w, None, padding=1, stride=2)[1].path != "winograd"
    assert conv2d_forward(x, w, None, padding=2, dilation=2)[1].path != "winograd"
    monkeypatch.setenv("CNNKIT_NO_NUMBA", "1")
    numba_available.cache_clear()
    col2im_rows_kernel.cache_clear()
    try:
        out, cache = conv2d_forward(x, w, None, padding=1)
        assert cache.path != "winograd"
        np.testing.assert_allclose(out, conv2d_reference(x, w, None, padding=1), rtol=1e-5, atol=1e-4)
    finally:
        monkeypatch.delenv("CNNKIT_NO_NUMBA")
        numba_available.cache_clear()
        col2im_rows_kernel.cache_clear()  # it remembered None while Numba was off


def test_a_nan_input_is_not_hidden(small_inputs_too):
    """Winograd spreads a non-finite input over its whole 4x4 tile: never fewer NaNs than direct."""
    x = np.ones((1, 16, 8, 8))
    x[0, 3, 5, 2] = np.nan
    out, cache = conv2d_forward(x, np.ones((16, 16, 3, 3)), None, padding=1)
    assert cache.path == "winograd"
    direct = conv2d_reference(x, np.ones((16, 16, 3, 3)), None, padding=1)
    assert np.all(np.isnan(out[np.isnan(direct)]))


def test_kernels_are_compiled():
    assert winograd_input_kernel() is not None and winograd_output_kernel() is not None


def test_numba_switched_off_between_forward_and_backward(small_inputs_too, monkeypatch):
    """The backward pass falls back to im2col/col2im on the same cache."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 16, 7, 6))
    w = rng.standard_normal((17, 16, 3, 3))
    b = rng.standard_normal(17)
    out, cache = conv2d_forward(x, w, b, padding=1)
    assert cache.path == "winograd"
    dout = rng.standard_normal(out.shape)
    monkeypatch.setenv("CNNKIT_NO_NUMBA", "1")
    numba_available.cache_clear()
    col2im_rows_kernel.cache_clear()
    try:
        got = conv2d_backward(dout, cache)
    finally:
        monkeypatch.delenv("CNNKIT_NO_NUMBA")
        numba_available.cache_clear()
        col2im_rows_kernel.cache_clear()  # it remembered None while Numba was off
    for g, e in zip(got, conv2d_backward_reference(dout, x, w, b, padding=1), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-10)


def test_few_tiles_for_many_channels_take_the_im2col_path():
    """ResNet's last stage on 4x4 images: one tile per image is too few for 512 channels."""
    x = np.zeros((64, 512, 4, 4), np.float32)
    w = np.zeros((512, 512, 3, 3), np.float32)
    args = ((3, 3), (1, 1), (1, 1), 1, (4, 4))
    assert not winograd.applies(x.shape, 512, *args)
    assert winograd.applies((256, 512, 4, 4), 512, *args) == numba_available()
    assert conv2d_forward(x, w, None, padding=1)[1].path != "winograd"  # 524,288 elements: not too small
