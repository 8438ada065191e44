"""Central differences for the op tests, written independently of ``cnnkit.gradcheck`` (which is itself
under test), so a bug there cannot hide one in a kernel."""

from __future__ import annotations

import numpy as np


def numeric_grad(f, x: np.ndarray, dout: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of ``sum(f(x) * dout)`` with respect to ``x`` (float64)."""
    x = x.copy()
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        plus = float(np.sum(f(x) * dout))
        x[idx] = old - eps
        minus = float(np.sum(f(x) * dout))
        x[idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad
