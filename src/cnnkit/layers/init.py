"""Weight initialisation shared by the layers, and the shape-only mode that model files are checked in.

Every layer creates its parameters and buffers through :func:`uniform` and :func:`constant`. Inside
:func:`shapes_only` they return read-only placeholders that take no memory (a zero-strided view of one
value), so a model described by a file from a stranger can be built, and every parameter shape it implies
compared with the file's tensor table, before anything large is allocated (:mod:`cnnkit.io.model_file`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import numpy as np

_SHAPES_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("cnnkit_shapes_only", default=False)


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Within the block, :func:`uniform` and :func:`constant` allocate nothing (placeholders)."""
    token = _SHAPES_ONLY.set(True)
    try:
        yield
    finally:
        _SHAPES_ONLY.reset(token)


def _placeholder(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.broadcast_to(np.zeros((), dtype=dtype), tuple(int(s) for s in shape))


def uniform(rng: np.random.Generator, shape: tuple[int, ...], bound: float, dtype: np.dtype) -> np.ndarray:
    """Samples of ``U(-bound, bound)`` drawn directly in ``dtype``.

    PyTorch's default for Conv2d and Linear (``kaiming_uniform_(a=sqrt(5))`` for the weight, and the bias)
    is ``bound = 1 / sqrt(fan_in)``. Drawing in float32 rather than drawing float64 and casting keeps the
    temporaries small: VGG-16's 25,088 x 4,096 classifier weight would otherwise need an 822 MB float64
    copy.
    """
    if _SHAPES_ONLY.get():
        return _placeholder(shape, dtype)
    out = rng.random(shape, dtype=np.dtype(dtype).type)
    out *= 2 * bound
    out -= bound
    return out


def constant(shape: tuple[int, ...] | int, value: float, dtype: Any) -> np.ndarray:
    """An array of ``shape`` filled with ``value`` (batch-norm scales, shifts and running statistics)."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if _SHAPES_ONLY.get():
        return _placeholder(shape, dtype)
    return np.full(shape, value, dtype=dtype)
