"""cnnkit.ops.conv: the fast kernels against the loop references, finite differences and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnkit.errors import ConfigError, DTypeError, ShapeError
from cnnkit.ops import col2im, conv2d, conv2d_backward, conv2d_forward, conv_output_size, im2col
from cnnkit.ops.reference import conv2d_backward_reference, conv2d_reference, im2col_reference

# ----------------------------------------------------------------------------- random cases


def _effective(kernel: int, dilation: int) -> int:
    return dilation * (kernel - 1) + 1


def _as_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@st.composite
def conv_cases(draw, max_side: int = 5):
    """A random valid convolution: shapes, stride, padding (all forms), dilation, groups, flip."""
    n = draw(st.integers(1, 2))
    depthwise = draw(st.booleans())
    if depthwise:  # groups == C, a channel multiplier of 1 or 2
        groups = draw(st.integers(1, 4))
        cg, fg = 1, draw(st.integers(1, 2))
    else:
        groups = draw(st.integers(1, 3))
        cg, fg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = draw(st.sampled_from([1, 2, (1, 2), (2, 1)]))
    mode = draw(st.sampled_from(["int", "pair", "four", "same", "valid"]))
    stride = 1 if mode == "same" else draw(st.sampled_from([1, 2, 3, (1, 2), (2, 1)]))
    if mode == "int":
        padding = draw(st.integers(0, 2))
    elif mode == "pair":
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    elif mode == "four":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(4))
    else:
        padding = mode
    d = _as_pair(dilation)
    if isinstance(padding, str):
        pad_h = pad_w = 0
    elif isinstance(padding, int):
        pad_h = pad_w = 2 * padding
    elif len(padding) == 2:
        pad_h, pad_w = 2 * padding[0], 2 * padding[1]
    else:
        pad_h, pad_w = padding[0] + padding[1], padding[2] + padding[3]
    min_h = max(1, _effective(kernel[0], d[0]) - (0 if mode == "same" else pad_h))
    min_w = max(1, _effective(kernel[1], d[1]) - (0 if mode == "same" else pad_w))
    if mode == "same":
        min_h = min_w = 1
    h = draw(st.integers(min_h, min_h + max_side))
    w = draw(st.integers(min_w, min_w + max_side))
    return {
        "x_shape": (n, groups * cg, h, w),
        "w_shape": (groups * fg, cg, *kernel),
        "bias": draw(st.booleans()),
        "kwargs": {
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
            "groups": groups,
            "flip_kernel": draw(st.booleans()),
        },
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def _arrays(case, dtype):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["x_shape"]).astype(dtype)
    w = rng.standard_normal(case["w_shape"]).astype(dtype)
    b = rng.standard_normal(case["w_shape"][0]).astype(dtype) if case["bias"] else None
    return x, w, b, rng


def _bounds(x, w, b, dout, kwargs):
    """Elementwise sum of |terms| behind each result: out, dx, dw, db (float64).

    A float32 sum of K terms is off by at most about K * 6e-8 times the sum of their absolute
    values (typically sqrt(K) times that), so 1e-5 of this bound is a tolerance that scales with
    each element's own magnitude, including where positive and negative terms cancel.
    """
    ax, aw = np.abs(x).astype(np.float64), np.abs(w).astype(np.float64)
    ab = None if b is None else np.abs(b).astype(np.float64)
    out, cache = conv2d_forward(ax, aw, ab, **kwargs)
    dx, dw, db = conv2d_backward(np.abs(dout).astype(np.float64), cache)
    return out, dx, dw, db


def _close(actual, expected, bound, dtype, what):
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, what
    tol = 1e-5 if dtype == np.float32 else 1e-12
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    limit = tol * np.abs(expected) + tol * bound + 1e-30
    assert np.all(err <= limit), f"{what}: max error {err.max()} (bound {bound.max()})"


# ----------------------------------------------------------------------------- fast vs reference


@settings(max_examples=100, deadline=None)
@given(case=conv_cases(), dtype=st.sampled_from([np.float32, np.float64]))
def test_forward_and_gradients_match_reference(case, dtype):
    x, w, b, rng = _arrays(case, dtype)
    kw = case["kwargs"]
    out, cache = conv2d_forward(x, w, b, **kw)
    expected = conv2d_reference(x, w, b, **kw)
    dout = rng.standard_normal(out.shape).astype(dtype)
    bout, bdx, bdw, bdb = _bounds(x, w, b, dout, kw)
    _close(out, expected, bout, dtype, "out")

    dx, dw, db = conv2d_backward(dout, cache)
    rdx, rdw, rdb = conv2d_backward_reference(dout, x, w, b, **kw)
    _close(dx, rdx, bdx, dtype, "dx")
    _close(dw, rdw, bdw, dtype, "dw")
    if b is None:
        assert db is None and rdb is None
    else:
        _close(db, rdb, bdb, dtype, "db")


@settings(max_examples=30, deadline=None)
@given(case=conv_cases())
def test_layout_of_input_does_not_change_results(case):
    """A channels-last or sliced (non-contiguous) x gives the same numbers as a C-ordered one."""
    x, w, b, rng = _arrays(case, np.float64)
    kw = case["kwargs"]
    out = conv2d(x, w, b, **kw)
    x_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    x_sliced = np.repeat(x, 2, axis=3)[:, :, :, ::2]
    x_reversed = np.ascontiguousarray(x[:, ::-1, ::-1])[:, ::-1, ::-1]  # negative strides
    for other in (x_last, x_sliced, x_reversed):
        np.testing.assert_allclose(conv2d(other, w, b, **kw), out, rtol=1e-13, atol=1e-13)
    # and the cache does not depend on dout's layout either
    out, cache = conv2d_forward(x, w, b, **kw)
    dout = rng.standard_normal(out.shape)
    a = conv2d_backward(dout, cache)
    c = conv2d_backward(np.asfortranarray(dout), cache)
    for u, v in zip(a, c, strict=True):
        if u is not None:
            np.testing.assert_allclose(u, v, rtol=1e-13, atol=1e-13)


@settings(max_examples=40, deadline=None)
@given(case=conv_cases())
def test_im2col_matches_reference_and_col2im_is_its_adjoint(case):
    x, w, _, rng = _arrays(case, np.float64)
    kw = {k: case["kwargs"][k] for k in ("stride", "padding", "dilation")}
    ksize = case["w_shape"][2:]
    cols = im2col(x, ksize, **kw)
    np.testing.assert_array_equal(cols, im2col_reference(x, ksize, **kw))
    # <im2col(x), c> == <x, col2im(c)>: col2im is the transpose of the linear map im2col
    c = rng.standard_normal(cols.shape)
    back = col2im(c, x.shape, ksize, **kw)
    assert back.shape == x.shape
    np.testing.assert_allclose(np.sum(cols * c), np.sum(x * back), rtol=1e-10, atol=1e-10)
    # im2col @ w.reshape(F, -1).T is the (ungrouped) convolution
    if case["kwargs"]["groups"] == 1:
        out = conv2d(x, w, **kw)
        n, f, oh, ow = out.shape
        mat = (cols @ w.reshape(f, -1).T).reshape(n, oh, ow, f).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(mat, out, rtol=1e-12, atol=1e-12)


def test_dtype_is_preserved_float32():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    b = np.zeros(6, np.float32)
    for kw in ({}, {"padding": 1, "stride": 2}, {"groups": 2}):
        ww = w[:, : 4 // kw.get("groups", 1)]
        out, cache = conv2d_forward(x, np.ascontiguousarray(ww), b, **kw)
        grads = conv2d_backward(np.ones(out.shape, np.float64), cache)  # float64 dout is cast
        assert out.dtype == np.float32
        assert all(g.dtype == np.float32 for g in grads)
    cols = im2col(x, 3)
    assert cols.dtype == np.float32
    assert col2im(cols, x.shape, 3).dtype == np.float32


@pytest.mark.parametrize(("c", "k", "groups"), [(3, 3, 1), (8, 3, 1), (4, 1, 1), (4, 3, 2)])
def test_empty_batch(c, k, groups):
    w = np.ones((4, c // groups, k, k))
    out, cache = conv2d_forward(np.zeros((0, c, 6, 7)), w, np.ones(4), padding=k // 2, groups=groups)
    assert out.shape == (0, 4, 6, 7)
    dx, dw, db = conv2d_backward(np.zeros(out.shape), cache)
    assert dx.shape == (0, c, 6, 7)
    np.testing.assert_array_equal(dw, np.zeros_like(w))
    np.testing.assert_array_equal(db, np.zeros(4))


def test_no_bias_gives_db_none():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((3, 2, 2, 2))
    out, cache = conv2d_forward(x, w)
    assert conv2d_backward(np.ones_like(out), cache)[2] is None


def test_pointwise_fast_path_skips_im2col():
    """notes §8.1: a 1x1 conv is a matmul over channels; channels-last input is not even copied."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 4, 3))
    w = rng.standard_normal((7, 5, 1, 1))
    b = rng.standard_normal(7)
    x_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    out, cache = conv2d_forward(x_last, w, b)
    assert cache.path == "pointwise"
    assert np.shares_memory(cache.cols, x_last)  # no im2col copy
    np.testing.assert_allclose(out, conv2d_reference(x, w, b), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    for got, exp in zip(conv2d_backward(dout, cache), conv2d_backward_reference(dout, x, w, b), strict=True):
        np.testing.assert_allclose(got, exp, rtol=1e-12, atol=1e-12)
    # stride 2 or padding leaves the fast path
    assert conv2d_forward(x, w, b, stride=2)[1].path != "pointwise"
    assert conv2d_forward(x, w, b, padding=1)[1].path != "pointwise"


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, (2, 5)])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_same_padding_keeps_size_and_pads_bottom_right(kernel, dilation):
    x = np.random.default_rng(3).standard_normal((1, 1, 7, 8))
    kh, kw = _as_pair(kernel)
    w = np.zeros((1, 1, kh, kw))
    out = conv2d(x, w, padding="same", dilation=dilation)
    assert out.shape == x.shape
    # a kernel with only its top-left tap set reads x shifted by the *top/left* padding
    w[0, 0, 0, 0] = 1.0
    top = dilation * (kh - 1) // 2
    left = dilation * (kw - 1) // 2
    expected = np.zeros_like(x)
    expected[..., top:, left:] = x[..., : 7 - top, : 8 - left]
    np.testing.assert_array_equal(conv2d(x, w, padding="same", dilation=dilation), expected)


def test_conv_output_size():
    assert conv_output_size(6, 3) == 4  # notes §3.4
    assert conv_output_size(6, 3, stride=2) == 2  # 2.5 rounded down
    assert conv_output_size(7, 3, dilation=2) == 3  # dilated kernel covers 5 pixels
    assert conv_output_size(5, 3, padding=1, stride=2, dilation=2) == 2
    with pytest.raises(ConfigError, match=r"conv_output_size.*does not fit.*size 2"):
        conv_output_size(2, 3)
    with pytest.raises(ConfigError, match="stride must be an int >= 1"):
        conv_output_size(6, 3, stride=0)
    with pytest.raises(ConfigError, match="padding"):
        conv_output_size(6, 3, padding=-1)


# ----------------------------------------------------------------------------- finite differences


def _numeric_grad(f, arr, eps=1e-6):
    """Central differences of the scalar function f() with respect to every entry of arr."""
    grad = np.zeros_like(arr)
    flat, gflat = arr.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


@settings(max_examples=30, deadline=None)
@given(case=conv_cases(max_side=3))
def test_gradients_match_finite_differences(case):
    case = {**case, "bias": True}
    x, w, b, rng = _arrays(case, np.float64)
    kw = case["kwargs"]
    out, cache = conv2d_forward(x, w, b, **kw)
    r = rng.standard_normal(out.shape)  # L = sum(out * r), so dL/dout = r

    def loss():
        return float(np.sum(conv2d(x, w, b, **kw) * r))

    dx, dw, db = conv2d_backward(r, cache)
    for name, arr, analytic in (("dx", x, dx), ("dw", w, dw), ("db", b, db)):
        numeric = _numeric_grad(loss, arr)
        # L is linear in each argument, so central differences are exact up to rounding
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7, err_msg=name)


# ----------------------------------------------------------------------------- PyTorch


def _torch_configs(count: int, seed: int = 20261125):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        groups = int(rng.choice([1, 1, 1, 2, 3]))
        depthwise = rng.random() < 0.15
        cg = 1 if depthwise else int(rng.integers(1, 4))
        fg = int(rng.integers(1, 4))
        kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
        dil = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        mode = rng.choice(["int", "pair", "same", "valid"])
        if mode == "same":
            stride, padding = (1, 1), "same"
            h, w = (int(v) for v in rng.integers(1, 8, size=2))
        else:
            stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            padding = (
                int(rng.integers(0, 3))
                if mode == "int"
                else (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
                if mode == "pair"
                else "valid"
            )
            ph, pw = (0, 0) if padding == "valid" else _as_pair(padding)
            h = max(1, _effective(kh, dil[0]) - 2 * ph) + int(rng.integers(0, 6))
            w = max(1, _effective(kw, dil[1]) - 2 * pw) + int(rng.integers(0, 6))
        n = int(rng.integers(1, 4))
        c = groups * cg
        yield {
            "x": rng.standard_normal((n, c, h, w)).astype(np.float32),
            "w": rng.standard_normal((groups * fg, cg, kh, kw)).astype(np.float32),
            "b": rng.standard_normal(groups * fg).astype(np.float32),
            "kwargs": {"stride": stride, "padding": padding, "dilation": dil, "groups": groups},
        }


@pytest.fixture
def torch_one_thread():
    """torch, on one thread: its OpenMP workers otherwise spin against OpenBLAS's (3x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_matches_pytorch_on_200_random_configurations(torch_one_thread):
    torch = torch_one_thread
    functional = torch.nn.functional
    configs = list(_torch_configs(200))
    assert (
        sum(
            isinstance(c["kwargs"]["padding"], str)
            and c["kwargs"]["padding"] == "same"
            and (c["w"].shape[2] % 2 == 0 or c["w"].shape[3] % 2 == 0)
            for c in configs
        )
        > 5
    )
    for i, cfg in enumerate(configs):
        x, w, b, kw = cfg["x"], cfg["w"], cfg["b"], cfg["kwargs"]
        out, cache = conv2d_forward(x, w, b, **kw)
        dout = np.random.default_rng(i).standard_normal(out.shape).astype(np.float32)
        dx, dw, db = conv2d_backward(dout, cache)

        tx = torch.tensor(x, requires_grad=True)
        tw = torch.tensor(w, requires_grad=True)
        tb = torch.tensor(b, requires_grad=True)
        tout = functional.conv2d(tx, tw, tb, **kw)
        tout.backward(torch.tensor(dout))
        # rtol 1e-5 plus atol = 1e-5 x (sum of |terms| of each element, see _bounds): both
        # libraries sum in float32 in different orders, so they may differ by a few ulps of the
        # summands' magnitude, which can exceed 1e-5 of a result that cancels to near zero.
        bounds = _bounds(x, w, b, dout, kw)
        pairs = (out, tout), (dx, tx.grad), (dw, tw.grad), (db, tb.grad)
        for name, (mine, theirs), bound in zip(("out", "dx", "dw", "db"), pairs, bounds, strict=True):
            _close(mine, theirs.detach().numpy(), bound, np.float32, f"config {i} {kw}: {name}")


# ----------------------------------------------------------------------------- bad input


def _x(shape=(2, 4, 6, 6), dtype=np.float32):
    return np.zeros(shape, dtype)


BAD = [
    ("x ndim", dict(x=_x((4, 6, 6))), ShapeError, r"^conv2d: x must have 4 dimensions.*got 3"),
    ("w ndim", dict(w=_x((3, 4, 3))), ShapeError, r"^conv2d: w must have 4 dimensions.*\(3, 4, 3\)"),
    (
        "channels",
        dict(w=_x((3, 3, 3, 3))),
        ShapeError,
        r"^conv2d: channel mismatch: x has C=4.*\(2, 4, 6, 6\).*3 \* 1 = 3.*\(3, 3, 3, 3\)",
    ),
    (
        "groups vs C",
        dict(w=_x((3, 1, 3, 3)), groups=3),
        ConfigError,
        r"^conv2d: groups=3 must divide the input channels C=4",
    ),
    (
        "groups vs F",
        dict(w=_x((3, 2, 3, 3)), groups=2),
        ConfigError,
        r"^conv2d: groups=2 must divide the filters F=3",
    ),
    ("groups 0", dict(groups=0), ConfigError, r"^conv2d: groups must be an int >= 1, got 0"),
    ("bias shape", dict(b=_x((4,))), ShapeError, r"^conv2d: b must have shape \(F,\) = \(3,\), got \(4,\)"),
    ("bias dtype", dict(b=_x((3,), np.float64)), DTypeError, r"^conv2d: b must have the dtype of x"),
    (
        "kernel too big",
        dict(w=_x((3, 4, 7, 3))),
        ShapeError,
        r"^conv2d: the kernel \(7x3.*larger than the padded input \(6x6.*\(2, 4, 6, 6\).*\(3, 4, 7, 3\)",
    ),
    (
        "dilated kernel too big",
        dict(dilation=3),
        ShapeError,
        r"^conv2d: the kernel \(3x3, dilation \(3, 3\), covering 7x7 pixels\)",
    ),
    ("int x", dict(x=np.zeros((2, 4, 6, 6), np.int64)), DTypeError, r"^conv2d: x must have a floating"),
    (
        "float16 x",
        dict(x=_x(dtype=np.float16), w=_x((3, 4, 3, 3), np.float16)),
        DTypeError,
        r"float32 or float64, got float16",
    ),
    (
        "mixed dtypes",
        dict(w=_x((3, 4, 3, 3), np.float64)),
        DTypeError,
        r"^conv2d: x and w must have the same dtype, got x float32 and w float64",
    ),
    ("list x", dict(x=[[1.0]]), DTypeError, r"^conv2d: x must be a numpy.ndarray, got list"),
    ("stride 0", dict(stride=0), ConfigError, r"^conv2d: stride must be >= 1, got 0"),
    ("stride triple", dict(stride=(1, 1, 1)), ConfigError, r"^conv2d: stride must be an int or a pair"),
    ("stride float", dict(stride=1.5), ConfigError, r"^conv2d: stride must be an int or a pair"),
    ("dilation 0", dict(dilation=(1, 0)), ConfigError, r"^conv2d: dilation must be >= 1"),
    ("padding -1", dict(padding=-1), ConfigError, r"^conv2d: padding must be >= 0, got -1"),
    (
        "padding word",
        dict(padding="full"),
        ConfigError,
        r"^conv2d: padding must be an int, a pair, 'valid' or 'same', got 'full'",
    ),
    ("padding triple", dict(padding=(1, 1, 1)), ConfigError, r"^conv2d: padding must be"),
    (
        "same with stride",
        dict(padding="same", stride=2),
        ConfigError,
        r"^conv2d: padding='same' needs stride 1",
    ),
]


@pytest.mark.parametrize(("case", "changes", "error", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_cnnkit_errors(case, changes, error, message):
    args = {
        "x": _x(),
        "w": _x((3, 4, 3, 3)),
        "b": None,
        "stride": 1,
        "padding": 0,
        "dilation": 1,
        "groups": 1,
    }
    args.update(changes)
    for fn in (conv2d, conv2d_forward):
        with pytest.raises(error, match=message):
            fn(**args)


def test_backward_bad_input():
    out, cache = conv2d_forward(_x(), _x((3, 4, 3, 3)))
    with pytest.raises(
        ShapeError,
        match=r"^conv2d_backward: dout must have the output's shape .* = \(2, 3, 4, 4\), got \(2, 3, 4, 5\)",
    ):
        conv2d_backward(np.zeros((2, 3, 4, 5), np.float32), cache)
    with pytest.raises(ConfigError, match=r"^conv2d_backward: cache must come from conv2d_forward"):
        conv2d_backward(out, {"x": 1})
    with pytest.raises(DTypeError, match=r"^conv2d_backward: dout must have a floating"):
        conv2d_backward(np.zeros(out.shape, np.int32), cache)


def test_im2col_col2im_bad_input():
    with pytest.raises(ShapeError, match=r"^im2col: the kernel \(5x5.*larger than the padded input \(4x4"):
        im2col(np.zeros((1, 1, 4, 4)), 5)
    with pytest.raises(ShapeError, match=r"^im2col: x must have 4 dimensions"):
        im2col(np.zeros((4, 4)), 2)
    with pytest.raises(ShapeError, match=r"^col2im: cols must have shape .* = \(9, 4\).*got \(9, 5\)"):
        col2im(np.zeros((9, 5)), (1, 1, 4, 4), 2)
    with pytest.raises(ShapeError, match=r"^col2im: x_shape must be 4 positive ints"):
        col2im(np.zeros((9, 4)), (1, 4, 4), 2)
