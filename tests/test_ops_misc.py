"""Activations, cross-entropy, linear/flatten, dropout and batch norm: references, gradients, PyTorch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnkit.errors import ConfigError, DataError, DTypeError, ShapeError
from cnnkit.ops import (
    batch_norm,
    batch_norm_backward,
    batch_norm_forward,
    cross_entropy,
    cross_entropy_backward,
    cross_entropy_forward,
    dropout,
    dropout_backward,
    dropout_forward,
    flatten,
    flatten_backward,
    flatten_forward,
    leaky_relu,
    leaky_relu_backward,
    leaky_relu_forward,
    linear,
    linear_backward,
    linear_forward,
    log_softmax,
    log_softmax_backward,
    log_softmax_forward,
    relu,
    relu_backward,
    relu_forward,
    softmax,
    softmax_backward,
    softmax_forward,
)
from cnnkit.ops import reference as R
from finite_differences import numeric_grad

SETTINGS = settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
TORCH_SETTINGS = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- helpers


def close(actual, expected, rtol: float = 1e-5) -> None:
    """float32 comparison: relative tolerance, absolute tolerance scaled to the magnitude."""
    expected = np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 0.1 * scale)


def _torch():
    import torch

    torch.set_num_threads(1)
    return torch


def raises(error, call, *words):
    """``call()`` raises ``error`` and its message contains every one of ``words``."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)
    return message


shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)


# ============================================================================= activations
@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), slope=st.floats(-2, 2), data=st.data())
def test_activations_match_reference(shape, seed, slope, data):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 3
    dout = rng.standard_normal(shape)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))

    out, cache = relu_forward(x)
    np.testing.assert_array_equal(out, R.relu_reference(x))
    np.testing.assert_array_equal(relu_backward(dout, cache), R.relu_backward_reference(dout, x))

    out, cache = leaky_relu_forward(x, slope)
    np.testing.assert_allclose(out, R.leaky_relu_reference(x, slope), rtol=1e-15)
    np.testing.assert_allclose(
        leaky_relu_backward(dout, cache), R.leaky_relu_backward_reference(dout, x, slope)
    )

    out, cache = softmax_forward(x, axis)
    np.testing.assert_allclose(out, R.softmax_reference(x, axis), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        softmax_backward(dout, cache), R.softmax_backward_reference(dout, x, axis), rtol=1e-10, atol=1e-13
    )
    out, cache = log_softmax_forward(x, axis)
    np.testing.assert_allclose(out, R.log_softmax_reference(x, axis), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(
        log_softmax_backward(dout, cache),
        R.log_softmax_backward_reference(dout, x, axis),
        rtol=1e-10,
        atol=1e-13,
    )


@pytest.mark.parametrize("axis", [1, 0, -1])
def test_activation_gradients_finite_differences(axis):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 2))
    x[np.abs(x) < 0.05] += 0.2  # keep away from the kink of (leaky) ReLU
    dout = rng.standard_normal(x.shape)
    for fwd, bwd, f in [
        (relu_forward, relu_backward, relu),
        (lambda v: leaky_relu_forward(v, 0.2), leaky_relu_backward, lambda v: leaky_relu(v, 0.2)),
        (lambda v: softmax_forward(v, axis), softmax_backward, lambda v: softmax(v, axis)),
        (lambda v: log_softmax_forward(v, axis), log_softmax_backward, lambda v: log_softmax(v, axis)),
    ]:
        _, cache = fwd(x)
        np.testing.assert_allclose(bwd(dout, cache), numeric_grad(f, x, dout), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_keep_dtype_and_softmax_sums_to_one(dtype):
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(dtype)
    for fn in (relu, leaky_relu, softmax, log_softmax):
        assert fn(x).dtype == dtype
    for fwd, bwd in [
        (relu_forward, relu_backward),
        (leaky_relu_forward, leaky_relu_backward),
        (softmax_forward, softmax_backward),
        (log_softmax_forward, log_softmax_backward),
    ]:
        assert bwd(np.ones_like(x), fwd(x)[1]).dtype == dtype
    np.testing.assert_allclose(softmax(x).sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(np.exp(log_softmax(x, axis=0)).sum(axis=0), 1, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_stable_for_huge_logits(dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, 1e4 - 1]], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / invalid-value warnings
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            p = softmax(x)
            lp = log_softmax(x)
            loss = cross_entropy(x, np.array([0, 1, 2]))
    assert np.isfinite(p).all() and np.isfinite(lp).all() and np.isfinite(loss)
    np.testing.assert_allclose(p[0], [1, 0, 0], atol=1e-7)
    np.testing.assert_allclose(p[1], [1 / 3] * 3, rtol=1e-6)
    assert lp[0, 1] == pytest.approx(-2e4, rel=1e-6)  # finite, where log(softmax) would be -inf


@TORCH_SETTINGS
@given(
    shape=st.lists(st.integers(1, 6), min_size=2, max_size=4).map(tuple),
    seed=st.integers(0, 2**32 - 1),
    slope=st.floats(-1, 1, allow_subnormal=False),
    scale=st.sampled_from([1.0, 10.0, 100.0]),
)
def test_activations_match_torch(shape, seed, slope, scale):
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    dout = rng.standard_normal(shape).astype(np.float32)
    axis = int(rng.integers(-len(shape), len(shape)))
    for fwd, bwd, tfn in [
        (relu_forward, relu_backward, F.relu),
        (lambda v: leaky_relu_forward(v, slope), leaky_relu_backward, lambda t: F.leaky_relu(t, slope)),
        (lambda v: softmax_forward(v, axis), softmax_backward, lambda t: F.softmax(t, dim=axis)),
        (lambda v: log_softmax_forward(v, axis), log_softmax_backward, lambda t: F.log_softmax(t, dim=axis)),
    ]:
        t = torch.tensor(x, requires_grad=True)
        t_out = tfn(t)
        t_out.backward(torch.tensor(dout))
        out, cache = fwd(x)
        assert out.dtype == np.float32
        close(out, t_out.detach().numpy())
        close(bwd(dout, cache), t.grad.numpy())


def test_activation_bad_input():
    x = np.zeros((2, 3), np.float32)
    raises(DTypeError, lambda: relu(np.zeros(3, np.int32)), "relu:", "floating-point", "int32")
    raises(DTypeError, lambda: softmax([1.0, 2.0]), "softmax:", "numpy.ndarray", "list")
    raises(ConfigError, lambda: softmax(x, axis=2), "softmax:", "[-2, 2)", "got 2")
    raises(ConfigError, lambda: log_softmax(x, axis=-3), "log_softmax:", "[-2, 2)", "got -3")
    raises(ConfigError, lambda: softmax(x, axis=1.0), "softmax:", "axis must be an int")
    raises(ConfigError, lambda: leaky_relu(x, float("nan")), "leaky_relu:", "negative_slope", "nan")
    raises(ConfigError, lambda: leaky_relu(x, "0.1"), "leaky_relu:", "'0.1'")
    _, cache = softmax_forward(x)
    raises(
        ShapeError,
        lambda: softmax_backward(np.zeros((3, 2), np.float32), cache),
        "softmax_backward:",
        "(2, 3)",
    )
    _, cache = relu_forward(x)
    raises(ShapeError, lambda: relu_backward(np.zeros((2,), np.float32), cache), "relu_backward:", "(2, 3)")


# ============================================================================= cross-entropy
@st.composite
def ce_cases(draw):
    n, c = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, c)) * draw(st.sampled_from([0.5, 3.0, 20.0]))
    if draw(st.booleans()):
        labels = rng.integers(0, c, size=n)
    else:
        labels = rng.dirichlet(np.ones(c), size=n)
    smoothing = draw(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0]))
    return logits, labels, smoothing


@SETTINGS
@given(case=ce_cases(), dloss=st.sampled_from([1.0, 0.5, -2.0]))
def test_cross_entropy_matches_reference(case, dloss):
    logits, labels, eps = case
    loss, cache = cross_entropy_forward(logits, labels, eps)
    assert isinstance(loss, float)
    assert loss == pytest.approx(R.cross_entropy_reference(logits, labels, eps), rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(
        cross_entropy_backward(dloss, cache),
        R.cross_entropy_backward_reference(logits, labels, eps, dloss),
        rtol=1e-10,
        atol=1e-14,
    )


@pytest.mark.parametrize("labels_kind", ["index", "probs", "unnormalised"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_cross_entropy_gradient_finite_differences(labels_kind, eps):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((4, 5)) * 2
    labels = {
        "index": np.array([0, 4, 2, 2]),
        "probs": rng.dirichlet(np.ones(5), size=4),
        "unnormalised": rng.random((4, 5)),  # rows need not sum to 1: exact gradient, as PyTorch
    }[labels_kind]
    _, cache = cross_entropy_forward(logits, labels, eps)
    num = numeric_grad(lambda z: cross_entropy(z, labels, eps), logits, 1.0)
    np.testing.assert_allclose(cross_entropy_backward(1.0, cache), num, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(cross_entropy_backward(cache=cache), num, rtol=1e-6, atol=1e-9)


def test_cross_entropy_fused_gradient_and_one_hot_equivalence():
    logits = np.array([[2.0, 1.0, 0.1], [0.0, 3.0, -1.0]], np.float32)
    labels = np.array([0, 1])
    loss, cache = cross_entropy_forward(logits, labels)
    onehot = np.eye(3, dtype=np.float32)[labels]
    # the fused gradient (softmax - y) / N
    np.testing.assert_allclose(cross_entropy_backward(1.0, cache), (softmax(logits) - onehot) / 2, rtol=1e-6)
    assert cross_entropy_backward(1.0, cache).dtype == np.float32
    # index labels and one-hot probability rows give the same loss and gradient
    loss2, cache2 = cross_entropy_forward(logits, onehot)
    assert loss == pytest.approx(loss2, rel=1e-6)
    np.testing.assert_allclose(
        cross_entropy_backward(1.0, cache2), cross_entropy_backward(1.0, cache), atol=1e-7
    )
    # integer one-hot rows are accepted as probabilities too
    assert cross_entropy(logits, onehot.astype(np.int64)) == pytest.approx(loss, rel=1e-6)


@TORCH_SETTINGS
@given(case=ce_cases())
def test_cross_entropy_matches_torch(case):
    torch = _torch()
    logits, labels, eps = case
    logits = logits.astype(np.float32)
    target = (
        torch.tensor(labels, dtype=torch.long)
        if labels.ndim == 1
        else torch.tensor(labels.astype(np.float32))
    )
    t = torch.tensor(logits, requires_grad=True)
    t_loss = torch.nn.functional.cross_entropy(t, target, label_smoothing=eps)
    t_loss.backward()
    lab = labels if labels.ndim == 1 else labels.astype(np.float32)
    loss, cache = cross_entropy_forward(logits, lab, eps)
    assert loss == pytest.approx(t_loss.item(), rel=1e-5, abs=1e-6)
    close(cross_entropy_backward(1.0, cache), t.grad.numpy())


def test_cross_entropy_bad_input():
    logits = np.zeros((3, 4), np.float32)
    msg = raises(
        DataError,
        lambda: cross_entropy(logits, np.array([0, 7, 1])),
        "cross_entropy:",
        "label 7",
        "4 classes",
    )
    assert "0..3" in msg
    raises(DataError, lambda: cross_entropy(logits, np.array([0, -1, 1])), "label -1", "4 classes")
    raises(ShapeError, lambda: cross_entropy(logits, np.array([0, 1])), "expected 3 labels", "got 2")
    raises(ShapeError, lambda: cross_entropy(logits, np.zeros((3, 5))), "(3, 4)", "got (3, 5)")
    raises(ShapeError, lambda: cross_entropy(logits, np.zeros((3, 4, 1))), "got shape (3, 4, 1)")
    raises(DTypeError, lambda: cross_entropy(logits, np.array([0.0, 1.0, 2.0])), "integer dtype", "float64")
    raises(DTypeError, lambda: cross_entropy(logits, np.array([True, False, True])), "integer dtype", "bool")
    raises(
        ShapeError, lambda: cross_entropy(np.zeros(4, np.float32), np.array([0])), "logits", "2 dimensions"
    )
    raises(
        ShapeError, lambda: cross_entropy(np.zeros((0, 4), np.float32), np.zeros(0, int)), "at least one row"
    )
    raises(
        ConfigError,
        lambda: cross_entropy(logits, np.array([0, 1, 2]), 1.5),
        "label_smoothing",
        "[0, 1]",
        "1.5",
    )
    raises(ConfigError, lambda: cross_entropy_backward(1.0), "cross_entropy_backward:", "cache")
    _, cache = cross_entropy_forward(logits, np.array([0, 1, 2]))
    raises(ConfigError, lambda: cross_entropy_backward("1", cache), "cross_entropy_backward:", "scalar")


# ============================================================================= linear and flatten
@SETTINGS
@given(
    n=st.integers(1, 4),
    k=st.integers(1, 5),
    m=st.integers(1, 5),
    bias=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_matches_reference(n, k, m, bias, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((n, k)), rng.standard_normal((m, k))
    b = rng.standard_normal(m) if bias else None
    out, cache = linear_forward(x, w, b)
    np.testing.assert_allclose(out, R.linear_reference(x, w, b), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = linear_backward(dout, cache)
    rdx, rdw, rdb = R.linear_backward_reference(dout, x, w, bias)
    np.testing.assert_allclose(dx, rdx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, rdw, rtol=1e-12, atol=1e-12)
    if bias:
        np.testing.assert_allclose(db, rdb, rtol=1e-12, atol=1e-12)
    else:
        assert db is None


def test_linear_and_flatten_finite_differences():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    out, cache = linear_forward(x, w, b)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = linear_backward(dout, cache)
    np.testing.assert_allclose(dx, numeric_grad(lambda v: linear(v, w, b), x, dout), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dw, numeric_grad(lambda v: linear(x, v, b), w, dout), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(db, numeric_grad(lambda v: linear(x, w, v), b, dout), rtol=1e-6, atol=1e-9)

    x4 = rng.standard_normal((2, 3, 2, 2))
    out, cache = flatten_forward(x4)
    assert out.shape == (2, 12)
    np.testing.assert_array_equal(out, R.flatten_reference(x4))
    d = rng.standard_normal(out.shape)
    np.testing.assert_allclose(flatten_backward(d, cache), numeric_grad(flatten, x4, d), rtol=1e-6, atol=1e-9)


@TORCH_SETTINGS
@given(
    n=st.integers(1, 8),
    k=st.integers(1, 40),
    m=st.integers(1, 20),
    bias=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_matches_torch(n, k, m, bias, seed):
    torch = _torch()
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((n, k)).astype(np.float32), rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32) if bias else None
    dout = rng.standard_normal((n, m)).astype(np.float32)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if bias else None
    t_out = torch.nn.functional.linear(tx, tw, tb)
    t_out.backward(torch.tensor(dout))
    out, cache = linear_forward(x, w, b)
    assert out.dtype == np.float32
    close(out, t_out.detach().numpy())
    dx, dw, db = linear_backward(dout, cache)
    close(dx, tx.grad.numpy())
    close(dw, tw.grad.numpy())
    if bias:
        close(db, tb.grad.numpy())
    t_flat = torch.tensor(x.reshape(n, 1, k)).flatten(1).numpy()
    np.testing.assert_array_equal(flatten(x.reshape(n, 1, k)), t_flat)


def test_linear_and_flatten_bad_input():
    x, w = np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32)
    raises(
        ShapeError, lambda: linear(x, np.zeros((4, 5), np.float32)), "linear:", "(out_features, 3)", "(4, 5)"
    )
    raises(ShapeError, lambda: linear(x, w, np.zeros(3, np.float32)), "linear:", "(4,)", "(3,)")
    raises(ShapeError, lambda: linear(np.zeros((2, 3, 1), np.float32), w), "linear:", "2 dimensions", "got 3")
    raises(DTypeError, lambda: linear(x, w.astype(np.float64)), "linear:", "float32", "float64")
    raises(DTypeError, lambda: linear(x, w, np.zeros(4)), "linear:", "b must have x's dtype")
    _, cache = linear_forward(x, w)
    raises(
        ShapeError, lambda: linear_backward(np.zeros((2, 3), np.float32), cache), "linear_backward:", "(2, 4)"
    )
    raises(ShapeError, lambda: flatten(np.zeros(3, np.float32)), "flatten:", "batch axis", "(3,)")
    _, cache = flatten_forward(np.zeros((2, 3, 4), np.float32))
    raises(
        ShapeError,
        lambda: flatten_backward(np.zeros((2, 3), np.float32), cache),
        "flatten_backward:",
        "(2, 12)",
    )


# ============================================================================= dropout
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_matches_reference_and_scales(dtype):
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(dtype)
    out, mask = dropout_forward(x, 0.3, rng=123)
    assert out.dtype == dtype and mask.dtype == dtype
    u = np.random.default_rng(123).random(x.shape, dtype=dtype)
    np.testing.assert_allclose(out, R.dropout_reference(x, 0.3, u), rtol=1e-6)
    kept = mask != 0
    np.testing.assert_allclose(mask[kept], 1 / 0.7, rtol=1e-6)  # kept values scaled by 1 / (1 - rate)
    assert 0 < kept.sum() < kept.size
    dout = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(dropout_backward(dout, mask), dout * mask)
    # finite differences in float64 (the same seed gives the same mask at every evaluation)
    x64, d64 = x.astype(np.float64), dout.astype(np.float64)
    _, mask64 = dropout_forward(x64, 0.3, rng=123)
    num = numeric_grad(lambda v: dropout(v, 0.3, rng=123), x64, d64)
    np.testing.assert_allclose(dropout_backward(d64, mask64), num, rtol=1e-6, atol=1e-7)


def test_dropout_statistics_identity_and_reproducibility():
    x = np.ones((200, 500), np.float32)
    y = dropout(x, 0.25, rng=7)
    assert abs((y == 0).mean() - 0.25) < 0.01  # dropped with probability rate
    assert abs(y.mean() - 1.0) < 0.02  # inverted dropout keeps the expectation
    np.testing.assert_array_equal(y, dropout(x, 0.25, rng=7))  # same seed, same mask
    gen = np.random.default_rng(7)
    first, second = dropout(x, 0.25, rng=gen), dropout(x, 0.25, rng=gen)
    assert not np.array_equal(first, second)  # a Generator advances
    np.testing.assert_array_equal(first, y)
    for out, cache in (dropout_forward(x, 0.5, training=False), dropout_forward(x, 0.0)):
        assert out is x and cache is None  # identity
        assert dropout_backward(x, cache) is x


def test_dropout_bad_input():
    x = np.ones((2, 2), np.float32)
    for rate in (1.0, -0.1, "0.5", True):
        raises(ConfigError, lambda r=rate: dropout(x, r), "dropout:", "[0, 1)", repr(rate))
    raises(ConfigError, lambda: dropout(x, 0.5, rng="seed"), "dropout:", "rng", "str")
    raises(DTypeError, lambda: dropout(np.ones(3, int), 0.5), "dropout:", "floating-point")
    _, mask = dropout_forward(x, 0.5, rng=0)
    raises(
        ShapeError, lambda: dropout_backward(np.ones((3, 2), np.float32), mask), "dropout_backward:", "(2, 2)"
    )


# ============================================================================= batch norm
def _bn_inputs(shape, seed, affine=True, dtype=np.float64):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * rng.uniform(0.5, 3) + rng.uniform(-2, 2)).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, c).astype(dtype) if affine else None
    beta = rng.standard_normal(c).astype(dtype) if affine else None
    rmean = rng.standard_normal(c).astype(dtype)
    rvar = rng.uniform(0.5, 2, c).astype(dtype)
    return x, gamma, beta, rmean, rvar, rng


bn_shapes = st.one_of(
    st.tuples(st.integers(2, 6), st.integers(1, 4)),
    st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
).filter(lambda s: np.prod(s) // s[1] > 1)


@SETTINGS
@given(
    shape=bn_shapes,
    seed=st.integers(0, 2**32 - 1),
    training=st.booleans(),
    affine=st.booleans(),
    momentum=st.sampled_from([0.1, 0.5, 1.0, 0.0]),
)
def test_batch_norm_matches_reference(shape, seed, training, affine, momentum):
    x, gamma, beta, rmean, rvar, rng = _bn_inputs(shape, seed, affine)
    ref_y, ref_mean, ref_var = R.batch_norm_reference(x, gamma, beta, rmean, rvar, training, momentum, 1e-5)
    ref_dx, ref_dg, ref_db = R.batch_norm_backward_reference(
        dout := rng.standard_normal(shape), x, gamma, rmean, rvar, training, 1e-5
    )
    rm, rv = rmean.copy(), rvar.copy()
    y, cache = batch_norm_forward(x, gamma, beta, rm, rv, training, momentum, 1e-5)
    np.testing.assert_allclose(y, ref_y, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(rm, ref_mean, rtol=1e-12, atol=1e-12)  # updated in place (training only)
    np.testing.assert_allclose(rv, ref_var, rtol=1e-12, atol=1e-12)
    if not training:
        np.testing.assert_array_equal(rm, rmean)
    dx, dg, db = batch_norm_backward(dout, cache)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-8, atol=1e-9)
    if affine:
        np.testing.assert_allclose(dg, ref_dg, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(db, ref_db, rtol=1e-9, atol=1e-10)
    else:
        assert dg is None and db is None


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 2, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_finite_differences(shape, training):
    x, gamma, beta, rmean, rvar, rng = _bn_inputs(shape, 9)
    dout = rng.standard_normal(shape)

    def f(xx=x, g=gamma, b=beta):  # fresh copies: the running statistics are updated in place
        return batch_norm(xx, g, b, rmean.copy(), rvar.copy(), training)

    _, cache = batch_norm_forward(x, gamma, beta, rmean.copy(), rvar.copy(), training)
    dx, dg, db = batch_norm_backward(dout, cache)
    np.testing.assert_allclose(dx, numeric_grad(lambda v: f(xx=v), x, dout), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dg, numeric_grad(lambda v: f(g=v), gamma, dout), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(db, numeric_grad(lambda v: f(b=v), beta, dout), rtol=1e-5, atol=1e-7)
    if not training:
        np.testing.assert_allclose(
            dx, dout * (gamma / np.sqrt(rvar + 1e-5)).reshape((1, -1) + (1,) * (len(shape) - 2))
        )


@TORCH_SETTINGS
@given(
    shape=st.one_of(
        st.tuples(st.integers(2, 16), st.integers(1, 8)),
        st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
    ).filter(lambda s: np.prod(s) // s[1] > 1),
    seed=st.integers(0, 2**32 - 1),
    training=st.booleans(),
    momentum=st.sampled_from([0.1, 0.01, 0.5]),
    eps=st.sampled_from([1e-5, 1e-3]),
)
def test_batch_norm_matches_torch(shape, seed, training, momentum, eps):
    torch = _torch()
    x, gamma, beta, rmean, rvar, rng = _bn_inputs(shape, seed, dtype=np.float32)
    dout = rng.standard_normal(shape).astype(np.float32)
    # PyTorch in float64 on the same float32 values: its own float32 statistics lose digits when a
    # channel has few, nearly equal values (2 values: 6e-6 off where cnnkit's float64 sums are exact)
    tx, tg, tb = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, gamma, beta))
    trm, trv = torch.tensor(rmean.astype(np.float64)), torch.tensor(rvar.astype(np.float64))
    t_out = torch.nn.functional.batch_norm(tx, trm, trv, tg, tb, training, momentum, eps)
    t_out.backward(torch.tensor(dout.astype(np.float64)))
    rm, rv = rmean.copy(), rvar.copy()
    y, cache = batch_norm_forward(x, gamma, beta, rm, rv, training, momentum, eps)
    assert y.dtype == np.float32
    close(y, t_out.detach().numpy())
    close(rm, trm.numpy())
    close(rv, trv.numpy())
    dx, dg, db = batch_norm_backward(dout, cache)
    # the training-mode dx subtracts nearly equal sums: compare at the scale of its terms
    np.testing.assert_allclose(
        dx, tx.grad.numpy(), rtol=1e-4, atol=2e-5 * max(1.0, float(np.abs(dout).max()))
    )
    close(dg, tg.grad.numpy(), rtol=1e-4)
    close(db, tb.grad.numpy())


def test_batch_norm_bad_input():
    c = np.ones(3, np.float32)
    x = np.zeros((4, 3), np.float32)
    raises(
        ShapeError,
        lambda: batch_norm(np.zeros((4, 3, 2), np.float32), c, c, c, c, True),
        "batch_norm:",
        "got 3",
    )
    raises(ShapeError, lambda: batch_norm(x, np.ones(4, np.float32), c, c, c, True), "gamma", "(3,)", "(4,)")
    raises(
        DTypeError, lambda: batch_norm(x, c, c, np.zeros(3), c, True), "running_mean", "float32", "float64"
    )
    raises(
        ShapeError, lambda: batch_norm(np.zeros((1, 3), np.float32), c, c, c, c, True), "more than 1 value"
    )
    raises(
        ConfigError, lambda: batch_norm(x, c, c, c, c, True, momentum=1.5), "momentum", "[0.0, 1.0]", "1.5"
    )
    raises(ConfigError, lambda: batch_norm(x, c, c, c, c, True, eps=0.0), "eps", "(0.0, 1.0]")
    raises(ConfigError, lambda: batch_norm(x, c, c, None, None, False), "inference", "running_mean")
    _, cache = batch_norm_forward(x + np.arange(4, dtype=np.float32)[:, None], c, c, None, None, True)
    raises(
        ShapeError,
        lambda: batch_norm_backward(np.zeros((3, 3), np.float32), cache),
        "batch_norm_backward",
        "(4, 3)",
    )
