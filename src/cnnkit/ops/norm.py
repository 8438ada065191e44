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
    shape = (1, c) if x.ndim == 2 else (1, c, 1, 1)
    m = x.size // c if c else 0

    if training:
        if m <= 1:
            raise ShapeError(
                f"{_OP}: training needs more than 1 value per channel (N * H * W > 1), got input shape {x.shape}"
            )
        mean = x.mean(axis=axes)
        xc = x - mean.reshape(shape)
        var = np.mean(xc * xc, axis=axes)
        if running_mean is not None:
            running_mean *= 1.0 - momentum
            running_mean += momentum * mean
        if running_var is not None:
            running_var *= 1.0 - momentum
            running_var += (momentum * m / (m - 1)) * var
    else:
        if running_mean is None or running_var is None:
            raise ConfigError(
                f"{_OP}: inference (training=False) needs running_mean and running_var, got None"
            )
        xc = x - running_mean.reshape(shape)
        var = running_var
    inv_std = (1.0 / np.sqrt(var + x.dtype.type(eps))).astype(x.dtype, copy=False)
    xhat = xc
    xhat *= inv_std.reshape(shape)
    if gamma is None:
        y = xhat.copy()
    else:
        y = xhat * gamma.reshape(shape)
    if beta is not None:
        y += beta.reshape(shape)
    return y, (xhat, inv_std, gamma, beta is not None, training, axes, shape)


def batch_norm_backward(
    dout: np.ndarray, cache: tuple
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Gradients of batch normalisation: ``(dx, dgamma, dbeta)`` (None for a None gamma/beta).

    ``dbeta = sum dy``, ``dgamma = sum dy * x_hat`` (sums over the ``m`` values of a channel).
    Training (the batch statistics depend on ``x``), the compact form::

        dx = gamma / (m * sqrt(sigma^2 + eps)) * (m * dy - dbeta - x_hat * dgamma)

    Inference (fixed running statistics): ``dx = dy * gamma / sqrt(running_var + eps)``.
    """
    xhat, inv_std, gamma, has_beta, training, axes, shape = cache
    dout = check_array(dout, "batch_norm_backward", name="dout")
    if dout.shape != xhat.shape:
        raise ShapeError(
            f"batch_norm_backward: dout must have the output's shape {xhat.shape}, got {dout.shape}"
        )
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    scale = inv_std if gamma is None else gamma * inv_std
    if training:
        m = xhat.size // xhat.shape[1]
        dx = dout * m
        dx -= dbeta.reshape(shape)
        dx -= xhat * dgamma.reshape(shape)
        dx *= (scale / m).reshape(shape)
    else:
        dx = dout * scale.reshape(shape)
    return dx, (None if gamma is None else dgamma), (dbeta if has_beta else None)


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
