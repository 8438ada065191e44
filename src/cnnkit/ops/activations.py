"""Activation functions: ReLU, leaky ReLU, softmax and log-softmax (notes §6.1, §6.2).

Each works on arrays of any shape and keeps the input's dtype. Softmax and log-softmax subtract the
largest score along ``axis`` before exponentiating, so logits of +-1e4 neither overflow nor give NaN.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError
from ._args import check_array

__all__ = [
    "relu",
    "relu_forward",
    "relu_backward",
    "leaky_relu",
    "leaky_relu_forward",
    "leaky_relu_backward",
    "softmax",
    "softmax_forward",
    "softmax_backward",
    "log_softmax",
    "log_softmax_forward",
    "log_softmax_backward",
]


def _check_dout(dout: Any, shape: tuple[int, ...], op: str) -> np.ndarray:
    dout = check_array(dout, f"{op}_backward", name="dout")
    if dout.shape != shape:
        raise ShapeError(f"{op}_backward: dout must have the output's shape {shape}, got {dout.shape}")
    return dout


def _check_axis(axis: Any, ndim: int, op: str) -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise ConfigError(f"{op}: axis must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ConfigError(
            f"{op}: axis must be in [{-ndim}, {ndim}) for an input with {ndim} dimensions, got {axis}"
        )
    return int(axis) % ndim


# ----------------------------------------------------------------------------- ReLU
def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ReLU (notes §6.1): ``f(x) = max(0, x)``. Returns ``(out, cache)``."""
    x = check_array(x, "relu")
    out = np.empty_like(x)  # x's memory layout (channels-last stays channels-last)
    np.maximum(x, x.dtype.type(0), out=out)  # never in place: x may be cached by the layer before
    return out, out


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dL/dx of ReLU: ``dout * [x > 0]`` (the gradient at 0 is taken as 0, as PyTorch does)."""
    out = cache
    dout = _check_dout(dout, out.shape, "relu")
    dx = np.empty_like(dout)
    np.multiply(dout, out > 0, out=dx)  # a boolean mask, multiplied: no np.where on a random mask
    return dx


def relu(x: np.ndarray) -> np.ndarray:
    """ReLU, forward only: ``max(0, x)`` elementwise (notes §6.1)."""
    return relu_forward(x)[0]


# ----------------------------------------------------------------------------- leaky ReLU
def _check_slope(negative_slope: Any) -> float:
    if (
        not isinstance(negative_slope, numbers.Real)
        or isinstance(negative_slope, bool)
        or not np.isfinite(negative_slope)
    ):
        raise ConfigError(f"leaky_relu: negative_slope must be a finite real number, got {negative_slope!r}")
    return float(negative_slope)


def leaky_relu_forward(x: np.ndarray, negative_slope: float = 0.01) -> tuple[np.ndarray, tuple]:
    """Leaky ReLU: ``f(x) = x`` for ``x > 0``, ``negative_slope * x`` otherwise. Returns ``(out, cache)``."""
    x = check_array(x, "leaky_relu")
    slope = _check_slope(negative_slope)
    positive = x > 0
    return np.where(positive, x, x * x.dtype.type(slope)), (positive, slope)


def leaky_relu_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dL/dx of leaky ReLU: ``dout`` where ``x > 0``, ``negative_slope * dout`` elsewhere."""
    positive, slope = cache
    dout = _check_dout(dout, positive.shape, "leaky_relu")
    return np.where(positive, dout, dout * dout.dtype.type(slope))


def leaky_relu(x: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
    """Leaky ReLU, forward only. See :func:`leaky_relu_forward`."""
    return leaky_relu_forward(x, negative_slope)[0]


# ----------------------------------------------------------------------------- softmax
def _shifted(x: np.ndarray, axis: int) -> np.ndarray:
    return x - x.max(axis=axis, keepdims=True)


def softmax_forward(x: np.ndarray, axis: int = 1) -> tuple[np.ndarray, tuple]:
    """Softmax along ``axis`` (notes §6.2): ``P(i) = exp(z_i) / sum_j exp(z_j)``.

    Computed as ``exp(z - max z) / sum exp(z - max z)``, which is the same value without overflow.
    Returns ``(y, cache)``.
    """
    x = check_array(x, "softmax")
    axis = _check_axis(axis, x.ndim, "softmax")
    e = np.exp(_shifted(x, axis))
    e /= e.sum(axis=axis, keepdims=True)
    return e, (e, axis)


def softmax_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dL/dz of softmax: ``y * (dy - sum(dy * y))``, the Jacobian ``diag(y) - y y^T`` applied to ``dy``."""
    y, axis = cache
    dout = _check_dout(dout, y.shape, "softmax")
    return y * (dout - (dout * y).sum(axis=axis, keepdims=True))


def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """Softmax along ``axis``, forward only (notes §6.2).

    >>> import numpy as np
    >>> np.round(softmax(np.array([[2.0, 1.0, 0.1]])), 2)
    array([[0.66, 0.24, 0.1 ]])
    """
    return softmax_forward(x, axis)[0]


def log_softmax_forward(x: np.ndarray, axis: int = 1) -> tuple[np.ndarray, tuple]:
    """Log-softmax along ``axis``: ``log P(i) = (z_i - m) - log sum_j exp(z_j - m)`` with ``m = max z``.

    Finite for any finite logits (no ``log(0)``), unlike ``log(softmax(z))``. Returns ``(out, cache)``.
    """
    x = check_array(x, "log_softmax")
    axis = _check_axis(axis, x.ndim, "log_softmax")
    shifted = _shifted(x, axis)
    out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return out, (out, axis)


def log_softmax_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dL/dz of log-softmax: ``dy - softmax(z) * sum(dy)``."""
    out, axis = cache
    dout = _check_dout(dout, out.shape, "log_softmax")
    return dout - np.exp(out) * dout.sum(axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """Log-softmax along ``axis``, forward only. See :func:`log_softmax_forward`."""
    return log_softmax_forward(x, axis)[0]
