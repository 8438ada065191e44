"""A first layer's weight gradient by the direct kernel (``planar_weight_grad_kernel`` in
cnnkit.ops._direct_kernels), taken when no input gradient is wanted: against the loop reference,
PyTorch, and the GEMM path it replaces."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnkit.ops.policy as policy
from cnnkit.ops import _parallel, conv2d_backward, conv2d_forward
from cnnkit.ops.conv_paths import planar
from cnnkit.ops.reference import conv2d_backward_reference


def _grads(x, w, b, padding, dout, direct):
    """(dw, db) with the direct kernel or, forced, the GEMM path."""
    mp = pytest.MonkeyPatch()
    mp.setattr(policy, "COMPILED_MIN_ELEMENTS", 0 if direct else 1 << 62)
    try:
        _, cache = conv2d_forward(x, w, b, padding=padding)
        assert cache.path == "planar"
        taken = planar.direct_weight_grad_applies(cache.plan)
        dx, dw, db = conv2d_backward(dout, cache, need_dx=False)
    finally:
        mp.undo()
    assert dx is None and taken == direct
    return dw, db


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 4),
    c=st.integers(1, 3),
    f=st.integers(1, 7),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    k=st.sampled_from([(3, 3), (5, 5), (1, 3), (4, 5), (2, 3)]),
    padding=st.sampled_from([0, 1, 2, (0, 2, 1, 0)]),
    bias=st.booleans(),
    threads=st.sampled_from([1, 2, 3]),
    seed=st.integers(0, 2**31),
)
def test_matches_the_loop_reference_exactly(n, c, f, h, w, k, padding, bias, threads, seed):
    """Small integers in float64: every sum is exact in any order, so the result is the reference's bit
    for bit, whatever the split across threads; kernel heights other than the width too."""
    pad4 = padding if isinstance(padding, tuple) else (padding,) * 4
    if h + pad4[0] + pad4[1] < k[0] or w + pad4[2] + pad4[3] < k[1]:
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, (n, c, h, w)).astype(np.float64)
    wt = rng.integers(-2, 3, (f, c, *k)).astype(np.float64)
    b = rng.integers(-2, 3, f).astype(np.float64) if bias else None
    out_shape = conv2d_forward(x, wt, b, padding=padding)[0].shape
    dout = rng.integers(-3, 4, out_shape).astype(np.float64)
    _parallel.set_threads(threads)
    try:
        dw, db = _grads(x, wt, b, padding, dout, direct=True)
    finally:
        _parallel.set_threads(None)
    _, dw_ref, db_ref = conv2d_backward_reference(dout, x, wt, b, padding=padding)
    np.testing.assert_array_equal(dw, dw_ref)
    if bias:
        np.testing.assert_array_equal(db, db_ref)
    else:
        assert db is None


@pytest.mark.parametrize("k", [3, 5])
def test_float32_agrees_with_the_gemm_path(k):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((9, 3, 21, 17)).astype(np.float32)
    wt = rng.standard_normal((8, 3, k, k)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    dout = rng.standard_normal(conv2d_forward(x, wt, b, padding=k // 2)[0].shape).astype(np.float32)
    dw, db = _grads(x, wt, b, k // 2, dout, direct=True)
    dw_gemm, db_gemm = _grads(x, wt, b, k // 2, dout, direct=False)
    assert dw.dtype == np.float32 and db.dtype == np.float32
    scale = float(np.abs(dw_gemm).max())
    np.testing.assert_allclose(dw, dw_gemm, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(db, db_gemm, rtol=1e-5, atol=1e-5 * float(np.abs(db_gemm).max()))


@pytest.mark.parametrize("seed", range(3))
def test_matches_pytorch_at_the_default_threshold(seed):
    import torch

    rng = np.random.default_rng(30 + seed)
    c, f, k = int(rng.integers(1, 4)), int(rng.integers(2, 33)), (3, 5, 3)[seed]
    h, w = int(rng.integers(20, 36)), int(rng.integers(20, 36))
    n = -(-policy.COMPILED_MIN_ELEMENTS // (c * (h + k - 1) * (w + k - 1)))  # big enough on its own
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((f, c, k, k)) / k).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    out, cache = conv2d_forward(x, wt, b, padding=k // 2)
    assert planar.direct_weight_grad_applies(cache.plan)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    _, dw, db = conv2d_backward(dout, cache, need_dx=False)
    wtt, bt = (torch.from_numpy(a).requires_grad_() for a in (wt, b))
    torch.nn.functional.conv2d(torch.from_numpy(x), wtt, bt, padding=k // 2).backward(torch.from_numpy(dout))
    for name, got, ref in (("dw", dw, wtt.grad.numpy()), ("db", db, bt.grad.numpy())):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()), err_msg=name)


def test_other_geometries_keep_the_gemm_path():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
    for w_shape, kwargs in (
        ((4, 3, 7, 7), {"padding": 3}),
        ((4, 3, 3, 3), {"stride": 2}),
        ((4, 3, 3, 3), {"dilation": 2}),
    ):
        _, cache = conv2d_forward(x, rng.standard_normal(w_shape).astype(np.float32), None, **kwargs)
        assert cache.path == "planar" and not planar.direct_weight_grad_applies(cache.plan)
    _, cache = conv2d_forward(x, rng.standard_normal((4, 3, 3, 3)).astype(np.float32), None, padding=1)
    assert planar.direct_weight_grad_applies(cache.plan)
    _, cache = conv2d_forward(x[:1], rng.standard_normal((4, 3, 3, 3)).astype(np.float32), None, padding=1)
    assert not planar.direct_weight_grad_applies(cache.plan)  # one image: too small
