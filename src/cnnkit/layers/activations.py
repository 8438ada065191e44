"""Activation layers (notes §6): ReLU, leaky ReLU and softmax. No parameters."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError, TrainingError
from ..ops import activations as A
from .base import Layer, Shape


def _cache(layer: Layer) -> Any:
    if layer._cache is None:
        raise TrainingError(f"{layer.name}: backward called before forward")
    return layer._cache


class ReLU(Layer):
    """ReLU (notes §6.1): ``max(0, x)`` elementwise; the gradient passes where ``x > 0``.

    >>> import numpy as np
    >>> ReLU()(np.array([[-2.0, 0.0, 3.0]], np.float32))
    array([[0., 0., 3.]], dtype=float32)
    """

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out, self._cache = A.relu_forward(x)
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.grads = {}
        return A.relu_backward(dy, _cache(self))


class LeakyReLU(Layer):
    """Leaky ReLU: ``x`` for ``x > 0``, ``negative_slope * x`` otherwise (no dead units).

    >>> import numpy as np
    >>> LeakyReLU(0.1)(np.array([[-2.0, 3.0]], np.float32))
    array([[-0.2,  3. ]], dtype=float32)
    """

    def __init__(
        self,
        negative_slope: float = 0.01,
        *,
        name: str | None = None,
        seed: int | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(name=name, seed=seed, dtype=dtype)
        try:
            self.negative_slope = A._check_slope(negative_slope)
        except ConfigError as err:
            raise ConfigError(f"{self.name}: {err}") from None

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out, self._cache = A.leaky_relu_forward(x, self.negative_slope)
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.grads = {}
        return A.leaky_relu_backward(dy, _cache(self))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["negative_slope"] = self.negative_slope
        return config


class Softmax(Layer):
    """Softmax along ``axis`` (notes §6.2): scores to probabilities that sum to 1.

    ``axis`` counts the batch axis, as in PyTorch: ``axis=1`` is the class (or channel) axis. For
    training, prefer raw logits with :func:`cnnkit.ops.cross_entropy`, which fuses the softmax.

    >>> import numpy as np
    >>> np.round(Softmax()(np.array([[2.0, 1.0, 0.1]], np.float32)), 2)  # notes §6.2
    array([[0.66, 0.24, 0.1 ]], dtype=float32)
    """

    def __init__(
        self, axis: int = 1, *, name: str | None = None, seed: int | None = None, dtype: Any = np.float32
    ) -> None:
        super().__init__(name=name, seed=seed, dtype=dtype)
        if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
            raise ConfigError(f"{self.name}: axis must be an int, got {axis!r}")
        self.axis = int(axis)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        ndim = len(input_shape) + 1  # with the batch axis
        if not -ndim <= self.axis < ndim:
            raise ShapeError(
                f"{self.name}: axis must be in [{-ndim}, {ndim}) for inputs of shape (N, "
                f"{', '.join(map(str, input_shape))}), got {self.axis}"
            )
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out, self._cache = A.softmax_forward(x, self.axis)
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.grads = {}
        return A.softmax_backward(dy, _cache(self))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["axis"] = self.axis
        return config
