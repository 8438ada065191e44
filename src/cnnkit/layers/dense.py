"""Dense (fully connected) layer (notes §5.7, §5.8)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError, TrainingError
from ..ops.linear import linear_backward, linear_forward
from ..utils.checks import check_int
from .base import Layer, Shape
from .init import uniform


class Dense(Layer):
    """Fully connected layer: ``y = x W^T + b`` (notes §5.7: "4,096 -> 128 neurons").

    The number of input features is learned from the first input. Parameters, named and laid out as
    PyTorch's ``Linear``: ``weight`` ``(units, in_features)`` and ``bias`` ``(units,)``, both drawn from
    ``U(-1/sqrt(in_features), 1/sqrt(in_features))``. Inputs must be vectors ``(N, features)``; put a
    ``Flatten()`` after convolution or pooling layers.

    >>> import numpy as np
    >>> layer = Dense(128, seed=0)
    >>> layer(np.zeros((2, 4096), np.float32)).shape
    (2, 128)
    >>> layer.params["weight"].shape, layer.count_params(), layer.macs()  # 4096*128 + 128
    ((128, 4096), 524416, 524288)
    """

    def __init__(
        self,
        units: int,
        use_bias: bool = True,
        *,
        name: str | None = None,
        seed: int | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(name=name, seed=seed, dtype=dtype)
        check_int(units, "units", self.name)
        self.units = int(units)
        self.use_bias = bool(use_bias)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 1:
            hint = " (add Flatten() before this layer)" if len(input_shape) > 1 else ""
            raise ShapeError(
                f"{self.name}: expected a per-sample input of shape (features,){hint}, got {tuple(input_shape)}"
            )
        return (self.units,)

    def build(self, input_shape: Shape) -> None:
        super().build(input_shape)
        fan_in = self.input_shape[0]
        bound = 1.0 / np.sqrt(fan_in) if fan_in else 0.0
        rng = self.rng()
        self.params["weight"] = uniform(rng, (self.units, fan_in), bound, self.dtype)
        if self.use_bias:
            self.params["bias"] = uniform(rng, (self.units,), bound, self.dtype)
        self.grads = {}

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out, self._cache = linear_forward(x, self.params["weight"], self.params.get("bias"))
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise TrainingError(f"{self.name}: backward called before forward")
        dx, dw, db = linear_backward(dy, self._cache)
        self.grads["weight"] = dw
        if self.use_bias:
            self.grads["bias"] = db
        return dx

    def macs(self) -> int:
        """Multiply-adds per sample: ``in_features * units``."""
        return int(self.input_shape[0] * self.units) if self.built else 0

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(units=self.units, use_bias=self.use_bias)
        return config
