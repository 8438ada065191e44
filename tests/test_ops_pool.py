"""Pooling ops: fast kernels against the loop references, finite differences and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cnnkit.errors import CnnkitError, ConfigError, DTypeError, ShapeError
from cnnkit.ops import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_avg_pool2d_forward,
    avg_pool2d,
    avg_pool2d_backward,
    avg_pool2d_forward,
    global_avg_pool2d,
    global_avg_pool2d_backward,
    global_avg_pool2d_forward,
    max_pool2d,
    max_pool2d_backward,
    max_pool2d_forward,
    min_pool2d,
    min_pool2d_backward,
    min_pool2d_forward,
)
from cnnkit.ops import reference as R
from finite_differences import numeric_grad

SETTINGS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
TORCH_SETTINGS = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])

KINDS = {
    "max": (max_pool2d_forward, max_pool2d_backward, R.max_pool2d_reference, R.max_pool2d_backward_reference),
    "min": (min_pool2d_forward, min_pool2d_backward, R.min_pool2d_reference, R.min_pool2d_backward_reference),
    "avg": (avg_pool2d_forward, avg_pool2d_backward, R.avg_pool2d_reference, R.avg_pool2d_backward_reference),
}


# ----------------------------------------------------------------------------- helpers


def channels_last(x: np.ndarray) -> np.ndarray:
    """Same values, NHWC memory (the layout cnnkit's conv2d returns)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def separated(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """float64 values all at least 0.01 apart (no ties, so max/min are differentiable at eps=1e-6)."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) * 0.01 - size * 0.005).astype(np.float64)


@st.composite
def pool_configs(draw, dilation: bool = True, max_kernel: int = 4):
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    dh, dw = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilation else (1, 1)
    min_h, min_w = max(1, dh * (kh - 1) + 1 - 2 * ph), max(1, dw * (kw - 1) + 1 - 2 * pw)
    h, w = draw(st.integers(min_h, min_h + 6)), draw(st.integers(min_w, min_w + 6))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    ties = draw(st.booleans())
    return {
        "shape": (n, c, h, w),
        "args": ((kh, kw), (sh, sw), (ph, pw), (dh, dw)),
        "seed": seed,
        "ties": ties,
    }


def has_empty_window(cfg: dict) -> bool:
    """True when some window (possible with dilation) reads only padding: max/min pooling refuse it."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = cfg["args"]
    for size, k, s, p, d in zip(cfg["shape"][2:], (kh, kw), (sh, sw), (ph, pw), (dh, dw), strict=True):
        for o in range((size + 2 * p - d * (k - 1) - 1) // s + 1):
            if not any(0 <= o * s - p + i * d < size for i in range(k)):
                return True
    return False


def make_input(cfg: dict, dtype=np.float64) -> np.ndarray:
    rng = np.random.default_rng(cfg["seed"])
    if cfg["ties"]:  # small integers: many equal values in a window
        return rng.integers(0, 3, size=cfg["shape"]).astype(dtype)
    return rng.standard_normal(cfg["shape"]).astype(dtype)


# ----------------------------------------------------------------------------- fast vs reference
@pytest.mark.parametrize("kind", sorted(KINDS))
@SETTINGS
@given(cfg=pool_configs())
def test_window_pool_matches_reference(kind, cfg):
    fwd, bwd, ref_fwd, ref_bwd = KINDS[kind]
    assume(kind == "avg" or not has_empty_window(cfg))
    x = make_input(cfg)
    out, cache = fwd(x, *cfg["args"])
    np.testing.assert_allclose(out, ref_fwd(x, *cfg["args"]), rtol=1e-12, atol=1e-12)
    dout = np.random.default_rng(cfg["seed"] + 1).standard_normal(out.shape)
    dx = bwd(dout, cache)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    # with integer inputs this checks tie routing (first max/min in row-major order) exactly
    np.testing.assert_allclose(dx, ref_bwd(dout, x, *cfg["args"]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 6, 10), (2, 2, 7, 9), (1, 1, 5, 4)])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_2x2_stride2_fast_path_and_odd_sizes(kind, shape, layout):
    fwd, bwd, ref_fwd, ref_bwd = KINDS[kind]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=shape).astype(np.float32)  # ties in most windows
    xin = channels_last(x) if layout == "nhwc" else x
    out, cache = fwd(xin, 2)
    assert out.shape == (shape[0], shape[1], shape[2] // 2, shape[3] // 2)  # odd last row/col dropped
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ref_fwd(x, 2))
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx = bwd(dout, cache)
    assert dx.dtype == np.float32
    np.testing.assert_allclose(dx, ref_bwd(dout, x, 2), rtol=1e-6, atol=1e-7)
    if shape[2] % 2:  # the dropped row gets no gradient
        assert not dx[:, :, -1, :].any()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_channels_last_input_keeps_layout(kind):
    fwd, bwd = KINDS[kind][:2]
    x = np.random.default_rng(1).standard_normal((2, 5, 8, 6)).astype(np.float32)
    xc = channels_last(x)
    for args in ((2,), (3, 2, 1)):
        out_c, cache_c = fwd(xc, *args)
        out, cache = fwd(x, *args)
        np.testing.assert_array_equal(out_c, out)
        assert out_c.transpose(0, 2, 3, 1).flags.c_contiguous  # NHWC in, NHWC out
        dout = np.ones_like(out)
        dx_c = bwd(dout, cache_c)
        np.testing.assert_allclose(dx_c, bwd(dout, cache), rtol=1e-6)
        assert dx_c.transpose(0, 2, 3, 1).flags.c_contiguous


def test_max_and_min_tie_goes_to_first_position_row_major():
    x = np.array([[5, 1, 2, 7], [5, 5, 7, 7]], np.float64)[None, None]
    dx = max_pool2d_backward(np.array([[[[10.0, 20.0]]]]), max_pool2d_forward(x, 2)[1])
    # window 1: 5 at (0,0), (1,0), (1,1) -> (0,0); window 2: 7 at (0,3), (1,2), (1,3) -> (0,3)
    np.testing.assert_array_equal(dx[0, 0], [[10, 0, 0, 20], [0, 0, 0, 0]])
    y = -x
    dy = min_pool2d_backward(np.array([[[[10.0, 20.0]]]]), min_pool2d_forward(y, 2)[1])
    np.testing.assert_array_equal(dy[0, 0], [[10, 0, 0, 20], [0, 0, 0, 0]])
    # overlapping windows (stride 1): every window of a constant map routes to its own top-left
    c = np.zeros((1, 1, 3, 3))
    dc = max_pool2d_backward(np.ones((1, 1, 2, 2)), max_pool2d_forward(c, 2, 1)[1])
    np.testing.assert_array_equal(dc[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])


def test_padding_never_wins_and_avg_counts_padding():
    x = -np.ones((1, 1, 2, 2))
    assert (max_pool2d(x, 2, 2, 1) == -1).all()  # -inf padding loses to -1
    assert (min_pool2d(-x, 2, 2, 1) == 1).all()  # +inf padding loses to +1
    # every 2x2 window of the padded 4x4 holds one real value: divisor 4 (count_include_pad)
    np.testing.assert_array_equal(avg_pool2d(x, 2, 2, 1), np.full((1, 1, 2, 2), -0.25))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", [max_pool2d, min_pool2d, avg_pool2d])
def test_dtype_preserved(fn, dtype):
    x = np.ones((1, 2, 6, 6), dtype)
    assert fn(x, 3, 2, 1, 2).dtype == dtype
    assert global_avg_pool2d(x).dtype == dtype
    assert adaptive_avg_pool2d(x, 4).dtype == dtype


# ----------------------------------------------------------------------------- global and adaptive
@SETTINGS
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    oh=st.integers(1, 6),
    ow=st.integers(1, 6),
    seed=st.integers(0, 1000),
)
def test_adaptive_and_global_match_reference(n, c, h, w, oh, ow, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    out, cache = adaptive_avg_pool2d_forward(x, (oh, ow))
    np.testing.assert_allclose(out, R.adaptive_avg_pool2d_reference(x, (oh, ow)), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_allclose(
        adaptive_avg_pool2d_backward(dout, cache),
        R.adaptive_avg_pool2d_backward_reference(dout, x, (oh, ow)),
        rtol=1e-12,
        atol=1e-12,
    )
    g, gcache = global_avg_pool2d_forward(x)
    assert g.shape == (n, c, 1, 1)
    np.testing.assert_allclose(g, R.global_avg_pool2d_reference(x), rtol=1e-12, atol=1e-12)
    dg = rng.standard_normal(g.shape)
    np.testing.assert_allclose(
        global_avg_pool2d_backward(dg, gcache), R.global_avg_pool2d_backward_reference(dg, x), rtol=1e-12
    )


def test_adaptive_bins_hand_worked():
    # H = 5 -> 3 bins: [0, 2), [1, 4), [3, 5)  (floor(i*5/3), ceil((i+1)*5/3))
    x = np.arange(5, dtype=np.float64).reshape(1, 1, 5, 1)
    out = adaptive_avg_pool2d(x, (3, 1))
    np.testing.assert_allclose(out.ravel(), [0.5, 2.0, 3.5])
    # larger output than input repeats pixels; equal size is the identity
    np.testing.assert_array_equal(adaptive_avg_pool2d(x, (10, 1)).ravel(), np.repeat(np.arange(5.0), 2))
    np.testing.assert_array_equal(adaptive_avg_pool2d(x, (5, 1)), x)


# ----------------------------------------------------------------------------- finite differences
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize(
    "args",
    [(2,), (3, 2, 1), ((2, 3), (1, 2), (1, 0), (2, 1)), (3, 1, 1, 2)],
    ids=["2x2", "3s2p1", "rect", "dil"],
)
def test_window_pool_gradient_finite_differences(kind, args):
    fwd, bwd = KINDS[kind][:2]
    rng = np.random.default_rng(3)
    x = separated((2, 2, 7, 6), rng)
    out, cache = fwd(x, *args)
    dout = rng.standard_normal(out.shape)
    num = numeric_grad(lambda v: fwd(v, *args)[0], x, dout)
    np.testing.assert_allclose(bwd(dout, cache), num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("output_size", [1, (3, 2), (4, 7), (6, 5)])
def test_adaptive_and_global_gradient_finite_differences(output_size):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 2, 6, 5))
    out, cache = adaptive_avg_pool2d_forward(x, output_size)
    dout = rng.standard_normal(out.shape)
    num = numeric_grad(lambda v: adaptive_avg_pool2d(v, output_size), x, dout)
    np.testing.assert_allclose(adaptive_avg_pool2d_backward(dout, cache), num, rtol=1e-6, atol=1e-8)
    g, gcache = global_avg_pool2d_forward(x)
    dg = rng.standard_normal(g.shape)
    np.testing.assert_allclose(
        global_avg_pool2d_backward(dg, gcache), numeric_grad(global_avg_pool2d, x, dg), rtol=1e-6, atol=1e-8
    )


# ----------------------------------------------------------------------------- PyTorch
def _torch():
    import torch

    torch.set_num_threads(1)
    return torch


def _torch_grad(torch, fn, x: np.ndarray, dout: np.ndarray):
    t = torch.tensor(x, requires_grad=True)
    out = fn(t)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), t.grad.numpy()


def _check_against_torch(ours_fwd, ours_bwd, torch_fn, x, seed):
    torch = _torch()
    out, cache = ours_fwd(x)
    dout = np.random.default_rng(seed + 7).standard_normal(out.shape).astype(np.float32)
    t_out, t_dx = _torch_grad(torch, torch_fn, x, dout)
    assert out.shape == t_out.shape and out.dtype == np.float32
    scale = max(1.0, float(np.abs(t_out).max(initial=0.0)))
    np.testing.assert_allclose(out, t_out, rtol=1e-5, atol=1e-6 * scale)
    dx = ours_bwd(dout, cache)
    np.testing.assert_allclose(
        dx, t_dx, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(t_dx).max(initial=0.0)))
    )


@TORCH_SETTINGS
@given(cfg=pool_configs())
def test_max_pool_matches_torch(cfg):
    assume(not has_empty_window(cfg))  # PyTorch corrupts memory on these (heap error)
    torch = _torch()
    k, s, p, d = cfg["args"]
    x = make_input(cfg, np.float32)
    _check_against_torch(
        lambda v: max_pool2d_forward(v, k, s, p, d),
        max_pool2d_backward,
        lambda t: torch.nn.functional.max_pool2d(t, k, s, p, d),
        x,
        cfg["seed"],
    )


@TORCH_SETTINGS
@given(cfg=pool_configs())
def test_min_pool_matches_torch_negated_max_pool(cfg):
    assume(not has_empty_window(cfg))
    torch = _torch()
    k, s, p, d = cfg["args"]
    x = make_input(cfg, np.float32)
    _check_against_torch(
        lambda v: min_pool2d_forward(v, k, s, p, d),
        min_pool2d_backward,
        lambda t: -torch.nn.functional.max_pool2d(-t, k, s, p, d),
        x,
        cfg["seed"],
    )


@TORCH_SETTINGS
@given(cfg=pool_configs(dilation=False))
def test_avg_pool_matches_torch(cfg):
    torch = _torch()
    k, s, p, _ = cfg["args"]
    x = make_input(cfg, np.float32)
    _check_against_torch(
        lambda v: avg_pool2d_forward(v, k, s, p),
        avg_pool2d_backward,
        lambda t: torch.nn.functional.avg_pool2d(t, k, s, p, ceil_mode=False, count_include_pad=True),
        x,
        cfg["seed"],
    )


@TORCH_SETTINGS
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    oh=st.integers(1, 8),
    ow=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_adaptive_avg_pool_matches_torch(n, c, h, w, oh, ow, seed):
    torch = _torch()
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)
    _check_against_torch(
        lambda v: adaptive_avg_pool2d_forward(v, (oh, ow)),
        adaptive_avg_pool2d_backward,
        lambda t: torch.nn.functional.adaptive_avg_pool2d(t, (oh, ow)),
        x,
        seed,
    )


def test_global_avg_pool_matches_torch():
    torch = _torch()
    x = np.random.default_rng(5).standard_normal((3, 4, 7, 5)).astype(np.float32)
    _check_against_torch(
        global_avg_pool2d_forward,
        global_avg_pool2d_backward,
        lambda t: torch.nn.functional.adaptive_avg_pool2d(t, 1),
        x,
        5,
    )


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", ["max_pool2d", "min_pool2d", "avg_pool2d"])
def test_bad_window_pool_input(name):
    fn = {"max_pool2d": max_pool2d, "min_pool2d": min_pool2d, "avg_pool2d": avg_pool2d}[name]
    x = np.zeros((1, 1, 4, 4), np.float32)
    cases = [
        (lambda: fn(np.zeros((4, 4), np.float32), 2), ShapeError, ["4 dimensions", "got 2"]),
        (lambda: fn(np.zeros((1, 1, 4, 4), np.int64), 2), DTypeError, ["floating-point", "int64"]),
        (lambda: fn([[1.0]], 2), DTypeError, ["numpy.ndarray", "list"]),
        (lambda: fn(x, 0), ConfigError, ["kernel_size", ">= 1", "0"]),
        (lambda: fn(x, 2, 0), ConfigError, ["stride", ">= 1", "0"]),
        (lambda: fn(x, 2, 2, -1), ConfigError, ["padding", ">= 0", "-1"]),
        (lambda: fn(x, 2, 2, 0, 0), ConfigError, ["dilation", ">= 1"]),
        (lambda: fn(x, 3, 1, 2), ConfigError, ["half the kernel", "(1, 1)", "(2, 2)"]),
        (lambda: fn(x, (2, 2, 2)), ConfigError, ["kernel_size", "(2, 2, 2)"]),
        (lambda: fn(x, 5), ShapeError, ["too small", "(5, 5)", "got (4, 4)"]),
    ]
    if name != "avg_pool2d":  # kernel 2, dilation 3, padding 1 on 2 rows: window rows -1 and 2
        cases.append((lambda: fn(x[:, :, :2], 2, 1, 1, 3), ConfigError, ["only padding", "[-1, 2]"]))
    for call, error, words in cases:
        with pytest.raises(error) as info:
            call()
        message = str(info.value)
        assert message.startswith(name), message
        for word in words:
            assert word in message, (word, message)


def test_bad_backward_input():
    x = np.zeros((1, 1, 4, 4))
    out, cache = max_pool2d_forward(x, 2)
    with pytest.raises(
        ShapeError, match=r"max_pool2d_backward: dout must have the output's shape \(1, 1, 2, 2\)"
    ):
        max_pool2d_backward(np.zeros((1, 1, 4, 4)), cache)
    with pytest.raises(ConfigError, match="min_pool2d_backward: cache comes from max_pool2d_forward"):
        min_pool2d_backward(out, cache)
    _, acache = avg_pool2d_forward(x, 2)
    with pytest.raises(ShapeError, match="avg_pool2d_backward: dout must have"):
        avg_pool2d_backward(np.zeros((1, 1, 3, 3)), acache)
    _, gcache = global_avg_pool2d_forward(x)
    with pytest.raises(ShapeError, match=r"global_avg_pool2d_backward: .*\(1, 1, 1, 1\)"):
        global_avg_pool2d_backward(np.zeros((1, 1, 2, 2)), gcache)
    _, adcache = adaptive_avg_pool2d_forward(x, 3)
    with pytest.raises(ShapeError, match=r"adaptive_avg_pool2d_backward: .*\(1, 1, 3, 3\)"):
        adaptive_avg_pool2d_backward(np.zeros((1, 1, 2, 2)), adcache)


def test_bad_global_and_adaptive_input():
    with pytest.raises(ShapeError, match=r"global_avg_pool2d: x must have 4 dimensions .* got 3"):
        global_avg_pool2d(np.zeros((1, 4, 4)))
    with pytest.raises(ConfigError, match="adaptive_avg_pool2d: output_size must be >= 1, got 0"):
        adaptive_avg_pool2d(np.zeros((1, 1, 4, 4)), 0)
    with pytest.raises(DTypeError, match="adaptive_avg_pool2d: x must have a floating-point dtype"):
        adaptive_avg_pool2d(np.zeros((1, 1, 4, 4), np.uint8), 2)
    # every error is also a ValueError/TypeError and a CnnkitError
    with pytest.raises(CnnkitError):
        max_pool2d(np.zeros((1, 1, 1, 1)), 2)
