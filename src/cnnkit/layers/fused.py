"""Fused layers: a run of layers that executes as one pass, decided once when a model is built.

A container (:class:`~cnnkit.models.Sequential`) built with fusion on (the default) replaces

- ``Conv2D -> ReLU -> MaxPool2D`` (a stride-1, undilated, one-group convolution and 2x2 stride-2
  pooling, the block of notes §5 and §9) by :class:`ConvReLUMaxPool2D`, and
- any other ``ReLU -> MaxPool2D`` by :class:`ReLUMaxPool2D`

in the list of layers it *runs* (its :meth:`~cnnkit.layers.base.Layer.children`). The declared layers
stay as they were: they own the parameters (so ``0.weight`` is still ``0.weight``), they are what a
saved file's architecture lists, and ``model[0]`` is still the ``Conv2D``. A fused layer wraps those
same objects, holds no parameter of its own, and keeps its own cache: no layer writes another layer's
cache. Its :meth:`children` are the wrapped layers in order, under the keys they have in the container.

Why the values are the unfused ones (notes §6.1): ReLU is monotone, so it commutes with the window
maximum, ``max_pool(relu(x)) == relu(max_pool(x))``: the ReLU runs on the 4x smaller pooled output and
its mask on the pooled gradient. The convolution's output is pooled while in cache
(:func:`cnnkit.ops.fused.conv2d_relu_max_pool2d_forward`) where its plan allows (Winograd: the same
values bit for bit; a first layer's direct kernel: its sums in another order, float rounding only);
elsewhere the convolution runs alone and the ReLU with the pooling.

Switch fusion off with ``Sequential(..., fuse=False)`` or ``model.set_fusion(False)`` (every nested
Sequential too): the layers then run one by one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError, TrainingError
from ..ops.pool import relu_max_pool2d_backward, relu_max_pool2d_forward
from .activations import ReLU
from .base import Layer, Shape, from_config, to_config
from .conv import Conv2D
from .pool import MaxPool2D

__all__ = ["FusedLayer", "ConvReLUMaxPool2D", "ReLUMaxPool2D", "fuse_layers"]

_POOL_2X2 = ((2, 2), (2, 2), (0, 0), (1, 1))  # kernel, stride, padding, dilation


class FusedLayer(Layer):
    """Shared machinery: the wrapped layers (``children()``, in order), shapes, mode and dtype.

    Subclasses set :attr:`kinds` (the wrapped layers' exact types) and implement ``forward`` and
    ``backward``. A fused layer has no parameters or buffers of its own; the wrapped layers keep theirs.
    """

    #: The exact types of the wrapped layers, in order.
    kinds: tuple[type[Layer], ...] = ()

    def __init__(self, layers: Mapping[str, Layer], *, name: str | None = None) -> None:
        items = dict(layers)
        types = tuple(type(layer) for layer in items.values())
        if types != self.kinds:
            expected = ", ".join(k.__name__ for k in self.kinds)
            got = ", ".join(t.__name__ for t in types)
            raise ConfigError(f"{type(self).__name__}: wraps exactly ({expected}), got ({got})")
        first = next(iter(items.values()))
        super().__init__(name=name or "+".join(items), dtype=first.dtype)
        self.parts: dict[str, Layer] = items
        if all(layer.built for layer in items.values()):
            self.build(first.input_shape)  # type: ignore[arg-type]

    def children(self) -> dict[str, Layer]:
        """The wrapped layers in the order they run, under their keys in the container."""
        return self.parts

    @property  # type: ignore[override]
    def training(self) -> bool:
        """The mode of the first wrapped layer (what ``model.train()``/``eval()`` and their restorers set)."""
        parts = self.__dict__.get("parts")
        return next(iter(parts.values())).training if parts else self.__dict__.get("_training", True)

    @training.setter
    def training(self, mode: bool) -> None:
        self.__dict__["_training"] = bool(mode)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        shape = tuple(input_shape)
        for layer in self.parts.values():
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    def build(self, input_shape: Shape) -> None:
        shape = tuple(int(s) for s in input_shape)
        for key, layer in self.parts.items():
            if layer.built and layer.input_shape != shape:
                raise ShapeError(
                    f"{self.name}.{key}: was built for input {layer.input_shape}, but receives {shape}"
                )
            if not layer.built:
                layer.build(shape)
            shape = tuple(layer.output_shape)  # type: ignore[arg-type]
        super().build(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("dtype", None)  # the wrapped layers carry their dtype
        config["layers"] = {key: to_config(layer) for key, layer in self.parts.items()}
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FusedLayer:
        config = dict(config)
        layers = {key: from_config(spec) for key, spec in config.pop("layers").items()}
        return cls(layers, **config)

    def _cached(self) -> Any:
        if self._cache is None:
            raise TrainingError(f"{self.name}: backward called before forward")
        return self._cache


class ReLUMaxPool2D(FusedLayer):
    """``ReLU -> MaxPool2D`` as ``relu(max_pool(x))`` (:func:`cnnkit.ops.relu_max_pool2d_forward`): exact,
    since ReLU is monotone (notes §6.1); the ReLU and its mask run on the pooled values only."""

    kinds = (ReLU, MaxPool2D)

    @property
    def pool(self) -> MaxPool2D:
        return list(self.parts.values())[1]  # type: ignore[return-value]

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out, self._cache = relu_max_pool2d_forward(x, *self.pool.window())
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.grads = {}
        return relu_max_pool2d_backward(dy, self._cached())


class ConvReLUMaxPool2D(FusedLayer):
    """``Conv2D -> ReLU -> MaxPool2D`` in one pass where the convolution's plan allows it.

    :meth:`Conv2D.run_relu_max_pool` pools each output tile while it is in cache (Winograd convolutions,
    and a first layer on grey or RGB images by the direct kernel); otherwise the convolution runs
    (:meth:`Conv2D.run`) and the ReLU with the pooling (:class:`ReLUMaxPool2D`'s op). Backward: the
    pooling's backward with the ReLU mask gives the convolution's output gradient, and
    :meth:`Conv2D.gradients` sets the convolution's ``grads`` (its parameters stay its own).

    >>> from cnnkit.models import Sequential
    >>> model = Sequential([Conv2D(8, 3, padding=1), ReLU(), MaxPool2D(2)], input_shape=(3, 8, 8))
    >>> [type(layer).__name__ for layer in model.children().values()]
    ['ConvReLUMaxPool2D']
    >>> list(model.children()["0"].children()), list(model.state_dict())
    (['0', '1', '2'], ['0.weight', '0.bias'])
    """

    kinds = (Conv2D, ReLU, MaxPool2D)

    @staticmethod
    def accepts(conv: Layer, pool: Layer) -> bool:
        """Whether the pair can ever run in one pass: stride-1, undilated, one-group convolution and 2x2
        stride-2 pooling (the rest, such as the batch size, is decided per call by the plan)."""
        return (
            isinstance(conv, Conv2D)
            and isinstance(pool, MaxPool2D)
            and conv.stride == (1, 1)
            and conv.dilation == (1, 1)
            and conv.groups == 1
            and pool.window() == _POOL_2X2
        )

    @property
    def conv(self) -> Conv2D:
        return list(self.parts.values())[0]  # type: ignore[return-value]

    @property
    def pool(self) -> MaxPool2D:
        return list(self.parts.values())[2]  # type: ignore[return-value]

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        window = self.pool.window()
        fused = self.conv.run_relu_max_pool(x, window)
        if fused is None:
            out, conv_cache = self.conv.run(x)
            out, pool_cache = relu_max_pool2d_forward(out, *window)
        else:
            out, conv_cache, pool_cache = fused
        self._cache = (conv_cache, pool_cache)
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        conv_cache, pool_cache = self._cached()
        self.grads = {}
        return self.conv.gradients(relu_max_pool2d_backward(dy, pool_cache), conv_cache)


def fuse_layers(layers: Mapping[str, Layer]) -> dict[str, Layer]:
    """The layers a container runs: ``layers`` (built, in order) with every ``Conv2D -> ReLU -> MaxPool2D``
    run that :meth:`ConvReLUMaxPool2D.accepts` and every other ``ReLU -> MaxPool2D`` pair replaced by
    one fused layer under the first one's key. Exact types only: a subclass of ReLU may change its
    forward pass, so it is never fused. The layers themselves are not changed."""
    items = list(layers.items())
    out: dict[str, Layer] = {}
    i = 0
    while i < len(items):
        key, layer = items[i]
        kinds = [type(lay) for _, lay in items[i : i + 3]]
        if kinds == [Conv2D, ReLU, MaxPool2D] and ConvReLUMaxPool2D.accepts(layer, items[i + 2][1]):
            out[key] = ConvReLUMaxPool2D(dict(items[i : i + 3]))
            i += 3
        elif kinds[:2] == [ReLU, MaxPool2D]:
            out[key] = ReLUMaxPool2D(dict(items[i : i + 2]))
            i += 2
        else:
            out[key] = layer
            i += 1
    return out
