"""Gradient clipping by global norm (as ``torch.nn.utils.clip_grad_norm_``).

With ``g`` all trainable gradients laid end to end, ``||g|| = sqrt(sum_i ||g_i||^2)``; when it exceeds
``max_norm`` every gradient is multiplied by ``max_norm / (||g|| + 1e-6)``, which keeps the direction of
the step of notes section 7.3 and bounds its length. It guards against the rare huge gradient that would
throw the weights far away (and the loss to NaN).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from ..layers.base import Layer
from ..utils.checks import check_number

__all__ = ["clip_grad_norm", "global_grad_norm"]


def _trainable_grads(model: Layer) -> list[np.ndarray]:
    if not isinstance(model, Layer):
        raise ConfigError(f"clip_grad_norm: expected a cnnkit model, got {type(model).__name__}")
    grads = []
    for _, owner, key in model.named_parameters():
        grad = owner.grads.get(key) if owner.trainable else None
        if grad is not None:
            grads.append(grad)
    return grads


def _norm(grads: list[np.ndarray]) -> float:
    total = 0.0
    for g in grads:
        flat = g.reshape(-1)
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def global_grad_norm(model: Layer) -> float:
    """The L2 norm of all trainable gradients of ``model`` taken together (inf or nan if any is)."""
    return _norm(_trainable_grads(model))


def clip_grad_norm(model: Layer, max_norm: float) -> float:
    """Scale the trainable gradients of ``model`` in place so their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping. The scale is ``min(1, max_norm / (norm + 1e-6))``, applied to every
    gradient, exactly as PyTorch does. If the norm is not finite the gradients are left unchanged (there is
    no meaningful direction to keep); check the returned value.
    """
    check_number(max_norm, "max_norm", "clip_grad_norm", low=0.0, low_open=True)
    grads = _trainable_grads(model)
    total = _norm(grads)
    if not math.isfinite(total):
        return total
    coef = min(float(max_norm) / (total + 1e-6), 1.0)
    for g in grads:
        g *= coef
    return total
