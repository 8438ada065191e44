"""Flatten (notes §5.6): ``(C, H, W)`` feature maps to one vector of ``C*H*W`` neurons per sample."""

from __future__ import annotations

import math

import numpy as np

from ..errors import TrainingError
from ..ops.linear import flatten_backward, flatten_forward
from .base import Layer, Shape


class Flatten(Layer):
    """Flatten every per-sample axis into one, in C order (PyTorch's ``flatten(1)`` order).

    >>> import numpy as np
    >>> Flatten()(np.zeros((2, 64, 8, 8), np.float32)).shape  # notes §5.6: 8x8x64 = 4,096
    (2, 4096)
    """

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(int(s) for s in input_shape),)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out, self._cache = flatten_forward(x)
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise TrainingError(f"{self.name}: backward called before forward")
        self.grads = {}
        return flatten_backward(dy, self._cache)
