"""Pooling layers (notes §4, §5.3): max, average and min pooling; global and adaptive average pooling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from ..errors import ShapeError, TrainingError
from ..ops import pool as P
from ..ops._args import pair
from .base import Layer, Shape

IntOrPair = int | tuple[int, int]


def _jsonable(p: tuple[int, int]) -> int | list[int]:
    return p[0] if p[0] == p[1] else [p[0], p[1]]


def _image_shape(layer: Layer, input_shape: Shape) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ShapeError(
            f"{layer.name}: expected a per-sample input of shape (C, H, W), got {tuple(input_shape)}"
        )
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


def _cache(layer: Layer) -> Any:
    if layer._cache is None:
        raise TrainingError(f"{layer.name}: backward called before forward")
    return layer._cache


class _WindowPool:
    """Shared code of the sliding-window pooling layers (not a Layer itself, so not registered)."""

    _forward_op: ClassVar[Callable[..., tuple[np.ndarray, Any]]]
    _backward_op: ClassVar[Callable[[np.ndarray, Any], np.ndarray]]
    _empty_windows_ok: ClassVar[bool] = False  # max/min: a window of padding only has no value
    name: str
    _cache: Any
    grads: dict[str, np.ndarray]

    def __init__(
        self,
        pool_size: IntOrPair = 2,
        stride: IntOrPair | None = None,
        padding: IntOrPair = 0,
        dilation: IntOrPair = 1,
        *,
        name: str | None = None,
        seed: int | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(name=name, seed=seed, dtype=dtype)  # type: ignore[call-arg]
        op = self.name
        self.pool_size = pair(pool_size, "pool_size", op)
        self.stride = self.pool_size if stride is None else pair(stride, "stride", op)
        self.padding = pair(padding, "padding", op, minimum=0)
        self.dilation = pair(dilation, "dilation", op)
        # checks padding <= kernel / 2 now rather than at the first batch
        fits = tuple(d * (k - 1) + 1 for k, d in zip(self.pool_size, self.dilation, strict=True))
        P.pool_geometry(fits, self.pool_size, self.stride, self.padding, self.dilation, op=op)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        c, h, w = _image_shape(self, input_shape)  # type: ignore[arg-type]
        g = P.pool_geometry(
            (h, w),
            self.pool_size,
            self.stride,
            self.padding,
            self.dilation,
            op=self.name,
            empty_windows_ok=self._empty_windows_ok,
        )
        return (c, *g.out_size)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out, self._cache = type(self)._forward_op(x, self.pool_size, self.stride, self.padding, self.dilation)
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.grads = {}
        return type(self)._backward_op(dy, _cache(self))  # type: ignore[arg-type]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()  # type: ignore[misc]
        config.update(
            pool_size=_jsonable(self.pool_size),
            stride=_jsonable(self.stride),
            padding=_jsonable(self.padding),
            dilation=_jsonable(self.dilation),
        )
        return config


class MaxPool2D(_WindowPool, Layer):
    """Max pooling (notes §4.2.1): the largest value of each ``pool_size`` window.

    ``stride`` defaults to ``pool_size``; ``padding`` (at most half the window, padded with -inf) and
    ``dilation`` as in PyTorch's ``MaxPool2d``. Backward sends each gradient to the position that won
    (notes §7.2), the first one on a tie. No parameters.

    >>> import numpy as np
    >>> x = np.array([[1, 3, 2, 9], [4, 6, 1, 5], [7, 2, 8, 3], [0, 4, 3, 6]], np.float32)
    >>> MaxPool2D(2)(x[None, None])[0, 0]  # notes §4.2.1
    array([[6., 9.],
           [7., 8.]], dtype=float32)
    """

    _forward_op = staticmethod(P.max_pool2d_forward)
    _backward_op = staticmethod(P.max_pool2d_backward)

    def window(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
        """The pooling window as ``(kernel, stride, padding, dilation)`` pairs (what the fused ops take)."""
        return (self.pool_size, self.stride, self.padding, self.dilation)


class AvgPool2D(_WindowPool, Layer):
    """Average pooling (notes §4.2.2): the mean of each window, zero padding counted in the divisor.

    >>> import numpy as np
    >>> x = np.array([[1, 3, 2, 9], [4, 6, 1, 5], [7, 2, 8, 3], [0, 4, 3, 6]], np.float32)
    >>> AvgPool2D(2)(x[None, None])[0, 0]  # notes §4.2.2
    array([[3.5 , 4.25],
           [3.25, 5.  ]], dtype=float32)
    """

    _forward_op = staticmethod(P.avg_pool2d_forward)
    _backward_op = staticmethod(P.avg_pool2d_backward)
    _empty_windows_ok = True


class MinPool2D(_WindowPool, Layer):
    """Min pooling (notes §4.2.3): the smallest value of each window (padding is +inf).

    >>> import numpy as np
    >>> x = np.array([[1, 3, 2, 9], [4, 6, 1, 5], [7, 2, 8, 3], [0, 4, 3, 6]], np.float32)
    >>> MinPool2D(2)(x[None, None])[0, 0]
    array([[1., 1.],
           [0., 3.]], dtype=float32)
    """

    _forward_op = staticmethod(P.min_pool2d_forward)
    _backward_op = staticmethod(P.min_pool2d_backward)


class GlobalAvgPool2D(Layer):
    """Global average pooling: each feature map becomes its mean; output ``(C, 1, 1)`` per sample.

    The output stays NCHW, like PyTorch's ``AdaptiveAvgPool2d(1)``; add ``Flatten()`` before a dense layer.

    >>> import numpy as np
    >>> GlobalAvgPool2D()(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))[:, :, 0, 0]
    array([[1.5, 5.5]], dtype=float32)
    """

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        c, _, _ = _image_shape(self, input_shape)
        return (c, 1, 1)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out, self._cache = P.global_avg_pool2d_forward(x)
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.grads = {}
        return P.global_avg_pool2d_backward(dy, _cache(self))


class AdaptiveAvgPool2D(Layer):
    """Adaptive average pooling to a fixed ``output_size`` (PyTorch's ``AdaptiveAvgPool2d``).

    Bin ``i`` averages rows ``floor(i*H/OH)`` to ``ceil((i+1)*H/OH) - 1`` (and the same for columns),
    so any input size gives ``(C, OH, OW)``: how AlexNet and VGG reach their classifier.

    >>> import numpy as np
    >>> AdaptiveAvgPool2D(2)(np.ones((1, 3, 5, 7), np.float32)).shape
    (1, 3, 2, 2)
    """

    def __init__(
        self,
        output_size: IntOrPair,
        *,
        name: str | None = None,
        seed: int | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(name=name, seed=seed, dtype=dtype)
        self.output_size = pair(output_size, "output_size", self.name)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        c, _, _ = _image_shape(self, input_shape)
        return (c, *self.output_size)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out, self._cache = P.adaptive_avg_pool2d_forward(x, self.output_size)
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.grads = {}
        return P.adaptive_avg_pool2d_backward(dy, _cache(self))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["output_size"] = _jsonable(self.output_size)
        return config
