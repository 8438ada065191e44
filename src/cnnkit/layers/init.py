"""Weight initialisation shared by the layers."""

from __future__ import annotations

import numpy as np


def uniform(rng: np.random.Generator, shape: tuple[int, ...], bound: float, dtype: np.dtype) -> np.ndarray:
    """Samples of ``U(-bound, bound)`` drawn directly in ``dtype``.

    PyTorch's default for Conv2d and Linear (``kaiming_uniform_(a=sqrt(5))`` for the weight, and the bias)
    is ``bound = 1 / sqrt(fan_in)``. Drawing in float32 rather than drawing float64 and casting keeps the
    temporaries small: VGG-16's 25,088 x 4,096 classifier weight would otherwise need an 822 MB float64
    copy.
    """
    out = rng.random(shape, dtype=np.dtype(dtype).type)
    out *= 2 * bound
    out -= bound
    return out
