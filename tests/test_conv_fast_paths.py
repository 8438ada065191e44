"""The convolution's fast paths (streamed im2col, compiled col2im, skipped dx) against the references.

Every test that runs a kernel runs twice: with Numba (the compiled col2im) and with ``CNNKIT_NO_NUMBA=1``
(the NumPy fallback), by clearing the cached kernel getters of :mod:`cnnkit.ops._jit`.
"""

from __future__ import annotations

import subprocess
import sys

import numba  # noqa: F401  (a dependency: fail loudly if missing)
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnkit.ops.policy as policy
from cnnkit.layers import Conv2D
from cnnkit.ops import conv2d, conv2d_backward, conv2d_forward
from cnnkit.ops._conv_kernels import col2im_rows_kernel
from cnnkit.ops._jit import numba_available
from cnnkit.ops.reference import conv2d_backward_reference, conv2d_reference


def _reset_jit() -> None:
    numba_available.cache_clear()
    col2im_rows_kernel.cache_clear()


@pytest.fixture(params=["numba", "numpy"])
def jit_mode(request, monkeypatch):
    """Run the test with the compiled kernels, then with the NumPy fallback."""
    if request.param == "numpy":
        monkeypatch.setenv("CNNKIT_NO_NUMBA", "1")
    else:
        monkeypatch.delenv("CNNKIT_NO_NUMBA", raising=False)
    _reset_jit()
    assert (col2im_rows_kernel() is not None) == (request.param == "numba")
    yield request.param
    monkeypatch.undo()
    _reset_jit()


def _tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-11, "atol": 1e-11}


def _check_against_reference(x, w, b, dtype, **kw):
    out, cache = conv2d_forward(x, w, b, **kw)
    np.testing.assert_allclose(out, conv2d_reference(x, w, b, **kw), **_tol(dtype))
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    got = conv2d_backward(dout, cache)
    expected = conv2d_backward_reference(dout, x, w, b, **kw)
    for name, g, e in zip(("dx", "dw", "db"), got, expected, strict=True):
        if e is None:
            assert g is None, name
            continue
        assert g.dtype == dtype, name
        np.testing.assert_allclose(g, e, err_msg=name, **_tol(dtype))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 5),
    c=st.integers(1, 9),
    f=st.integers(1, 6),
    k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.sampled_from([1, 2, (1, 2)]),
    dilation=st.sampled_from([1, 2, (2, 1)]),
    padding=st.sampled_from([0, 1, (0, 1, 2, 0)]),
    bias=st.booleans(),
    chunk=st.sampled_from([1, 1 << 22]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**31),
)
def test_streamed_path_matches_reference(n, c, f, k, stride, dilation, padding, bias, chunk, dtype, seed):
    """One group: im2col and GEMM a chunk of images at a time (chunk=1 byte: one image per chunk)."""
    rng = np.random.default_rng(seed)
    h, wd = 2 * k[0] + 2, 2 * k[1] + 3
    x = rng.standard_normal((n, c, h, wd)).astype(dtype)
    w = rng.standard_normal((f, c, *k)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype) if bias else None
    saved = policy.CHUNK_BYTES
    policy.CHUNK_BYTES = chunk
    try:
        for mode in ("numba", "numpy"):
            with pytest.MonkeyPatch.context() as mp:
                if mode == "numpy":
                    mp.setenv("CNNKIT_NO_NUMBA", "1")
                else:
                    mp.delenv("CNNKIT_NO_NUMBA", raising=False)
                _reset_jit()
                _check_against_reference(x, w, b, dtype, stride=stride, dilation=dilation, padding=padding)
    finally:
        policy.CHUNK_BYTES = saved
        _reset_jit()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("c", "f", "kw"),
    [
        (3, 8, {"padding": 1}),  # a first layer on RGB images
        (8, 6, {"padding": 1, "stride": 2}),
        (6, 6, {"groups": 3, "padding": 1}),  # grouped: the compiled dx without the streamed pass
        (4, 8, {"groups": 4, "dilation": 2, "padding": 2}),  # depthwise, dilated
        (5, 4, {}),  # pointwise when the kernel is 1x1 (below), plain 3x3 here
    ],
)
def test_fast_paths_match_reference_with_and_without_numba(jit_mode, dtype, c, f, kw):
    rng = np.random.default_rng(3)
    groups = kw.get("groups", 1)
    x = rng.standard_normal((3, c, 9, 8)).astype(dtype)
    w = rng.standard_normal((f, c // groups, 3, 3)).astype(dtype)
    _check_against_reference(x, w, rng.standard_normal(f).astype(dtype), dtype, **kw)
    _check_against_reference(x, w, None, dtype, **kw)
    if groups == 1:  # and the 1x1 path
        _check_against_reference(x, w[:, :, :1, :1].copy(), None, dtype)


def test_matches_pytorch_with_and_without_numba(jit_mode):
    import torch

    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 16, 12, 12)).astype(np.float32)
    w = (rng.standard_normal((24, 16, 3, 3)) / 12).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    out, cache = conv2d_forward(x, w, b, padding=1, stride=(1, 2))
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, dw, db = conv2d_backward(dout, cache)
    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    ot = torch.nn.functional.conv2d(xt, wt, bt, padding=1, stride=(1, 2))
    ot.backward(torch.from_numpy(dout))
    for got, ref in ((out, ot), (dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        ref = ref.detach().numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


def test_need_dx_false_skips_the_input_gradient(jit_mode):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 7))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    out, cache = conv2d_forward(x, w, b, padding=1)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, cache)
    none, dw2, db2 = conv2d_backward(dout, cache, need_dx=False)
    assert dx is not None and none is None
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)


def test_conv2d_layer_needs_input_grad(jit_mode):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    first, other = Conv2D(5, 3, padding=1, seed=0), Conv2D(5, 3, padding=1, seed=0)
    assert first.needs_input_grad and "needs_input_grad" not in first.get_config()
    first.needs_input_grad = False
    dy = rng.standard_normal((2, 5, 8, 8)).astype(np.float32)
    first(x, training=True)
    other(x, training=True)
    assert first.backward(dy) is None
    assert other.backward(dy).shape == x.shape
    for key in ("weight", "bias"):
        np.testing.assert_array_equal(first.grads[key], other.grads[key])


def test_returned_arrays_are_not_overwritten_by_later_calls(jit_mode):
    """Outputs and gradients are fresh arrays: keeping two calls' results is safe."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((4, 3, 3, 3))
    x1, x2 = rng.standard_normal((2, 2, 3, 6, 6))
    out1, cache1 = conv2d_forward(x1, w, None, padding=1)
    keep_out1 = out1.copy()
    dout = rng.standard_normal(out1.shape)
    dx1, dw1, _ = conv2d_backward(dout, cache1)
    keep = dx1.copy(), dw1.copy()
    out2, cache2 = conv2d_forward(x2, w, None, padding=1)
    conv2d_backward(2 * dout, cache2)
    np.testing.assert_array_equal(out1, keep_out1)
    np.testing.assert_array_equal(dx1, keep[0])
    np.testing.assert_array_equal(dw1, keep[1])
    np.testing.assert_allclose(out2, conv2d(x2, w, None, padding=1))
    # and backward from the first cache still gives the first step's gradients
    again = conv2d_backward(dout, cache1)
    np.testing.assert_array_equal(again[0], keep[0])


def test_compiled_col2im_is_the_adjoint_of_the_window_gather():
    """<im2col(x), D> == <x, kernel(D)> for the compiled scatter, grouped and dilated."""
    kernel = col2im_rows_kernel()
    if kernel is None:
        pytest.skip("Numba disabled")
    rng = np.random.default_rng(8)
    n, c, hp, wp, kh, kw, groups = 2, 4, 9, 10, 2, 3, 2
    sh, sw, dh, dw = 2, 1, 1, 2
    oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    cg = c // groups
    x = rng.standard_normal((n, hp, wp, c))
    d = rng.standard_normal((n * oh * ow, groups * kh * kw * cg))
    dxp = np.zeros((n, hp, wp * c))
    kernel(d, dxp, 0, oh, ow, kh, kw, sh, sw, dh, dw, groups)
    # the gather, written out: cols[(n, i, j), (g, p, q, c)] = x[n, i*sh + p*dh, j*sw + q*dw, g*cg + c]
    cols = np.empty_like(d)
    for nn in range(n):
        for i in range(oh):
            for j in range(ow):
                row = (nn * oh + i) * ow + j
                for g in range(groups):
                    for p in range(kh):
                        for q in range(kw):
                            col = g * kh * kw * cg + (p * kw + q) * cg
                            px = x[nn, i * sh + p * dh, j * sw + q * dw, g * cg : (g + 1) * cg]
                            cols[row, col : col + cg] = px
    np.testing.assert_allclose(np.sum(cols * d), np.sum(x.reshape(n, hp, wp * c) * dxp), rtol=1e-12)


def test_inference_does_not_import_numba():
    """conv2d_forward is NumPy only: ``cnnkit predict`` never pays Numba's import time."""
    code = (
        "import sys, numpy as np\n"
        "from cnnkit.ops.conv import conv2d_forward\n"
        "x = np.ones((1, 3, 8, 8), np.float32); w = np.ones((2, 3, 3, 3), np.float32)\n"
        "conv2d_forward(x, w, np.zeros(2, np.float32), padding=1)\n"
        "print('numba' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@settings(max_examples=40, deadline=None)
@given(
    channels=st.integers(1, 3),
    size=st.integers(3, 9),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    bias=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
    compiled_unfold=st.booleans(),
)
def test_planar_path_matches_reference(
    channels, size, kernel, stride, padding, dilation, bias, dtype, seed, compiled_unfold
):
    """The few-channel path (taps-first GEMMs, planar memory), forward and backward, equals the loops;
    with its unfold in NumPy (small inputs) and compiled (big ones: the threshold lowered to 0)."""
    if dilation * (kernel - 1) + 1 > size + 2 * padding or kernel == 1 and padding == 0 and stride == 1:
        return  # no valid output, or the 1x1 pointwise path (which skips im2col altogether)
    assert channels <= policy.PLANAR_MAX_CHANNELS
    mp = pytest.MonkeyPatch()
    mp.setattr(policy, "COMPILED_MIN_ELEMENTS", 0 if compiled_unfold else 1 << 62)
    try:
        _check_planar(channels, size, kernel, stride, padding, dilation, bias, dtype, seed)
    finally:
        mp.undo()


def _check_planar(channels, size, kernel, stride, padding, dilation, bias, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, channels, size, size)).astype(dtype)
    w = rng.standard_normal((3, channels, kernel, kernel)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype) if bias else None
    kw = {"stride": stride, "padding": padding, "dilation": dilation}
    _check_against_reference(x, w, b, dtype, **kw)
    out, cache = conv2d_forward(x, w, b, **kw)
    assert cache.path == "planar"
    assert out.transpose(1, 0, 2, 3).flags.c_contiguous  # (F, N, OH, OW) memory


@pytest.mark.parametrize("compiled_min", [0, 1 << 62])
def test_planar_path_streams_chunks_and_flips(monkeypatch, compiled_min):
    """Several chunks of images, the flipped kernel and a skipped dx on the few-channel path (its
    unfold compiled and in NumPy)."""
    monkeypatch.setattr(policy, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(policy, "COMPILED_MIN_ELEMENTS", compiled_min)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 3, 11, 10))
    w = rng.standard_normal((5, 3, 3, 2))
    b = rng.standard_normal(5)
    kw = {"stride": (2, 1), "padding": (1, 0, 2, 1), "dilation": (1, 2), "flip_kernel": True}
    _check_against_reference(x, w, b, np.float64, **kw)
    out, cache = conv2d_forward(x, w, b, **kw)
    dx, dw, db = conv2d_backward(np.ones_like(out), cache, need_dx=False)
    assert dx is None
    expected = conv2d_backward_reference(np.ones_like(out), x, w, b, **kw)
    np.testing.assert_allclose(dw, expected[1], rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(db, expected[2], rtol=1e-11, atol=1e-11)
