"""Batch normalisation (notes §8.3): ``x_hat = (x - mu) / sqrt(sigma^2 + eps)``, ``y = gamma x_hat + beta``.

Statistics are per channel, over the batch and (for images) the spatial axes: axis 0 of ``(N, C)``
inputs, axes (0, 2, 3) of ``(N, C, H, W)`` inputs, ``m`` values per channel.

Training: ``mu`` and the biased variance ``sigma^2`` of the batch normalise it, and the running statistics
are updated in place exactly as PyTorch does::

    running_mean = (1 - momentum) * running_mean + momentum * mu
    running_var  = (1 - momentum) * running_var  + momentum * sigma^2 * m / (m - 1)   # unbiased

Inference: the running statistics take the place of ``mu`` and ``sigma^2`` (nothing is updated).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..errors import ConfigError, DTypeError, ShapeError
from ._args import check_array
from ._jit import lazy_kernel

__all__ = ["batch_norm", "batch_norm_forward", "batch_norm_backward"]

_OP = "batch_norm"


def _check_vector(v: Any, name: str, c: int, dtype: np.dtype) -> np.ndarray | None:
    if v is None:
        return None
    v = check_array(v, _OP, name=name)
    if v.shape != (c,):
        raise ShapeError(f"{_OP}: {name} must have shape ({c},) (one value per channel), got {v.shape}")
    if v.dtype != dtype:
        raise DTypeError(f"{_OP}: {name} must have x's dtype {dtype}, got {v.dtype}")
    return v


def _check_real(value: Any, name: str, low: float, high: float, low_open: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ConfigError(f"{_OP}: {name} must be a number in {interval}, got {value!r}")
    return float(value)


def _rows(a: np.ndarray) -> np.ndarray | None:
    """A ``(M, C)`` C-contiguous view of ``a`` when its memory allows one (no copy), else None.

    ``(N, C)`` C-ordered, or ``(N, C, H, W)`` with channels-last memory (``a.transpose(0, 2, 3, 1)``
    C-contiguous: what the convolutions return).
    """
    if a.ndim == 2:
        return a if a.flags.c_contiguous else None
    t = a.transpose(0, 2, 3, 1)
    return t.reshape(-1, a.shape[1]) if t.flags.c_contiguous else None


def _empty_like_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(out, out_rows)``: an uninitialised array of ``x``'s shape in channels-last memory, and its rows."""
    if x.ndim == 2:
        out = np.empty(x.shape, dtype=x.dtype)
        return out, out
    n, c, h, w = x.shape
    buf = np.empty((n, h, w, c), dtype=x.dtype)
    return buf.transpose(0, 3, 1, 2), buf.reshape(-1, c)


@lazy_kernel
def _stats_kernel(numba: Any) -> Any:
    """``kernel(x, out)``: per-column sum and sum of squares of ``x - x[0]`` (``(M, C)``), in float64.

    One pass; shifting by the first row keeps ``E[v^2] - E[v]^2`` accurate when the mean is large.
    """

    @numba.njit(cache=True, nogil=True)
    def kernel(x, out):  # pragma: no cover - compiled
        m, c = x.shape
        s = np.zeros(c, np.float64)
        q = np.zeros(c, np.float64)
        k = x[0].astype(np.float64)
        for i in range(m):
            row = x[i]
            for j in range(c):
                v = row[j] - k[j]
                s[j] += v
                q[j] += v * v
        for j in range(c):
            out[0, j] = s[j]
            out[1, j] = q[j]
            out[2, j] = k[j]

    return kernel


@lazy_kernel
def _affine_kernel(numba: Any) -> Any:
    """``kernel(x, a, b, out)``: ``out = x * a + b`` per column, one pass over ``(M, C)`` rows."""

    @numba.njit(cache=True, nogil=True)
    def kernel(x, a, b, out):  # pragma: no cover - compiled
        m, c = x.shape
        for i in range(m):
            row = x[i]
            orow = out[i]
            for j in range(c):
                orow[j] = row[j] * a[j] + b[j]

    return kernel


@lazy_kernel
def _grad_sums_kernel(numba: Any) -> Any:
    """``kernel(x, dy, mu, out)``: per-column ``sum dy`` and ``sum dy * (x - mu)`` in float64, one pass."""

    @numba.njit(cache=True, nogil=True)
    def kernel(x, dy, mu, out):  # pragma: no cover - compiled
        m, c = x.shape
        s = np.zeros(c, np.float64)
        p = np.zeros(c, np.float64)
        for i in range(m):
            row = x[i]
            drow = dy[i]
            for j in range(c):
                d = drow[j]
                s[j] += d
                p[j] += d * (row[j] - mu[j])
        for j in range(c):
            out[0, j] = s[j]
            out[1, j] = p[j]

    return kernel


@lazy_kernel
def _grad_input_kernel(numba: Any) -> Any:
    """``kernel(x, dy, mu, p, q, r, out)``: ``out = dy * p + (x - mu) * q + r`` per column, one pass."""

    @numba.njit(cache=True, nogil=True)
    def kernel(x, dy, mu, p, q, r, out):  # pragma: no cover - compiled
        m, c = x.shape
        for i in range(m):
            row = x[i]
            drow = dy[i]
            orow = out[i]
            for j in range(c):
                orow[j] = drow[j] * p[j] + (row[j] - mu[j]) * q[j] + r[j]

    return kernel


_BLOCK = 64  # rows summed in the input's precision before the float64 accumulation (NumPy path)


def _colsum(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Per-column sum of ``a`` (or of ``a * b``) over ``(M, C)`` rows, float64 ``(C,)``.

    Blocks of ``_BLOCK`` rows are summed in ``a``'s dtype (error ~ ``_BLOCK * eps``, not ``M * eps``),
    the block sums in float64: about as fast as a plain float32 ``a.sum(0)``, with no ``a * b`` temporary.
    """
    m, c = a.shape
    k = m // _BLOCK * _BLOCK
    total = np.zeros(c, np.float64)
    if k:
        head = a[:k].reshape(-1, _BLOCK, c)
        if b is None:
            part = head.sum(axis=1)
        else:
            part = np.einsum("bij,bij->bj", head, b[:k].reshape(-1, _BLOCK, c))
        total += part.sum(axis=0, dtype=np.float64)
    if k < m:
        tail = a[k:] if b is None else a[k:] * b[k:]
        total += tail.sum(axis=0, dtype=np.float64)
    return total


def _batch_stats(x: np.ndarray, rows: np.ndarray | None, axes: tuple[int, ...], m: int):
    """Per-channel mean and biased variance of ``x`` (float64 ``(C,)`` arrays)."""
    kernel = _stats_kernel() if rows is not None else None
    if kernel is not None:
        acc = np.empty((3, rows.shape[1]), np.float64)
        kernel(rows, acc)
        shifted_mean = acc[0] / m
        var = np.maximum(acc[1] / m - shifted_mean * shifted_mean, 0.0)
        return acc[2] + shifted_mean, var
    if rows is not None:
        mean = _colsum(rows) / m
        xc = rows - mean.astype(x.dtype)
        return mean, _colsum(xc, xc) / m
    mean = x.sum(axis=axes, dtype=np.float64) / m
    xc = x - mean.astype(x.dtype).reshape(_bshape(x))
    var = (xc * xc).sum(axis=axes, dtype=np.float64) / m
    return mean, var


def _bshape(x: np.ndarray) -> tuple[int, ...]:
    return (1, x.shape[1]) if x.ndim == 2 else (1, x.shape[1], 1, 1)


def batch_norm_forward(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, tuple]:
    """Batch normalisation of ``x`` ``(N, C)`` or ``(N, C, H, W)`` (notes §8.3). Returns ``(y, cache)``.

    ``gamma``/``beta``: ``(C,)`` scale and shift, or None for 1 and 0. ``running_mean``/``running_var``:
    ``(C,)`` arrays, updated in place when ``training`` (may be None in training, then nothing is
    tracked); required for inference. All arrays share ``x``'s dtype.

    Computed as PyTorch does on the CPU: per channel ``a = gamma / sqrt(sigma^2 + eps)`` and
    ``b = beta - mu a``, then ``y = x a + b`` in one pass. The statistics are accumulated in float64.
    A channels-last ``x`` (the convolutions' output) is reduced as a ``(N*H*W, C)`` view without a
    copy, and ``y`` keeps channels-last memory; a C-ordered ``x`` gives a C-ordered ``y``.
    """
    x = check_array(x, _OP)
    if x.ndim not in (2, 4):
        raise ShapeError(
            f"{_OP}: x must have 2 dimensions (N, C) or 4 (N, C, H, W), got {x.ndim} with shape {x.shape}"
        )
    c = x.shape[1]
    gamma = _check_vector(gamma, "gamma", c, x.dtype)
    beta = _check_vector(beta, "beta", c, x.dtype)
    running_mean = _check_vector(running_mean, "running_mean", c, x.dtype)
    running_var = _check_vector(running_var, "running_var", c, x.dtype)
    momentum = _check_real(momentum, "momentum", 0.0, 1.0)
    eps = _check_real(eps, "eps", 0.0, 1.0, low_open=True)
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    m = x.size // c if c else 0
    rows = _rows(x) if m and c else None

    if training:
        if m <= 1:
            raise ShapeError(
                f"{_OP}: training needs more than 1 value per channel (N * H * W > 1), got input shape {x.shape}"
            )
        mean64, var64 = _batch_stats(x, rows, axes, m)
        if running_mean is not None:
            running_mean *= 1.0 - momentum
            running_mean += (momentum * mean64).astype(x.dtype)
        if running_var is not None:
            running_var *= 1.0 - momentum
            running_var += (momentum * m / (m - 1) * var64).astype(x.dtype)
        mean = mean64.astype(x.dtype)
        inv_std = (1.0 / np.sqrt(var64 + eps)).astype(x.dtype)
    else:
        if running_mean is None or running_var is None:
            raise ConfigError(
                f"{_OP}: inference (training=False) needs running_mean and running_var, got None"
            )
        mean = running_mean.copy()
        inv_std = (1.0 / np.sqrt(running_var + x.dtype.type(eps))).astype(x.dtype, copy=False)
    a = inv_std if gamma is None else gamma * inv_std
    b = -mean * a if beta is None else beta - mean * a
    y = _affine(x, rows, a, b)
    return y, (x, mean, inv_std, gamma, beta is not None, training, axes)


def _affine(x: np.ndarray, rows: np.ndarray | None, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``x * a + b`` per channel, in ``x``'s memory layout (channels-last stays channels-last)."""
    if rows is not None:
        out, out_rows = _empty_like_rows(x)
        kernel = _affine_kernel()
        if kernel is not None:
            kernel(rows, a, b, out_rows)
        else:
            np.multiply(rows, a, out=out_rows)
            out_rows += b
        return out
    shape = _bshape(x)
    out = x * a.reshape(shape)
    out += b.reshape(shape)
    return out


def batch_norm_backward(
    dout: np.ndarray, cache: tuple
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Gradients of batch normalisation: ``(dx, dgamma, dbeta)`` (None for a None gamma/beta).

    ``dbeta = sum dy``, ``dgamma = sum dy * x_hat`` (sums over the ``m`` values of a channel).
    Training (the batch statistics depend on ``x``), the compact form::

        dx = gamma / (m * sqrt(sigma^2 + eps)) * (m * dy - dbeta - x_hat * dgamma)

    Inference (fixed running statistics): ``dx = dy * gamma / sqrt(running_var + eps)``.

    Two reductions (accumulated in float64) and one elementwise pass
    ``dx = dy p + (x - mu) q + r`` with per-channel ``p``, ``q``, ``r``; ``dx`` has ``x``'s layout.
    """
    x, mean, inv_std, gamma, has_beta, training, axes = cache
    dout = check_array(dout, "batch_norm_backward", name="dout")
    if dout.shape != x.shape:
        raise ShapeError(
            f"batch_norm_backward: dout must have the output's shape {x.shape}, got {dout.shape}"
        )
    c = x.shape[1]
    m = x.size // c if c else 0
    rows = _rows(x) if m and c else None
    drows = None
    if rows is not None:
        drows = _rows(dout)
        if drows is None:  # one copy into x's layout, then the fast path
            drows = np.ascontiguousarray(dout if dout.ndim == 2 else dout.transpose(0, 2, 3, 1)).reshape(
                -1, c
            )
    dbeta64, dxc64, xc = _grad_sums(x, dout, rows, drows, mean, axes)
    dgamma64 = dxc64 * inv_std
    dt = x.dtype
    scale = inv_std if gamma is None else gamma * inv_std
    p = scale
    if training:
        q = (-scale * inv_std * (dgamma64 / m)).astype(dt)
        r = (-scale * (dbeta64 / m)).astype(dt)
    else:
        q = np.zeros(c, dt)
        r = np.zeros(c, dt)
    dx = _grad_input(x, dout, rows, drows, xc, mean, p, q, r, training)
    dgamma = None if gamma is None else dgamma64.astype(dt)
    dbeta = dbeta64.astype(dt) if has_beta else None
    return dx, dgamma, dbeta


def _grad_sums(x, dout, rows, drows, mean, axes) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-channel ``sum dy`` and ``sum dy * (x - mu)`` (float64), and ``x - mu`` when it was formed."""
    kernel = _grad_sums_kernel() if rows is not None else None
    if kernel is not None:
        acc = np.empty((2, rows.shape[1]), np.float64)
        kernel(rows, drows, mean, acc)
        return acc[0], acc[1], None
    if rows is not None:
        xc = rows - mean
        return _colsum(drows), _colsum(drows, xc), xc
    xc = x - mean.reshape(_bshape(x))
    return dout.sum(axis=axes, dtype=np.float64), (xc * dout).sum(axis=axes, dtype=np.float64), xc


def _grad_input(x, dout, rows, drows, xc, mean, p, q, r, training) -> np.ndarray:
    """``dy * p + (x - mu) * q + r`` per channel (``q = r = 0`` in inference), in ``x``'s layout.

    ``xc`` (``x - mu`` in the rows or the ``x`` shape, or None) is overwritten.
    """
    if rows is not None:
        out, out_rows = _empty_like_rows(x)
        kernel = _grad_input_kernel()
        if kernel is not None:
            kernel(rows, drows, mean, p, q, r, out_rows)
            return out
        np.multiply(drows, p, out=out_rows)
        if training:
            xc *= q
            xc += r
            out_rows += xc
        return out
    shape = _bshape(x)
    dx = dout * p.reshape(shape)
    if training:
        xc *= q.reshape(shape)
        xc += r.reshape(shape)
        dx += xc
    return dx


def batch_norm(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> np.ndarray:
    """Batch normalisation, forward only. See :func:`batch_norm_forward`."""
    return batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps)[0]
