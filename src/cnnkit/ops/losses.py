"""Cross-entropy loss on logits, with the fused softmax gradient (notes §7.1).

``L = -(1/N) sum_n sum_i y_ni log softmax(z_n)_i``: the notes' ``L = -sum_i y_i log(y_hat_i)`` averaged
over the batch, with ``y_hat = softmax(z)`` computed stably through log-softmax. Labels are either class
indices ``(N,)`` (then ``y`` is one-hot and ``L_n = -log y_hat_correct``) or probability rows ``(N, C)``.
Label smoothing mixes ``y`` with the uniform distribution: ``y' = (1 - eps) y + eps / C`` (as PyTorch).

The gradient with respect to the logits is the famous fused form ``(softmax(z) - y') / N``: the softmax
Jacobian and the log cancel, so no division by a small probability ever happens. (For probability rows
that do not sum to 1 it is ``(softmax(z) * sum(y') - y') / N``, the exact gradient, as PyTorch's.)
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, DTypeError, ShapeError
from ._args import check_array

__all__ = ["cross_entropy", "cross_entropy_forward", "cross_entropy_backward"]


def _check_labels(labels: Any, n: int, c: int) -> np.ndarray:
    op = "cross_entropy"
    labels = np.asarray(labels)
    if labels.ndim == 1:
        if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
            raise DTypeError(
                f"{op}: class-index labels must have an integer dtype, got {labels.dtype}; "
                "pass probability rows as an (N, C) float array"
            )
        if labels.shape[0] != n:
            raise ShapeError(f"{op}: expected {n} labels (one per row of logits), got {labels.shape[0]}")
        bad = (labels < 0) | (labels >= c)
        if bad.any():
            value = labels[np.argmax(bad)]
            raise DataError(
                f"{op}: label {value} is out of range for {c} classes: expected 0..{c - 1}, got {value}"
            )
        return labels.astype(np.intp, copy=False)
    if labels.ndim == 2:
        if not (np.issubdtype(labels.dtype, np.floating) or np.issubdtype(labels.dtype, np.integer)):
            raise DTypeError(f"{op}: probability labels must be a float array, got {labels.dtype}")
        if labels.shape != (n, c):
            raise ShapeError(
                f"{op}: probability labels must have the logits' shape ({n}, {c}) "
                f"(N rows of {c} class probabilities), got {labels.shape}"
            )
        return labels
    raise ShapeError(
        f"{op}: labels must be class indices of shape ({n},) or probability rows of shape ({n}, {c}), "
        f"got shape {labels.shape}"
    )


def _check_smoothing(label_smoothing: Any) -> float:
    if (
        not isinstance(label_smoothing, numbers.Real)
        or isinstance(label_smoothing, bool)
        or not 0.0 <= label_smoothing <= 1.0
    ):
        raise ConfigError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return float(label_smoothing)


def cross_entropy_forward(
    logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0
) -> tuple[float, tuple]:
    """Mean cross-entropy of ``logits`` (N, C) against ``labels`` (notes §7.1).

    ``labels``: integer class indices ``(N,)`` in ``0..C-1``, or probability rows ``(N, C)``.
    Returns ``(loss, cache)`` where ``loss`` is a Python float (accumulated in float64).
    """
    op = "cross_entropy"
    logits = check_array(logits, op, name="logits", ndim=2)
    n, c = logits.shape
    if n == 0 or c == 0:
        raise ShapeError(f"{op}: logits must have at least one row and one class, got shape {logits.shape}")
    target = _check_labels(labels, n, c)
    eps = _check_smoothing(label_smoothing)

    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    logp = shifted - np.log(total)
    if target.ndim == 1:
        per_row = -logp[np.arange(n), target].astype(np.float64)
        if eps:
            per_row = (1.0 - eps) * per_row - eps * logp.mean(axis=1, dtype=np.float64)
    else:
        target = target.astype(logits.dtype, copy=False)
        if eps:
            target = (1.0 - eps) * target + eps / c
        per_row = -(target * logp).sum(axis=1, dtype=np.float64)
    loss = float(per_row.mean())
    probs = exp / total
    return loss, (probs, target, eps)


def cross_entropy_backward(dloss: float = 1.0, cache: tuple | None = None) -> np.ndarray:
    """dL/dlogits = ``dloss * (softmax(z) - y') / N``: the fused softmax + cross-entropy gradient.

    ``dloss`` is the upstream gradient of the scalar loss (1.0 when the loss is the objective);
    ``cache`` comes from :func:`cross_entropy_forward`. The result has the logits' shape and dtype.
    """
    if cache is None:
        raise ConfigError("cross_entropy_backward: cache from cross_entropy_forward is required, got None")
    if not isinstance(dloss, numbers.Real) and not (isinstance(dloss, np.ndarray) and dloss.size == 1):
        raise ConfigError(f"cross_entropy_backward: dloss must be a scalar, got {dloss!r:.80}")
    probs, target, eps = cache
    n, c = probs.shape
    grad = probs.copy()
    if target.ndim == 1:
        grad[np.arange(n), target] -= 1.0 - eps
        if eps:
            grad -= eps / c
    else:
        # rows of y' need not sum to 1: the exact gradient is softmax * sum(y') - y'
        grad *= target.sum(axis=1, keepdims=True)
        grad -= target
    grad *= float(dloss) / n
    return grad


def cross_entropy(logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0) -> float:
    """Mean cross-entropy loss as a Python float. See :func:`cross_entropy_forward`.

    >>> import numpy as np
    >>> round(cross_entropy(np.log(np.array([[0.7, 0.2, 0.1]])), np.array([0])), 4)  # -log 0.7
    0.3567
    """
    return cross_entropy_forward(logits, labels, label_smoothing)[0]
