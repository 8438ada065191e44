"""Conv2D: the convolution layer of notes §3 and §5 ("32 filters of size 3x3, stride 1, padding 1")."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError, TrainingError
from ..ops._args import is_int, pair
from ..ops.conv import conv2d_backward, conv2d_forward
from ..ops.conv_paths.common import out_len, resolve_padding
from ..ops.fused import conv2d_relu_max_pool2d_forward
from .base import Layer, Shape
from .init import uniform


class Conv2D(Layer):
    """2-D convolution layer (cross-correlation, as every framework; see :mod:`cnnkit.ops.conv`).

    ``filters`` kernels of size ``kernel_size`` slide over the input (notes §3): the output has
    ``filters`` channels and spatial size ``floor((H + 2P - D(K - 1) - 1) / S) + 1`` (notes §3.4).
    The number of input channels ``C`` is learned from the first input (or the model's declared
    input shape). Parameters, named as in PyTorch:

    - ``weight``: ``(filters, C // groups, KH, KW)``
    - ``bias``: ``(filters,)`` (when ``use_bias``)

    both drawn from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = C / groups * KH * KW``,
    PyTorch's ``Conv2d`` default.

    Args:
        filters: number of output channels ``F``.
        kernel_size: int or ``(KH, KW)``.
        stride, dilation: int or pair.
        padding: int, pair, ``(top, bottom, left, right)``, ``'valid'`` or ``'same'`` (stride 1).
        groups: channel groups; ``groups == C`` (and ``filters`` a multiple of ``C``) is depthwise.
        use_bias: add a learned bias per filter.

    The first layer of the notes' §5 network:

    >>> layer = Conv2D(32, 3, padding=1, seed=0)
    >>> x = np.zeros((2, 3, 32, 32), dtype=np.float32)
    >>> layer(x).shape
    (2, 32, 32, 32)
    >>> layer.params["weight"].shape, layer.params["bias"].shape
    ((32, 3, 3, 3), (32,))
    >>> layer.count_params(), layer.macs()  # 32*27 + 32; 32*32 positions * 32 filters * 27 taps
    (896, 884736)
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, ...] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        use_bias: bool = True,
        *,
        name: str | None = None,
        seed: int | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(name=name, seed=seed, dtype=dtype)
        op = self.name
        if not is_int(filters) or filters < 1:
            raise ConfigError(f"{op}: filters must be an int >= 1, got {filters!r}")
        if not is_int(groups) or groups < 1:
            raise ConfigError(f"{op}: groups must be an int >= 1, got {groups!r}")
        if filters % groups:
            raise ConfigError(f"{op}: groups={groups} must divide filters={filters}")
        self.filters = int(filters)
        self.groups = int(groups)
        self.kernel_size = pair(kernel_size, "kernel_size", op)
        self.stride = pair(stride, "stride", op)
        self.dilation = pair(dilation, "dilation", op)
        # validates padding (and 'same' with stride 1) now, not at the first call
        self._pad4 = resolve_padding(padding, self.kernel_size, self.stride, self.dilation, op)
        self.padding = padding if isinstance(padding, str) else _jsonable_padding(padding)
        self.use_bias = bool(use_bias)
        #: Whether :meth:`backward` computes the gradient of the input. A model sets it False on its
        #: first layer (the input is the data: nobody reads ``dx``), which saves a third of that
        #: layer's backward pass; ``backward`` then returns None. Not part of the config.
        self.needs_input_grad = True

    # ----------------------------------------------------------------- building
    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise ShapeError(
                f"{self.name}: expected a per-sample input of shape (C, H, W), got {input_shape}"
            )
        c, h, w = (int(s) for s in input_shape)
        if c % self.groups:
            raise ShapeError(
                f"{self.name}: groups={self.groups} must divide the input channels, got C={c} "
                f"(input shape {tuple(input_shape)})"
            )
        t, b, l, r = self._pad4
        oh = out_len(h, self.kernel_size[0], t, b, self.stride[0], self.dilation[0])
        ow = out_len(w, self.kernel_size[1], l, r, self.stride[1], self.dilation[1])
        if oh < 1 or ow < 1:
            raise ShapeError(
                f"{self.name}: kernel {self.kernel_size} (dilation {self.dilation}) does not fit "
                f"in the input {tuple(input_shape)} padded by (top, bottom, left, right) = "
                f"{self._pad4}; output size would be ({oh}, {ow})"
            )
        return (self.filters, oh, ow)

    def build(self, input_shape: Shape) -> None:
        super().build(input_shape)
        c = self.input_shape[0]
        kh, kw = self.kernel_size
        fan_in = c // self.groups * kh * kw
        bound = 1.0 / np.sqrt(fan_in)
        rng = self.rng()
        shape = (self.filters, c // self.groups, kh, kw)
        self.params["weight"] = uniform(rng, shape, bound, self.dtype)
        if self.use_bias:
            self.params["bias"] = uniform(rng, (self.filters,), bound, self.dtype)
        self.grads = {}

    # ----------------------------------------------------------------- running
    @property
    def padding4(self) -> tuple[int, int, int, int]:
        """The padding as ``(top, bottom, left, right)``, resolved from ``padding`` at construction."""
        return self._pad4

    def run(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        """``conv2d_forward`` with this layer's parameters: ``(out, cache)``; keeps nothing.

        :meth:`forward` keeps the cache in this layer; a fused layer (:mod:`cnnkit.layers.fused`) keeps it
        in its own cache and hands it back to :meth:`gradients`.
        """
        return conv2d_forward(
            x,
            self.params["weight"],
            self.params.get("bias"),
            stride=self.stride,
            padding=self._pad4,
            dilation=self.dilation,
            groups=self.groups,
        )

    def run_relu_max_pool(
        self, x: np.ndarray, pool: tuple[tuple[int, int], ...]
    ) -> tuple[np.ndarray, Any, Any] | None:
        """``max_pool2d(relu(conv2d(x)))`` in one pass (:func:`cnnkit.ops.fused.conv2d_relu_max_pool2d_forward`)
        with this layer's parameters, for the pooling window ``pool`` = ``(kernel, stride, padding,
        dilation)``: ``(pooled, conv_cache, pool_cache)``, or None where the one-pass kernels do not apply
        (then nothing ran). Keeps nothing; :class:`cnnkit.layers.fused.ConvReLUMaxPool2D` calls it."""
        if self.stride != (1, 1) or self.dilation != (1, 1) or self.groups != 1:
            return None
        return conv2d_relu_max_pool2d_forward(
            x, self.params["weight"], self.params.get("bias"), self._pad4, pool
        )

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out, self._cache = self.run(x)
        return out

    def gradients(self, dy: np.ndarray, cache: Any) -> np.ndarray | None:
        """Set ``grads["weight"]`` (and ``grads["bias"]``) from ``dy`` and a cache of :meth:`run` (or of
        :meth:`run_relu_max_pool`); return ``dx``, or None when ``needs_input_grad`` is False."""
        dx, dw, db = conv2d_backward(dy, cache, need_dx=self.needs_input_grad)
        self.grads["weight"] = dw
        if self.use_bias:
            self.grads["bias"] = db
        return dx

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        """Store ``dw``/``db`` in :attr:`grads`; return ``dx``, or None when ``needs_input_grad`` is False."""
        if self._cache is None:
            raise TrainingError(f"{self.name}: backward called before forward")
        return self.gradients(dy, self._cache)

    # ----------------------------------------------------------------- description
    def macs(self) -> int:
        """Multiply-adds per sample: ``OH * OW * F * (C / groups) * KH * KW``."""
        if not self.built:
            return 0
        _, oh, ow = self.output_shape
        c = self.input_shape[0]
        kh, kw = self.kernel_size
        return int(oh * ow * self.filters * (c // self.groups) * kh * kw)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=list(self.kernel_size),
            stride=list(self.stride),
            padding=self.padding,
            dilation=list(self.dilation),
            groups=self.groups,
            use_bias=self.use_bias,
        )
        return config


def _jsonable_padding(padding: Any) -> Any:
    return int(padding) if is_int(padding) else [int(p) for p in padding]
