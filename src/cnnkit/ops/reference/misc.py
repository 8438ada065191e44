"""Slow, obvious loop versions of the activation, loss, linear, dropout and batch-norm kernels.

The oracle for :mod:`cnnkit.ops.activations`, :mod:`~cnnkit.ops.losses`, :mod:`~cnnkit.ops.linear`,
:mod:`~cnnkit.ops.dropout` and :mod:`~cnnkit.ops.norm`. Python loops and Python floats (double
precision); gradients from the textbook chain rule (explicit Jacobians, staged batch-norm backward), not
from the fast kernels' simplified forms. Backward functions take the forward's arguments, not a cache.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "relu_reference",
    "relu_backward_reference",
    "leaky_relu_reference",
    "leaky_relu_backward_reference",
    "softmax_reference",
    "softmax_backward_reference",
    "log_softmax_reference",
    "log_softmax_backward_reference",
    "cross_entropy_reference",
    "cross_entropy_backward_reference",
    "linear_reference",
    "linear_backward_reference",
    "flatten_reference",
    "dropout_reference",
    "batch_norm_reference",
    "batch_norm_backward_reference",
]


def _elementwise(x: np.ndarray, f) -> np.ndarray:
    flat = x.ravel()
    out = np.zeros(flat.shape)
    for k in range(flat.size):
        out[k] = f(float(flat[k]), k)
    return out.reshape(x.shape)


def relu_reference(x: np.ndarray) -> np.ndarray:
    """``max(0, x)`` one element at a time."""
    return _elementwise(x, lambda v, _: v if v > 0 else 0.0).astype(x.dtype)


def relu_backward_reference(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``dout`` where ``x > 0``, else 0."""
    d = dout.ravel()
    return _elementwise(x, lambda v, k: float(d[k]) if v > 0 else 0.0).astype(dout.dtype)


def leaky_relu_reference(x: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
    """``x`` where ``x > 0``, else ``negative_slope * x``."""
    return _elementwise(x, lambda v, _: v if v > 0 else negative_slope * v).astype(x.dtype)


def leaky_relu_backward_reference(
    dout: np.ndarray, x: np.ndarray, negative_slope: float = 0.01
) -> np.ndarray:
    """``dout`` where ``x > 0``, else ``negative_slope * dout``."""
    d = dout.ravel()
    return _elementwise(x, lambda v, k: float(d[k]) * (1.0 if v > 0 else negative_slope)).astype(dout.dtype)


def _rows(x: np.ndarray, axis: int) -> np.ndarray:
    """``x`` with ``axis`` moved last and the rest flattened: one row per softmax."""
    moved = np.moveaxis(x, axis, -1)
    return moved.reshape(-1, moved.shape[-1])


def _unrows(rows: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    moved_shape = np.moveaxis(x, axis, -1).shape
    return np.moveaxis(rows.reshape(moved_shape), -1, axis)


def _softmax_row(z: list[float]) -> list[float]:
    top = max(z)
    e = [math.exp(v - top) for v in z]
    total = sum(e)
    return [v / total for v in e]


def softmax_reference(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """``exp(z_i - max z) / sum_j exp(z_j - max z)`` row by row."""
    rows = _rows(x, axis)
    out = np.array([_softmax_row([float(v) for v in row]) for row in rows]).reshape(rows.shape)
    return _unrows(out, x, axis).astype(x.dtype)


def softmax_backward_reference(dout: np.ndarray, x: np.ndarray, axis: int = 1) -> np.ndarray:
    """``dz_j = sum_i dy_i * J_ij`` with the explicit Jacobian ``J_ij = y_i (delta_ij - y_j)``."""
    rows, drows = _rows(x, axis), _rows(dout, axis)
    out = np.zeros(rows.shape)
    for r in range(rows.shape[0]):
        y = _softmax_row([float(v) for v in rows[r]])
        for j in range(len(y)):
            out[r, j] = sum(float(drows[r, i]) * y[i] * ((i == j) - y[j]) for i in range(len(y)))
    return _unrows(out, x, axis).astype(dout.dtype)


def log_softmax_reference(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """``z_i - max z - log sum_j exp(z_j - max z)`` row by row."""
    rows = _rows(x, axis)
    out = np.zeros(rows.shape)
    for r in range(rows.shape[0]):
        z = [float(v) for v in rows[r]]
        top = max(z)
        log_total = math.log(sum(math.exp(v - top) for v in z))
        out[r] = [v - top - log_total for v in z]
    return _unrows(out, x, axis).astype(x.dtype)


def log_softmax_backward_reference(dout: np.ndarray, x: np.ndarray, axis: int = 1) -> np.ndarray:
    """``dz_j = sum_i dy_i * (delta_ij - softmax(z)_j)``."""
    rows, drows = _rows(x, axis), _rows(dout, axis)
    out = np.zeros(rows.shape)
    for r in range(rows.shape[0]):
        p = _softmax_row([float(v) for v in rows[r]])
        for j in range(len(p)):
            out[r, j] = sum(float(drows[r, i]) * ((i == j) - p[j]) for i in range(len(p)))
    return _unrows(out, x, axis).astype(dout.dtype)


def _targets(labels: np.ndarray, n: int, c: int, label_smoothing: float) -> list[list[float]]:
    """Dense target rows ``y' = (1 - eps) y + eps / C``, one-hot for class indices."""
    rows = []
    for r in range(n):
        if labels.ndim == 1:
            y = [1.0 if i == int(labels[r]) else 0.0 for i in range(c)]
        else:
            y = [float(v) for v in labels[r]]
        rows.append([(1.0 - label_smoothing) * v + label_smoothing / c for v in y])
    return rows


def cross_entropy_reference(logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0) -> float:
    """``-(1/N) sum_n sum_i y'_ni log softmax(z_n)_i`` (notes §7.1)."""
    n, c = logits.shape
    logp = log_softmax_reference(logits.astype(np.float64), axis=1)
    total = 0.0
    for r, y in enumerate(_targets(labels, n, c, label_smoothing)):
        total -= sum(y[i] * float(logp[r, i]) for i in range(c))
    return total / n


def cross_entropy_backward_reference(
    logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0, dloss: float = 1.0
) -> np.ndarray:
    """``dz_nj = -(dloss/N) sum_i y'_ni (delta_ij - p_nj)``: the chain rule through log-softmax."""
    n, c = logits.shape
    p = softmax_reference(logits.astype(np.float64), axis=1)
    out = np.zeros((n, c))
    for r, y in enumerate(_targets(labels, n, c, label_smoothing)):
        for j in range(c):
            out[r, j] = -dloss / n * sum(y[i] * ((i == j) - float(p[r, j])) for i in range(c))
    return out.astype(logits.dtype)


def linear_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``y[n, o] = sum_i x[n, i] w[o, i] + b[o]``."""
    n, k = x.shape
    out = np.zeros((n, w.shape[0]))
    for r in range(n):
        for o in range(w.shape[0]):
            total = 0.0 if b is None else float(b[o])
            for i in range(k):
                total += float(x[r, i]) * float(w[o, i])
            out[r, o] = total
    return out.astype(x.dtype)


def linear_backward_reference(dout: np.ndarray, x: np.ndarray, w: np.ndarray, has_bias: bool = True):
    """``(dx, dw, db)``: ``dx[n,i] = sum_o dy[n,o] w[o,i]``, ``dw[o,i] = sum_n dy[n,o] x[n,i]``, ``db[o] = sum_n dy[n,o]``."""
    n, k = x.shape
    m = w.shape[0]
    dx, dw, db = np.zeros((n, k)), np.zeros((m, k)), np.zeros(m)
    for r in range(n):
        for o in range(m):
            g = float(dout[r, o])
            db[o] += g
            for i in range(k):
                dx[r, i] += g * float(w[o, i])
                dw[o, i] += g * float(x[r, i])
    return dx.astype(x.dtype), dw.astype(x.dtype), (db.astype(x.dtype) if has_bias else None)


def flatten_reference(x: np.ndarray) -> np.ndarray:
    """Copy each sample's values in C order into one row."""
    n = x.shape[0]
    per = int(np.prod(x.shape[1:]))
    out = np.zeros((n, per), dtype=x.dtype)
    for r in range(n):
        for k, v in enumerate(x[r].ravel()):
            out[r, k] = v
    return out


def dropout_reference(x: np.ndarray, rate: float, u: np.ndarray) -> np.ndarray:
    """Inverted dropout given the uniform draws ``u``: ``x / (1 - rate)`` where ``u >= rate``, else 0."""
    uu = u.ravel()
    return _elementwise(x, lambda v, k: v / (1.0 - rate) if uu[k] >= rate else 0.0).astype(x.dtype)


def _channels(x: np.ndarray) -> list[list[tuple[int, ...]]]:
    """For each channel, the indices of its values (axis 1 is the channel axis)."""
    return [[idx for idx in np.ndindex(x.shape) if idx[1] == ch] for ch in range(x.shape[1])]


def batch_norm_reference(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """Returns ``(y, new_running_mean, new_running_var)``; the inputs are not modified.

    Per channel: ``mu = mean``, ``var = mean((x - mu)^2)`` (training) or the running statistics
    (inference); ``y = gamma (x - mu) / sqrt(var + eps) + beta``.
    """
    y = np.zeros(x.shape)
    new_mean = None if running_mean is None else np.array(running_mean, dtype=np.float64)
    new_var = None if running_var is None else np.array(running_var, dtype=np.float64)
    for ch, idxs in enumerate(_channels(x)):
        values = [float(x[i]) for i in idxs]
        m = len(values)
        if training:
            mu = sum(values) / m
            var = sum((v - mu) ** 2 for v in values) / m
            if new_mean is not None:
                new_mean[ch] = (1 - momentum) * new_mean[ch] + momentum * mu
            if new_var is not None:
                new_var[ch] = (1 - momentum) * new_var[ch] + momentum * var * m / (m - 1)
        else:
            mu, var = float(running_mean[ch]), float(running_var[ch])
        g = 1.0 if gamma is None else float(gamma[ch])
        b = 0.0 if beta is None else float(beta[ch])
        for i, v in zip(idxs, values, strict=True):
            y[i] = g * (v - mu) / math.sqrt(var + eps) + b
    return y.astype(x.dtype), new_mean, new_var


def batch_norm_backward_reference(dout, x, gamma, running_mean, running_var, training, eps=1e-5):
    """``(dx, dgamma, dbeta)`` by the staged chain rule (CS231n's computational graph).

    Training: ``dxhat = dy * gamma``; ``dvar = sum dxhat (x - mu) * -1/2 (var + eps)^(-3/2)``;
    ``dmu = -sum dxhat / std + dvar * mean(-2 (x - mu))``; ``dx = dxhat / std + dvar * 2 (x - mu) / m + dmu / m``.
    Inference: ``dx = dy * gamma / sqrt(running_var + eps)``.
    """
    dx, dgamma, dbeta = np.zeros(x.shape), np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for ch, idxs in enumerate(_channels(x)):
        values = [float(x[i]) for i in idxs]
        dys = [float(dout[i]) for i in idxs]
        m = len(values)
        if training:
            mu = sum(values) / m
            var = sum((v - mu) ** 2 for v in values) / m
        else:
            mu, var = float(running_mean[ch]), float(running_var[ch])
        std = math.sqrt(var + eps)
        g = 1.0 if gamma is None else float(gamma[ch])
        dbeta[ch] = sum(dys)
        dgamma[ch] = sum(dy * (v - mu) / std for dy, v in zip(dys, values, strict=True))
        dxhat = [dy * g for dy in dys]
        if training:
            dvar = sum(d * (v - mu) * -0.5 * (var + eps) ** -1.5 for d, v in zip(dxhat, values, strict=True))
            dmu = -sum(d / std for d in dxhat) + dvar * sum(-2.0 * (v - mu) for v in values) / m
            for i, d, v in zip(idxs, dxhat, values, strict=True):
                dx[i] = d / std + dvar * 2.0 * (v - mu) / m + dmu / m
        else:
            for i, d in zip(idxs, dxhat, strict=True):
                dx[i] = d / std
    return dx.astype(dout.dtype), dgamma.astype(dout.dtype), dbeta.astype(dout.dtype)
