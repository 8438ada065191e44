"""Batch normalisation (notes §8.3): ``x_hat = (x - mu) / sqrt(sigma^2 + eps)``, ``y = gamma x_hat + beta``.

Statistics are per channel, over the batch and (for images) the spatial axes: axis 0 of ``(N, C)``
inputs, axes (0, 2, 3) of ``(N, C, H, W)`` inputs, ``m`` values per channel.

Training: ``mu`` and the biased variance ``sigma^2`` of the batch normalise it, and the running statistics
are updated in place exactly as PyTorch does::

    running_mean = (1 - momentum) * running_mean + momentum * mu
    running_var  = (1 - momentum) * running_var  + momentum * sigma^2 * m / (m - 1)   # unbiased

Inference: the running statistics take the place of ``mu`` and ``sigma^2`` (nothing is updated).

**Synchronised statistics** (SyncBatchNorm semantics, for a batch split across processes): given
``allreduce`` (a function that returns the element-wise sum of a float64 vector over all processes), the
forward pass sums per-channel counts and sums, then sums of squared deviations from the global mean, so
every process normalises with the statistics of the *whole* batch and updates the running statistics as
one process would (with the global ``m``). The backward pass sums its two per-channel reductions the same
way before forming ``dx``; the ``dgamma``/``dbeta`` it returns are this process's own share of the sums
(the trainer sums parameter gradients over the processes afterwards, as for every other layer).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigError, DTypeError, ShapeError
from . import policy
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


def _rows(a: np.ndarray) -> np.ndarray:
    """``a`` as ``(M, C)`` C-contiguous rows: a view when its memory allows, else one copy.

    ``(N, C)`` C-ordered and ``(N, C, H, W)`` with channels-last memory (``a.transpose(0, 2, 3, 1)``
    C-contiguous: what the convolutions return) are viewed; any other layout is copied to channels-last.
    """
    t = a if a.ndim == 2 else a.transpose(0, 2, 3, 1)
    rows = a.shape[0] * (1 if a.ndim == 2 else a.shape[2] * a.shape[3])
    return np.ascontiguousarray(t).reshape(rows, a.shape[1])


def _alloc(shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(out, out_rows)``: an uninitialised array of ``shape`` in channels-last memory, and its rows."""
    if len(shape) == 2:
        out = np.empty(shape, dtype=dtype)
        return out, out
    n, c, h, w = shape
    buf = np.empty((n, h, w, c), dtype=dtype)
    return buf.transpose(0, 3, 1, 2), buf.reshape(n * h * w, c)


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
    """``kernel(x, mu, mu_lo, a, b, out)``: ``out = ((x - mu) - mu_lo) * a + b`` per column, one pass."""

    @numba.njit(cache=True, nogil=True)
    def kernel(x, mu, mu_lo, a, b, out):  # pragma: no cover - compiled
        m, c = x.shape
        for i in range(m):
            row = x[i]
            orow = out[i]
            for j in range(c):
                orow[j] = ((row[j] - mu[j]) - mu_lo[j]) * a[j] + b[j]

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


def _compiled(kernel: Any) -> Any:
    """The compiled kernel, or None when Numba is off (``CNNKIT_NO_NUMBA=1``) or not installed."""
    return kernel() if policy.numba_on() else None


def _batch_stats(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and biased variance of ``(M, C)`` rows, float64 ``(C,)`` arrays."""
    m = rows.shape[0]
    kernel = _compiled(_stats_kernel)
    if kernel is not None:
        acc = np.empty((3, rows.shape[1]), np.float64)
        kernel(rows, acc)
        shifted_mean = acc[0] / m
        var = np.maximum(acc[1] / m - shifted_mean * shifted_mean, 0.0)
        return acc[2] + shifted_mean, var
    mean = _colsum(rows) / m
    xc = rows - mean.astype(rows.dtype)
    return mean, _colsum(xc, xc) / m


def _sync_stats(
    rows: np.ndarray, allreduce: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and biased variance over the rows of every process, and the total row count.

    Two sums over the processes: ``[count, sum x]``, then ``sum (x - mean)^2`` around the global mean
    (rounded to ``x``'s dtype, as the single-process NumPy path does), all in float64.
    """
    m_local, c = rows.shape
    first = np.empty(c + 1, np.float64)
    first[0] = m_local
    first[1:] = _colsum(rows) if m_local else 0.0
    first = _checked_sum(allreduce, first)
    m = int(round(first[0]))
    if m == 0:
        return np.zeros(c), np.zeros(c), 0
    mean64 = first[1:] / m
    xc = rows - mean64.astype(rows.dtype)
    second = _checked_sum(allreduce, _colsum(xc, xc) if m_local else np.zeros(c))
    return mean64, np.maximum(second / m, 0.0), m


def _checked_sum(allreduce: Callable[[np.ndarray], np.ndarray], v: np.ndarray) -> np.ndarray:
    out = np.asarray(allreduce(v), dtype=np.float64)
    if out.shape != v.shape:
        raise ShapeError(f"{_OP}: allreduce must return an array of shape {v.shape}, got {out.shape}")
    return out


def batch_norm_forward(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    allreduce: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, tuple]:
    """Batch normalisation of ``x`` ``(N, C)`` or ``(N, C, H, W)`` (notes §8.3). Returns ``(y, cache)``.

    ``gamma``/``beta``: ``(C,)`` scale and shift, or None for 1 and 0. ``running_mean``/``running_var``:
    ``(C,)`` arrays, updated in place when ``training`` (may be None in training, then nothing is
    tracked); required for inference. All arrays share ``x``'s dtype.

    Computed per channel as ``a = gamma / sqrt(sigma^2 + eps)``, then ``y = (x - mu) a + beta`` in one
    pass (not ``x a + (beta - mu a)``, which loses float32 digits when sigma is small next to mu); the
    statistics are accumulated in float64 and the mean is subtracted in two parts, so nothing of it is
    lost to rounding. ``allreduce``: synchronised statistics over processes (module docstring); it is
    used in training only.
    The work is done on ``(N*H*W, C)`` rows: a view of a channels-last ``x`` (what the convolutions
    return), else a channels-last copy, so both layouts give the same values bit for bit. ``y`` (and
    the backward's ``dx``) of an image batch has channels-last memory, which the next convolution reads
    without a copy.
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
    m = x.size // c if c else 0
    sync = allreduce if training else None
    rows = _rows(x)
    if sync is not None:
        mean64, var64, m = _sync_stats(rows, sync)
    if training and m <= 1:
        raise ShapeError(
            f"{_OP}: training needs more than 1 value per channel (N * H * W > 1), got input shape {x.shape}"
        )
    if not training and (running_mean is None or running_var is None):
        raise ConfigError(f"{_OP}: inference (training=False) needs running_mean and running_var, got None")
    if training:
        if sync is None:
            mean64, var64 = _batch_stats(rows)
        if running_mean is not None:
            running_mean *= 1.0 - momentum
            running_mean += (momentum * mean64).astype(x.dtype)
        if running_var is not None:
            running_var *= 1.0 - momentum
            running_var += (momentum * m / (m - 1) * var64).astype(x.dtype)
        mean = mean64.astype(x.dtype)
        mean_lo = (mean64 - mean).astype(x.dtype)  # what rounding the mean to x's dtype dropped
        inv_std = (1.0 / np.sqrt(var64 + eps)).astype(x.dtype)
    else:
        mean = running_mean.copy()
        mean_lo = np.zeros_like(mean)
        inv_std = (1.0 / np.sqrt(running_var + x.dtype.type(eps))).astype(x.dtype, copy=False)
    # y = (x - mu) * a + beta with a = gamma / sqrt(sigma^2 + eps). Subtracting the mean first matters:
    # the folded form x * a + (beta - mu * a) cancels two large terms when sigma is small next to mu.
    # The float64 mean is subtracted as two float32 parts (mean + mean_lo): x - mean is exact when x is
    # near the mean, so the result keeps the digits a single rounded mean would lose.
    a = inv_std if gamma is None else gamma * inv_std
    shift = np.zeros_like(a) if beta is None else beta
    out, out_rows = _alloc(x.shape, x.dtype)
    kernel = _compiled(_affine_kernel)
    if kernel is not None:
        kernel(rows, mean, mean_lo, a, shift, out_rows)
    else:
        np.subtract(rows, mean, out=out_rows)
        out_rows -= mean_lo
        out_rows *= a
        out_rows += shift
    return out, (rows, x.shape, mean, inv_std, gamma, beta is not None, training, m, sync)


def batch_norm_backward(
    dout: np.ndarray, cache: tuple
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Gradients of batch normalisation: ``(dx, dgamma, dbeta)`` (None for a None gamma/beta).

    ``dbeta = sum dy``, ``dgamma = sum dy * x_hat`` (sums over the ``m`` values of a channel).
    Training (the batch statistics depend on ``x``), the compact form::

        dx = gamma / (m * sqrt(sigma^2 + eps)) * (m * dy - dbeta - x_hat * dgamma)

    Inference (fixed running statistics): ``dx = dy * gamma / sqrt(running_var + eps)``.

    Computed with two reductions (``sum dy`` and ``sum dy (x - mu)``, float64) and one elementwise pass
    ``dx = dy p + (x - mu) q + r`` with per-channel ``p = gamma / std``,
    ``q = -p dgamma / (m std)``, ``r = -p dbeta / m`` (``q = r = 0`` in inference).
    """
    rows, shape, mean, inv_std, gamma, has_beta, training, m_total, sync = cache
    dout = check_array(dout, "batch_norm_backward", name="dout")
    if dout.shape != shape:
        raise ShapeError(f"batch_norm_backward: dout must have the output's shape {shape}, got {dout.shape}")
    drows = _rows(dout).astype(rows.dtype, copy=False)
    m, c = rows.shape
    dt = rows.dtype
    kernel = _compiled(_grad_sums_kernel)
    xc = None
    if kernel is not None:
        acc = np.empty((2, c), np.float64)
        kernel(rows, drows, mean, acc)
        dbeta64, dxc64 = acc[0], acc[1]
    else:
        xc = rows - mean
        dbeta64, dxc64 = _colsum(drows), _colsum(drows, xc)
    dgamma64 = dxc64 * inv_std
    # The dx terms use the sums over the whole batch: this process's own, or all processes' (sync).
    dbeta_all, dgamma_all = dbeta64, dgamma64
    if sync is not None:
        total = _checked_sum(sync, np.concatenate([dbeta64, dxc64]))
        dbeta_all, dgamma_all = total[:c], total[c:] * inv_std
    p = inv_std if gamma is None else gamma * inv_std
    q = (-p * inv_std * (dgamma_all / m_total)).astype(dt) if training else None
    r = (-p * (dbeta_all / m_total)).astype(dt) if training else None
    dx, dx_rows = _alloc(shape, dt)
    kernel = _compiled(_grad_input_kernel) if training else None
    if kernel is not None:
        kernel(rows, drows, mean, p, q, r, dx_rows)
    else:
        np.multiply(drows, p, out=dx_rows)
        if training:
            assert xc is not None
            xc *= q
            xc += r
            dx_rows += xc
    dgamma = None if gamma is None else dgamma64.astype(dt)
    dbeta = dbeta64.astype(dt) if has_beta else None
    return dx, dgamma, dbeta


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
