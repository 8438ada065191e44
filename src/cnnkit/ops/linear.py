"""Fully connected layer and flatten (notes §5.6, §5.7).

``linear``: ``y = x W^T + b`` with ``W`` of shape ``(out_features, in_features)``, PyTorch's layout, so
weights move to and from ``torch.nn.Linear`` unchanged. ``flatten``: ``(N, C, H, W) -> (N, C*H*W)`` in
C order, which is PyTorch's ``flatten(1)`` order (notes §5.6: 8x8x64 -> 4,096 neurons).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DTypeError, ShapeError
from ._args import check_array

__all__ = ["linear", "linear_forward", "linear_backward", "flatten", "flatten_forward", "flatten_backward"]


def _check_linear(x: Any, w: Any, b: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    op = "linear"
    x = check_array(x, op, ndim=2)
    w = check_array(w, op, name="w", ndim=2)
    if w.shape[1] != x.shape[1]:
        raise ShapeError(
            f"{op}: w must have shape (out_features, {x.shape[1]}) to match x's {x.shape[1]} input "
            f"features, got {w.shape}"
        )
    if w.dtype != x.dtype:
        raise DTypeError(f"{op}: w must have x's dtype {x.dtype}, got {w.dtype}")
    if b is not None:
        b = check_array(b, op, name="b", ndim=1)
        if b.shape != (w.shape[0],):
            raise ShapeError(f"{op}: b must have shape ({w.shape[0]},) (out_features), got {b.shape}")
        if b.dtype != x.dtype:
            raise DTypeError(f"{op}: b must have x's dtype {x.dtype}, got {b.dtype}")
    return x, w, b


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> tuple[np.ndarray, tuple]:
    """Fully connected layer (notes §5.7): ``y[n, o] = sum_i x[n, i] w[o, i] + b[o]``.

    ``x``: ``(N, in_features)``; ``w``: ``(out_features, in_features)``; ``b``: ``(out_features,)`` or
    None. Returns ``(y, cache)`` with ``y`` of shape ``(N, out_features)``.
    """
    x, w, b = _check_linear(x, w, b)
    y = x @ w.T
    if b is not None:
        y += b
    return y, (x, w, b is not None)


def linear_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of the fully connected layer: ``(dx, dw, db)``.

    ``dx = dy W``, ``dW = dy^T x``, ``db = sum_n dy[n]`` (None when the forward had no bias).
    """
    x, w, has_bias = cache
    dout = check_array(dout, "linear_backward", name="dout", ndim=2)
    if dout.shape != (x.shape[0], w.shape[0]):
        raise ShapeError(
            f"linear_backward: dout must have the output's shape {(x.shape[0], w.shape[0])}, got {dout.shape}"
        )
    db = dout.sum(axis=0) if has_bias else None
    return dout @ w, dout.T @ x, db


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Fully connected layer, forward only. See :func:`linear_forward`."""
    return linear_forward(x, w, b)[0]


def flatten_forward(x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Flatten every axis after the batch axis (notes §5.6): ``(N, d1, d2, ...) -> (N, d1*d2*...)``.

    Returns ``(out, cache)``; ``out`` is a view of ``x`` when ``x`` is contiguous.
    """
    x = check_array(x, "flatten")
    if x.ndim < 2:
        raise ShapeError(
            f"flatten: x must have a batch axis and at least one more (N, ...), got shape {x.shape}"
        )
    return x.reshape(x.shape[0], int(np.prod(x.shape[1:]))), x.shape


def flatten_backward(dout: np.ndarray, cache: tuple[int, ...]) -> np.ndarray:
    """dL/dx of flatten: ``dout`` reshaped back to the input's shape."""
    x_shape = cache
    dout = check_array(dout, "flatten_backward", name="dout")
    expected = (x_shape[0], int(np.prod(x_shape[1:])))
    if dout.shape != expected:
        raise ShapeError(f"flatten_backward: dout must have the output's shape {expected}, got {dout.shape}")
    return dout.reshape(x_shape)


def flatten(x: np.ndarray) -> np.ndarray:
    """Flatten to ``(N, features)``, forward only. See :func:`flatten_forward`."""
    return flatten_forward(x)[0]
